"""Decoding in the API: which models it may load, and loading the default one at start-up.

One forward pass over a few dozen positions costs milliseconds on a CPU, far less than a
round trip through a queue, and a SimpleWorker busy with a long encode could not answer a
decode for minutes. So the API decodes itself: in the model's decode lane (app/batcher.py),
whose passes run in a child process of the API that loads the model once, or, with
PROTOTOK_DECODE_BATCHING=false, one pass per request in FastAPI's thread pool with the model
loaded in the API process (the old path, kept to compare against: bench/load.py). It only
loads models it has reason to: the configured one, the built-in ones, those some worker
serves, and PROTOTOK_API_DECODE_MODELS; not any path a client names.
"""

from __future__ import annotations

import logging
import threading

from redis import Redis

from prototok import LanguageModel, load_model
from prototok.errors import UnknownModel
from prototok.models import canonical_name, known_models
from prototok.settings import Settings
from service.queues import served_models

from .batcher import lane

log = logging.getLogger("prototok.api")


def allowed_models(settings: Settings, conn: Redis) -> set[str]:
    names = {settings.model, *known_models(), *settings.api_decode_models, *served_models(conn)}
    return {canonical_name(n) for n in names}


def allowed_model(name: str | None, settings: Settings, conn: Redis) -> str:
    """The canonical name of the model a client asked to decode with, if this API may load it."""
    model = canonical_name(name or settings.model)
    allowed = allowed_models(settings, conn)
    if model not in allowed:
        raise UnknownModel(f"unknown model '{model}'; this service decodes with: {', '.join(sorted(allowed))}")
    return model


def decoding_model(name: str | None, settings: Settings, conn: Redis) -> LanguageModel:
    """The model a client asked to decode with, loaded once per process."""
    return load_model(allowed_model(name, settings, conn))


def preload(settings: Settings) -> threading.Thread | None:
    """Load the default model at start-up so the first decode does not pay for it: its lane starts
    now, and its decode process (or, without one, the lane's thread) loads the model. On the old
    path (PROTOTOK_DECODE_BATCHING=false) a thread of the API loads it. Returns that thread."""
    if not settings.api_preload:
        return None
    if settings.decode_batching:
        lane(canonical_name(settings.model), settings)
        return None

    def run() -> None:
        try:
            lm = load_model(settings.model)
            log.info("decode model %s loaded on %s", lm.name, lm.device)
        except Exception:
            log.exception("could not preload model %s", settings.model)

    thread = threading.Thread(target=run, name="preload-model", daemon=True)
    thread.start()
    return thread
