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

from app.metrics import record_encode
from app.queues import config_from_dict
from app.store import EncodingStore
from prototok import PrototokError, decode, encode_texts, load_model
from prototok.settings import get_settings

from .progress import ProgressReporter, strip


def encode_job(texts: list[str], model: str, config: dict) -> list[str]:
    """Encode the texts together, verify they decode, store them; returns the embedding ids."""
    job = get_current_job()
    assert job is not None, "encode_job runs inside an RQ worker"
    start = time.perf_counter()
    job.meta["worker_pid"] = os.getpid()  # the process that holds the model; the same for every job
    job.save_meta()
    lm = load_model(model)
    cfg = config_from_dict(config)
    tokens, first = strip(lm, texts[0], cfg)
    report = ProgressReporter(job, get_settings().progress_every, first)
    if tokens:
        report.save(tokens=tokens, correct=[False] * len(tokens))
    try:
        encodings = encode_texts(lm, texts, cfg, progress=report)
        report.flush()
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
