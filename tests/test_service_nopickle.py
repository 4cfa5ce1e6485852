"""Nothing read from Redis is unpickled, and a worker runs only the encode job.

An attacker with write access to Redis plants records that would create a file if they
were unpickled or run; the API answers 500 `corrupt_job_record` (and keeps serving), the
worker fails the job without running it (and keeps serving), and the file never appears.
"""

from __future__ import annotations

import pickle
import uuid

import pytest
from conftest import wait_for, wait_job
from rq.job import JobStatus

from service import safejob
from service.queues import ENCODE_JOB

pytestmark = pytest.mark.integration

QUEUE = "prototok:tiny-llama"  # service_env's queue name and model


class MakesFile:
    """Unpickling this creates `path`: the stand-in for any code an attacker would run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def live_payload(obj: object, path) -> bytes:
    """A pickle of obj that really does create the file when loaded (checked here, then undone)."""
    payload = pickle.dumps(obj)
    loaded = pickle.loads(payload)
    for f in loaded[2] if isinstance(loaded, tuple) else [loaded]:
        f.close()
    assert path.exists()
    path.unlink()
    return payload


def plant(conn, data: bytes | None = None, func: str = ENCODE_JOB, args: tuple = ("x",), push: bool = True) -> str:
    """A job on the tiny-llama queue whose hash holds `data` as written by an attacker."""
    q = safejob.queue(QUEUE, conn)
    job = q.create_job(func, args=args, job_id=uuid.uuid4().hex)  # an id of the API's form
    job.save()
    if data is not None:
        conn.hset(job.key, "data", data)
    if push:
        job.set_status(JobStatus.QUEUED)
        q.push_job_id(job.id)
    return job.id


def ended(conn, job_id: str) -> str | None:
    status = conn.hget(f"rq:job:{job_id}", "status")
    return status.decode() if status in (b"failed", b"finished") else None


def test_pickled_meta_is_refused_by_the_api_not_executed(api, tiny_worker, service_redis, tmp_path):
    target = tmp_path / "pwned-by-meta"
    job_id = api.http.post("/v1/encode", json={"text": "meta", "options": {"max_steps": 3}}).json()["job_id"]
    assert wait_job(api, job_id, 120, tiny_worker)["status"] == "finished"
    service_redis.hset(f"rq:job:{job_id}", "meta", live_payload(MakesFile(str(target)), target))
    r = api.http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 500, r.text
    assert r.json()["code"] == "corrupt_job_record" and "not written by this service" in r.json()["message"]
    assert not target.exists()
    assert api.http.get("/healthz").status_code == 200  # the API is fine, and so is the connection


def test_pickled_job_data_is_never_run_by_the_worker(api, tiny_worker, service_redis, tmp_path):
    target = tmp_path / "pwned-by-data"
    data = live_payload((ENCODE_JOB, None, (MakesFile(str(target)),), {}), target)  # RQ's (func, instance, args, kwargs)
    job_id = plant(service_redis, data)
    assert wait_for(lambda: ended(service_redis, job_id), 60, "the worker to fail the planted job",
                    tiny_worker) == "failed"
    assert not target.exists() and tiny_worker.alive()
    r = api.http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 500 and r.json()["code"] == "corrupt_job_record", r.text
    after = api.http.post("/v1/encode", json={"text": "next", "options": {"max_steps": 3}}).json()["job_id"]
    assert wait_job(api, after, 120, tiny_worker)["status"] == "finished"


def test_a_json_job_naming_another_function_is_never_run(api, tiny_worker, service_redis, tmp_path):
    target = tmp_path / "pwned-by-func"
    job_id = plant(service_redis, func="os.system", args=(f"touch {target}",))
    assert wait_for(lambda: ended(service_redis, job_id), 60, "the worker to fail the planted job",
                    tiny_worker) == "failed"
    assert not target.exists() and tiny_worker.alive()
    r = api.http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 500 and r.json()["code"] == "corrupt_job_record", r.text


def test_callbacks_named_in_a_record_are_never_looked_up(service_redis):
    job = safejob.SafeJob.fetch(plant(service_redis, push=False), connection=service_redis)
    for field in ("success_callback_name", "failure_callback_name", "stopped_callback_name"):
        service_redis.hset(job.key, field, "os.system")
    job = safejob.SafeJob.fetch(job.id, connection=service_redis)
    assert (job.success_callback, job.failure_callback, job.stopped_callback) == (None, None, None)
