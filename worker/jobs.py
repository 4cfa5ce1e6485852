"""The encode job: adapts RQ to `prototok.encode_texts`, nothing more.

Runs inside a worker process that has already loaded its model; `load_model` returns
that same cached object, so a job never loads weights. Progress goes to `job.meta`
every PROTOTOK_PROGRESS_EVERY steps, and the last step once the job ends, so a finished or
failed job shows where it stopped; results go to the encoding store, each recorded as owned
by the API key that queued the job (`meta["owner"]`); a caller's
error (text the tokenizer cannot reproduce, ...) is written to `job.meta["error"]`
with its stable code before the job fails.

Redis may go away at any moment (worker/retry.py): a progress write that fails is
skipped (optimisation goes on; the next report tries again), and the finished result is
held in memory and stored, under ids fixed beforehand, in one transaction retried until
Redis takes it, so a retry never stores a second copy.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from rq import get_current_job
from rq.job import Job

from prototok import Encoding, LanguageModel, PrototokError, decode, load_model
from prototok.codec import EncodeTask
from prototok.optimize import step_runs
from service import cancel
from service.durations import record_encode
from service.queues import config_from_dict
from service.safejob import SERIALIZER
from service.settings import get_settings
from service.store import EncodingStore

from .progress import ProgressReporter, strip
from .retry import REDIS_DOWN, best_effort, retrying

log = logging.getLogger("prototok.worker")


class JobCanceled(Exception):
    """DELETE /v1/jobs/{id} asked this job to stop (service/cancel.py)."""

    code = "canceled"


def stop_if_canceled(job: Job, when: str) -> None:
    """Raise JobCanceled if the API asked; with Redis away, carry on (the next check will tell)."""
    try:
        asked = cancel.requested(job.connection, job.id)
    except REDIS_DOWN:
        return
    if asked:
        raise JobCanceled(f"canceled {when} (DELETE /v1/jobs/{job.id}); nothing was stored")


class EncodeJob:
    """One RQ job's side of an encode, whatever batch it runs in: its config, its progress
    reporter (which also hears a cancel), the core's `EncodeTask`, and at the end the check
    and the store. The worker's continuous batch (worker/batch.py) holds several at once;
    `encode_job` runs one alone.

    Building one fails (PrototokError, recorded in the job's meta with its code) for a request
    the core refuses: bad options, a text the tokenizer cannot give back."""

    def __init__(self, job: Job, lm: LanguageModel, max_batch_rows: int | None = None):
        """`max_batch_rows`: the most rows one optimisation batch of this job may have (a continuous
        batch's cap: a larger job is optimised a cap's worth at a time, taking turns with others)."""
        self.job, self.lm, self.started = job, lm, time.perf_counter()
        texts, model, config = job.args
        self.model = model
        job.meta["worker_pid"] = os.getpid()  # the process that holds the model; the same for every job
        retrying(f"job {job.id}: starting", job.save_meta)
        cfg = config_from_dict(config)
        if max_batch_rows is not None and max_batch_rows < cfg.max_batch_rows:
            cfg = cfg.with_(max_batch_rows=max_batch_rows)
        tokens, first = strip(lm, texts[0], cfg)
        self.report = ProgressReporter(job, get_settings().progress_every, first,
                                       check=lambda step: stop_if_canceled(job, f"at step {step}"))
        if tokens:
            self.report.save(tokens=tokens, correct=[False] * len(tokens))
        with self.failure_recorded():
            stop_if_canceled(job, "before it started")
            self.task = EncodeTask(lm, texts, cfg, progress=self.report)

    @contextmanager
    def failure_recorded(self) -> Iterator[None]:
        """A caller's error (PrototokError) or a cancel is written to the job's meta with its stable code."""
        try:
            yield
        except (PrototokError, JobCanceled) as exc:
            self.record_failure(exc)
            raise

    def record_failure(self, exc: BaseException) -> None:
        """The job's last step on record and, for a caller's error or a cancel, its code and message."""
        self.report.flush()
        if isinstance(exc, (PrototokError, JobCanceled)):
            self.job.meta["error"] = {"code": exc.code, "message": str(exc)}
            retrying(f"job {self.job.id}: saving its error", self.job.save_meta)

    def finish(self) -> list[str]:
        """The task's encodings checked once more (one forward pass: never store an encoding that
        does not rebuild its text) and stored; returns the embedding ids."""
        self.report.flush()
        with self.failure_recorded():
            decode(self.lm, self.task.encodings)
            stop_if_canceled(self.job, "after optimising")
        ids = store_result(self.job, self.task.encodings)
        best_effort(f"job {self.job.id}: encode-time metric",
                    lambda: record_encode(self.job.connection, time.perf_counter() - self.started, model=self.model))
        return ids


def encode_job(texts: list[str], model: str, config: dict) -> list[str]:
    """The RQ job function: encode the texts together, verify they decode, store them; returns the
    embedding ids. The worker runs jobs in its continuous batch instead (worker/batch.py); this
    runs one alone, as a plain RQ worker would."""
    job = get_current_job()
    assert job is not None, "encode_job runs inside an RQ worker"
    work = EncodeJob(job, load_model(model))
    try:
        with work.failure_recorded():
            alone(work.task)
    finally:  # finished, failed or timed out: the last step reached is on record (best effort)
        work.report.flush()
    return work.finish()


def alone(task: EncodeTask) -> None:
    """Step one task to its end by itself (as `prototok.encode_texts` does)."""
    while not task.done:
        if task.run is None:
            task.start_next()
        step_runs(task.lm, [task.run])
        task.advance()


def store_result(job: Job, encodings: list[Encoding]) -> list[str]:
    """Store the encodings and the job's final meta in one transaction, retried until Redis takes it.

    The ids are fixed before the first try, so a try whose reply was lost and is sent again
    rewrites the same keys instead of leaving a copy nobody points to. Each encoding is owned
    by the API key that queued the job (`meta["owner"]`)."""
    ids = [uuid.uuid4().hex for _ in encodings]
    acc = sum(e.c_tokens for e in encodings) / sum(e.n_tokens for e in encodings)
    job.meta["embedding_ids"] = ids
    job.meta["sizes"] = {emb_id: enc.size for emb_id, enc in zip(ids, encodings)}
    job.meta["progress"] = {**job.meta.get("progress", {}), "accuracy": round(acc, 4), "done": len(encodings)}
    store, owner = EncodingStore(job.connection), str(job.meta.get("owner", ""))

    def write() -> None:
        with job.connection.pipeline(transaction=True) as pipe:
            for enc, emb_id in zip(encodings, ids):
                store.put(enc, job_id=job.id, owner=owner, emb_id=emb_id, pipe=pipe)
            pipe.hset(job.key, "meta", SERIALIZER.dumps(job.meta))
            pipe.execute()

    log.info("job %s: result ready (%d encoding(s)); storing it", job.id, len(ids))
    retrying(f"job {job.id}: storing its result", write)
    return ids
