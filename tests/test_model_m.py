"""The model's shared m (`model_m`): m is the model's start m, frozen and stored once per
model; each file holds e alone and names its m by digest, and decodes only with that m."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file
from typer.testing import CliRunner

from prototok import EncodeConfig, Encoding, decode, encode_texts, starts
from prototok.cli import app
from prototok.errors import CorruptEncoding, DecodeMismatch, InvalidInput, ModelMMissing
from prototok.recipe import TUNED, ShareMode, encode_config
from prototok.start_training import train_start
from prototok.starts import candidates, find_start, locate_m, m_digest, read_start, write_start

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
    assert plain.m_ref is None and "m_ref" not in plain.metadata()  # files that store m are unchanged


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


def kept(lm, m) -> Path:
    """Where a replaced start holding `m` is kept: beside the current one, named by m's digest."""
    return candidates(lm)[0].with_name(f"start-tiny-llama.{m_digest(m)[:16]}.safetensors")


def test_a_retrain_keeps_the_old_start_so_its_files_still_decode(tiny, start_cache):
    """Retraining must not orphan the model_m files made with the old start (data loss): the old
    start is kept under its m's digest, decodes find it, and encodes use only the new one."""
    old = make_start(tiny, steps=2)
    [enc] = encode_texts(tiny, [TEXT], cfg())
    blob = enc.to_bytes()
    new = make_start(tiny, steps=3)  # `prototok start train` again: the cache dir's start is replaced
    assert not torch.equal(new.m, old.m) and torch.equal(find_start(tiny).m, new.m)
    assert sorted(p.name for p in (start_cache / "starts").iterdir()) == [kept(tiny, old.m).name,
                                                                          candidates(tiny)[0].name]
    assert read_start(kept(tiny, old.m)).meta == old.meta  # the old file itself, as it was
    [out] = decode(tiny, [Encoding.from_bytes(blob)])
    assert out.text == TEXT and out.ids == tiny.tokenize(TEXT)
    path, m = locate_m(tiny, enc.m_ref)
    assert path == kept(tiny, old.m) and torch.equal(m, old.m)
    [after] = encode_texts(tiny, [TEXT], cfg())  # encodes begin from the current start only
    assert after.m_ref == {"sha256": m_digest(new.m), "start": candidates(tiny)[0].name}
    assert decode(tiny, [Encoding.from_bytes(after.to_bytes())])[0].text == TEXT
    for f in (start_cache / "starts").iterdir():  # every file that held the m removed: a clear refusal
        f.unlink()
    with pytest.raises(ModelMMissing, match="no start here holds that m"):
        decode(tiny, [Encoding.from_bytes(blob)])


def test_an_m_is_kept_once_however_often_starts_alternate(tiny, start_cache):
    a, b = make_start(tiny, steps=2), make_start(tiny, steps=3)
    kept_a = kept(tiny, a.m).read_bytes()
    for start in (a, b, a):  # back and forth: each replaced m already has its kept file
        write_start(candidates(tiny)[0], tiny, start.e, start.m, **{k: v for k, v in start.meta.items()
                                                                     if k not in ("model", "weights_fingerprint")})
    assert sorted(p.name for p in (start_cache / "starts").iterdir()) == sorted(
        [kept(tiny, a.m).name, kept(tiny, b.m).name, candidates(tiny)[0].name])
    assert kept(tiny, a.m).read_bytes() == kept_a  # not rewritten
    write_start(candidates(tiny)[0], tiny, torch.zeros_like(a.e), a.m)  # a new e with the same m: nothing to keep
    assert len(list((start_cache / "starts").iterdir())) == 3


def resave(path: Path, m: torch.Tensor | None = None, **meta) -> None:
    """Rewrite a start file with another m and/or metadata (what a tampered or stray copy holds)."""
    start = read_start(path)
    save_file({"e": start.e, "m": start.m if m is None else m},
              str(path), metadata={k: json.dumps(v) for k, v in {**start.meta, **meta}.items()})


def test_a_kept_file_counts_only_while_it_holds_that_m_for_these_weights(tiny, start_cache):
    """The name is a hint: a file is used when the sha256 of the m it holds is the one recorded and
    it was made for these weights. A tampered, foreign or unreadable file is skipped, not fatal."""
    old = make_start(tiny, steps=2)
    [enc] = encode_texts(tiny, [TEXT], cfg())
    make_start(tiny, steps=3)
    resave(kept(tiny, old.m), m=old.m + 1e-3)  # tampered: the name still says the old digest
    with pytest.raises(ModelMMissing, match=enc.m_ref["sha256"]):
        decode(tiny, [Encoding.from_bytes(enc.to_bytes())])
    resave(kept(tiny, old.m), m=old.m, weights_fingerprint="0" * 16)  # the right m, made for other weights
    with pytest.raises(ModelMMissing):
        decode(tiny, [Encoding.from_bytes(enc.to_bytes())])
    resave(kept(tiny, old.m), weights_fingerprint=tiny.weights_fingerprint)
    kept(tiny, old.m).rename(start_cache / "starts" / "start-tiny-llama.copied-by-hand.safetensors")
    kept(tiny, old.m).write_bytes(b"not a start file")  # unreadable, under the hinted name: skipped
    assert decode(tiny, [Encoding.from_bytes(enc.to_bytes())])[0].text == TEXT  # found under another name
    assert locate_m(tiny, enc.m_ref)[0].name == "start-tiny-llama.copied-by-hand.safetensors"


def test_digest_lookups_stay_cheap_with_many_kept_files(tiny, start_cache, monkeypatch):
    """A hit under its digest's name reads that file alone; a miss reads every kept file once,
    and a repeated miss reads none (it only stats)."""
    make_start(tiny, steps=2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):  # 40 retrains: 40 kept files
        write_start(candidates(tiny)[0], tiny, torch.randn(tiny.hidden_size, generator=gen),
                    torch.randn(tiny.hidden_size, generator=gen))
    files = list((start_cache / "starts").iterdir())
    assert len(files) == 41
    reads = []
    real = starts.read_start
    monkeypatch.setattr(starts, "read_start", lambda path: reads.append(path.name) or real(path))
    target = read_start(sorted(files)[7])
    assert torch.equal(starts.find_m(tiny, {"sha256": m_digest(target.m)}), target.m)
    assert set(reads) == {candidates(tiny)[0].name, kept(tiny, target.m).name}  # the current start, then the hint
    reads.clear()
    with pytest.raises(ModelMMissing):
        starts.find_m(tiny, {"sha256": "0" * 64})
    read_before = {candidates(tiny)[0].name, kept(tiny, target.m).name}
    assert sorted(reads) == sorted(f.name for f in files if f.name not in read_before)  # the others, once each
    reads.clear()
    with pytest.raises(ModelMMissing):
        starts.find_m(tiny, {"sha256": "0" * 64})
    assert starts.find_m(tiny, {"sha256": m_digest(target.m)}) is not None
    assert reads == []


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
