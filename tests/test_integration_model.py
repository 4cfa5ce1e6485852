"""The embedded SmolLM2-135M end to end: a real sentence encoded and decoded exactly,
through the library and through the installed `prototok` command."""

import json
import subprocess

import pytest
import torch

from prototok import EncodeConfig, decode, encode_texts, load_model
from prototok.recipe import TUNED

pytestmark = pytest.mark.integration

SENTENCE = "The lamp was lit at dusk."


@pytest.fixture(scope="module")
def smol():
    return load_model()


def test_real_sentence_round_trip(smol):
    cfg = EncodeConfig(recipe=TUNED.with_(max_steps=150))
    [enc] = encode_texts(smol, [SENTENCE], cfg)
    assert enc.model == "smollm2-135m-instruct" and enc.hidden_size == 576
    assert enc.n_tokens == len(smol.tokenize(SENTENCE))
    assert 0 <= enc.accuracy <= 1 and enc.c_tokens + enc.n_corrections == enc.n_tokens
    assert enc.h_lm > 0
    [res] = decode(smol, [enc])
    assert res.text == SENTENCE
    assert res.c_tokens == enc.c_tokens  # decoding reproduces what encoding measured


def test_cli_with_the_default_model(tmp_path):
    out = tmp_path / "s.safetensors"
    enc = subprocess.run(["prototok", "encode", SENTENCE, "--out", str(out), "--max-steps", "20", "--json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert enc.returncode == 0, enc.stderr
    summary = json.loads(enc.stdout)
    assert summary["n_tokens"] >= 5 and 0 <= summary["accuracy"] <= 1
    dec = subprocess.run(["prototok", "decode", str(out), "--json"], capture_output=True, text=True, timeout=600, check=False)
    assert dec.returncode == 0, dec.stderr
    assert json.loads(dec.stdout)["text"] == SENTENCE


def test_the_embedded_model_ships_its_warm_start_for_every_dtype(smol):
    from prototok.starts import find_start

    start = find_start(smol)
    assert start is not None and start.meta["model"] == smol.name and start.e.shape == (smol.hidden_size,)
    other = load_model(dtype="float32" if smol.dtype != torch.float32 else "bfloat16")
    assert other.weights_fingerprint == smol.weights_fingerprint


def test_the_embedded_model_ships_an_encoder_head_and_its_encodes_are_exact(smol):
    """start=encoder on SmolLM2: the shipped head is found for these weights, predicts a start that
    depends on the text, and an encode from it (a short budget: corrections fill what it misses)
    decodes byte for byte."""
    from prototok.encoder import find_encoder, predict

    enc = find_encoder(smol)
    assert enc is not None and enc.meta["model"] == smol.name and enc.path.parent.name == "data"
    e, m = predict(smol, enc, [smol.tokenize("A first text."), smol.tokenize("Quite another one, 42!")])
    assert e.shape == m.shape == (2, smol.hidden_size) and not torch.equal(e[0], e[1])
    text = "Encoders start near the text."
    [encoding] = encode_texts(smol, [text], EncodeConfig(recipe=TUNED.with_(start="encoder", max_steps=20)))
    assert encoding.recipe["start"] == "encoder" and decode(smol, [encoding])[0].text == text


def test_edge_texts_through_the_cli_argument_and_file_are_byte_exact(smol, tmp_path):
    """A few of tests/edge_cases.py on SmolLM2, in and out of the CLI (argument, --file, --out, stdout)."""
    from edge_cases import EDGE_TEXTS
    from typer.testing import CliRunner

    from prototok.cli import app

    runner = CliRunner()
    for name in ("crlf", "bom", "nfd", "controls"):
        text, src, enc, back = EDGE_TEXTS[name], tmp_path / f"{name}.txt", tmp_path / f"{name}.st", tmp_path / "b"
        src.write_bytes(text.encode())
        for given in (["--file", str(src)], [text]):
            res = runner.invoke(app, ["encode", *given, "--out", str(enc), "--max-steps", "10", "--seeds", "1"])
            assert res.exit_code == 0, res.output
            assert runner.invoke(app, ["decode", str(enc)]).stdout_bytes == src.read_bytes(), name
            assert runner.invoke(app, ["decode", str(enc), "--out", str(back)]).exit_code == 0
            assert back.read_bytes() == src.read_bytes(), name
