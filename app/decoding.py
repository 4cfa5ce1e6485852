"""Decoding in the API: which models it may load, and loading the default one at start-up.

One forward pass over a few dozen positions costs milliseconds on a CPU, far less than a
round trip through a queue, and a SimpleWorker busy with a long encode could not answer a
decode for minutes. So the API decodes itself: in the model's decode lane (app/batcher.py),
whose passes run in a child process of the API that loads the model once, or, with
PROTOTOK_DECODE_BATCHING=false, one pass per request in FastAPI's thread pool with the model
loaded in the API process (the old path, kept to compare against: bench/load.py).

It decodes only with the models its operator configured: PROTOTOK_MODEL and
PROTOTOK_API_DECODE_MODELS. Not a model a client names, nor one an upload or a stored encoding
names, nor one a worker announces in Redis: anyone who can write to Redis could announce any
name or store an encoding naming any path, and each model loaded costs its memory in every
API replica.
"""

from __future__ import annotations

import logging
import threading

from prototok import load_model
from prototok.errors import UnknownModel
from prototok.models import canonical_name
from service.settings import ServiceSettings

from .batcher import lane

log = logging.getLogger("prototok.api")


def allowed_models(settings: ServiceSettings) -> set[str]:
    """The canonical names of the models this API decodes with, from its settings alone."""
    return {canonical_name(n) for n in (settings.model, *settings.api_decode_models)}


def allowed_model(name: str | None, settings: ServiceSettings) -> str:
    """The canonical name of the model a request (its `model`, an upload's or a stored encoding's)
    asks to decode with, if this API is configured to decode with it; else UnknownModel (404)."""
    model = canonical_name(name or settings.model)
    allowed = allowed_models(settings)
    if model not in allowed:
        raise UnknownModel(f"unknown model '{model}'; this service decodes with: {', '.join(sorted(allowed))}")
    return model


def preload(settings: ServiceSettings) -> threading.Thread | None:
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
