"""The HTTP API in this process (LocalApi) against the real Redis, with a tiny-llama worker on a
thread (LocalWorker). tests/test_service_e2e.py runs the same round trip between processes.

tiny-llama is a random 2-layer model built in milliseconds: it cannot learn much, so its
encodings lean on stored corrections, and the round trip must still be exact.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import wait_job

from prototok import Encoding, load_model
from prototok.codec import encode_texts
from prototok.recipe import TUNED, EncodeConfig

pytestmark = pytest.mark.integration

TEXT = "hello, prototok!"


def encode(api, body: dict) -> str:
    r = api.http.post("/v1/encode", json=body)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['job_id']}"
    return r.json()["job_id"]


STEPS = 600  # a few seconds of tiny-model work: long enough to watch progress move


@pytest.fixture(scope="module")
def finished(api, tiny_worker) -> dict:
    """One job of STEPS steps, polled often to the end."""
    job_id = encode(api, {"text": TEXT, "options": {"max_steps": STEPS, "seeds": 2}})
    return wait_job(api, job_id, 300, tiny_worker, every=0.05)


def test_job_runs_reports_progress_and_finishes(finished):
    assert finished["status"] == "finished", finished
    # Below float32 (the service's default storage is int8) a straight-through polish follows the
    # optimisation, and the job's step budget counts it too.
    from prototok.recipe import TUNED
    from service.settings import ServiceSettings

    budget = STEPS + (TUNED.ste_steps if ServiceSettings().storage != "float32" else 0)
    assert finished["progress"]["max_steps"] == budget
    last = finished["progress"]["step"]
    assert 0 < last <= budget
    steps = [s for s in finished["_steps_seen"] if 0 < s < last]
    assert len(set(steps)) >= 2, f"progress should move while running, saw {finished['_steps_seen']}"
    assert steps == sorted(steps), "progress never goes back"
    assert len(finished["embedding_ids"]) == 1


def test_stored_encoding_json_and_bytes(api, finished, service_redis):
    emb_id = finished["embedding_ids"][0]
    body = api.http.get(f"/v1/embeddings/{emb_id}").json()
    assert body["model"] == "tiny-llama" and body["arrangement"] == "e_mN-1"
    assert body["length"] == len(TEXT.encode()) and body["hidden_size"] == 32
    assert body["c_tokens"] + body["corrections"] == body["length"]
    assert body["accuracy"] == pytest.approx(body["c_tokens"] / body["length"])
    assert [len(body["vectors"]["e"]), len(body["vectors"]["e"][0])] == [1, 32]
    raw = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"})
    assert raw.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(raw.content).hexdigest() == body["sha256"] == raw.headers["x-checksum-sha256"]
    assert Encoding.from_bytes(raw.content).vectors["e"].tolist() == body["vectors"]["e"]
    assert service_redis.ttl(f"prototok:emb:{emb_id}") == -1  # never expires


def test_text_round_trip_is_exact(api, finished):
    emb_id = finished["embedding_ids"][0]
    body = api.http.get(f"/v1/embeddings/{emb_id}/text").json()
    assert body["text"] == TEXT
    assert 0 <= body["accuracy"] <= 1 and body["decode_ms"] > 0


def test_decode_an_uploaded_safetensors(api, finished):
    blob = api.http.get(f"/v1/embeddings/{finished['embedding_ids'][0]}",
                        headers={"Accept": "application/octet-stream"}).content
    multipart = api.http.post("/v1/decode", files={"file": ("x.safetensors", blob, "application/octet-stream")})
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["text"] == TEXT
    raw = api.http.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})
    assert raw.json()["text"] == TEXT


def test_decode_client_vectors_matches_the_core(api, finished):
    """JSON vectors decode to what the vectors alone give (no corrections), as the core says."""
    emb = api.http.get(f"/v1/embeddings/{finished['embedding_ids'][0]}").json()
    assert emb["sink"] is True  # the default (tuned) recipe
    body = {"model": "tiny-llama", "e": emb["vectors"]["e"][0], "m": emb["vectors"]["m"], "length": emb["length"],
            "sink": emb["sink"]}
    r = api.http.post("/v1/decode", json=body)
    assert r.status_code == 200, r.text
    import torch

    from prototok import decode_vectors
    lm = load_model("tiny-llama")
    expected = decode_vectors(lm, torch.tensor(emb["vectors"]["e"]), torch.tensor(emb["vectors"]["m"]),
                              [emb["length"]], sink=True)
    assert r.json()["text"] == expected and r.json()["length"] == emb["length"]


def test_batch_is_one_job_with_one_embedding_per_text(api, tiny_worker):
    texts = ["first text", "a second, longer text"]
    done = wait_job(api, encode(api, {"texts": texts, "options": {"max_steps": 20, "seeds": 1}}), 300, tiny_worker)
    assert done["status"] == "finished", done
    got = [api.http.get(f"/v1/embeddings/{i}/text").json()["text"] for i in done["embedding_ids"]]
    assert got == texts


def test_delete(api, tiny_worker):
    done = wait_job(api, encode(api, {"text": "bye", "options": {"max_steps": 5}}), 300, tiny_worker)
    emb_id = done["embedding_ids"][0]
    assert api.http.delete(f"/v1/embeddings/{emb_id}").status_code == 204
    r = api.http.get(f"/v1/embeddings/{emb_id}")
    assert r.status_code == 404 and r.json()["code"] == "embedding_not_found"


def test_options_become_the_config_the_worker_runs(api, tiny_worker):
    r = api.http.post("/v1/encode", json={"text": "cfg", "options": {"max_steps": 5, "arrangement": "pairs",
                                                                     "seeds": 1, "lr": 0.02, "margin": 0.5}})
    assert r.status_code == 202, r.text
    cfg = r.json()["config"]
    assert cfg["recipe"]["max_steps"] == 5 and cfg["recipe"]["lr"] == 0.02 and cfg["arrangement"] == "pairs"
    assert cfg["recipe"]["margin"] == 0.5
    done = wait_job(api, r.json()["job_id"], 300, tiny_worker)
    emb = api.http.get(f"/v1/embeddings/{done['embedding_ids'][0]}").json()
    polish = TUNED.ste_steps if cfg["storage"] != "float32" else 0  # the service's default storage is int8
    assert emb["arrangement"] == "pairs" and emb["steps"] <= 5 + polish


SIZE_KEYS = {"vectors_bytes", "file_bytes", "text_bytes", "gzip_bytes", "zstd_bytes", "bits_per_char"}


@pytest.mark.parametrize("options", [{}, {"storage": "int8", "rank": 8}, {"compact": True}])
def test_every_embedding_reports_what_it_weighs(api, tiny_worker, options):
    """`size` in the job and the embedding, true to the file that downloads."""
    done = wait_job(api, encode(api, {"text": TEXT, "options": {"max_steps": 10, **options}}), 300, tiny_worker)
    assert done["status"] == "finished", done
    emb_id = done["embedding_ids"][0]
    emb = api.http.get(f"/v1/embeddings/{emb_id}").json()
    size = emb["size"]
    assert SIZE_KEYS <= set(size) and done["sizes"] == {emb_id: size}
    blob = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"}).content
    assert size["file_bytes"] == len(blob) and size["text_bytes"] == len(TEXT.encode())
    enc = Encoding.from_bytes(blob)
    assert size["vectors_bytes"] == sum(t.numel() * t.element_size() for t in enc.tensors().values())
    assert (emb["storage"], emb["rank"]) == (enc.storage, enc.rank) and enc.storage == emb["dtype"]
    if options.get("rank"):
        assert enc.rank == 8 and enc.tensors()["e"].shape == (1, 8)
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == TEXT
    r = api.http.post("/v1/decode", content=blob, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.json()["text"] == TEXT


def test_a_rank_above_the_models_hidden_size_fails_the_job_as_invalid_input(api, tiny_worker):
    done = wait_job(api, encode(api, {"text": TEXT, "options": {"max_steps": 5, "rank": 33}}), 300, tiny_worker)
    assert done["status"] == "failed" and done["error_code"] == "invalid_input" and "hidden size" in done["error"]


def test_a_job_queued_before_recipe_start_runs_with_the_start_it_asked_for():
    from prototok.recipe import StartFrom
    from service.queues import config_from_dict, config_to_dict

    queued = config_to_dict(EncodeConfig())
    assert config_from_dict(queued) == EncodeConfig()
    for old, start in ((True, StartFrom.WARM), (False, StartFrom.RANDOM)):
        recipe = {k: v for k, v in queued["recipe"].items() if k != "start"} | {"warm_start": old}
        assert config_from_dict(queued | {"recipe": recipe}).recipe.start is start


def test_a_start_encoder_job_on_a_worker_without_an_encoder_fails_as_invalid_input(api, tiny_worker):
    done = wait_job(api, encode(api, {"text": TEXT, "options": {"max_steps": 5, "start": "encoder"}}), 300,
                    tiny_worker)
    assert done["status"] == "failed" and done["error_code"] == "invalid_input"
    assert "prototok encoder train --model tiny-llama" in done["error"]


def test_step_budget_is_capped():
    from app.schemas import EncodeOptions
    from service.settings import ServiceSettings

    cfg = EncodeOptions(max_steps=10**6).to_config(ServiceSettings(max_steps_limit=50))
    assert cfg.recipe.max_steps == 50


def test_the_start_option_reaches_the_recipe():
    from app.schemas import EncodeOptions
    from prototok.recipe import StartFrom
    from service.settings import ServiceSettings

    assert EncodeOptions().to_config(ServiceSettings()).recipe.start is StartFrom.WARM  # the tuned default
    assert EncodeOptions(recipe="paper").to_config(ServiceSettings()).recipe.start is StartFrom.RANDOM
    cfg = EncodeOptions(start="encoder").to_config(ServiceSettings())
    assert cfg.recipe.start is StartFrom.ENCODER and cfg.recipe.to_dict()["start"] == "encoder"


NOT_SERVED = "some-org/not-served-model"


@pytest.mark.parametrize("method,path,kwargs,status,code", [
    ("post", "/v1/encode", {"json": {"text": ""}}, 422, "empty_text"),
    ("post", "/v1/encode", {"json": {"texts": []}}, 422, "empty_text"),
    ("post", "/v1/encode", {"json": {"texts": ["ok", ""]}}, 422, "empty_text"),
    ("post", "/v1/encode", {"json": {"text": "x" * 301}}, 413, "text_too_long"),
    ("post", "/v1/encode", {"json": {"texts": ["a"] * 5}}, 413, "too_many_texts"),
    ("post", "/v1/encode", {"json": {"text": "x" * 200_000}}, 413, "body_too_large"),
    ("post", "/v1/encode", {"json": {"text": "hi", "model": "no-such-model"}}, 404, "unknown_model"),
    ("post", "/v1/encode", {"json": {"text": "hi", "model": NOT_SERVED}}, 409, "model_not_served"),
    ("post", "/v1/encode", {"content": b'{"text": "hi"', "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("post", "/v1/encode", {"json": {"text": "a", "texts": ["b"]}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"max_steps": 0}}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"margin": -1}}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"bogus": 1}}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"storage": "int4"}}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"rank": -1}}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"start": "nearby"}}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"start": "encoder", "model_m": True}}}, 422,
     "invalid_input"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"compact": True, "rank": 4}}}, 422,
     "invalid_request"),
    ("post", "/v1/encode", {"json": {"text": "a", "options": {"storage": "int8", "method": "autoregressive"}}},
     422, "invalid_input"),
    ("post", "/v1/encode", {"content": b'{"text": "a", "options": {"lr": NaN}}',
                            "headers": {"content-type": "application/json"}}, 422, "invalid_request"),
    ("post", "/v1/encode", {"json": ["not", "an", "object"]}, 422, "invalid_request"),
    ("get", "/v1/jobs/no-such-job", {}, 404, "job_not_found"),
    ("get", "/v1/embeddings/0123456789abcdef0123456789abcdef", {}, 404, "embedding_not_found"),
    ("get", "/v1/embeddings/not-an-id/text", {}, 404, "embedding_not_found"),
    ("delete", "/v1/embeddings/0123456789abcdef0123456789abcdef", {}, 404, "embedding_not_found"),
    ("post", "/v1/decode", {"json": {"model": "tiny-llama", "e": [0.1] * 31, "m": [0.1] * 31, "length": 3}},
     422, "bad_vectors"),
    ("post", "/v1/decode", {"json": {"model": "tiny-llama", "e": [[0.1] * 32, [0.1] * 31], "m": [[0.1] * 32] * 2,
                                     "length": [2, 2]}}, 422, "bad_vectors"),
    ("post", "/v1/decode", {"json": {"model": "tiny-llama", "e": [0.1] * 32, "m": [0.1] * 32, "length": [2, 2]}},
     422, "bad_vectors"),
    ("post", "/v1/decode", {"content": json.dumps({"model": "tiny-llama", "e": [float("nan")] + [0.1] * 31,
                                                   "m": [0.1] * 32, "length": 3}).encode(),
                            "headers": {"content-type": "application/json"}}, 422, "bad_vectors"),
    ("post", "/v1/decode", {"content": json.dumps({"model": "tiny-llama", "e": [0.1] * 32,
                                                   "m": [float("inf")] * 32, "length": 3}).encode(),
                            "headers": {"content-type": "application/json"}}, 422, "bad_vectors"),
    ("post", "/v1/decode", {"json": {"model": "tiny-llama", "e": [0.1] * 32, "m": [0.1] * 32, "length": 0}},
     422, "invalid_request"),
    ("post", "/v1/decode", {"json": {"model": "no-such-model", "e": [0.1] * 32, "m": [0.1] * 32, "length": 3}},
     404, "unknown_model"),
    ("post", "/v1/decode", {"content": b"{oops", "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("post", "/v1/decode", {"files": {"file": ("x.safetensors", b"not safetensors at all", "application/x")}},
     422, "corrupt_encoding"),
    ("post", "/v1/decode", {"files": {"other": ("x", b"data", "application/x")}}, 422, "invalid_input"),
    ("get", "/v1/nothing-here", {}, 404, "not_found"),
])
def test_bad_input_is_a_4xx_with_a_stable_code(api, tiny_worker, method, path, kwargs, status, code):
    r = getattr(api.http, method)(path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["message"], body


@pytest.mark.parametrize("path,content_type", [
    ("/v1/encode", "application/json"),
    ("/v1/decode", "application/json"),
    ("/v1/decode", "application/octet-stream"),
])
def test_streamed_body_over_the_limit_is_stopped(api, path, content_type):
    """No Content-Length (chunked upload, over a real socket): the API counts bytes as they arrive and answers 413."""
    def chunks():
        yield b'{"text": "'
        for _ in range(30):
            yield b"x" * 10_000  # 300 KB in all, over service_env's 100 KB limit
        yield b'"}'

    r = api.net.post(path, content=chunks(), headers={"content-type": content_type})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "body_too_large" and "PROTOTOK_MAX_BODY_BYTES" in r.json()["message"]


def test_damaged_blob_fails_its_checksum(api, service_redis):
    """A stored encoding whose bytes changed in Redis is refused, never decoded into other text."""
    from service.store import EncodingStore

    lm = load_model("tiny-llama")
    [enc] = encode_texts(lm, ["checksum"], EncodeConfig(recipe=TUNED.with_(max_steps=2, seeds=1)))
    emb_id = EncodingStore(service_redis).put(enc, owner=api.key_name)
    key = f"prototok:emb:{emb_id}"
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == "checksum"
    blob = bytearray(service_redis.hget(key, "blob"))
    blob[-1] ^= 0x01  # one bit of one vector value
    service_redis.hset(key, "blob", bytes(blob))
    for path in (f"/v1/embeddings/{emb_id}", f"/v1/embeddings/{emb_id}/text"):
        r = api.http.get(path)
        assert r.status_code == 409 and r.json()["code"] == "checksum_mismatch", r.text


def test_health_ready_metrics_docs(api, tiny_worker, finished):
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200 and "tiny-llama" in ready.json()["models"]
    metrics = api.http.get("/metrics").text
    assert 'prototok_jobs{model="tiny-llama",state="finished"}' in metrics
    assert "prototok_encode_seconds_count" in metrics and "prototok_decode_seconds_bucket" in metrics
    assert 'prototok_workers{model="tiny-llama"} 1.0' in metrics
    assert api.http.get("/docs").status_code == 200
    spec = api.http.get("/openapi.json").json()
    assert spec["components"]["schemas"]["EncodeRequest"]["examples"]
    assert {"application/json", "multipart/form-data"} <= set(
        spec["paths"]["/v1/decode"]["post"]["requestBody"]["content"])


DECODE_LIMIT = 512  # service_env's PROTOTOK_MAX_DECODE_TOKENS


@pytest.mark.parametrize("length", [10**9, DECODE_LIMIT + 1, [DECODE_LIMIT, 1]])
def test_json_decode_over_the_position_limit_is_413(api, length):
    rows = len(length) if isinstance(length, list) else 1
    r = api.http.post("/v1/decode", json={"model": "tiny-llama", "e": [[0.1] * 32] * rows, "m": [[0.1] * 32] * rows,
                                          "length": length})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "too_many_tokens" and "PROTOTOK_MAX_DECODE_TOKENS" in r.json()["message"]


@pytest.mark.parametrize("lengths", [[10**9], [DECODE_LIMIT + 1], [1] * (DECODE_LIMIT + 1)])
def test_upload_over_the_position_limit_is_413(api, finished, lengths):
    """The header's lengths are judged before a tensor is built: 413, not a MemoryError 500."""
    from safetensors.torch import save as st_save

    enc = Encoding.from_bytes(api.http.get(f"/v1/embeddings/{finished['embedding_ids'][0]}",
                                           headers={"Accept": "application/octet-stream"}).content)
    blob = st_save({k: v.contiguous() for k, v in enc.vectors.items()},
                   metadata={"prototok": json.dumps({**enc.metadata(), "lengths": lengths})})
    for kwargs in ({"files": {"file": ("x.safetensors", blob, "application/octet-stream")}},
                   {"content": blob, "headers": {"content-type": "application/octet-stream"}}):
        r = api.http.post("/v1/decode", **kwargs)
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "too_many_tokens"


def test_stored_encoding_over_the_position_limit_is_413_and_kept(api, service_redis):
    """Stored before the limit was lowered, say: refused with a clear code, still downloadable."""
    from service.store import EncodingStore

    lm = load_model("tiny-llama")
    text = "a long stored text " * 40
    [enc] = encode_texts(lm, [text], EncodeConfig(recipe=TUNED.with_(max_steps=1, seeds=1)))
    assert enc.n_tokens > DECODE_LIMIT
    emb_id = EncodingStore(service_redis).put(enc, owner=api.key_name)
    r = api.http.get(f"/v1/embeddings/{emb_id}/text")
    assert r.status_code == 413 and r.json()["code"] == "too_many_tokens", r.text
    raw = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"})
    assert raw.status_code == 200 and Encoding.from_bytes(raw.content).n_tokens == enc.n_tokens


def test_every_decode_route_answers_the_same(api, finished):
    """The stored encoding, its file uploaded, and its vectors as JSON: the same text; and the error
    codes of a bad upload, bad vectors and a decode over the position limit."""
    emb_id = finished["embedding_ids"][0]
    blob = api.http.get(f"/v1/embeddings/{emb_id}", headers={"Accept": "application/octet-stream"}).content
    emb = api.http.get(f"/v1/embeddings/{emb_id}").json()
    vectors = {"model": "tiny-llama", "e": emb["vectors"]["e"], "m": emb["vectors"]["m"], "length": emb["length"]}
    wrong = Encoding.from_bytes(blob)
    wrong.ids_sha256 = "0" * 64
    assert api.http.get(f"/v1/embeddings/{emb_id}/text").json()["text"] == TEXT
    assert api.http.post("/v1/decode", content=blob,
                         headers={"content-type": "application/octet-stream"}).json()["text"] == TEXT
    from_vectors = api.http.post("/v1/decode", json=vectors)
    assert from_vectors.status_code == 200 and from_vectors.json()["length"] == emb["length"]
    answers = [api.http.post("/v1/decode", content=wrong.to_bytes(), headers={"content-type": "application/octet-stream"}),
               api.http.post("/v1/decode", json={**vectors, "e": [[0.0] * 31]}),
               api.http.post("/v1/decode", json={**vectors, "length": 10**9})]
    assert [(r.status_code, r.json()["code"]) for r in answers] == [(409, "decode_mismatch"), (422, "bad_vectors"),
                                                                   (413, "too_many_tokens")]
