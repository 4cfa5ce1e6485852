"""Files an earlier version made keep decoding by default, on any host; and an encoding whose
checksum fails in the dtype chosen first is rebuilt in another dtype of the host.

tests/data holds files made by earlier versions (tests/data/README.md says which and how). They
record no `compute_dtype`: they were made in float32. On a host whose default dtype is bfloat16
(a CUDA GPU, a CPU with AVX512-BF16 or AMX) some of them fail their checksum in bfloat16; they
must still decode, in the library, the CLI, the API (stored and uploaded) and the decode process.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import LocalApi
from typer.testing import CliRunner

from app.batcher import DecodeLane
from prototok import Encoding, decode, encode_texts, load_model
from prototok import models as prototok_models
from prototok.cli import app
from prototok.codec import fallback_dtypes
from prototok.errors import DecodeMismatch
from prototok.models import resolve_dtype
from prototok.recipe import TUNED, EncodeConfig
from service.settings import ServiceSettings, clear_cache

DATA = Path(__file__).parent / "data"
OLD = json.loads((DATA / "old_files.json").read_text(encoding="utf-8"))
TINY_OLD = sorted(name for name, f in OLD.items() if f["model"] == "tiny-llama")
SMOLLM2_OLD = sorted(name for name, f in OLD.items() if f["model"] == "smollm2-135m-instruct")


def old(name: str) -> Encoding:
    return Encoding.load(DATA / name)


def fails_alone_in(lm, enc: Encoding) -> bool:
    """Does lm's own dtype (no fallback) miss this encoding's checksum?"""
    try:
        decode(lm, [enc], fallback=False)
    except DecodeMismatch:
        return True
    return False


@pytest.fixture(scope="module")
def tiny_bf16():
    return load_model("tiny-llama", dtype="bfloat16")


@pytest.fixture
def bf16_host(monkeypatch) -> Iterator[None]:
    """PROTOTOK_DTYPE=auto on a CPU that multiplies bfloat16 natively: bfloat16 is the default dtype."""
    monkeypatch.setenv("PROTOTOK_DTYPE", "auto")
    monkeypatch.setattr(prototok_models, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    clear_cache()
    assert resolve_dtype(torch.device("cpu")) == torch.bfloat16
    yield
    clear_cache()


def test_the_old_files_record_no_dtype_and_some_fail_in_bfloat16(tiny_bf16):
    """What makes the tests below bite: on this host's bfloat16 the old files' checksums fail."""
    assert all(old(name).compute_dtype is None for name in OLD)
    failing = [name for name in TINY_OLD if fails_alone_in(tiny_bf16, old(name))]
    if not failing:
        pytest.skip("this CPU's bfloat16 rebuilds every old tiny-llama file: no fallback to exercise")


@pytest.mark.parametrize("name", TINY_OLD)
def test_the_library_decodes_an_old_file_in_float32_when_bfloat16_misses(tiny_bf16, name):
    [out] = decode(tiny_bf16, [old(name)])
    assert out.text == OLD[name]["text"]
    assert out.dtype == ("float32" if fails_alone_in(tiny_bf16, old(name)) else "bfloat16")


@pytest.mark.parametrize("name", TINY_OLD)
def test_the_cli_decodes_an_old_file_by_default_on_a_bf16_host(bf16_host, name, tmp_path):
    res = CliRunner().invoke(app, ["decode", str(DATA / name), "--out", str(tmp_path / "t.txt"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dtype"] == "float32"  # a file that records no dtype was made in float32
    assert (tmp_path / "t.txt").read_bytes() == OLD[name]["text"].encode()


def test_the_cli_says_on_stderr_which_dtype_rebuilt_a_file(tiny_bf16):
    name = next((n for n in TINY_OLD if fails_alone_in(tiny_bf16, old(n))), None)
    if name is None:
        pytest.skip("this CPU's bfloat16 rebuilds every old tiny-llama file")
    res = CliRunner().invoke(app, ["decode", str(DATA / name), "--dtype", "bfloat16"])
    assert res.exit_code == 0 and res.stdout_bytes == OLD[name]["text"].encode()
    assert "the checksum failed in bfloat16; rebuilt exactly in float32" in res.stderr


def test_a_bfloat16_encoding_that_float32_misses_is_rebuilt_in_bfloat16(tiny, tiny_bf16):
    """Made in bfloat16 on this host with no margin, decoded by a float32 model: some such
    encodings flip a token in float32; each one decodes, in bfloat16."""
    rng = random.Random(0)
    words = ["the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
             "from", "it", "an", "be", "this"]
    texts = [" ".join(rng.choice(words) for _ in range(5)) for _ in range(16)]
    encs = encode_texts(tiny_bf16, texts, EncodeConfig(recipe=TUNED.with_(max_steps=300, seeds=1, margin=0.0)))
    missed = [(t, e) for t, e in zip(texts, encs) if fails_alone_in(tiny, e)]
    if not missed:
        pytest.skip("float32 rebuilt all 16 bfloat16 encodings on this CPU: no fallback to exercise")
    for text, enc in missed:
        [out] = decode(tiny, [enc])
        assert (out.text, out.dtype) == (text, "bfloat16")


def test_a_checksum_no_dtype_matches_names_every_dtype_tried(tiny):
    [enc] = encode_texts(tiny, ["tampered"], EncodeConfig(recipe=TUNED.with_(max_steps=3, seeds=1)))
    enc.ids_sha256 = "0" * 64
    with pytest.raises(DecodeMismatch, match=r"in any dtype tried \(float32, bfloat16\)"):
        decode(tiny, [enc])


def test_the_fallback_order_starts_with_the_dtype_a_file_was_made_in(tiny, tiny_bf16):
    made_in = {None: "float32", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
    for recorded, first in made_in.items():
        enc = old(TINY_OLD[0])
        enc.compute_dtype = recorded
        for lm in (tiny, tiny_bf16):
            order = fallback_dtypes(lm, enc)
            here = str(lm.dtype).removeprefix("torch.")
            assert here not in order and len(order) == len(set(order))
            assert order[0] == first or first == here
            assert "float16" not in order or recorded == "float16"  # only on CUDA, or for a float16 file


# --- the service: stored and uploaded, in the lane's thread and in the decode process ---


@pytest.fixture(scope="module")
def bf16_api(service_redis, service_logs) -> Iterator[LocalApi]:
    server = LocalApi(service_logs / "api-old-files.log", PROTOTOK_DTYPE="bfloat16")
    yield server
    server.close()


def store_as_an_old_worker_did(api: LocalApi, conn, name: str) -> str:
    """The file's own bytes in the store, owned by the API's test key, as a worker of its version wrote them."""
    import hashlib
    import time
    import uuid

    from service.store import EncodingStore

    blob, emb_id = (DATA / name).read_bytes(), uuid.uuid4().hex
    conn.hset(EncodingStore.key(emb_id), mapping={"blob": blob, "sha256": hashlib.sha256(blob).hexdigest(),
                                                  "created": time.time(), "model": OLD[name]["model"],
                                                  "job_id": "", "owner": api.key_name})
    return emb_id


@pytest.mark.integration
@pytest.mark.parametrize("name", TINY_OLD)
def test_a_bf16_api_rebuilds_old_files_stored_and_uploaded(bf16_api, service_redis, tiny_bf16, name):
    expected_dtype = "float32" if fails_alone_in(tiny_bf16, old(name)) else "bfloat16"
    emb_id = store_as_an_old_worker_did(bf16_api, service_redis, name)
    stored = bf16_api.http.get(f"/v1/embeddings/{emb_id}/text")
    upload = bf16_api.http.post("/v1/decode", content=(DATA / name).read_bytes(),
                                headers={"Content-Type": "application/octet-stream"})
    for r in (stored, upload):
        assert r.status_code == 200, r.text
        assert (r.json()["text"], r.json()["dtype"]) == (OLD[name]["text"], expected_dtype)


@pytest.fixture
def bf16_decode_process(monkeypatch) -> Iterator[DecodeLane]:
    monkeypatch.setenv("PROTOTOK_DTYPE", "bfloat16")  # the spawned child reads the API's environment
    lane = DecodeLane("tiny-llama", ServiceSettings(decode_threads=1, decode_batch_wait_ms=0)).start()
    yield lane
    lane.close()


@pytest.mark.integration
def test_the_decode_process_rebuilds_old_files_in_another_dtype(bf16_decode_process, tiny_bf16):
    futures = {name: bf16_decode_process.submit_encoding(old(name)) for name in TINY_OLD}
    for name, future in futures.items():
        out = future.result(120)
        assert out.text == OLD[name]["text"]
        assert out.dtype == ("float32" if fails_alone_in(tiny_bf16, old(name)) else "bfloat16")


@pytest.mark.integration
@pytest.mark.parametrize("name", SMOLLM2_OLD)
def test_old_smollm2_files_decode_by_default_on_a_bf16_host(bf16_host, name):
    """Made by an earlier version's CLI in float32 on SmolLM2 (README in tests/data)."""
    res = CliRunner().invoke(app, ["decode", str(DATA / name)])
    assert res.exit_code == 0, res.output
    assert res.stdout_bytes == OLD[name]["text"].encode()
    lm = load_model("smollm2-135m-instruct", dtype="bfloat16")
    [out] = decode(lm, [old(name)])  # the library, handed a bfloat16 model
    assert out.text == OLD[name]["text"]
    assert out.dtype == ("float32" if fails_alone_in(lm, old(name)) else "bfloat16")
