"""The model's shared m (issue 11, `model_m`): m is the model's start m, frozen and stored once per
model; each file holds e alone and names its m by digest, and decodes only with that m."""

import json

import pytest
import torch
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from prototok import EncodeConfig, Encoding, decode, encode_texts
from prototok.cli import app
from prototok.errors import CorruptEncoding, DecodeMismatch, InvalidInput, ModelMMissing
from prototok.recipe import TUNED, ShareMode, encode_config
from prototok.start_training import train_start
from prototok.starts import candidates, find_start, m_digest, write_start

TEXT = "one m per model"
SEQS = [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4], [11, 6, 2, 9, 10]]


def recipe(**changes):
    return TUNED.with_(max_steps=8, seeds=1, warmup_steps=1, ste_steps=4, **changes)


def cfg(**kw) -> EncodeConfig:
    return EncodeConfig(recipe=recipe(), model_m=True, **kw)


def make_start(lm, steps: int = 3):
    """A start for the tiny model in the cache dir, as `prototok start train` writes one."""
    e, m, how = train_start(lm, SEQS, steps, TUNED.with_(max_steps=steps, warmup_steps=1, margin=0.0))
    write_start(candidates(lm)[0], lm, e, m, **how)
    return find_start(lm)


def test_model_m_round_trips_through_a_file_that_holds_e_alone(tiny, start_cache):
    start = make_start(tiny)
    [enc] = encode_texts(tiny, [TEXT], cfg())
    assert enc.share == "frozen_m" and torch.equal(enc.vectors["m"][0], start.m)
    assert enc.m_ref == {"sha256": m_digest(start.m), "start": candidates(tiny)[0].name}
    path = start_cache / "enc.safetensors"
    enc.save(path)
    back = Encoding.load(path)
    assert set(back.tensors()) == {"e"} and set(back.vectors) == {"e"}  # no m in the file
    assert enc.size["vectors_bytes"] == tiny.hidden_size * 4 == back.size["vectors_bytes"]  # e only, float32
    assert back.metadata()["m_ref"] == enc.m_ref
    [out] = decode(tiny, [back])
    assert out.text == TEXT and torch.equal(back.vectors["m"][0], start.m)
    [plain] = encode_texts(tiny, [TEXT], EncodeConfig(recipe=recipe()))
    assert plain.m_ref is None and "m_ref" not in plain.metadata()  # files that store m are as before


def test_model_m_with_int8_stores_int8_e_and_its_scale(tiny, start_cache):
    make_start(tiny)
    [enc] = encode_texts(tiny, [TEXT], cfg(storage="int8"))
    back = Encoding.from_bytes(enc.to_bytes())
    assert {k: v.dtype for k, v in back.tensors().items()} == {"e": torch.int8, "e_scale": torch.float32}
    assert enc.size["vectors_bytes"] == tiny.hidden_size + 4
    assert torch.equal(back.vectors["e"], enc.vectors["e"])  # what encode verified
    assert decode(tiny, [back])[0].text == TEXT


def test_e_begins_at_the_start_and_m_never_moves(tiny, start_cache):
    start = make_start(tiny)
    seen = []
    [enc] = encode_texts(tiny, [TEXT], cfg(storage="int8").with_(recipe=recipe(margin=50.0)),
                         progress=lambda p: seen.append(p.step))
    assert enc.steps == 12 and seen == list(range(1, 13))  # 8 steps, then 4 straight-through ones on e
    assert torch.equal(enc.vectors["m"], start.m.expand(1, -1))  # frozen, and never rounded to int8


def test_without_a_start_model_m_is_refused_before_any_work(tiny, start_cache):
    seen = []
    with pytest.raises(ModelMMissing, match="prototok start train --model tiny-llama"):
        encode_texts(tiny, [TEXT], cfg(), progress=seen.append)
    assert seen == [] and ModelMMissing.status == 409


def test_a_file_whose_m_no_start_holds_is_refused_not_decoded(tiny, start_cache):
    make_start(tiny, steps=2)
    [enc] = encode_texts(tiny, [TEXT], cfg())
    blob = enc.to_bytes()
    make_start(tiny, steps=3)  # retrained: the cache dir's start now holds another m
    with pytest.raises(ModelMMissing, match=enc.m_ref["sha256"]):
        decode(tiny, [Encoding.from_bytes(blob)])
    candidates(tiny)[0].unlink()  # no start at all: the same clear refusal
    with pytest.raises(ModelMMissing, match="no start here holds that m"):
        decode(tiny, [Encoding.from_bytes(blob)])


def test_tampered_int8_e_fails_the_checksum(tiny, start_cache):
    make_start(tiny)
    [enc] = encode_texts(tiny, [TEXT], cfg(storage="int8"))
    blob = st_save({**enc.tensors(), "e": (-enc.stored["e"]).contiguous()},
                   metadata={"prototok": json.dumps(enc.metadata())})
    with pytest.raises(DecodeMismatch):
        decode(tiny, [Encoding.from_bytes(blob)])


@pytest.mark.parametrize("m_ref", [{"sha256": "abc"}, "x", {"start": "s"}])
def test_a_malformed_m_ref_is_a_corrupt_file(tiny, start_cache, m_ref):
    make_start(tiny)
    [enc] = encode_texts(tiny, [TEXT], cfg())
    blob = st_save(enc.tensors(), metadata={"prototok": json.dumps({**enc.metadata(), "m_ref": m_ref})})
    with pytest.raises(CorruptEncoding, match="m_ref"):
        Encoding.from_bytes(blob)


def test_a_file_with_m_ref_and_an_m_tensor_is_refused(tiny, start_cache):
    make_start(tiny)
    [enc] = encode_texts(tiny, [TEXT], cfg())
    blob = st_save({**enc.tensors(), "m": enc.vectors["m"].contiguous()},
                   metadata={"prototok": json.dumps(enc.metadata())})
    with pytest.raises(InvalidInput, match="expected tensors"):
        Encoding.from_bytes(blob)


@pytest.mark.parametrize(("kw", "named"), [
    ({"rank": 8}, "model_m and rank"), ({"share": "shared_m"}, "share=shared_m"), ({"group_size": 2}, "group_size"),
    ({"method": "autoregressive"}, "autoregressive"), ({"arrangement": "one"}, "arrangement=one"),
])
def test_options_that_do_not_combine_with_model_m_are_refused(kw, named):
    with pytest.raises(InvalidInput, match=named):
        EncodeConfig(model_m=True, **kw)


def test_model_m_is_frozen_m_that_takes_storage_but_not_a_given_m(tiny, start_cache):
    c = EncodeConfig(model_m=True, storage="int8")
    assert c.share is ShareMode.FROZEN_M and c.takes_storage and c.with_(seeds=None) == c
    server = encode_config(model_m=True, default_storage="int8", default_rank=16)  # a server's compact default
    assert (server.storage, server.rank, server.model_m) == ("int8", 0, True)
    make_start(tiny)
    with pytest.raises(InvalidInput, match="frozen_m"):
        encode_texts(tiny, [TEXT], cfg(), frozen_m=torch.zeros(tiny.hidden_size))


def test_cli_model_m_encodes_and_decodes_and_says_when_there_is_no_start(start_cache):
    runner = CliRunner()
    out = start_cache / "cli.safetensors"
    args = ["encode", TEXT, "--out", str(out), "--model", "tiny-llama", "--model-m", "--max-steps", "5"]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "no start (shared m)" in missing.output
    made = runner.invoke(app, ["start", "train", "--model", "tiny-llama", "--texts", "2", "--steps", "2"])
    assert made.exit_code == 0, made.output
    res = runner.invoke(app, [*args, "--storage", "int8", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["m_ref"]["start"] == "start-tiny-llama.safetensors" and summary["storage"] == "int8"
    dec = runner.invoke(app, ["decode", str(out)])
    assert dec.exit_code == 0 and dec.stdout == TEXT
    candidates_dir = start_cache / "starts"
    for f in candidates_dir.iterdir():
        f.unlink()
    gone = runner.invoke(app, ["decode", str(out)])
    assert gone.exit_code == 2 and "no start here holds that m" in gone.output
