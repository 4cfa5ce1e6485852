"""The HTTP answer of every error: JSON with a stable `code` and a message.

Core errors (`prototok.errors`) and the service's own (`service.errors`: unknown job, model
nobody serves, ...) each carry their `code` and HTTP `status`; this module only turns them,
and the web stack's own failures (validation, routing, body parsing), into answers. Anything
else is a bug and answers 500 with code `internal_error`, still as JSON.
"""

from __future__ import annotations

import logging
import re

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prototok.errors import PrototokError

log = logging.getLogger("prototok.api")


def status_of(exc: PrototokError) -> int:
    """Every error class carries its HTTP status (`prototok.errors`, `service.errors`)."""
    return exc.status


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


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """FastAPI answers 400 "error parsing the body" for a JSON body that `json.loads` rejects with
    something other than JSONDecodeError: bytes that are not UTF-8, or nesting past the recursion
    limit. Both are malformed JSON to a client; say which."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid JSON: it is not UTF-8 (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "the body is not valid JSON that this service reads: it is nested too deeply"
    if isinstance(cause, ValueError):
        return "the body is not valid JSON"
    return None


def allowed_methods(request: Request) -> str:
    """Every method the API documents at this path. Starlette's 405 names only the first
    matching route's, and GET and DELETE of one path are two routes here."""
    methods: set[str] = set()
    for template, ops in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in ops}
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
             415: "unsupported_media_type"}
    malformed = _unparsable_body(exc)
    if malformed:
        return JSONResponse(error_body("malformed_json", malformed), status_code=400)
    code = getattr(exc, "code", None) or codes.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers or None)


async def _redis_down(_: Request, exc: redis.exceptions.RedisError) -> JSONResponse:
    """503 without the exception text: it names Redis' host and port, which are nobody's business."""
    log.error("redis unavailable: %s", exc)
    return JSONResponse(error_body("redis_unavailable", "the job store is unreachable; try again shortly"),
                        status_code=503, headers={"Retry-After": "5"})


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
