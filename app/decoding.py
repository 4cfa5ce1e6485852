"""Decoding in the API: which models it decodes with, and the Decoder every route decodes through.

One forward pass over a few dozen positions costs milliseconds on a CPU, far less than a
round trip through a queue, and a SimpleWorker busy with a long encode could not answer a
decode for minutes. So the API decodes itself: in the model's decode lane (app/batcher.py),
whose passes run in a child process of the API that loads the model once, or, with
PROTOTOK_DECODE_BATCHING=false, one pass per request in FastAPI's thread pool with the model
loaded in the API process. Routes get the app's Decoder through a dependency
(app/deps.py, DecoderDep) and do not know which.

It decodes only with the models its operator configured: PROTOTOK_MODEL and
PROTOTOK_API_DECODE_MODELS. Not a model a client names, nor one an upload or a stored encoding
names, nor one a worker announces in Redis: anyone who can write to Redis could announce any
name or store an encoding naming any path, and each model loaded costs its memory in every
API replica.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import torch
from fastapi.concurrency import run_in_threadpool

from prototok import Decoded, Encoding, decode, decode_vectors, load_model
from prototok.errors import UnknownModel
from prototok.models import canonical_name
from prototok.recipe import Arrangement
from service.settings import ServiceSettings

from .batcher import DecodeLane
from .decode_pass import VectorsResult

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


class Decoder:
    """The API's decoding: one lane per model, started on first use (one thread, and one decode
    process, per model until `close`). Callers have checked the model (`allowed_model`)."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.lanes: dict[str, DecodeLane] = {}
        self._lock = threading.Lock()

    def lane(self, model: str) -> DecodeLane:
        with self._lock:
            if model not in self.lanes:
                self.lanes[model] = DecodeLane(model, self.settings).start()
            return self.lanes[model]

    async def encoding(self, enc: Encoding) -> Decoded:
        """The exact text of an encoding (its checksum verified), from one pass shared with others."""
        if not self.settings.decode_batching:
            return await run_in_threadpool(lambda: decode(load_model(enc.model), [enc])[0])
        return await asyncio.wrap_future(self.lane(enc.model).submit_encoding(enc))

    async def vectors(self, model: str, e: torch.Tensor, m: torch.Tensor, lengths: list[int],
                      arrangement: Arrangement, sink: bool) -> VectorsResult:
        """What raw vectors give in one pass (no checksum: they carry none)."""
        if not self.settings.decode_batching:
            def alone() -> VectorsResult:
                start = time.perf_counter()
                text = decode_vectors(load_model(model), e, m, lengths, arrangement, sink)
                return VectorsResult(text, time.perf_counter() - start)

            return await run_in_threadpool(alone)
        return await asyncio.wrap_future(self.lane(model).submit_vectors(e, m, lengths, arrangement, sink))

    def preload(self) -> threading.Thread | None:
        """Load the default model at start-up so the first decode does not pay for it: its lane starts
        now, and its decode process (or, without one, the lane's thread) loads the model. On the
        unbatched path (PROTOTOK_DECODE_BATCHING=false) a thread of the API loads it. Returns that thread."""
        settings = self.settings
        if not settings.api_preload:
            return None
        if settings.decode_batching:
            self.lane(canonical_name(settings.model))
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

    def close(self) -> None:
        """At shutdown (the app's lifespan): stop every lane and its decode process."""
        with self._lock:
            lanes = list(self.lanes.values())
            self.lanes.clear()
        for each in lanes:
            each.close()
