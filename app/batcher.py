"""Decodes in their own lane: per model, one thread joins concurrent decodes into batches, and
one child process runs their passes.

Decodes do not run in FastAPI's shared thread pool, one forward pass per request: there, up to
40 passes at once would fight over the CPU cores, and job polls, which need the same pool, would
wait behind them (bench/results/load.md). Instead:

- a route hands its decode to its model's `DecodeLane` and awaits a future; the event loop
  and the thread pool stay free for polls;
- the lane's thread takes what is waiting (up to PROTOTOK_DECODE_BATCH_TOKENS positions,
  waiting at most PROTOTOK_DECODE_BATCH_WAIT_MS for company) and has it decoded in one batched
  pass per group (app/decode_pass.py), which costs about what one request's pass costs on a
  CPU, and less per text on a GPU; a pass that fails is redone request by request;
- the passes run in the model's decode process (app/decode_process.py), so a pass never holds
  the GIL the event loop needs, and one that hangs is killed after PROTOTOK_DECODE_PASS_TIMEOUT
  (its batch answers 503, the next gets a new process);
- the passes use PROTOTOK_DECODE_THREADS torch threads (default: all cores but one), so one
  core stays free for request handling; on a busy CPU this also spares the passes the cost of
  threads that spin at each barrier waiting for a descheduled sibling;
- they run at a lower CPU priority (PROTOTOK_DECODE_NICE, default 5, for the whole decode
  process): on a contended CPU, request handling goes first and decodes get the rest
  (bench/results/load.md, "Decode niceness"). The cost: on a host shared with other busy
  processes the passes yield to them too, and at a high niceness they can starve;
- at most PROTOTOK_DECODE_QUEUE_MAX decodes wait: past that, 503 `decode_busy` with
  Retry-After, instead of a queue that grows without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prototok import Encoding
from prototok.recipe import Arrangement
from service.errors import ServiceError
from service.settings import ServiceSettings

from .decode_pass import Job, Outcome
from .decode_process import DecodeProcess, DecodeUnavailable
from .telemetry import DECODE_BATCH

log = logging.getLogger("prototok.api")


class DecodeBusy(ServiceError):
    """More decodes waiting than PROTOTOK_DECODE_QUEUE_MAX: come back in a second."""

    code, status = "decode_busy", 503
    headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}


@dataclass
class Pending:
    """One request waiting in a lane, and the future its route awaits."""

    job: Job
    future: Future = field(default_factory=Future)


def settle(future: Future, outcome: Outcome) -> None:
    """Hand a request its outcome, unless its client went away (asyncio cancelled the future)."""
    if not future.set_running_or_notify_cancel():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class DecodeLane:
    """The decoding lane of one model: the bounded queue, and the thread that gathers batches
    from it and has the model's decode process decode them."""

    def __init__(self, model: str, settings: ServiceSettings):
        self.model, self.settings = model, settings
        self.process = DecodeProcess(model, settings)
        self.waiting: queue.Queue[Pending | None] = queue.Queue(maxsize=settings.decode_queue_max)
        self.carry: Pending | None = None  # taken but did not fit the last batch: first in the next
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"decode-{model}", daemon=True)

    def start(self) -> DecodeLane:
        self.thread.start()
        return self

    def submit_encoding(self, enc: Encoding) -> Future:
        return self._submit(Job(enc=enc))

    def submit_vectors(self, e: torch.Tensor, m: torch.Tensor, lengths: list[int], arrangement: Arrangement,
                       sink: bool) -> Future:
        return self._submit(Job(e=e, m=m, lengths=lengths, arrangement=arrangement, sink=sink))

    def _submit(self, job: Job) -> Future:
        if self.closed.is_set():
            raise DecodeUnavailable(f"the decode lane of model '{self.model}' is closed (the API is shutting down)")
        pending = Pending(job)
        try:
            self.waiting.put_nowait(pending)
        except queue.Full:
            raise DecodeBusy(f"{self.settings.decode_queue_max} decodes are waiting for model '{self.model}' "
                             "(PROTOTOK_DECODE_QUEUE_MAX); retry in a second") from None
        return pending.future

    def close(self, timeout: float = 30) -> None:
        """Finish the batch in hand, fail what still waits with 503, stop the thread and the process."""
        self.closed.set()
        with suppress(queue.Full):
            self.waiting.put_nowait(None)  # wakes the thread if it waits for work (a full queue wakes it anyway)
        if self.thread.ident is None:  # never started: nothing else will answer what waits
            self._fail_waiting()
        elif self.thread.is_alive():
            self.thread.join(timeout)
        self.process.close()

    # --- the lane's thread ---

    def _run(self) -> None:
        try:
            self.process.start()
        except Exception:  # the first batch tries again, and its requests hear why
            log.exception("decode lane of model %s could not start its decode process", self.model)
        while batch := self._gather():
            self._decode(batch)
        self._fail_waiting()

    def _gather(self) -> list[Pending]:
        """The next batch: whatever waits, up to the position budget, after a short wait for more.
        [] once the lane is closed."""
        if self.closed.is_set():
            return []
        first, self.carry = self.carry or self.waiting.get(), None
        if first is None:  # close() woke us
            return []
        batch, total = [first], first.job.positions
        deadline = time.monotonic() + self.settings.decode_batch_wait_ms / 1000
        while total < self.settings.decode_batch_tokens:
            try:
                pending = self.waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pending is None:  # close(): decode what we hold, then stop
                break
            if total + pending.job.positions > self.settings.decode_batch_tokens:
                self.carry = pending
                break
            batch.append(pending)
            total += pending.job.positions
        return batch

    def _decode(self, batch: list[Pending]) -> None:
        try:
            outcomes, passes = self.process.run([p.job for p in batch])
        except Exception as exc:  # noqa: BLE001 - the decode process died (503) or a bug (500): these requests fail, the lane goes on
            outcomes, passes = [exc] * len(batch), []
        for size in passes:
            DECODE_BATCH.observe(size)
        for pending, outcome in zip(batch, outcomes):
            settle(pending.future, outcome)

    def _fail_waiting(self) -> None:
        left = [self.carry]
        with suppress(queue.Empty):
            while True:
                left.append(self.waiting.get_nowait())
        gone = DecodeUnavailable(f"the API is shutting down; the decode of model '{self.model}' did not run")
        for pending in filter(None, left):
            settle(pending.future, gone)
