"""End to end between real processes: the API under uvicorn, `python -m worker`, the real Redis.

Most service tests run the app and a worker inside the test process (conftest's LocalApi and
LocalWorker); these check what only processes show: the embedded SmolLM2-135M takes a real
sentence in at one process and gives the same sentence out at another, and the stored encoding
outlives an API restart. (Also between processes: a killed worker in test_service_worker.py, a
Redis outage in test_service_redis_outage.py.)

The worker and the API each load the embedded model (about 12 s each once its cache exists;
the first load ever builds the cache, about 70 s). The step budget is small: the round trip is
exact regardless of accuracy, thanks to the stored corrections.
"""

from __future__ import annotations

import pytest
from conftest import start_worker, wait_job, wait_served

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
SENTENCE = "The cat sat on the mat."


@pytest.fixture(scope="module")
def smol_worker(service_redis, service_logs, request):
    proc = start_worker(service_logs, MODEL)  # loads its model while the API process starts
    api = request.getfixturevalue("process_api")
    wait_served(api, MODEL, proc, timeout=900)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def round_trip(process_api, smol_worker) -> dict:
    r = process_api.http.post("/v1/encode", json={"text": SENTENCE, "model": MODEL,
                                                  "options": {"max_steps": 60, "seeds": 2}})
    assert r.status_code == 202, r.text
    return wait_job(process_api, r.json()["job_id"], 900, smol_worker)


def test_embedded_model_round_trip(process_api, round_trip, capsys):
    api, job = process_api, round_trip
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


def test_stored_encoding_survives_an_api_restart(process_api, round_trip):
    emb_id = round_trip["embedding_ids"][0]
    process_api.restart()
    assert process_api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == SENTENCE
    assert process_api.http.get(f"/v1/jobs/{round_trip['job_id']}").json()["status"] == "finished"


EDGE = ("crlf", "bom", "emoji_zwj", "nul")  # of tests/edge_cases.py: one job, four texts


def test_edge_texts_come_back_byte_for_byte_between_processes(process_api, smol_worker, tmp_path):
    """JSON in, the stored text out, and the stored file uploaded back, on SmolLM2; then the client."""
    from edge_cases import EDGE_TEXTS

    from prototok.client import Client

    texts = [EDGE_TEXTS[name] for name in EDGE]
    r = process_api.http.post("/v1/encode", json={"texts": texts, "model": MODEL,
                                                  "options": {"max_steps": 10, "seeds": 1}})
    assert r.status_code == 202, r.text
    job = wait_job(process_api, r.json()["job_id"], 900, smol_worker)
    assert job["status"] == "finished", job
    key = process_api.http.headers.get("authorization", "").removeprefix("Bearer ") or None
    with Client(process_api.url, api_key=key) as client:
        for emb_id, text in zip(job["embedding_ids"], texts):
            assert client.text(emb_id).encode() == text.encode()
            path = client.download(emb_id, tmp_path / f"{emb_id}.safetensors")
            assert client.decode(path).text.encode() == text.encode()
