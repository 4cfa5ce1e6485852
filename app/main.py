"""The API process: `uvicorn app.main:app`. Assembles the app; routes live in app/routes/."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

import prototok

from .auth import caller_dep
from .decoding import Decoder
from .deps import settings_dep
from .errors import install_error_handlers
from .limits import BodyLimit
from .routes import decode, embeddings, encode, health, jobs, page
from .schemas import ErrorBody

DESCRIPTION = """Compress a text into two learned proto-token vectors (`e`, `m`) of a frozen LLM and
rebuild it in one forward pass (Mezentsev & Oseledets 2025).

`POST /v1/encode` queues a job for the RQ workers that serve the model; poll `GET /v1/jobs/{id}`;
the finished job lists embedding ids; `GET /v1/embeddings/{id}/text` rebuilds the exact text.
Errors are JSON `{"code", "message"}` with a stable code.

Every `/v1` route needs `Authorization: Bearer KEY` (a key from `prototok keys create NAME`) unless
the service runs with `PROTOTOK_AUTH=off`; a key sees only the jobs and embeddings it made."""

# Every /v1 route: the key check (401), the key's request rate (429), Redis down (503).
V1_GUARD = [Depends(caller_dep)]
V1_ERRORS = {401: {"model": ErrorBody, "description": "no API key, or an unknown or revoked one"},
             429: {"model": ErrorBody, "description": "over the key's request rate or job quota"},
             503: {"model": ErrorBody, "description": "Redis is unreachable"}}


@asynccontextmanager
async def lifespan(application: FastAPI):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application.state.decoder = decoder = Decoder(settings_dep())
    decoder.preload()
    yield
    await asyncio.to_thread(decoder.close)  # each model's decode process exits (after the pass it is in)


settings_dep()  # read now: a bad PROTOTOK_* value stops `uvicorn app.main:app` here, with one line

app = FastAPI(title="prototok", version=prototok.__version__, description=DESCRIPTION, lifespan=lifespan)
install_error_handlers(app)
app.add_middleware(BodyLimit)
for module in (encode, jobs, embeddings, decode):
    app.include_router(module.router, dependencies=V1_GUARD, responses=V1_ERRORS)
for module in (health, page):  # open: probes, scrapers and the page itself hold no key
    app.include_router(module.router)
app.mount("/static", page.static_files(), name="static")
