"""Liveness, readiness and metrics: open to all, no API key (probes and scrapers have none)."""

from __future__ import annotations

import logging

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.queues import live_workers

from ..deps import RedisDep, SettingsDep
from ..errors import error_body
from ..telemetry import render

router = APIRouter(tags=["health"])
log = logging.getLogger("prototok.api")


@router.get("/healthz", summary="The API process is up")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis answers and at least one worker is registered",
            responses={503: {"description": "not ready; the body says why"}})
def readyz(conn: RedisDep) -> JSONResponse:
    try:
        conn.ping()
        workers = live_workers(conn)
    except redis.exceptions.RedisError as exc:
        log.warning("readyz: redis unreachable: %s", exc)  # the text names host:port: the log, not the answer
        return JSONResponse(error_body("not_ready", "redis unreachable", redis=False), status_code=503)
    body = {"redis": True, "workers": [{"model": m, "name": n} for m, n in workers],
            "models": sorted({m for m, _ in workers})}
    if not workers:
        return JSONResponse(error_body("not_ready", "no worker is registered", **body), status_code=503)
    return JSONResponse({"status": "ready", **body})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(conn: RedisDep, settings: SettingsDep) -> Response:
    return Response(render(conn, settings), media_type=CONTENT_TYPE_LATEST)
