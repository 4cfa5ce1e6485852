"""DELETE /v1/jobs/{id}: a queued job is canceled before it runs, a running one stops at its
next step with nothing stored, and the worker goes on to the next job."""

from __future__ import annotations

import pytest
from conftest import LocalWorker, wait_for, wait_job

from service import safejob

pytestmark = pytest.mark.integration

LONG = "a text long enough that a random tiny model keeps optimising it for a long while"


def stored_for(conn, job_id: str) -> list[bytes]:
    return [k for k in conn.scan_iter("prototok:emb:*") if conn.hget(k, "job_id") == job_id.encode()]


@pytest.fixture(scope="module")
def tiny_worker(api):
    """One job at a time (PROTOTOK_WORKER_MAX_ROWS=1), so a job posted behind a running one stays
    queued (a batching worker would take it into its batch at the next step)."""
    with api.configured(PROTOTOK_WORKER_MAX_ROWS="1"):
        worker = LocalWorker("tiny-llama").start()
    yield worker
    worker.stop()


def test_cancel_a_queued_and_a_running_job(api, tiny_worker, service_redis):
    running = api.http.post("/v1/encode", json={"text": LONG, "options": {"max_steps": 5000, "seeds": 1}}).json()
    wait_for(lambda: api.http.get(f"/v1/jobs/{running['job_id']}").json()["progress"]["step"] >= 5, 60,
             "the long job to run", tiny_worker, every=0.05)
    queued = api.http.post("/v1/encode", json={"text": "behind it", "options": {"max_steps": 3}}).json()
    assert api.http.get(f"/v1/jobs/{queued['job_id']}").json()["status"] == "queued"

    r = api.http.delete(f"/v1/jobs/{queued['job_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "failed" and r.json()["error_code"] == "canceled"

    r = api.http.delete(f"/v1/jobs/{running['job_id']}")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    body = wait_job(api, running["job_id"], 60, tiny_worker, every=0.05)
    assert body["status"] == "failed" and body["error_code"] == "canceled", body
    assert "nothing was stored" in body["error"] and body["progress"]["step"] < 5000
    assert stored_for(service_redis, running["job_id"]) == []
    again = api.http.delete(f"/v1/jobs/{running['job_id']}")
    assert again.status_code == 200 and again.json()["error_code"] == "canceled"

    assert "worker_pid" not in safejob.fetch(queued["job_id"], service_redis).meta  # it never ran
    after = api.http.post("/v1/encode", json={"text": "next", "options": {"max_steps": 3}}).json()["job_id"]
    assert wait_job(api, after, 60, tiny_worker)["status"] == "finished"
    ended = api.http.delete(f"/v1/jobs/{after}")
    assert ended.status_code == 409 and ended.json()["code"] == "job_ended"
    assert api.http.delete("/v1/jobs/no-such-job").json()["code"] == "job_not_found"
