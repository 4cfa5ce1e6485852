"""`"model_m": true` through the service (LocalApi + LocalWorker on tiny-llama): the worker freezes
the model's start m, the stored file holds e alone, and the API decodes it only with that m."""

from __future__ import annotations

import pytest
from conftest import wait_job

from prototok import Encoding, load_model
from prototok.recipe import TUNED
from prototok.start_training import train_start
from prototok.starts import candidates, m_digest, write_start

pytestmark = pytest.mark.integration

TEXT = "shared m, served"
SEQS = [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4]]


@pytest.fixture
def with_start(api, tmp_path):
    """The API and worker of this process see a cache dir holding a start for tiny-llama."""
    with api.configured(PROTOTOK_CACHE_DIR=str(tmp_path)):
        lm = load_model("tiny-llama")
        e, m, how = train_start(lm, SEQS, 2, TUNED.with_(max_steps=2, warmup_steps=1, margin=0.0))
        yield write_start(candidates(lm)[0], lm, e, m, **how), m


def encode(api, options: dict) -> str:
    r = api.http.post("/v1/encode", json={"text": TEXT, "options": {"max_steps": 10, **options}})
    assert r.status_code == 202, r.text
    assert r.json()["config"]["model_m"] is True and r.json()["config"]["share"] == "frozen_m"
    return r.json()["job_id"]


def test_model_m_round_trip_through_the_api(api, tiny_worker, with_start):
    path, m = with_start
    done = wait_job(api, encode(api, {"model_m": True}), 300, tiny_worker)
    assert done["status"] == "finished", done
    emb_id = done["embedding_ids"][0]
    emb = api.http.get(f"/v1/embeddings/{emb_id}").json()
    assert emb["m_ref"] == {"sha256": m_digest(m), "start": path.name}
    assert set(emb["vectors"]) == {"e"} and emb["storage"] == "int8"  # the service's default storage, on e
    assert emb["size"]["vectors_bytes"] == 32 + 4  # int8 e and its scale: m is the model's, stored once
    blob = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"}).content
    assert set(Encoding.from_bytes(blob).tensors()) == {"e", "e_scale"}
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == TEXT
    r = api.http.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.json()["text"] == TEXT
    path.unlink()  # the start is gone: a clear 409, never a decode with another m
    for r in (api.http.get(f"/v1/embeddings/{emb_id}/text"),
              api.http.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})):
        assert r.status_code == 409 and r.json()["code"] == "model_m_missing", r.text
        assert m_digest(m) in r.json()["message"]


def test_model_m_without_a_start_fails_the_job_clearly(api, tiny_worker, tmp_path):
    with api.configured(PROTOTOK_CACHE_DIR=str(tmp_path)):
        done = wait_job(api, encode(api, {"model_m": True, "storage": "float32"}), 300, tiny_worker)
    assert done["status"] == "failed" and done["error_code"] == "model_m_missing", done
    assert "prototok start train" in done["error"]


def test_model_m_with_rank_is_a_422_naming_both(api):
    r = api.http.post("/v1/encode", json={"text": TEXT, "options": {"model_m": True, "rank": 8}})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert "model_m and rank" in r.json()["message"]


def test_the_decode_process_finds_the_m_in_its_own_start_files(tiny, tmp_path, monkeypatch):
    """As deployed, decodes run in a child process (app/decode_process.py): it reads the same
    PROTOTOK_CACHE_DIR, gets the file's bytes (e alone), and refuses with the same error class."""
    from app.batcher import DecodeLane
    from prototok import EncodeConfig, encode_texts
    from prototok.errors import ModelMMissing
    from prototok.settings import Settings, get_settings

    monkeypatch.setenv("PROTOTOK_CACHE_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        e, m, how = train_start(tiny, SEQS, 2, TUNED.with_(max_steps=2, warmup_steps=1, margin=0.0))
        path = write_start(candidates(tiny)[0], tiny, e, m, **how)
        [enc] = encode_texts(tiny, [TEXT], EncodeConfig(recipe=TUNED.with_(max_steps=4), model_m=True))
        lane = DecodeLane("tiny-llama", Settings(decode_process=True, decode_threads=1, decode_batch_wait_ms=0))
        lane.start()
        try:
            assert lane.submit_encoding(enc).result(120).text == TEXT
            path.unlink()
            with pytest.raises(ModelMMissing, match=m_digest(m)):
                lane.submit_encoding(enc).result(120)
        finally:
            lane.close()
    finally:
        get_settings.cache_clear()
