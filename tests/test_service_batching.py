"""The worker's continuous batch (worker/batch.py): jobs that wait in the queue join the running
batch between steps, each keeps RQ's lifecycle (started, finished or failed, its own time limit
and cancel), a large job takes turns with new ones, and every text decodes exactly from its own
file, alone. Faults with several jobs in one batch: kill -9 of the worker, a Redis outage.

Each test queues its jobs on a queue of its own (PROTOTOK_QUEUE_NAME) before its worker starts,
so the worker takes the first and finds the others waiting at its first step."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime

import pytest
from conftest import LocalWorker, start_worker, wait_for, wait_job, wait_served

from prototok import Encoding, decode, load_model

pytestmark = pytest.mark.integration

HEARTBEAT_TTL_S = 4  # service_env's PROTOTOK_HEARTBEAT_TTL_S
LONG = "a text long enough that a random tiny model keeps optimising it for a long while"


@contextmanager
def worker_on(api, queue: str, max_rows: int, **env: str):
    """A worker (in this process, on a thread) with this cap, on its own queue, with the API set alike."""
    with api.configured(PROTOTOK_QUEUE_NAME=queue, PROTOTOK_WORKER_MAX_ROWS=str(max_rows), **env):
        worker = LocalWorker("tiny-llama")
        try:
            yield worker
        finally:
            worker.stop()


def post(api, text: str | list[str], steps: int) -> str:
    body = {"texts": text} if isinstance(text, list) else {"text": text}
    r = api.http.post("/v1/encode", json={**body, "options": {"max_steps": steps, "seeds": 1}})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def when(body: dict, key: str) -> datetime:
    return datetime.fromisoformat(body[key].replace("Z", "+00:00"))


def exact_from_files(api, body: dict, texts: list[str]) -> None:
    """Each embedding's stored file, decoded here alone, is exactly its text."""
    lm = load_model("tiny-llama")
    for emb_id, text in zip(body["embedding_ids"], texts, strict=True):
        blob = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"}).content
        assert decode(lm, [Encoding.from_bytes(blob)])[0].text.encode() == text.encode()


def test_queued_jobs_join_one_batch_and_each_text_decodes_alone(api):
    texts = [f"job number {i}, one sentence" for i in range(4)]
    with worker_on(api, "prototok-batch-join", 16) as worker:
        ids = [post(api, t, 40) for t in texts]
        worker.start()
        bodies = [wait_job(api, i, 120, worker) for i in ids]
    assert [b["status"] for b in bodies] == ["finished"] * 4, bodies
    first_end = min(when(b, "ended_at") for b in bodies)
    assert all(when(b, "started_at") < first_end for b in bodies)  # all four ran at once
    for body, text in zip(bodies, texts):
        exact_from_files(api, body, [text])


def test_max_rows_1_runs_one_job_at_a_time(api):
    with worker_on(api, "prototok-batch-one", 1) as worker:
        ids = [post(api, f"alone {i}", 20) for i in range(3)]
        worker.start()
        bodies = [wait_job(api, i, 120, worker) for i in ids]
    assert [b["status"] for b in bodies] == ["finished"] * 3
    spans = sorted((when(b, "started_at"), when(b, "ended_at")) for b in bodies)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_a_large_job_takes_turns_with_a_job_posted_after_it(api):
    """Cap 4 rows; the large job has 8 (four texts of two chunks): its second half waits while the
    one-sentence job that came after its first half runs, so that job ends first."""
    big = [f"{LONG[:40]} #{i}" for i in range(4)]  # 43 bytes: two chunks of the tiny model's 32 tokens
    with worker_on(api, "prototok-batch-turns", 4) as worker:
        big_id = post(api, big, 150)
        worker.start()
        wait_for(lambda: api.http.get(f"/v1/jobs/{big_id}").json()["status"] == "running", 60, "the big job", worker)
        small_id = post(api, "a small one", 5)
        small, large = wait_job(api, small_id, 120, worker), wait_job(api, big_id, 300, worker)
    assert small["status"] == large["status"] == "finished"
    assert when(small, "ended_at") < when(large, "ended_at")
    exact_from_files(api, large, big)
    exact_from_files(api, small, ["a small one"])


def test_a_canceled_job_and_a_timed_out_one_leave_the_batch_alone(api):
    with worker_on(api, "prototok-batch-faults", 16) as worker:
        keep = post(api, "this one finishes", 60)
        cancel = post(api, LONG, 5000)
        with api.configured(PROTOTOK_JOB_TIMEOUT_S="2"):
            late = post(api, LONG + " too", 5000)
        worker.start()
        wait_for(lambda: api.http.get(f"/v1/jobs/{cancel}").json()["progress"]["step"] >= 5, 60, "it to run", worker)
        assert api.http.delete(f"/v1/jobs/{cancel}").status_code == 202
        done, canceled, timed_out = (wait_job(api, i, 120, worker) for i in (keep, cancel, late))
    assert done["status"] == "finished", done
    exact_from_files(api, done, ["this one finishes"])
    assert (canceled["status"], canceled["error_code"]) == ("failed", "canceled"), canceled
    assert (timed_out["status"], timed_out["error_code"]) == ("failed", "job_timeout"), timed_out
    assert "2 s" in timed_out["error"] and 0 < timed_out["progress"]["step"] < 5000


def test_a_job_whose_check_and_store_outlast_the_heartbeat_still_finishes(api, monkeypatch):
    """A job's final check and store run with its heartbeat still renewed: held here for three
    heartbeat TTLs while the API's polls clean up abandoned jobs, it is not taken for a dead one."""
    from worker import jobs

    finish = jobs.EncodeJob.finish

    def slow_finish(self) -> list[str]:
        time.sleep(3 * HEARTBEAT_TTL_S)
        return finish(self)

    monkeypatch.setattr(jobs.EncodeJob, "finish", slow_finish)
    with worker_on(api, "prototok-batch-slow-finish", 4) as worker:
        job_id = post(api, "slow to store", 5)
        worker.start()
        body = wait_job(api, job_id, 120, worker, every=0.5)
    assert body["status"] == "finished", body
    exact_from_files(api, body, ["slow to store"])


def test_a_killed_worker_fails_every_job_of_its_batch(process_api, service_logs):
    """kill -9 with three jobs in one batch: each ends failed (worker_died), none stays running."""
    api = process_api
    worker = start_worker(service_logs, "tiny-gpt-neox", PROTOTOK_WORKER_MAX_ROWS="16")
    try:
        wait_served(api, "tiny-gpt-neox", worker)
        ids = [api.http.post("/v1/encode", json={"text": f"{LONG} {i}", "model": "tiny-gpt-neox",
                                                 "options": {"max_steps": 5000, "seeds": 1}}).json()["job_id"]
               for i in range(3)]

        def all_running() -> bool:
            bodies = [api.http.get(f"/v1/jobs/{i}").json() for i in ids]
            return all(b["status"] == "running" and b["progress"]["step"] >= 5 for b in bodies)

        wait_for(all_running, 120, "three jobs running in one batch", worker)
        worker.kill9()
        killed_at = time.monotonic()
        bodies = [wait_job(api, i, 10 * HEARTBEAT_TTL_S) for i in ids]
    finally:
        worker.stop()
    assert [(b["status"], b["error_code"]) for b in bodies] == [("failed", "worker_died")] * 3, bodies
    assert time.monotonic() - killed_at < 10 * HEARTBEAT_TTL_S


def test_the_eta_of_a_queued_job_counts_the_jobs_a_batch_runs_at_once(api, service_redis):
    """Three jobs running in one worker's batch share it: the job queued behind them waits about
    half a typical job for the running ones (shared three ways) and one for itself."""
    from service.durations import RECENT_PREFIX

    with worker_on(api, "prototok-batch-eta", 3) as worker:
        ids = [post(api, f"one row {i}", 5000) for i in range(3)]  # under 32 tokens: one row each
        worker.start()
        wait_for(lambda: all(api.http.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids), 60,
                 "three jobs in one batch", worker)
        service_redis.delete(RECENT_PREFIX + "tiny-llama")
        service_redis.lpush(RECENT_PREFIX + "tiny-llama", 10, 10, 10)  # a typical job: 10 s
        queued = post(api, "behind a full batch", 5)  # one row more than the cap: it waits
        view = api.http.get(f"/v1/jobs/{queued}").json()
        for job_id in ids:
            api.http.delete(f"/v1/jobs/{job_id}")
        assert wait_job(api, queued, 120, worker)["status"] == "finished"
    assert (view["status"], view["queue_position"]) == ("queued", 0), view
    assert view["eta_s"] == pytest.approx(10 * (0 + 3 / 2) / 3 + 10)  # one job at a time per worker: 25 s
