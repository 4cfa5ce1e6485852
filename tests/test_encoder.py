"""The learned encoder: a head that predicts an encode's start from the text, trained resumably,
found only for the weights it was trained on, used by start=encoder, and never needed to decode."""

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from prototok import TUNED, EncodeConfig, load_model
from prototok.cli import app
from prototok.codec import decode, encode_texts
from prototok.encoder import candidates, find_encoder, new_encoder, predict, read_encoder, write_encoder
from prototok.encoder_training import TrainConfig, Trainer
from prototok.errors import CorruptEncoding, InvalidInput
from prototok.one_step import one_step_problem
from prototok.optimize import first_start, optimize
from prototok.start_training import train_start
from prototok.starts import candidates as start_files
from prototok.starts import find_start, write_start

SEQS = [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4, 6, 2]]
SMALL = TrainConfig(passages=1, windows_per_passage=6, random_texts=2, iterations=4, batch=4, checkpoint_every=2)


def quick(**changes):
    return TUNED.with_(**{"max_steps": 4, "warmup_steps": 1, "margin": 0.0, **changes})


@pytest.fixture
def lm(start_cache):
    """tiny-llama with a warm start in a fresh cache dir (an encoder changes the start)."""
    model = load_model("tiny-llama")
    e, m, how = train_start(model, SEQS, 2, quick())
    write_start(start_files(model)[0], model, e, m, **how)
    return model


def moved(lm, seed: int = 1):
    """A head whose prediction differs from the warm start (its zero last layer filled at random)."""
    start = find_start(lm)
    enc = new_encoder(lm, start.e, start.m)
    torch.nn.init.normal_(enc.head.mlp_out.weight, std=0.5, generator=torch.Generator().manual_seed(seed))
    return enc


def test_an_untrained_head_predicts_the_warm_start_for_every_text(lm):
    start = find_start(lm)
    e, m = predict(lm, new_encoder(lm, start.e, start.m), SEQS)
    assert torch.equal(e, start.e.expand(2, -1)) and torch.equal(m, start.m.expand(2, -1))
    e, m = predict(lm, moved(lm), SEQS)
    assert not torch.equal(e[0], e[1])  # a trained head's start depends on the text


def test_a_head_file_is_found_for_its_own_weights_only_and_a_broken_one_is_refused(lm):
    enc = moved(lm)
    path = write_encoder(candidates(lm)[0], lm, enc, how={"note": "test"})
    found = find_encoder(lm)
    assert found.path == path and found.meta["how"] == {"note": "test"} and found.layer == enc.layer
    want, got = predict(lm, enc, SEQS)[0], predict(lm, found, SEQS)[0]
    assert torch.allclose(want, got, atol=1e-2)  # weights stored in float16
    assert find_encoder(load_model("tiny-gpt-neox")) is None
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptEncoding, match="not a readable encoder file"):
        read_encoder(path)


def test_start_encoder_begins_at_the_prediction_and_the_encoding_decodes_without_the_head(lm):
    enc = moved(lm)
    path = write_encoder(candidates(lm)[0], lm, enc)
    cfg = EncodeConfig(recipe=quick(start="encoder", seeds=2))
    start = first_start(lm, SEQS, cfg)
    e, m = predict(lm, find_encoder(lm), SEQS)
    assert torch.equal(start.e, e) and torch.equal(start.m, m)
    problem = one_step_problem(lm, SEQS, cfg, None, start=start)
    assert torch.equal(problem.e_table[:2], e) and torch.equal(problem.m_table[:2], m)
    assert not torch.equal(problem.e_table[2], e[0])  # the second restart begins at random
    [encoding] = encode_texts(lm, ["an encoder start"], cfg.with_(recipe=quick(start="encoder", max_steps=30)))
    assert encoding.recipe["start"] == "encoder"
    path.unlink()
    assert decode(lm, [encoding])[0].text == "an encoder start"


def test_start_encoder_without_a_head_or_with_model_m_is_a_clear_error(lm):
    with pytest.raises(InvalidInput, match="prototok encoder train --model tiny-llama"):
        optimize(lm, SEQS, EncodeConfig(recipe=quick(start="encoder")))
    with pytest.raises(InvalidInput, match="model_m and start=encoder"):
        EncodeConfig(recipe=quick(start="encoder"), model_m=True)
    with pytest.raises(InvalidInput, match="start: unknown value 'nearby'"):
        quick(start="nearby")


def test_training_lowers_the_loss_of_its_windows(lm, tmp_path):
    cfg = replace(SMALL, windows_per_passage=4, random_texts=0, iterations=25, lr=1e-2)  # one batch, seen again
    trainer = Trainer(lm, cfg, tmp_path / "ckpt.safetensors")
    _, how = trainer.run()
    assert len(trainer.train) == 4 and trainer.curve[-1] < trainer.curve[0] - 0.1
    assert set(how["validation"]) == {"encoder_loss", "encoder_accuracy", "warm_loss", "warm_accuracy", "windows"}


def test_a_stopped_training_goes_on_from_its_checkpoint_to_the_same_head(lm, tmp_path):
    full, _ = Trainer(lm, SMALL, tmp_path / "a.safetensors").run()
    Trainer(lm, replace(SMALL, iterations=2), tmp_path / "b.safetensors").run()
    resumed = Trainer(lm, SMALL, tmp_path / "b.safetensors")
    assert resumed.iteration == 2
    again, _ = resumed.run()
    for name, value in full.head.state_dict().items():
        assert torch.allclose(value, again.head.state_dict()[name], atol=1e-6), name
    other = Trainer(lm, replace(SMALL, lr=5e-3), tmp_path / "b.safetensors")  # other settings: a fresh start
    assert other.iteration == 0


def test_the_regress_objective_solves_its_targets_once_and_keeps_them(lm, tmp_path):
    cfg = replace(SMALL, objective="regress", target_steps=2, iterations=2)
    trainer = Trainer(lm, cfg, tmp_path / "r.safetensors")
    _, how = trainer.run()
    assert trainer.targets.shape == (len(trainer.train), 2, lm.hidden_size) and "targets" in how["seconds"]
    resumed = Trainer(lm, replace(cfg, iterations=3), tmp_path / "r.safetensors")
    assert torch.equal(resumed.targets, trainer.targets)


def test_cli_trains_shows_and_encodes_with_an_encoder(start_cache, tmp_path):
    runner = CliRunner()
    none = runner.invoke(app, ["encoder", "train", "--model", "tiny-llama", "--iterations", "2"])
    assert none.exit_code == 2 and "prototok start train --model tiny-llama" in none.output
    assert runner.invoke(app, ["start", "train", "--model", "tiny-llama", "--texts", "2", "--steps", "2"]).exit_code == 0
    assert "no encoder for tiny-llama" in runner.invoke(app, ["encoder", "show", "--model", "tiny-llama"]).output
    made = runner.invoke(app, ["encoder", "train", "--model", "tiny-llama", "--iterations", "2", "--passages", "1",
                               "--batch", "4"])
    assert made.exit_code == 0, made.output
    validation, path = made.output.strip().splitlines()[-2:]
    assert "encoder_loss" in json.loads(validation)["validation"]
    assert path.endswith("encoder-tiny-llama.safetensors") and not list(start_cache.rglob("*.checkpoint.*"))
    shown = json.loads(runner.invoke(app, ["encoder", "show", "--model", "tiny-llama"]).output)
    assert shown["file"] == path and shown["how"]["train"]["iterations"] == 2
    out = tmp_path / "e.safetensors"
    res = runner.invoke(app, ["encode", "hi there", "--out", str(out), "--model", "tiny-llama", "--start", "encoder",
                              "--max-steps", "40", "--json"])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["decode", str(out), "--model", "tiny-llama"]).output.rstrip("\n") == "hi there"
