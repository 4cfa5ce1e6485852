"""GET /v1/jobs/{job_id}: state, progress, result ids or the reason it failed.

A job whose worker died stays 'started' in RQ until its execution heartbeat expires;
`StartedJobRegistry.cleanup()` then moves it to failed (AbandonedJobError). We run that
cleanup before answering about a running job, so a dead worker's job turns `failed`
within PROTOTOK_HEARTBEAT_TTL_S even when no other worker is alive to do it (but not in
the first TTL after a Redis restart: `safejob.cleanup_abandoned`).
"""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Response
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result

from .. import cancel, safejob
from ..deps import RedisDep, SettingsDep, settings_dep
from ..errors import CorruptJobRecord, JobEnded, JobNotFound
from ..queues import served_models
from ..schemas import ErrorBody, JobView, Progress

router = APIRouter(prefix="/v1", tags=["jobs"])

STATES = {
    JobStatus.QUEUED: "queued", JobStatus.DEFERRED: "queued", JobStatus.SCHEDULED: "queued",
    JobStatus.STARTED: "running", JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed", JobStatus.STOPPED: "failed", JobStatus.CANCELED: "failed",
}


def fetch(job_id: str, conn) -> Job:
    """The one place a route looks a job up: read as JSON and checked (safejob), dead workers' jobs failed."""
    try:
        job = safejob.fetch(job_id, conn)
    except NoSuchJobError:
        raise JobNotFound(f"no job with id '{job_id}' (unknown, or its record expired)") from None
    except safejob.RefusedJob:
        raise CorruptJobRecord(f"the record of job '{job_id}' in Redis was not written by this service "
                               "(not valid JSON, or another function); it is not run or shown") from None
    if job.get_status(refresh=False) == JobStatus.STARTED:
        safejob.cleanup_abandoned(conn, job.origin, settings_dep().heartbeat_ttl_s)
        job.refresh()
    return job


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


@router.get("/jobs/{job_id}", response_model=JobView, responses={s: {"model": ErrorBody} for s in (404, 500)},
            summary="State and progress of an encode job")
def get_job(job_id: str, conn: RedisDep) -> JobView:
    job = fetch(job_id, conn)
    status = STATES.get(job.get_status(refresh=False), "queued")
    progress = Progress(**job.meta.get("progress", {"max_steps": 0}))
    view = JobView(job_id=job.id, status=status, model=job.meta.get("model"), progress=progress,
                   enqueued_at=job.enqueued_at, started_at=job.started_at, ended_at=job.ended_at)
    if status in ("queued", "running"):
        view.cancel_requested = cancel.requested(conn, job.id)
    if status == "queued":
        view.waiting_for_worker = view.model is not None and view.model not in served_models(conn)
    elif status == "finished":
        view.embedding_ids = job.meta.get("embedding_ids") or job.return_value()
    elif status == "failed":
        view.error_code, view.error = failure(job, progress.step)
    return view


@router.delete("/jobs/{job_id}", response_model=JobView, status_code=200,
               responses={202: {"model": JobView, "description": "a running job: it stops at its next step"},
                          **{s: {"model": ErrorBody} for s in (404, 409, 500)}},
               summary="Cancel a queued job, or stop a running one at its next step")
def cancel_job(job_id: str, response: Response, conn: RedisDep, settings: SettingsDep) -> JobView:
    """A queued job is canceled at once (200, `failed` with `error_code: canceled`); a running one
    gets a cancel flag (202, `cancel_requested: true`) and stops at its next progress report,
    storing nothing. Canceling a canceled job answers its state again; a finished or otherwise
    failed job is 409 `job_ended`."""
    view = get_job(job_id, conn)
    if view.status == "finished" or (view.status == "failed" and view.error_code != "canceled"):
        raise JobEnded(f"job '{job_id}' already ended ({view.status}); delete its embeddings instead")
    if view.status == "failed":
        return view
    cancel.request(conn, job_id, settings.job_timeout_s + 3600)  # first: a worker taking it now still sees it
    job = fetch(job_id, conn)
    if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
        with contextlib.suppress(InvalidJobOperation):
            job.cancel()
    view = get_job(job_id, conn)
    if view.status == "running":
        response.status_code = 202
    return view
