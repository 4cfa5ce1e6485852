"""Job progress as the API shows it: the latest numbers, a bounded history, the token strip.

The optimisation reports every step (`prototok.Progress`); writing each one to Redis would
cost more than a tiny model's step, so the reporter saves every PROTOTOK_PROGRESS_EVERY steps
and once more at the end. All it saves is plain JSON-able data in `job.meta["progress"]`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rq.job import Job

from prototok import LanguageModel, Progress
from prototok.codec import chunk, chunk_size
from prototok.recipe import EncodeConfig

from .retry import REDIS_DOWN, retrying

log = logging.getLogger("prototok.worker")

HISTORY_POINTS = 500  # (step, loss, accuracy) points kept per job; older ones are thinned, never the range
STRIP_TOKENS = 256  # positions of the first text whose right/wrong state the job reports


class ProgressReporter:
    """A `ProgressFn` that saves the latest progress into the job's meta, not every step.

    Besides the numbers it keeps what the web page draws: a bounded history of
    (step, loss, accuracy) and, for the first STRIP_TOKENS tokens of the first text, which
    positions the best vectors so far rebuild. Steps restart when a long batch of chunks is
    optimised in several calls; the history's steps count on across them.
    """

    def __init__(self, job: Job, every: int, first: list[list[int]] | None = None,
                 check: Callable[[int], None] | None = None):
        self.job, self.every = job, max(1, every)
        self.check = check  # called with the step at each report: may raise to stop the job (cancel)
        self.quiet_until = 0.0  # after a failed write, skip reports for a moment rather than stall the steps
        self.first = first or []  # token ids of the first text's leading chunks (those in the strip)
        self.points: list[dict] = []  # one per `stride` steps
        self.history: list[dict] = []  # the points and the latest report
        self.stride, self.offset, self.last_step = 1, 0, 0
        self.calls, self.pending = 0, None  # optimisation calls seen; a report not yet saved

    def __call__(self, p: Progress) -> None:
        if p.step <= self.last_step:  # a new call of `optimize`: the next batch of chunks
            self.calls += 1
            self.offset += self.last_step
        self.last_step = p.step
        self.pending = p
        if p.step % self.every == 0 or p.step in (1, p.max_steps):
            self.flush()
            if self.check is not None:
                self.check(p.step)

    def flush(self) -> None:
        """Save the latest report, if it is not saved yet (a job that converges mid-interval)."""
        p, self.pending = self.pending, None
        if p is None:
            return
        acc = round(sum(p.accuracy) / len(p.accuracy), 4) if p.accuracy else 0.0
        self.remember(self.offset + p.step, round(p.loss, 4), acc)
        extra = {"correct": self.correct(p.predicted)} if self.calls == 0 and p.predicted is not None else {}
        self.save(step=p.step, max_steps=p.max_steps, accuracy=acc, loss=round(p.loss, 4), done=p.done,
                  chunks=len(p.accuracy), history=self.history, **extra)

    def remember(self, step: int, loss: float, accuracy: float) -> None:
        """Add a point at most every `stride` steps; the latest point is always last in the history."""
        point = {"step": step, "loss": loss, "accuracy": accuracy}
        if self.points and step - self.points[-1]["step"] < self.stride:
            self.history = [*self.points, point]
            return
        self.points.append(point)
        if len(self.points) > HISTORY_POINTS - 1:  # keep the whole run, at half the density
            self.points, self.stride = self.points[::2], self.stride * 2
        self.history = self.points if self.points[-1] is point else [*self.points, point]

    def correct(self, predicted) -> list[bool]:  # predicted: (S, Nmax) tensor
        """Right/wrong per position of the first text's strip, from the first call's predictions."""
        out: list[bool] = []
        for q, ids in enumerate(self.first[: predicted.shape[0]]):
            out += [int(a) == b for a, b in zip(predicted[q, : len(ids)].tolist(), ids)]
        return out[:STRIP_TOKENS]

    def save(self, **progress: object) -> None:
        """Best effort: a report that Redis does not take is dropped and the job goes on
        (worker/retry.py); the next report, or the final store, writes the latest state."""
        self.job.meta["progress"] = {**self.job.meta.get("progress", {}), **progress}
        if time.monotonic() < self.quiet_until:
            return
        try:
            retrying(f"job {self.job.id}: progress", self.job.save_meta, attempts=2)
        except REDIS_DOWN:
            log.warning("job %s: progress at step %s not saved (Redis unavailable); optimisation goes on",
                        self.job.id, progress.get("step"))
            self.quiet_until = time.monotonic() + 2.0


def strip(lm: LanguageModel, text: str, cfg: EncodeConfig) -> tuple[list[str], list[list[int]]]:
    """The first STRIP_TOKENS tokens of a text as strings, and the chunks of ids that hold them.

    Chunks come from the codec's own split, so chunk q is sequence q of the first optimisation
    call. Any text the tokenizer cannot reproduce gets no strip; `encode_texts` refuses it anyway.
    """
    ids = lm.tokenize(text)
    if not ids or lm.detokenize(ids) != text:
        return [], []
    pieces, shown = [], 0
    for piece in chunk(ids, chunk_size(lm, cfg)):
        if shown >= STRIP_TOKENS:
            break
        pieces.append(piece)
        shown += len(piece)
    return [lm.detokenize([t]) for t in ids[:STRIP_TOKENS]], pieces
