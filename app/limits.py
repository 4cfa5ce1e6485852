"""The request body limit (PROTOTOK_MAX_BODY_BYTES), declared or streamed.

A pure ASGI middleware rather than `@app.middleware("http")`: it must see the body as it
arrives, so that a chunked upload without Content-Length is stopped at the limit instead of
being read whole into memory first.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import settings_dep
from .errors import error_body


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; FastAPI lets HTTPException through body parsing unchanged."""

    code = "body_too_large"

    def __init__(self, size: str, limit: int):
        super().__init__(413, f"request body of {size} bytes is over the limit of {limit} (PROTOTOK_MAX_BODY_BYTES)")


class BodyLimit:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings_dep().max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:  # refuse before reading a byte
            exc = BodyTooLarge(declared, limit)
            await JSONResponse(error_body(exc.code, exc.detail), status_code=413)(scope, receive, send)
            return
        await self.app(scope, counting(receive, limit), send)


def counting(receive: Receive, limit: int) -> Receive:
    """`receive` that raises BodyTooLarge as soon as the bytes so far pass the limit."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(f"more than {limit}", limit)
        return message

    return counted
