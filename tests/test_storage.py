"""Smaller encodings: float16 / bfloat16 / int8 storage and low-rank coefficients.
Each must decode exactly (corrections come from the stored values), old files keep decoding,
and options that do not fit are refused."""

import json

import pytest
import torch
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from prototok import EncodeConfig, Encoding, decode, encode_texts
from prototok import storage as st
from prototok.cli import app
from prototok.errors import BadVectors, CorruptEncoding, DecodeMismatch, InvalidInput
from prototok.recipe import TUNED

TEXT = "stored small, decoded exact"


def cfg(**kw) -> EncodeConfig:
    return EncodeConfig(recipe=TUNED.with_(max_steps=20, seeds=1, ste_steps=10), **kw)


@pytest.mark.parametrize(("storage", "rank", "width", "bytes_per"), [
    ("float16", 0, None, 2), ("bfloat16", 0, None, 2), ("int8", 0, None, 1), ("float32", 8, 8, 4), ("int8", 8, 8, 1)])
def test_every_storage_decodes_exactly_from_its_file(tiny, storage, rank, width, bytes_per):
    [enc] = encode_texts(tiny, [TEXT], cfg(storage=storage, rank=rank))
    back = Encoding.from_bytes(enc.to_bytes())
    assert (back.storage, back.rank) == (storage, rank) and back.metadata()["dtype"] == storage
    assert all(torch.equal(back.vectors[k], enc.vectors[k]) for k in ("e", "m"))  # what encode verified
    assert back.vectors["e"].shape == (1, tiny.hidden_size)
    assert back.tensors()["e"].shape == (1, width or tiny.hidden_size)
    scales = 2 * 4 if storage == "int8" else 0
    assert enc.size["vectors_bytes"] == 2 * (width or tiny.hidden_size) * bytes_per + scales
    assert decode(tiny, [back])[0].text == TEXT


def test_stored_values_are_what_decode_sees(tiny):
    """The vectors an int8 encoding decodes are its int8 values times the scale, not the float master."""
    [enc] = encode_texts(tiny, [TEXT], cfg(storage="int8"))
    q, scale = enc.stored["e"], enc.stored["e_scale"]
    assert q.dtype == torch.int8 and int(q.abs().max()) == st.INT8_MAX
    assert torch.equal(enc.vectors["e"], q.float() * scale[:, None])


def test_straight_through_rounds_forward_and_passes_the_gradient():
    x = torch.tensor([[0.3, -1.27, 0.011, 0.5]], requires_grad=True)
    y = st.straight_through(x, "int8")
    assert torch.equal(y.detach(), st.quantize(x.detach(), "int8"))
    assert torch.allclose(y.detach(), torch.tensor([[0.3, -1.27, 0.01, 0.5]]))
    (y * torch.arange(4.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(4.0)[None])


def test_straight_through_phase_runs_after_the_optimisation(tiny):
    """An unreachable margin keeps both phases running to their budgets: steps add up."""
    recipe = TUNED.with_(max_steps=6, seeds=1, ste_steps=4, margin=50.0)
    [plain] = encode_texts(tiny, [TEXT], EncodeConfig(recipe=recipe))
    seen = []
    [small] = encode_texts(tiny, [TEXT], EncodeConfig(recipe=recipe, storage="int8"),
                           progress=lambda p: seen.append((p.step, p.max_steps)))
    assert (plain.steps, small.steps) == (6, 10)
    assert seen == [(k, 10) for k in range(1, 11)]  # one budget, and the polish counts on from the optimisation


def test_basis_is_fixed_by_its_seed():
    a, b = st.basis(7, 4, 32), st.basis(7, 4, 32)
    assert torch.equal(a, b) and not torch.equal(a, st.basis(8, 4, 32))
    assert a.abs().unique().tolist() == [0.5]  # signs / sqrt(4)


def test_committed_old_files_read_as_float32_full_vectors():
    from tests.test_exactness import DATA

    for path in DATA.glob("v1-*.safetensors"):
        enc = Encoding.load(path)
        assert (enc.storage, enc.rank, enc.stored, enc.size) == ("float32", 0, None, None)


@pytest.mark.parametrize("kw", [{"storage": "int4"}, {"storage": "float64"}, {"rank": -1}])
def test_unknown_storage_or_negative_rank_is_refused(kw):
    with pytest.raises(InvalidInput, match="storage|rank"):
        cfg(**kw)


def test_rank_above_the_hidden_size_is_invalid_input(tiny):
    with pytest.raises(InvalidInput, match="hidden size"):
        encode_texts(tiny, [TEXT], cfg(rank=tiny.hidden_size + 1))


def test_storage_options_are_one_step_without_sharing():
    with pytest.raises(InvalidInput, match="one-step"):
        EncodeConfig(storage="int8", method="autoregressive")
    with pytest.raises(InvalidInput, match="one-step"):
        EncodeConfig(rank=4, share="shared_m")


def test_cli_refuses_unknown_storage_and_decodes_a_compact_file(tmp_path):
    runner = CliRunner()
    out = tmp_path / "c.safetensors"
    res = runner.invoke(app, ["encode", TEXT, "--out", str(out), "--model", "tiny-llama", "--storage", "int4"])
    assert res.exit_code == 2 and "unknown storage 'int4'" in res.output
    res = runner.invoke(app, ["encode", TEXT, "--out", str(out), "--model", "tiny-llama", "--rank", "99"])
    assert res.exit_code == 2 and "hidden size" in res.output
    res = runner.invoke(app, ["encode", TEXT, "--out", str(out), "--model", "tiny-llama", "--compact", "--rank", "4"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["encode", TEXT, "--out", str(out), "--model", "tiny-llama", "--max-steps", "5",
                              "--compact", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    from prototok.recipe import COMPACT

    assert (summary["storage"], summary["rank"]) == (COMPACT["storage"], COMPACT["rank"])
    res = runner.invoke(app, ["decode", str(out)])
    assert res.exit_code == 0 and res.stdout == TEXT


def _reforged(enc: Encoding, **tensors: torch.Tensor) -> bytes:
    return st_save({**enc.tensors(), **tensors}, metadata={"prototok": json.dumps(enc.metadata())})


def test_tampered_int8_data_fails_the_checksum(tiny):
    [enc] = encode_texts(tiny, [TEXT], cfg(storage="int8"))
    q = enc.stored["e"]
    blob = _reforged(enc, e=(-q).contiguous(), m=torch.flip(enc.stored["m"], [1]).contiguous())
    with pytest.raises(DecodeMismatch):
        decode(tiny, [Encoding.from_bytes(blob)])


@pytest.mark.parametrize("tensors", [
    {"e": torch.zeros(1, 32)},  # float32 where int8 is recorded
    {"e_scale": torch.tensor([float("nan")])},
    {"e": torch.zeros(1, 31, dtype=torch.int8)},
])
def test_stored_tensors_that_do_not_match_the_storage_are_refused(tiny, tensors):
    [enc] = encode_texts(tiny, [TEXT], cfg(storage="int8"))
    with pytest.raises(BadVectors):
        Encoding.from_bytes(_reforged(enc, **tensors))


def test_a_file_may_not_ask_for_a_huge_basis(tiny):
    [enc] = encode_texts(tiny, [TEXT], cfg(rank=8))
    meta = {**enc.metadata(), "hidden_size": 10**6, "rank": 8}
    with pytest.raises(CorruptEncoding):
        Encoding.from_bytes(st_save(enc.tensors(), metadata={"prototok": json.dumps(meta)}))
    meta = {**enc.metadata(), "basis_seed": 2**70}
    with pytest.raises(CorruptEncoding, match="basis_seed"):
        Encoding.from_bytes(st_save(enc.tensors(), metadata={"prototok": json.dumps(meta)}))
    meta = {**enc.metadata(), "storage": "int3"}
    with pytest.raises(CorruptEncoding, match="unknown storage"):
        Encoding.from_bytes(st_save(enc.tensors(), metadata={"prototok": json.dumps(meta)}))


def test_the_services_default_storage_applies_where_a_request_names_none():
    from app.schemas import EncodeOptions
    from prototok.recipe import COMPACT
    from service.settings import ServiceSettings

    server = ServiceSettings(storage="int8", rank=16)
    plain = ServiceSettings(storage="float32")
    assert (EncodeOptions().to_config(plain).storage, EncodeOptions().to_config(plain).rank) == ("float32", 0)
    got = EncodeOptions().to_config(server)
    assert (got.storage, got.rank) == ("int8", 16)
    got = EncodeOptions(storage="float16").to_config(server)  # a request that names one gets exactly that
    assert (got.storage, got.rank) == ("float16", 0)
    got = EncodeOptions(method="autoregressive").to_config(server)  # where storage options do not apply
    assert (got.storage, got.rank) == ("float32", 0)
    got = EncodeOptions(compact=True).to_config(ServiceSettings())
    assert (got.storage, got.rank) == (COMPACT["storage"], COMPACT["rank"])


def test_the_step_budget_counts_the_polish_below_float32():
    """What a progress bar counts to (CLI, the job's queued progress): the polish included."""
    recipe = TUNED.with_(max_steps=30, ste_steps=7)
    assert EncodeConfig(recipe=recipe).step_budget == 30
    assert EncodeConfig(recipe=recipe, storage="int8").step_budget == 37
    assert EncodeConfig(recipe=recipe.with_(ste_steps=0), storage="int8").step_budget == 30
