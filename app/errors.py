"""Service errors and the HTTP answer of every error: JSON with a stable `code` and a message.

Core errors (`prototok.errors`) are the caller's fault and become 4xx; the service adds the
ones only a service has (unknown job, model nobody serves, ...). Anything else is a bug
and answers 500 with code `internal_error`, still as JSON.
"""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prototok.errors import (
    BadVectors,
    CorruptEncoding,
    DecodeMismatch,
    EmptyText,
    InvalidInput,
    ModelMismatch,
    PrototokError,
    TextTooLong,
    TooManyTokens,
    UnknownModel,
)

log = logging.getLogger("prototok.api")


class ServiceError(PrototokError):
    """An error only the service can have; `status` is its HTTP status."""

    code = "invalid_request"
    status = 400


class JobNotFound(ServiceError):
    code, status = "job_not_found", 404


class JobEnded(ServiceError):
    """DELETE of a job that already finished or failed: there is nothing left to cancel."""

    code, status = "job_ended", 409


class EmbeddingNotFound(ServiceError):
    code, status = "embedding_not_found", 404


class ModelNotServed(ServiceError):
    """A real model, but no live worker listens on its queue: the job would wait forever."""

    code, status = "model_not_served", 409


class TooManyTexts(ServiceError):
    code, status = "too_many_texts", 413


class CorruptJobRecord(ServiceError):
    """A job hash in Redis that this service did not write (not JSON, another function): never run or shown."""

    code, status = "corrupt_job_record", 500


class ChecksumMismatch(ServiceError):
    """A stored blob whose sha256 no longer matches: refuse it rather than decode wrong text."""

    code, status = "checksum_mismatch", 409


# Core errors: most specific class first, since they subclass each other.
CORE_STATUS: list[tuple[type[PrototokError], int]] = [
    (TextTooLong, 413), (TooManyTokens, 413), (EmptyText, 422), (BadVectors, 422), (UnknownModel, 404),
    (ModelMismatch, 409), (DecodeMismatch, 409), (CorruptEncoding, 422), (InvalidInput, 422),
]


def status_of(exc: PrototokError) -> int:
    if isinstance(exc, ServiceError):
        return exc.status
    return next((status for cls, status in CORE_STATUS if isinstance(exc, cls)), 422)


def error_body(code: str, message: str, **extra: object) -> dict:
    return {"code": code, "message": message, **extra}


def validation_code(errors: list[dict]) -> tuple[int, str]:
    """One stable code for a pydantic failure, chosen by what was wrong where."""
    types = {e.get("type") for e in errors}
    fields = {str(part) for e in errors for part in e.get("loc", ())}
    if "json_invalid" in types:
        return 400, "malformed_json"
    if fields & {"e", "m"} and not fields & {"model", "length", "arrangement"}:
        return 422, "bad_vectors"
    if fields & {"text", "texts"} and types <= {"string_too_short", "too_short"}:
        return 422, "empty_text"
    return 422, "invalid_request"


def _summary(errors: list[dict]) -> tuple[str, list[dict]]:
    """A readable message and the errors without the (possibly huge) offending input."""
    clean = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
             for e in errors]
    if any(e["type"] == "json_invalid" for e in clean):
        where = [e["loc"][-1] for e in clean if e["type"] == "json_invalid" and len(e["loc"]) > 1]
        at = f" at character {where[0]}" if where and where[0].isdigit() else ""
        return f"the body is not valid JSON{at}", clean
    message = "; ".join(f"{'.'.join(e['loc'][1:] or e['loc']) or 'body'}: {e['msg']}" for e in clean[:5])
    return message or "invalid request", clean


async def _prototok_error(_: Request, exc: PrototokError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, str(exc)), status_code=status_of(exc),
                        headers=getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    status, code = validation_code(errors)
    message, clean = _summary(errors)
    return JSONResponse(error_body(code, message, errors=clean), status_code=status)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
             415: "unsupported_media_type"}
    code = getattr(exc, "code", None) or codes.get(exc.status_code, "http_error")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def _redis_down(_: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
    log.error("redis unavailable: %s", exc)
    return JSONResponse(error_body("redis_unavailable", f"the job store is unreachable: {exc}"), status_code=503)


async def _bug(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal error (a bug); see the API log"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(PrototokError, _prototok_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    app.add_exception_handler(Exception, _bug)
