"""End to end with the embedded SmolLM2-135M: a real sentence in, the same sentence out.

The worker and the API each load the embedded model (about 12 s each once its cache
exists; the first load ever builds the cache, about 70 s). The step budget is small: the
round trip is exact regardless of accuracy, thanks to the stored corrections.
"""

from __future__ import annotations

import pytest
from conftest import start_worker, wait_job, wait_served

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
SENTENCE = "The cat sat on the mat."


@pytest.fixture(scope="module")
def smol_worker(api, service_logs):
    proc = start_worker(service_logs, MODEL)
    wait_served(api, MODEL, proc, timeout=900)
    yield proc
    proc.stop()


def test_embedded_model_round_trip(api, smol_worker, capsys):
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
