"""GET /v1/jobs/{job_id}: state, progress, queue position, result ids or the reason it failed.

A job whose worker died stays 'started' in RQ until its execution heartbeat expires;
`StartedJobRegistry.cleanup()` then moves it to failed (AbandonedJobError). We run that
cleanup before answering about a running job, so a dead worker's job turns `failed`
within PROTOTOK_HEARTBEAT_TTL_S even when no other worker is alive to do it (but not in
the first TTL after a Redis restart: `safejob.cleanup_abandoned`).

`owned_job` is the one way a route gets a job by id: it checks the id's form before RQ sees it
and the caller's right to see the job, and answers the same 404 for each failure. Any route with
a `{job_id}` takes it as a dependency (`OwnedJobDep`). Jobs are read as JSON and checked
(`service/safejob.py`): a record this service did not write is 500 `corrupt_job_record`.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result

from service import cancel, safejob
from service.durations import typical_encode_seconds
from service.errors import CorruptJobRecord, JobEnded, JobNotFound
from service.queues import live_workers
from service.store import valid_id

from ..auth import CallerDep
from ..deps import RedisDep, SettingsDep, StoreDep, settings_dep
from ..schemas import ErrorBody, JobProgress, JobView

router = APIRouter(prefix="/v1", tags=["jobs"])

STATES = {
    JobStatus.QUEUED: "queued", JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued",
    JobStatus.STARTED: "running", JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed", JobStatus.STOPPED: "failed", JobStatus.CANCELED: "failed",
}


def not_found(job_id: str) -> JobNotFound:
    """One answer for 'no such id', 'not an id' and 'not yours'."""
    return JobNotFound(f"no job with id {job_id[:64]!r} (unknown, or its record expired)")


def fetch(job_id: str, conn: Redis) -> Job:
    if not valid_id(job_id):  # RQ raises ValueError on ids such as 'a.b' or '*'
        raise not_found(job_id)
    try:
        job = safejob.fetch(job_id, conn)
    except NoSuchJobError:
        raise not_found(job_id) from None
    except safejob.RefusedJob:
        raise CorruptJobRecord(f"the record of job {job_id[:64]!r} in Redis was not written by this service "
                               "(not valid JSON, or another function); it is not run or shown") from None
    if job.get_status(refresh=False) == JobStatus.STARTED:
        safejob.cleanup_abandoned(conn, job.origin, settings_dep().heartbeat_ttl_s)
        job.refresh()
    return job


def owned_job(job_id: str, conn: RedisDep, caller: CallerDep) -> Job:
    """The job, if the caller's key made it (or is an admin key); else 404 as for no such job."""
    job = fetch(job_id, conn)
    if not caller.owns(job.meta.get("owner")):
        raise not_found(job_id)
    return job


OwnedJobDep = Annotated[Job, Depends(owned_job)]


def failure(job: Job, step: int) -> tuple[str, str]:
    """(code, message) of a failed job, from what the job said or from how RQ ended it."""
    told = job.meta.get("error")
    if told:
        return told["code"], told["message"]
    result = job.latest_result()
    text = (result.exc_string or "") if result and result.type == Result.Type.FAILED else ""
    if "AbandonedJobError" in text:
        return "worker_died", (f"the worker running this job stopped (killed or crashed) at step {step}; "
                               "submit the texts again")
    if "JobTimeoutException" in text:
        return "job_timeout", f"the job ran past its time limit of {job.timeout} s"
    if job.get_status(refresh=False) in (JobStatus.STOPPED, JobStatus.CANCELED):
        return "canceled", "the job was canceled before it started (DELETE /v1/jobs/{id}); nothing was stored"
    last = [line for line in text.strip().splitlines() if line.strip()]
    return "encode_failed", last[-1] if last else "the job failed without a message"


def place_in_queue(view: JobView, job: Job, conn: Redis, workers: int) -> None:
    """Jobs ahead of this one, and a rough time to its end: the model's typical encode time for
    each job ahead, shared among the jobs that run at once (its live workers, or more: a worker's
    continuous batch runs several), half of one for each running job, and one for itself. Rough
    by design: jobs differ in size; it says minutes vs hours."""
    queue = safejob.queue(job.origin, conn)
    view.queue_position = queue.get_job_position(job.id)
    typical = typical_encode_seconds(conn, view.model) if view.model else None
    if view.queue_position is None or not workers or typical is None:
        return
    running = safejob.registry(StartedJobRegistry, job.origin, conn).count
    at_once = max(workers, running)
    view.eta_s = round(typical * ((view.queue_position + running / 2) / at_once + 1), 3)


@router.get("/jobs/{job_id}", response_model=JobView, responses={s: {"model": ErrorBody} for s in (404, 500)},
            summary="State and progress of an encode job")
def get_job(job: OwnedJobDep, conn: RedisDep, store: StoreDep) -> JobView:
    status = STATES.get(job.get_status(refresh=False), "queued")
    progress = JobProgress(**job.meta.get("progress", {"max_steps": 0}))
    view = JobView(job_id=job.id, status=status, model=job.meta.get("model"), progress=progress,
                   enqueued_at=job.enqueued_at, started_at=job.started_at, ended_at=job.ended_at)
    if status in ("queued", "running"):
        view.cancel_requested = cancel.requested(conn, job.id)
    if status == "queued":
        workers = sum(1 for model, _ in live_workers(conn) if model == view.model)
        view.waiting_for_worker = view.model is not None and not workers
        place_in_queue(view, job, conn, workers)
    elif status == "finished":
        view.embedding_ids = store.existing(job.meta.get("embedding_ids") or job.return_value() or [])
        sizes = job.meta.get("sizes") or {}
        view.sizes = {i: sizes[i] for i in view.embedding_ids if sizes.get(i)} or None
    elif status == "failed":
        view.error_code, view.error = failure(job, progress.step)
        if view.ended_at is None:  # RQ records no end time when it fails a job (or a dead worker's job)
            result = job.latest_result()
            view.ended_at = result.created_at if result else None
    return view


@router.delete("/jobs/{job_id}", response_model=JobView, status_code=200,
               responses={202: {"model": JobView, "description": "a running job: it stops at its next step"},
                          **{s: {"model": ErrorBody} for s in (404, 409, 500)}},
               summary="Cancel a queued job, or stop a running one at its next step")
def cancel_job(job: OwnedJobDep, response: Response, conn: RedisDep, store: StoreDep,
               settings: SettingsDep) -> JobView:
    """A queued job is canceled at once (200, `failed` with `error_code: canceled`); a running one
    gets a cancel flag (202, `cancel_requested: true`) and stops at its next progress report,
    storing nothing. Canceling a canceled job answers its state again; a finished or otherwise
    failed job is 409 `job_ended`."""
    view = get_job(job, conn, store)
    if view.status == "finished" or (view.status == "failed" and view.error_code != "canceled"):
        raise JobEnded(f"job '{job.id}' already ended ({view.status}); delete its embeddings instead")
    if view.status == "failed":
        return view
    cancel.request(conn, job.id, settings.job_timeout_s + 3600)  # first: a worker taking it now still sees it
    job = fetch(job.id, conn)
    if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        with contextlib.suppress(InvalidJobOperation):
            job.cancel()
    view = get_job(fetch(job.id, conn), conn, store)
    if view.status == "running":
        response.status_code = 202
    return view
