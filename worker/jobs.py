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

from rq import get_current_job
from rq.job import Job

from prototok import Encoding, PrototokError, decode, encode_texts, load_model
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


def encode_job(texts: list[str], model: str, config: dict) -> list[str]:
    """Encode the texts together, verify they decode, store them; returns the embedding ids."""
    job = get_current_job()
    assert job is not None, "encode_job runs inside an RQ worker"
    start = time.perf_counter()
    job.meta["worker_pid"] = os.getpid()  # the process that holds the model; the same for every job
    retrying(f"job {job.id}: starting", job.save_meta)
    lm = load_model(model)
    cfg = config_from_dict(config)
    tokens, first = strip(lm, texts[0], cfg)
    report = ProgressReporter(job, get_settings().progress_every, first,
                              check=lambda step: stop_if_canceled(job, f"at step {step}"))
    if tokens:
        report.save(tokens=tokens, correct=[False] * len(tokens))
    try:
        stop_if_canceled(job, "before it started")
        encodings = encode_texts(lm, texts, cfg, progress=report)
        report.flush()
        decode(lm, encodings)  # one forward pass: never store an encoding that does not rebuild its text
        stop_if_canceled(job, "after optimising")
    except (PrototokError, JobCanceled) as exc:
        job.meta["error"] = {"code": exc.code, "message": str(exc)}
        retrying(f"job {job.id}: saving its error", job.save_meta)
        raise
    finally:  # finished, failed or timed out: the last step reached is on record (best effort)
        report.flush()
    ids = store_result(job, encodings)
    best_effort(f"job {job.id}: encode-time metric",
                lambda: record_encode(job.connection, time.perf_counter() - start, model=model))
    return ids


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
