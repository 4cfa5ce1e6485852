"""A worker that survives Redis: Redis is killed (SIGKILL) mid-job and again while the worker
stores a finished result, then restarted on the same port and data directory. Each job
finishes and decodes exactly, and the same worker process goes on to take the next job.

This test runs its own append-only redis-server (fsync on every write, as a restart must
find what was acknowledged), its own API and its own worker, so nothing else sees the outage.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Api, free_port, redis_answers, start_worker, wait_for, wait_job, wait_served

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")]

LONG = "a text long enough that a random tiny model keeps optimising it for a long while"


class RedisServer:
    """redis-server on a free port with an append-only file in `data`; kill -9 and restart in place."""

    def __init__(self, data: Path):
        self.data, self.port = data, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        data.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"])
        wait_for(lambda: redis_answers(self.port), 20, f"redis-server on port {self.port}")
        return self

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()


@pytest.fixture
def outage_service(tmp_path):
    """(redis, api, worker) on a private Redis; the heartbeat TTL is the tests' 4 s. The worker's
    batch holds 16 rows, room for the three jobs of the batch test whatever the host's default cap."""
    server = RedisServer(tmp_path / "redis").start()
    api = Api(tmp_path / "api.log", PROTOTOK_REDIS_URL=server.url).start()
    worker = start_worker(tmp_path, "tiny-llama", PROTOTOK_REDIS_URL=server.url, PROTOTOK_REDIS_RETRY_MAX_S="1",
                          PROTOTOK_WORKER_MAX_ROWS="16")
    try:
        wait_served(api, "tiny-llama", worker)
        yield server, api, worker
    finally:
        worker.stop()
        api.proc.stop()
        api.http.close()
        server.stop()


def running_at(api: Api, job_id: str, step: int) -> bool:
    body = api.http.get(f"/v1/jobs/{job_id}").json()
    return body["status"] == "running" and body["progress"]["step"] >= step


def logged(worker, text: str) -> bool:
    return text in worker.log.read_text(errors="replace")


def outage_then_exact(server: RedisServer, api: Api, worker, text: str, steps: int, worker_says: str) -> dict:
    """Queue `text`, kill Redis once it runs, wait until the worker logs `worker_says`, restart
    Redis; the job must finish on the same worker and decode to exactly `text`."""
    job_id = api.http.post("/v1/encode", json={"text": text, "options": {"max_steps": steps, "seeds": 1}}).json()["job_id"]
    wait_for(lambda: running_at(api, job_id, 5), 60, "the job to run", worker, every=0.05)
    server.kill9()
    wait_for(lambda: logged(worker, worker_says), 60, f"the worker to log '{worker_says}'", worker)
    time.sleep(0.5)  # a little more of the outage: the worker keeps at it
    server.start()
    body = wait_job(api, job_id, 120, worker)
    assert body["status"] == "finished", body
    [emb_id] = body["embedding_ids"]
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == text
    assert worker.alive()
    return body


def test_worker_survives_redis_killed_mid_job_and_at_the_final_store(outage_service):
    server, api, worker = outage_service
    # Mid-job: progress writes fail while the optimisation goes on; it then continues and finishes.
    mid = outage_then_exact(server, api, worker, LONG, 1500, "not saved (Redis unavailable)")
    assert mid["progress"]["step"] > 5
    # At the final store: the optimisation ends while Redis is down; the result waits in memory.
    outage_then_exact(server, api, worker, "stored after the outage", 300, "storing its result: Redis unavailable")
    assert logged(worker, "result ready") and not logged(worker, "quitting")
    # The same process takes the next job (once its announcement, which a restart may find
    # expired, is renewed: the registry of live workers lags a restart by up to a second).
    wait_served(api, "tiny-llama", worker, timeout=30)
    after = api.http.post("/v1/encode", json={"text": "next", "options": {"max_steps": 3}}).json()["job_id"]
    assert wait_job(api, after, 120, worker)["status"] == "finished"
    assert worker.alive()


def test_a_batch_of_jobs_rides_out_redis_killed_mid_batch(outage_service):
    """Three jobs in the worker's continuous batch when Redis dies: the batch keeps optimising,
    and once Redis is back every job finishes, each text exact."""
    server, api, worker = outage_service
    texts = [f"{LONG}, batch member {i}" for i in range(3)]
    ids = [api.http.post("/v1/encode", json={"text": t, "options": {"max_steps": 1200, "seeds": 1}}).json()["job_id"]
           for t in texts]
    wait_for(lambda: all(running_at(api, i, 5) for i in ids), 60, "three jobs running in one batch", worker, every=0.05)
    server.kill9()
    wait_for(lambda: logged(worker, "not saved (Redis unavailable)"), 60, "the worker to lose Redis", worker)
    time.sleep(0.5)
    server.start()
    for job_id, text in zip(ids, texts):
        body = wait_job(api, job_id, 120, worker)
        assert body["status"] == "finished", body
        [emb_id] = body["embedding_ids"]
        assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == text
    assert worker.alive() and not logged(worker, "quitting")
