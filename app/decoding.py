"""Decoding in the API: which models it decodes with, and the Decoder every route decodes through.

One forward pass over a few dozen positions costs milliseconds on a CPU, far less than a
round trip through a queue, and a SimpleWorker busy with a long encode could not answer a
decode for minutes. So the API decodes itself, in one way: each model has a decode lane
(app/batcher.py) that joins concurrent decodes into batched passes, and the passes run in the
model's decode process (app/decode_process.py), a child of the API that loads the model once.
Routes get the app's Decoder through a dependency (app/deps.py, DecoderDep).

It decodes only with the models its operator configured: PROTOTOK_MODEL and
PROTOTOK_API_DECODE_MODELS. Not a model a client names, nor one an upload or a stored encoding
names, nor one a worker announces in Redis: anyone who can write to Redis could announce any
name or store an encoding naming any path, and each model loaded costs its memory in every
API replica.
"""

from __future__ import annotations

import asyncio
import threading

import torch

from prototok import Decoded, Encoding
from prototok.errors import UnknownModel
from prototok.models import canonical_name
from prototok.recipe import Arrangement
from service.settings import ServiceSettings

from .batcher import DecodeLane
from .decode_pass import VectorsResult


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
        return await asyncio.wrap_future(self.lane(enc.model).submit_encoding(enc))

    async def vectors(self, model: str, e: torch.Tensor, m: torch.Tensor, lengths: list[int],
                      arrangement: Arrangement, sink: bool) -> VectorsResult:
        """What raw vectors give in one pass (no checksum: they carry none)."""
        return await asyncio.wrap_future(self.lane(model).submit_vectors(e, m, lengths, arrangement, sink))

    def preload(self) -> None:
        """Start the default model's lane now, so its decode process loads the model at start-up
        and the first decode does not wait for it."""
        if self.settings.api_preload:
            self.lane(canonical_name(self.settings.model))

    def close(self) -> None:
        """At shutdown (the app's lifespan): stop every lane and its decode process."""
        with self._lock:
            lanes = list(self.lanes.values())
            self.lanes.clear()
        for each in lanes:
            each.close()
