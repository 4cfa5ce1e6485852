"""`"model_m": true` through the service (LocalApi + LocalWorker on tiny-llama): the worker freezes
the model's start m, the stored file holds e alone, and the API decodes it only with that m (still
after a retrain: the replaced start is kept beside the new one, by its m's digest). A
model_m job that no live worker could run (each says in its announcement whether it has a start)
is refused at POST; one that reaches a worker without a start fails with the same code."""

from __future__ import annotations

import pytest
from conftest import wait_for, wait_job

from prototok import Encoding, load_model
from prototok.recipe import TUNED
from prototok.start_training import train_start
from prototok.starts import candidates, m_digest, write_start
from service.queues import WORKER_STARTS_KEY, announce, withdraw, worker_starts

pytestmark = pytest.mark.integration

TEXT = "shared m, served"
SEQS = [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4]]


def make_start(steps: int = 2):
    lm = load_model("tiny-llama")
    e, m, how = train_start(lm, SEQS, steps, TUNED.with_(max_steps=steps, warmup_steps=1, margin=0.0))
    return write_start(candidates(lm)[0], lm, e, m, **how), m


def workers_say(conn, start: str) -> None:
    """Wait for the worker's next announcement (every PROTOTOK_HEARTBEAT_TTL_S / 3 s) to say `start`."""
    wait_for(lambda: worker_starts(conn, "tiny-llama") == [start], 30, f"the worker to announce start {start!r}")


@pytest.fixture
def with_start(api, tiny_worker, service_redis, tmp_path):
    """The API and worker of this process see a cache dir holding a start for tiny-llama, and the
    worker has said so."""
    with api.configured(PROTOTOK_CACHE_DIR=str(tmp_path)):
        path, m = make_start()
        workers_say(service_redis, m_digest(m))
        yield path, m


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
    _, new_m = make_start(steps=3)  # retrained on the host: the old start is kept beside it, by its m's digest
    kept = path.with_name(f"{path.stem}.{m_digest(m)[:16]}.safetensors")
    assert kept.exists() and m_digest(new_m) != m_digest(m)
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == TEXT  # still exact, from the kept file
    r = api.http.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.json()["text"] == TEXT
    again = wait_job(api, encode(api, {"model_m": True}), 300, tiny_worker)  # new jobs freeze the new m
    assert again["status"] == "finished", again
    assert api.http.get(f"/v1/embeddings/{again['embedding_ids'][0]}").json()["m_ref"]["sha256"] == m_digest(new_m)
    path.unlink()
    kept.unlink()  # no file holds that m any more: a clear 409, never a decode with another m
    for r in (api.http.get(f"/v1/embeddings/{emb_id}/text"),
              api.http.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})):
        assert r.status_code == 409 and r.json()["code"] == "model_m_missing", r.text
        assert m_digest(m) in r.json()["message"]


def test_model_m_is_refused_at_post_while_no_worker_has_a_start(api, tiny_worker, service_redis, tmp_path):
    jobs = len(service_redis.keys("rq:job:*"))
    with api.configured(PROTOTOK_CACHE_DIR=str(tmp_path)):
        workers_say(service_redis, "")
        r = api.http.post("/v1/encode", json={"text": TEXT, "options": {"model_m": True}})
        assert r.status_code == 409 and r.json()["code"] == "model_m_missing", r.text
        assert "no worker serving model 'tiny-llama' has a start" in r.json()["message"]
        assert "prototok start train --model tiny-llama" in r.json()["message"]
        assert len(service_redis.keys("rq:job:*")) == jobs  # nothing was queued
        assert api.http.post("/v1/encode", json={"text": TEXT, "options": {"max_steps": 1}}).status_code == 202
        _, m = make_start()  # trained on the worker's host: the worker says so at its next beat
        workers_say(service_redis, m_digest(m))
        done = wait_job(api, encode(api, {"model_m": True}), 300, tiny_worker)
    assert done["status"] == "finished", done


def test_a_model_m_job_that_reaches_a_worker_without_a_start_fails_clearly(api, tiny_worker, service_redis, tmp_path):
    """A worker that says nothing of its start (one from before workers said it) may have one, so
    the API queues the job; the worker that takes it has none, and the job fails with the code."""
    announce(service_redis, "tiny-llama", "older-worker", ttl_s=300)  # what an older worker writes
    try:
        with api.configured(PROTOTOK_CACHE_DIR=str(tmp_path)):
            wait_for(lambda: sorted(worker_starts(service_redis, "tiny-llama"), key=str) == ["", None], 30,
                     "the worker to announce that it has no start")
            done = wait_job(api, encode(api, {"model_m": True, "storage": "float32"}), 300, tiny_worker)
    finally:
        withdraw(service_redis, "tiny-llama", "older-worker")
    assert done["status"] == "failed" and done["error_code"] == "model_m_missing", done
    assert "prototok start train" in done["error"]


def test_the_registry_keeps_what_live_workers_said_of_their_start(service_redis):
    announce(service_redis, "tiny-gpt-neox", "a", ttl_s=300, start="ab" * 32)
    announce(service_redis, "tiny-gpt-neox", "b", ttl_s=300, start="")
    announce(service_redis, "tiny-gpt-neox", "c", ttl_s=300)  # says nothing
    announce(service_redis, "tiny-gpt-neox", "d", ttl_s=-1, start="")  # expired: does not count, and is cleared
    try:
        assert sorted(worker_starts(service_redis, "tiny-gpt-neox"), key=str) == ["", None, "ab" * 32]
        assert not service_redis.hexists(WORKER_STARTS_KEY, "tiny-gpt-neox\td")
    finally:
        for name in "abcd":
            withdraw(service_redis, "tiny-gpt-neox", name)
    assert worker_starts(service_redis, "tiny-gpt-neox") == []
    assert not any(k.startswith(b"tiny-gpt-neox") for k in service_redis.hkeys(WORKER_STARTS_KEY))


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
    from service.settings import ServiceSettings, clear_cache

    monkeypatch.setenv("PROTOTOK_CACHE_DIR", str(tmp_path))
    clear_cache()
    try:
        e, m, how = train_start(tiny, SEQS, 2, TUNED.with_(max_steps=2, warmup_steps=1, margin=0.0))
        path = write_start(candidates(tiny)[0], tiny, e, m, **how)
        [enc] = encode_texts(tiny, [TEXT], EncodeConfig(recipe=TUNED.with_(max_steps=4), model_m=True))
        lane = DecodeLane("tiny-llama", ServiceSettings(decode_threads=1, decode_batch_wait_ms=0))
        lane.start()
        try:
            assert lane.submit_encoding(enc).result(120).text == TEXT
            e2, m2, how2 = train_start(tiny, SEQS, 3, TUNED.with_(max_steps=3, warmup_steps=1, margin=0.0))
            write_start(path, tiny, e2, m2, **how2)  # retrained: the process finds m in the kept file
            assert m_digest(m2) != m_digest(m) and len(list(path.parent.iterdir())) == 2
            assert lane.submit_encoding(enc).result(120).text == TEXT
            for f in path.parent.iterdir():
                f.unlink()
            with pytest.raises(ModelMMissing, match=m_digest(m)):
                lane.submit_encoding(enc).result(120)
        finally:
            lane.close()
    finally:
        clear_cache()
