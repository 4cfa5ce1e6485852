"""Nothing read from Redis is unpickled, and a worker runs only the encode job.

An attacker with write access to Redis plants records that would create a file if they
were unpickled or run (in a job's data, meta or results); the API answers 500
`corrupt_job_record` (and keeps serving, on the same connection), the worker fails the job
without calling its function (and keeps serving), and the file never appears.
"""

from __future__ import annotations

import base64
import http.client
import json
import pickle
import uuid

import pytest
from conftest import wait_for, wait_job
from rq.job import JobStatus
from rq.results import Result

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


def plant(conn, data: bytes | None = None, func: str = ENCODE_JOB, args: tuple = ("x",), push: bool = True,
          meta: bytes | None = None) -> str:
    """A job on the tiny-llama queue whose hash holds `data` (and `meta`) as written by an attacker."""
    q = safejob.queue(QUEUE, conn)
    job = q.create_job(func, args=args, job_id=uuid.uuid4().hex)  # an id of the API's form
    job.save()
    if data is not None:
        conn.hset(job.key, "data", data)
    if meta is not None:
        conn.hset(job.key, "meta", meta)
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


def test_a_job_whose_meta_is_not_json_is_failed_before_its_function_is_called(api, tiny_worker, service_redis,
                                                                               tmp_path, monkeypatch):
    """JSON data naming the encode job, pickled meta: the worker refuses the record before it
    starts the job's encode (`EncodeJob`, which would fail at its first save), and goes on."""
    import worker.batch

    calls: list[tuple] = []
    real = worker.batch.EncodeJob

    def spy(job, *rest):
        calls.append(job.args)
        return real(job, *rest)

    monkeypatch.setattr(worker.batch, "EncodeJob", spy)  # what the worker's batch builds for each job it takes
    target = tmp_path / "pwned-by-queued-meta"
    meta = live_payload(MakesFile(str(target)), target)
    config = api.http.post("/v1/encode", json={"text": "cfg", "options": {"max_steps": 3}}).json()
    job_id = plant(service_redis, args=(["meta"], "tiny-llama", config["config"]), meta=meta)
    assert wait_for(lambda: ended(service_redis, job_id), 60, "the worker to fail the planted job",
                    tiny_worker) == "failed"
    failure = safejob.SafeJob(job_id, connection=service_redis).latest_result()
    assert "RefusedJob" in failure.exc_string and "meta is not valid JSON" in failure.exc_string
    assert service_redis.hget(f"rq:job:{job_id}", "meta") == meta  # left as found: not ours to rewrite
    assert not target.exists() and tiny_worker.alive()
    r = api.http.get(f"/v1/jobs/{job_id}")
    assert r.status_code == 500 and r.json()["code"] == "corrupt_job_record", r.text
    assert wait_job(api, config["job_id"], 120, tiny_worker)["status"] == "finished"
    after = api.http.post("/v1/encode", json={"text": "next", "options": {"max_steps": 3}}).json()["job_id"]
    assert wait_job(api, after, 120, tiny_worker)["status"] == "finished"
    assert [args[0] for args in calls] == [["cfg"], ["next"]]  # the spy sees the jobs it should: not the planted one


def corrupt_results(path) -> dict[str, dict]:
    """Entries an attacker could add to a job's results stream (rq:results:{id}), by what is wrong."""
    pickled = live_payload(MakesFile(str(path)), path)
    return {
        "pickled": {"type": Result.Type.SUCCESSFUL.value, "return_value": base64.b64encode(pickled)},
        "not-json": {"type": Result.Type.SUCCESSFUL.value, "return_value": base64.b64encode(b"[not json")},
        "not-base64": {"type": Result.Type.SUCCESSFUL.value, "return_value": b"%%%"},
        "unknown-type": {"type": 99},
        "failure-not-zlib": {"type": Result.Type.FAILED.value, "exc_string": base64.b64encode(b"not zlib")},
        "time-out-of-range": {"type": Result.Type.SUCCESSFUL.value, "return_value": base64.b64encode(b"[]"),
                              "execution_started_at": b"1e400"},
    }


ENDED_JOBS = {"finished": {"max_steps": 3}, "failed": {"max_steps": 3, "rank": 33}}  # tiny-llama: hidden size 32


@pytest.fixture(scope="module")
def ended_jobs(api, tiny_worker, service_redis) -> dict[str, str]:
    """One job id per end state, each job ended by the worker; and `bare`: a finished job whose
    JSON meta names no embeddings (written to Redis by hand), so the job route reads its result."""
    ids = {state: api.http.post("/v1/encode", json={"text": "result", "options": options}).json()["job_id"]
           for state, options in ENDED_JOBS.items()}
    for state, job_id in ids.items():
        assert wait_job(api, job_id, 120, tiny_worker)["status"] == state
    meta = json.dumps({"model": "tiny-llama", "owner": api.key_name}).encode()
    ids["bare"] = plant(service_redis, push=False, meta=meta)
    service_redis.hset(f"rq:job:{ids['bare']}", "status", JobStatus.FINISHED.value)
    service_redis.xadd(Result.get_key(ids["bare"]), {"type": Result.Type.SUCCESSFUL.value,
                                                     "return_value": base64.b64encode(b"[]")})
    return ids


@pytest.mark.parametrize("state", [*ENDED_JOBS, "bare"])
@pytest.mark.parametrize("what", ["pickled", "not-json", "not-base64", "unknown-type", "failure-not-zlib",
                                  "time-out-of-range", "not-a-stream"])
def test_a_result_this_service_did_not_write_is_refused_and_the_connection_stays_usable(
        api, ended_jobs, service_redis, tmp_path, state, what):
    """A job whose latest result (RQ keeps results in a stream of their own) is not ours: 500
    `corrupt_job_record`, answered by the error handler, so the keep-alive connection (the app
    under uvicorn) stays open for the next request. The stream is put back afterwards."""
    target = tmp_path / "pwned-by-result"
    key = Result.get_key(ended_jobs[state])
    saved = service_redis.dump(key)
    if what == "not-a-stream":
        service_redis.delete(key)
        service_redis.set(key, b"a string where RQ keeps a stream")
    else:
        service_redis.xadd(key, corrupt_results(target)[what])
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    headers = {"Authorization": api.http.headers["Authorization"]}
    try:
        for _ in range(2):  # the same connection each time
            conn.request("GET", f"/v1/jobs/{ended_jobs[state]}", headers=headers)
            r = conn.getresponse()
            body = json.loads(r.read())
            assert r.status == 500 and body["code"] == "corrupt_job_record", body
            assert "not written by this service" in body["message"]
        conn.request("GET", "/healthz")
        ok = conn.getresponse()
        assert ok.status == 200 and json.loads(ok.read()) == {"status": "ok"}
    finally:
        conn.close()
        service_redis.restore(key, 0, saved, replace=True)
    assert not target.exists()
    assert api.http.get(f"/v1/jobs/{ended_jobs[state]}").json()["status"] == state.replace("bare", "finished")
