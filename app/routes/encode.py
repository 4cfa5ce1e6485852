"""POST /v1/encode: validate, check the key's quotas, pick the model's queue, enqueue one job for all the texts.

The job records the key that made it (`meta["owner"]`); its worker writes that owner onto each
embedding, so ownership outlives the job record.

A `model_m` job needs a start for its model on the worker that runs it. Whether there is one
depends on the worker's host (its cache dir) and the weights it loaded, neither of which the
API has; so each worker says so in its announcement (service/queues.py), and a model_m job
that no live worker could run is refused here (409 model_m_missing) instead of failing later.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response
from redis import Redis
from rq import Retry

from prototok.errors import ModelMMissing, TextTooLong, UnknownModel
from prototok.models import canonical_name, is_builtin, known_models
from service.errors import ModelNotServed, TooManyTexts
from service.queues import ENCODE_JOB, config_to_dict, served_models, worker_starts
from service.quotas import check_budget, release_job, reserve_job
from service.settings import ServiceSettings

from ..auth import CallerDep
from ..deps import QueuesDep, RedisDep, SettingsDep
from ..schemas import EncodeRequest, ErrorBody, JobAccepted

router = APIRouter(prefix="/v1", tags=["encode"])

ERRORS = {s: {"model": ErrorBody} for s in (400, 404, 409, 413, 422, 429)}
ACCEPTED = {202: {"description": "queued; poll the job (also in the Location header)", "links": {
    "GetJob": {"operationRef": "#/paths/~1v1~1jobs~1{job_id}/get", "parameters": {"job_id": "$response.body#/job_id"},
               "description": "the job's state, progress and, once finished, its embedding ids"}}}}


def check_texts(texts: list[str], settings: ServiceSettings) -> None:
    if len(texts) > settings.max_batch_texts:
        raise TooManyTexts(f"{len(texts)} texts in one request; the limit is {settings.max_batch_texts}")
    for i, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise TextTooLong(f"text {i} has {len(text)} characters; the limit is {settings.max_text_chars}")


def check_served(model: str, served: set[str]) -> None:
    """Refuse a job no worker would ever take; tell an unknown name from a known but idle one."""
    if model in served:
        return
    if is_builtin(model) or "/" in model:  # built in, a hub name or a path: real, just not served
        serving = ", ".join(sorted(served)) or "none (no worker is running)"
        raise ModelNotServed(f"no worker serves model '{model}'; models served now: {serving}")
    raise UnknownModel(f"unknown model '{model}'; built in: {', '.join(known_models())}")


def check_model_m(conn: Redis, model: str, settings: ServiceSettings) -> None:
    """Refuse a model_m job when every live worker of the model has said it has no start. A worker
    that said nothing (an older one) may have one: then the job goes, and fails there if not."""
    said = worker_starts(conn, model)
    if said and all(start == "" for start in said):
        raise ModelMMissing(
            f"model_m: no worker serving model '{model}' has a start (shared m) for it; make one on the workers' "
            f"host with `prototok start train --model {model}` (a worker says so within "
            f"{settings.heartbeat_ttl_s / 3:g} s), or encode without model_m")


@router.post("/encode", status_code=202, response_model=JobAccepted, responses={**ACCEPTED, **ERRORS},
             summary="Queue texts for compression into proto-tokens")
def encode(body: EncodeRequest, response: Response, settings: SettingsDep, conn: RedisDep,
           queues: QueuesDep, caller: CallerDep) -> JobAccepted:
    """Answers at once with a job id; poll `GET /v1/jobs/{job_id}` (the `Location` header) for progress."""
    texts = body.all_texts()
    check_texts(texts, settings)
    model = canonical_name(body.model or settings.model)
    check_served(model, served_models(conn))
    cfg = body.options.to_config(settings)  # a bad option raises InvalidInput naming its field (recipe.py)
    if cfg.model_m:
        check_model_m(conn, model, settings)
    check_budget(texts, cfg.recipe.max_steps, cfg.recipe.seeds, settings)
    job_id = uuid.uuid4().hex
    limit = settings.max_jobs_per_key if settings.auth else 0  # per key: no keys, no per-key limit
    reserve_job(conn, caller, job_id, limit)
    try:
        job = queues(model).enqueue(
            ENCODE_JOB, texts, model, config_to_dict(cfg), job_id=job_id,
            job_timeout=settings.job_timeout_s, result_ttl=settings.job_result_ttl_s,
            failure_ttl=settings.job_result_ttl_s, description=f"encode {len(texts)} text(s) with {model}",
            meta={"model": model, "owner": caller.name, "progress": {"step": 0, "max_steps": cfg.step_budget}},
            retry=Retry(max=settings.job_retries) if settings.job_retries > 0 else None,
        )
    except BaseException:
        release_job(conn, caller, job_id)
        raise
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobAccepted(job_id=job.id, model=model, texts=len(texts), config=config_to_dict(cfg))
