"""End to end between real processes: the API under uvicorn, `python -m worker`, the real Redis.

Most service tests run the app and a worker inside the test process (conftest's LocalApi and
LocalWorker); these check what only processes show: jobs run in the worker process itself,
stored encodings outlive an API restart, and the embedded SmolLM2-135M takes a real sentence in
at one process and gives the same sentence out at another. (Also between processes: a killed
worker in test_service_worker.py, a Redis outage in test_service_redis_outage.py.)

The SmolLM2 worker and the API each load the embedded model (about 12 s each once its cache
exists; the first load ever builds the cache, about 70 s). The step budget is small: the
round trip is exact regardless of accuracy, thanks to the stored corrections.
"""

from __future__ import annotations

import pytest
from conftest import SERVICE_REDIS_URL, start_worker, wait_job, wait_served

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
SENTENCE = "The cat sat on the mat."
TEXT = "hello, prototok!"


@pytest.fixture(scope="module")
def tiny_process(process_api, service_logs):
    """`python -m worker` serving tiny-llama, for this module only (elsewhere a worker on a thread
    of the test process serves it)."""
    proc = start_worker(service_logs, "tiny-llama")
    wait_served(process_api, "tiny-llama", proc)
    yield proc
    proc.stop()


def test_jobs_run_in_the_worker_process_itself(process_api, tiny_process):
    """SimpleWorker: no fork per job, so the process that loaded the model runs every job."""
    from app.deps import redis_for
    from service import safejob

    pids = []
    for text in ("one", "two"):
        job_id = process_api.http.post("/v1/encode", json={"text": text, "options": {"max_steps": 3}}).json()["job_id"]
        assert wait_job(process_api, job_id, 300, tiny_process)["status"] == "finished"
        pids.append(safejob.fetch(job_id, redis_for(SERVICE_REDIS_URL)).meta["worker_pid"])
    assert pids == [tiny_process.pid, tiny_process.pid]


def test_stored_encoding_survives_an_api_restart(process_api, tiny_process):
    r = process_api.http.post("/v1/encode", json={"text": TEXT, "options": {"max_steps": 20, "seeds": 1}})
    assert r.status_code == 202, r.text
    finished = wait_job(process_api, r.json()["job_id"], 300, tiny_process)
    emb_id = finished["embedding_ids"][0]
    process_api.restart()
    assert process_api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == TEXT
    assert process_api.http.get(f"/v1/jobs/{finished['job_id']}").json()["status"] == "finished"


@pytest.fixture(scope="module")
def smol_worker(process_api, service_logs):
    proc = start_worker(service_logs, MODEL)
    wait_served(process_api, MODEL, proc, timeout=900)
    yield proc
    proc.stop()


def test_embedded_model_round_trip(process_api, smol_worker, capsys):
    api = process_api
    r = api.http.post("/v1/encode", json={"text": SENTENCE, "model": MODEL, "options": {"max_steps": 60, "seeds": 2}})
    assert r.status_code == 202, r.text
    job = wait_job(api, r.json()["job_id"], 900, smol_worker)
    assert job["status"] == "finished", job
    emb_id = job["embedding_ids"][0]
    emb = api.http.get(f"/v1/embeddings/{emb_id}").json()
    assert emb["model"] == MODEL and emb["hidden_size"] == 576 and emb["length"] <= 10
    text = api.http.get(f"/v1/embeddings/{emb_id}/text").json()
    assert text["text"] == SENTENCE
    again = api.http.get(f"/v1/embeddings/{emb_id}/text").json()  # model loaded now: the pass alone
    with capsys.disabled():
        print(f"\n[e2e] {emb['length']} tokens, accuracy {emb['accuracy']:.2f}, {emb['corrections']} corrections, "
              f"{emb['steps']} steps in {emb['seconds']:.1f} s; decode {text['decode_ms']:.1f} ms, "
              f"then {again['decode_ms']:.1f} ms")
