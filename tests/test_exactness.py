"""Lossless by construction, whatever the dtype and whatever else is in the batch.

Corrections are computed from the decode that `decode` runs (one encoding, its chunks in one
batch, in the model's dtype), the result is verified before it is returned, and a batched
decode that flips a low-margin token falls back to decoding that encoding alone.
"""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prototok import EncodeConfig, Encoding, Method, decode, decode_ids, encode_texts, load_model
from prototok.cli import app
from prototok.codec import mismatch_message, reference_decode
from prototok.errors import DecodeMismatch
from prototok.recipe import TUNED

DATA = Path(__file__).parent / "data"
OLD = json.loads((DATA / "old_files.json").read_text(encoding="utf-8"))  # tests/data/README.md
TEXTS = ["hello world", "The cat sat on the mat.", "ü → ∑ ok", "a somewhat longer line of text, in two chunks"]


@pytest.fixture(scope="module")
def tiny_bf16():
    return load_model("tiny-llama", dtype="bfloat16")


def quick(**recipe) -> EncodeConfig:
    return EncodeConfig(recipe=TUNED.with_(max_steps=12, seeds=3, **recipe), chunk_tokens=24)


def vectors_alone(lm, enc: Encoding) -> list[list[int]]:
    return decode_ids(lm, enc.arrangement, enc.vectors["e"], enc.vectors["m"], enc.lengths, enc.sink)


def test_corrections_are_exactly_where_the_decode_path_misses(tiny):
    encs = encode_texts(tiny, TEXTS, quick())
    for enc, text in zip(encs, TEXTS):
        ids = tiny.tokenize(text)
        raw = [t for chunk in vectors_alone(tiny, enc) for t in chunk]
        offsets = [sum(enc.lengths[:j]) for j in range(len(enc.lengths))]
        stored = {off + p for off, fixes in zip(offsets, enc.corrections) for p, _ in fixes}
        assert stored == {i for i, (a, b) in enumerate(zip(raw, ids)) if a != b}
        assert enc.c_tokens == len(ids) - len(stored)


def test_bf16_encoding_decodes_alone_and_batched_with_others(tiny_bf16):
    encs = encode_texts(tiny_bf16, TEXTS, quick())
    assert all(e.compute_dtype == "bfloat16" for e in encs)
    for enc, text in zip(encs, TEXTS):  # made in a batch of four texts x three restarts, decoded alone
        assert decode(tiny_bf16, [enc])[0].text == text
    others = encode_texts(tiny_bf16, ["x", "a much longer text that pads every other row of the batch"], quick())
    mixed = [others[1], *encs, others[0], encs[0]]
    assert [d.text for d in decode(tiny_bf16, mixed)] == [
        "a much longer text that pads every other row of the batch", *TEXTS, "x", TEXTS[0]]


def test_fp32_encoding_records_its_dtype_and_a_margin(tiny):
    [enc] = encode_texts(tiny, ["margin"], EncodeConfig(recipe=TUNED.with_(max_steps=300, seeds=2, margin=0.5)))
    again = Encoding.from_bytes(enc.to_bytes())
    assert again.compute_dtype == "float32" and again.min_margin == pytest.approx(enc.min_margin)
    if enc.n_corrections == 0 and enc.steps < 300:  # solved: every position leads by the margin
        assert enc.min_margin >= 0.5


def test_margin_makes_the_optimiser_train_past_plain_accuracy(tiny):
    plain = encode_texts(tiny, ["hi"], EncodeConfig(recipe=TUNED.with_(max_steps=400, seeds=1, margin=0.0)))[0]
    wide = encode_texts(tiny, ["hi"], EncodeConfig(recipe=TUNED.with_(max_steps=400, seeds=1, margin=0.5)))[0]
    assert plain.accuracy == 1.0 and wide.accuracy == 1.0
    assert wide.steps > plain.steps and wide.min_margin > plain.min_margin


def test_reference_decode_teacher_forces_mem_generation(tiny):
    cfg = quick().with_(method=Method.AUTOREGRESSIVE)
    [enc] = encode_texts(tiny, ["forced prefix"], cfg)
    raw, gap = reference_decode(tiny, enc.method, enc.arrangement, enc.sink, enc.vectors,
                                [tiny.tokenize("forced prefix")])
    assert gap is None and len(raw[0]) == enc.n_tokens
    assert decode(tiny, [enc])[0].text == "forced prefix"


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("v1-tiny-llama-*.safetensors")))
def test_files_from_before_the_dtype_was_recorded_keep_decoding(tiny, name):
    enc = Encoding.load(DATA / name)
    assert enc.compute_dtype is None and enc.n_corrections > 0
    assert decode(tiny, [enc])[0].text == OLD[name]["text"]


def test_a_checksum_failure_names_the_dtype_to_decode_in(tiny, tiny_bf16):
    [enc] = encode_texts(tiny_bf16, ["dtype"], quick())
    enc.ids_sha256 = "0" * 64  # stands in for a flip no correction covers
    with pytest.raises(DecodeMismatch, match="made in bfloat16 and was decoded in float32; decode it in bfloat16"):
        decode(tiny, [enc], fallback=False)
    assert "bfloat16" in mismatch_message(tiny, enc)


def test_cli_decodes_in_the_files_dtype_and_refuses_an_unknown_one(tmp_path):
    runner = CliRunner()
    out = tmp_path / "bf.safetensors"
    lm = load_model("tiny-llama", dtype="bfloat16")
    [enc] = encode_texts(lm, ["made in bf16"], quick())
    enc.save(out)
    res = runner.invoke(app, ["decode", str(out)])
    assert res.exit_code == 0 and res.stdout == "made in bf16"
    res = runner.invoke(app, ["decode", str(out), "--dtype", "float8"])
    assert res.exit_code == 2 and "unknown dtype" in res.output


def test_bf16_model_keeps_its_dtype_through_encoding(tiny_bf16):
    assert tiny_bf16.dtype == torch.bfloat16
