"""The web page at `/`: plain HTML, CSS and a small script from app/static, no build step.

It calls the same JSON endpoints as any client, with the API key the user enters (kept in
the browser's localStorage) as `Authorization: Bearer KEY`; the page itself needs no key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """/static/*: the page's script and style sheet."""
    return StaticFiles(directory=STATIC)
