"""The encode job: adapts RQ to `prototok.encode_texts`, nothing more.

Runs inside a worker process that has already loaded its model; `load_model` returns
that same cached object, so a job never loads weights. Progress goes to `job.meta`
every PROTOTOK_PROGRESS_EVERY steps, and the last step once the job ends, so a finished or
failed job shows where it stopped; results go to the encoding store, each recorded as owned
by the API key that queued the job (`meta["owner"]`); a caller's
error (text the tokenizer cannot reproduce, ...) is written to `job.meta["error"]`
with its stable code before the job fails.
"""

from __future__ import annotations

import os
import time

from rq import get_current_job
from rq.job import Job

from app.metrics import record_encode
from app.queues import config_from_dict
from app.store import EncodingStore
from prototok import Progress, PrototokError, decode, encode_texts, load_model
from prototok.settings import get_settings


class ProgressReporter:
    """A `ProgressFn` that saves the latest progress into the job's meta, not every step."""

    def __init__(self, job: Job, every: int):
        self.job, self.every = job, max(1, every)
        self.last: Progress | None = None  # the latest report, saved or not
        self.saved: Progress | None = None

    def __call__(self, p: Progress) -> None:
        self.last = p
        if p.step % self.every and p.step not in (1, p.max_steps):
            return
        self.write(p)

    def write(self, p: Progress) -> None:
        acc = sum(p.accuracy) / len(p.accuracy) if p.accuracy else 0.0
        self.save(step=p.step, max_steps=p.max_steps, accuracy=round(acc, 4), loss=round(p.loss, 4), done=p.done)
        self.saved = p

    def flush(self) -> None:
        """Save the latest report if it was skipped: a job that stops early at step 49 says 49, not 40."""
        if self.last is not None and self.last is not self.saved:
            self.write(self.last)

    def save(self, **progress: object) -> None:
        self.job.meta["progress"] = {**self.job.meta.get("progress", {}), **progress}
        self.job.save_meta()


def encode_job(texts: list[str], model: str, config: dict) -> list[str]:
    """Encode the texts together, verify they decode, store them; returns the embedding ids."""
    job = get_current_job()
    assert job is not None, "encode_job runs inside an RQ worker"
    start = time.perf_counter()
    job.meta["worker_pid"] = os.getpid()  # the process that holds the model; the same for every job
    job.save_meta()
    lm = load_model(model)
    cfg = config_from_dict(config)
    report = ProgressReporter(job, get_settings().progress_every)
    try:
        encodings = encode_texts(lm, texts, cfg, progress=report)
        decode(lm, encodings)  # one forward pass: never store an encoding that does not rebuild its text
    except PrototokError as exc:
        job.meta["error"] = {"code": exc.code, "message": str(exc)}
        job.save_meta()
        raise
    finally:  # finished, failed or timed out: the last step reached is on record
        report.flush()
    store = EncodingStore(job.connection)
    owner = str(job.meta.get("owner", ""))
    ids = [store.put(enc, job_id=job.id, owner=owner) for enc in encodings]
    acc = sum(e.c_tokens for e in encodings) / sum(e.n_tokens for e in encodings)
    job.meta["embedding_ids"] = ids
    report.save(accuracy=round(acc, 4), done=len(encodings))
    record_encode(job.connection, time.perf_counter() - start, model=model)
    return ids
