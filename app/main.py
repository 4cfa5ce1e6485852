"""The API process: `uvicorn app.main:app`. Assembles the app; routes live in app/routes/."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

import prototok

from .decoding import preload
from .deps import settings_dep
from .errors import install_error_handlers
from .limits import BodyLimit
from .routes import decode, embeddings, encode, health, jobs, page

DESCRIPTION = """Compress a text into two learned proto-token vectors (`e`, `m`) of a frozen LLM and
rebuild it in one forward pass (Mezentsev & Oseledets 2025).

`POST /v1/encode` queues a job for the RQ workers that serve the model; poll `GET /v1/jobs/{id}`;
the finished job lists embedding ids; `GET /v1/embeddings/{id}/text` rebuilds the exact text.
Errors are JSON `{"code", "message"}` with a stable code."""


@asynccontextmanager
async def lifespan(_: FastAPI):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    preload(settings_dep())
    yield


app = FastAPI(title="prototok", version=prototok.__version__, description=DESCRIPTION, lifespan=lifespan)
install_error_handlers(app)
app.add_middleware(BodyLimit)
for module in (encode, jobs, embeddings, decode, health, page):
    app.include_router(module.router)
app.mount("/static", page.static_files(), name="static")
