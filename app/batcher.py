"""Decodes in their own lane: one thread per model joins concurrent decodes into one pass.

Before, every decode ran in FastAPI's shared thread pool, one forward pass per request and
up to 40 at once: passes fought over the CPU cores, and job polls, which need the same
pool, waited behind them (issue 10: poll p50 341 ms -> 4.6 s under load, fewer decodes
per second in all than one client alone). Now:

- a route hands its decode to its model's `DecodeLane` and awaits a future; the event loop
  and the thread pool stay free for polls;
- the lane's thread takes what is waiting (up to PROTOTOK_DECODE_BATCH_TOKENS positions,
  waiting at most PROTOTOK_DECODE_BATCH_WAIT_MS for company) and decodes it in one batched
  pass (`prototok.decode` for encodings, `decode_ids` for raw vectors), which costs about
  what one request's pass costs on a CPU, and less per text on a GPU;
- the passes use PROTOTOK_DECODE_THREADS torch threads (default: all cores but one), so one
  core stays free for request handling; on a busy CPU this also spares the passes the cost of
  threads that spin at each barrier waiting for a descheduled sibling;
- the thread runs at a lower CPU priority (PROTOTOK_DECODE_NICE, default 5; its torch worker
  threads inherit it): on a contended CPU, request handling goes first and decodes get the
  rest (bench.load smoke runs, 150 pollers and 50 decoders: poll p50 809 / 13 / 8 ms and
  9.9 / 8.5 / 6.0 decodes/s at niceness 0 / 5 / 10). Two costs: on a host shared with other
  busy processes the lane yields to them too (at 10 it starved there), and when the lane is
  descheduled while it holds the GIL, the API's other threads wait for it (the tail of poll
  latency under load). A decode process of its own would remove the second;
- at most PROTOTOK_DECODE_QUEUE_MAX decodes wait: past that, 503 `decode_busy` with
  Retry-After, instead of a queue that grows without bound.

Exactness: `prototok.decode` checks each text's token checksum. A pass over many requests
can differ from a pass alone at a low-margin position (batch shape changes float rounding);
when a batch fails in any way, each of its requests is decoded again alone, so one request's
failure (or such a flip) never fails another. Raw vectors carry no checksum: their text is
what the vectors give in the pass they were decoded in.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prototok import Encoding, LanguageModel, decode, decode_ids, load_model
from prototok.codec import Decoded, check_vectors, dtype_name
from prototok.models import configure_threads
from prototok.recipe import Arrangement
from prototok.settings import Settings
from service.errors import ServiceError

from .telemetry import DECODE_BATCH

log = logging.getLogger("prototok.api")


class DecodeBusy(ServiceError):
    """More decodes waiting than PROTOTOK_DECODE_QUEUE_MAX: come back in a second."""

    code, status = "decode_busy", 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


@dataclass
class VectorsResult:
    text: str
    seconds: float


@dataclass
class Pending:
    """One request waiting in a lane: an encoding, or raw vectors with their layout."""

    positions: int
    future: Future = field(default_factory=Future)
    enc: Encoding | None = None
    e: torch.Tensor | None = None
    m: torch.Tensor | None = None
    lengths: list[int] = field(default_factory=list)
    arrangement: Arrangement = Arrangement.E_MN1
    sink: bool = False

    def layout(self) -> tuple[Arrangement, bool]:
        return self.arrangement, self.sink


class DecodeLane:
    """The decoding thread of one model, and the bounded queue in front of it."""

    def __init__(self, model: str, settings: Settings):
        self.model, self.settings = model, settings
        self.waiting: queue.Queue[Pending] = queue.Queue(maxsize=settings.decode_queue_max)
        self.carry: Pending | None = None  # taken but did not fit the last batch: first in the next
        self.thread = threading.Thread(target=self._run, name=f"decode-{model}", daemon=True)

    def start(self) -> DecodeLane:
        self.thread.start()
        return self

    def submit_encoding(self, enc: Encoding) -> Future:
        return self._submit(Pending(positions=enc.n_tokens, enc=enc))

    def submit_vectors(self, e: torch.Tensor, m: torch.Tensor, lengths: list[int], arrangement: Arrangement,
                       sink: bool) -> Future:
        return self._submit(Pending(positions=sum(lengths), e=e, m=m, lengths=lengths, arrangement=arrangement,
                                sink=sink))

    def _submit(self, job: Pending) -> Future:
        try:
            self.waiting.put_nowait(job)
        except queue.Full:
            raise DecodeBusy(f"{self.settings.decode_queue_max} decodes are waiting for model '{self.model}' "
                             "(PROTOTOK_DECODE_QUEUE_MAX); retry in a second") from None
        return job.future

    # --- the lane's thread ---

    def _run(self) -> None:
        configure_threads(decode_threads(self.settings))  # process-wide: the API runs torch only here
        lower_priority(self.settings.decode_nice)
        while True:
            batch = self._gather()
            try:
                lm = load_model(self.model)
            except Exception as exc:  # noqa: BLE001 - a model that cannot load fails its requests, not the lane
                for job in batch:
                    job.future.set_exception(exc)
                continue
            stored = [j for j in batch if j.enc is not None]
            for dtype in {lane_dtype(self.settings, lm, j.enc) for j in stored}:
                mine = [j for j in stored if lane_dtype(self.settings, lm, j.enc) == dtype]
                self._decode(lm if dtype is None else load_model(self.model, dtype=dtype), mine)
            for layout in {j.layout() for j in batch if j.enc is None}:
                self._decode(lm, [j for j in batch if j.enc is None and j.layout() == layout])

    def _gather(self) -> list[Pending]:
        """The next batch: whatever waits, up to the position budget, after a short wait for more."""
        first = self.carry or self.waiting.get()
        self.carry = None
        batch, total = [first], first.positions
        deadline = time.monotonic() + self.settings.decode_batch_wait_ms / 1000
        while total < self.settings.decode_batch_tokens:
            try:
                job = self.waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if total + job.positions > self.settings.decode_batch_tokens:
                self.carry = job
                break
            batch.append(job)
            total += job.positions
        return batch

    def _decode(self, lm: LanguageModel, jobs: list[Pending]) -> None:
        if not jobs:
            return
        DECODE_BATCH.observe(len(jobs))
        try:
            results = _pass(lm, jobs)
        except Exception as exc:  # noqa: BLE001 - handed to the request(s), never lost
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            log.info("a batch of %d decodes failed (%s); decoding each alone", len(jobs), exc)
            for job in jobs:
                self._decode(lm, [job])
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)


def _pass(lm: LanguageModel, jobs: list[Pending]) -> list[Decoded] | list[VectorsResult]:
    """One forward pass for jobs of one kind (and, for vectors, one layout)."""
    if jobs[0].enc is not None:
        return decode(lm, [j.enc for j in jobs])  # checks every text's checksum
    rows = [check_vectors(lm, j.e, j.m, j.lengths) for j in jobs]
    start = time.perf_counter()
    ids = decode_ids(lm, jobs[0].arrangement, torch.cat([e for e, _ in rows]), torch.cat([m for _, m in rows]),
                     [n for j in jobs for n in j.lengths], jobs[0].sink)
    seconds = time.perf_counter() - start
    out, i = [], 0
    for job in jobs:
        mine, i = ids[i : i + len(job.lengths)], i + len(job.lengths)
        out.append(VectorsResult(lm.detokenize([t for chunk in mine for t in chunk]), seconds))
    return out


def lane_dtype(settings: Settings, lm: LanguageModel, enc: Encoding) -> str | None:
    """None: decode in the lane's own model. An encoding made in another dtype that
    PROTOTOK_API_DECODE_DTYPES lists decodes in a copy of the model in that dtype (loaded once)."""
    made = enc.compute_dtype
    if made and made != dtype_name(lm.dtype) and made in settings.api_decode_dtypes:
        return made
    return None


def lower_priority(nice: int) -> None:
    """Renice this thread only (Linux: niceness is per thread); threads it starts inherit it."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as exc:
        log.warning("could not lower the decode thread's priority: %s", exc)


def decode_threads(settings: Settings) -> int:
    return settings.decode_threads or max(1, (os.cpu_count() or 2) - 1)


_lanes: dict[str, DecodeLane] = {}
_lanes_lock = threading.Lock()


def lane(model: str, settings: Settings) -> DecodeLane:
    """The model's lane, started on first use (one thread per model, for the life of the process)."""
    with _lanes_lock:
        if model not in _lanes:
            _lanes[model] = DecodeLane(model, settings).start()
        return _lanes[model]
