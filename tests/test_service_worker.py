"""Workers: jobs run in the worker's own process (no fork), a killed worker process's job ends
failed (the API a process too), and a job past its time limit fails while the worker goes on
(the worker in this process's main thread, where the limit is SIGALRM as in `python -m worker`)."""

from __future__ import annotations

import time

import pytest
from conftest import LocalWorker, start_worker, wait_for, wait_job, wait_served

pytestmark = pytest.mark.integration

HEARTBEAT_TTL_S = 4  # service_env's PROTOTOK_HEARTBEAT_TTL_S


def test_jobs_run_in_the_worker_process_itself(api, tiny_worker):
    """SimpleWorker: no fork per job, so the process that loaded the model runs every job (the
    worker runs on a thread of the test process: that process)."""
    from conftest import SERVICE_REDIS_URL

    from app.deps import redis_for
    from service import safejob

    pids = []
    for text in ("one", "two"):
        job_id = api.http.post("/v1/encode", json={"text": text, "options": {"max_steps": 3}}).json()["job_id"]
        assert wait_job(api, job_id, 300, tiny_worker)["status"] == "finished"
        pids.append(safejob.fetch(job_id, redis_for(SERVICE_REDIS_URL)).meta["worker_pid"])
    assert pids == [tiny_worker.pid, tiny_worker.pid]


def test_killed_worker_leaves_its_job_failed_with_a_reason(process_api, service_logs):
    """kill -9 mid-job: the job must turn `failed` (worker_died), not stay `running` forever;
    the job queued behind it stays queued, flagged as waiting for a worker. One job at a time
    (PROTOTOK_WORKER_MAX_ROWS=1), so the job behind never joins the batch, whatever the host's cap."""
    api = process_api
    worker = start_worker(service_logs, "tiny-gpt-neox", PROTOTOK_WORKER_MAX_ROWS="1")
    try:
        wait_served(api, "tiny-gpt-neox", worker)
        text = "a text long enough that a random tiny model keeps optimising it for a long while"
        job_id = api.http.post("/v1/encode", json={"text": text, "model": "tiny-gpt-neox",
                                                   "options": {"max_steps": 5000, "seeds": 1}}).json()["job_id"]

        def running_with_progress():
            body = api.http.get(f"/v1/jobs/{job_id}").json()
            return body["status"] == "running" and body["progress"]["step"] >= 5

        wait_for(running_with_progress, 120, "the job to run", worker)
        behind = api.http.post("/v1/encode", json={"text": "next in line", "model": "tiny-gpt-neox"}).json()["job_id"]
        assert api.http.get(f"/v1/jobs/{behind}").json()["waiting_for_worker"] is False
        worker.kill9()
        killed_at = time.monotonic()
        body = wait_job(api, job_id, 10 * HEARTBEAT_TTL_S)
    finally:
        worker.stop()
    assert body["status"] == "failed", body
    assert body["error_code"] == "worker_died" and "killed or crashed" in body["error"]
    assert body["ended_at"] is not None  # RQ records none for a job it fails on a dead worker's behalf
    assert time.monotonic() - killed_at < 10 * HEARTBEAT_TTL_S
    wait_for(lambda: "tiny-gpt-neox" not in api.served(), 3 * HEARTBEAT_TTL_S, "the dead worker to drop out")
    r = api.http.post("/v1/encode", json={"text": "x", "model": "tiny-gpt-neox"})
    assert r.status_code == 409 and r.json()["code"] == "model_not_served"
    queued = api.http.get(f"/v1/jobs/{behind}").json()  # kept, and says why it does not move
    assert queued["status"] == "queued" and queued["waiting_for_worker"] is True, queued


def test_job_past_its_time_limit_fails_and_the_worker_goes_on(api):
    """PROTOTOK_JOB_TIMEOUT_S: RQ ends the job (job_timeout); the same worker takes the next job.
    A queue of its own: the module's worker on a thread does not take these jobs."""
    worker = LocalWorker("tiny-llama")
    try:
        with api.configured(PROTOTOK_JOB_TIMEOUT_S="2", PROTOTOK_QUEUE_NAME="prototok-timeout"):
            text = "a text long enough that a random tiny model keeps optimising it for a long while"
            job_id = api.http.post("/v1/encode", json={"text": text, "options": {"max_steps": 5000, "seeds": 1}}).json()["job_id"]
            worker.burst()
            body = wait_job(api, job_id, 120, worker)
            assert body["status"] == "failed", body
            assert body["error_code"] == "job_timeout" and "2 s" in body["error"], body
            assert body["ended_at"] is not None, body
            assert 0 < body["progress"]["step"] < 5000
            after = api.http.post("/v1/encode", json={"text": "next", "options": {"max_steps": 3}}).json()["job_id"]
            worker.burst()
            assert wait_job(api, after, 120, worker)["status"] == "finished"
    finally:
        worker.stop()
