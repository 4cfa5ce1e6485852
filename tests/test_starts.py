"""Warm starts: learnt once per model, found only for that model's weights, used as the first
restart's init, and never needed to decode."""

import json
from pathlib import Path

import pytest
import torch

from prototok import TUNED, EncodeConfig, load_model
from prototok.errors import CorruptEncoding
from prototok.one_step import one_step_problem
from prototok.optimize import optimize
from prototok.start_training import prose_chunks, train_start
from prototok.starts import candidates, find_m, find_start, m_digest, read_start, write_start

SEQS = [[5, 9, 13, 2, 7], [3, 3, 8, 1, 4], [11, 6, 2, 9, 10]]


def recipe(**changes):
    return TUNED.with_(max_steps=6, warmup_steps=1, margin=0.0, **changes)


def test_a_trained_start_is_found_for_its_model_and_begins_the_first_restart(start_cache):
    lm = load_model("tiny-llama")
    e, m, how = train_start(lm, SEQS, 4, recipe())
    assert how["texts"] == 3 and how["steps"] == 4 and e.shape == m.shape == (lm.hidden_size,)
    path = write_start(candidates(lm)[0], lm, e, m, **how)
    assert path.parent == start_cache / "starts"
    start = find_start(lm)
    assert start is not None and torch.equal(start.e, e) and start.meta["texts"] == 3
    cfg = EncodeConfig(recipe=recipe(seeds=2, start="warm"))
    problem = one_step_problem(lm, SEQS[:2], cfg, None, start=start)
    assert torch.equal(problem.e_table[:2], e.expand(2, -1)) and torch.equal(problem.m_table[:2], m.expand(2, -1))
    assert not torch.equal(problem.e_table[2], e)  # the second restart still starts at random


def test_warm_start_changes_the_path_and_nothing_else_without_a_start(start_cache):
    lm = load_model("tiny-llama")
    cold = optimize(lm, SEQS[:1], EncodeConfig(recipe=recipe()))
    no_file = optimize(lm, SEQS[:1], EncodeConfig(recipe=recipe(start="warm")))
    assert torch.equal(cold[0].vectors["e"], no_file[0].vectors["e"])
    e, m, how = train_start(lm, SEQS, 3, recipe())
    write_start(candidates(lm)[0], lm, e, m, **how)
    warm = optimize(lm, SEQS[:1], EncodeConfig(recipe=recipe(start="warm")))
    assert not torch.equal(cold[0].vectors["e"], warm[0].vectors["e"])


def test_a_start_of_other_weights_is_ignored(start_cache):
    lm, other = load_model("tiny-llama"), load_model("tiny-gpt-neox")
    assert lm.weights_fingerprint != other.weights_fingerprint
    e, m, how = train_start(other, SEQS, 2, recipe())
    write_start(candidates(lm)[0], other, e, m, **how)  # a file under lm's name, made for other weights
    assert find_start(lm) is None


def test_a_start_another_process_trains_counts_from_the_next_lookup(start_cache):
    """A worker keeps running while `prototok start train` writes (or rewrites) its model's start:
    its next lookup sees the new file, no restart, and never half a file."""
    import subprocess

    lm = load_model("tiny-llama")
    assert find_start(lm) is None  # looked once, nothing there

    def train(steps: int) -> None:
        made = subprocess.run(["prototok", "start", "train", "--model", "tiny-llama", "--texts", "2", "--steps",
                               str(steps)], capture_output=True, text=True, timeout=600, check=False)
        assert made.returncode == 0, made.stderr
        assert made.stdout.strip() == str(candidates(lm)[0])

    train(2)
    first = find_start(lm)
    assert first is not None and first.meta["steps"] == 2
    assert find_start(lm) is first  # unchanged file: the version read before, not read again
    train(3)  # retrained: the same path, replaced
    second = find_start(lm)
    assert second is not None and second.meta["steps"] == 3 and not torch.equal(second.m, first.m)
    kept = f"start-tiny-llama.{m_digest(first.m)[:16]}.safetensors"  # the replaced start, kept for model_m files
    assert sorted(p.name for p in (start_cache / "starts").iterdir()) == [kept, candidates(lm)[0].name]  # no partial
    assert torch.equal(find_m(lm, {"sha256": m_digest(first.m)}), first.m)
    candidates(lm)[0].unlink()
    assert find_start(lm) is None  # a kept start only decodes: encodes never begin from it


def test_an_unreadable_start_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "start.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptEncoding, match="not a readable start file"):
        read_start(bad)


def test_prose_chunks_keep_only_full_chunks():
    lm = load_model("tiny-llama")  # byte-level tokenizer: one id per byte
    chunks = prose_chunks(lm, ["x" * 60, "short"], skip=40, tokens=16)
    assert chunks == [lm.tokenize("x" * 16)]


def test_the_cli_trains_a_start_that_show_then_finds(start_cache):
    from typer.testing import CliRunner

    from prototok.cli import app

    runner = CliRunner()
    none = runner.invoke(app, ["start", "show", "--model", "tiny-llama"])
    assert none.exit_code == 0 and "no start for tiny-llama" in none.output
    made = runner.invoke(app, ["start", "train", "--model", "tiny-llama", "--texts", "2", "--steps", "2"])
    assert made.exit_code == 0, made.output
    assert str(start_cache / "starts") in made.output
    shown = runner.invoke(app, ["start", "show", "--model", "tiny-llama"])
    assert shown.exit_code == 0 and '"texts": 2' in shown.output
    first = json.loads(shown.output)
    assert first["kept"] == [] and first["m_sha256"] == m_digest(read_start(candidates(load_model("tiny-llama"))[0]).m)
    again = runner.invoke(app, ["start", "train", "--model", "tiny-llama", "--texts", "2", "--steps", "3"])
    assert again.exit_code == 0, again.output
    second = json.loads(runner.invoke(app, ["start", "show", "--model", "tiny-llama"]).output)
    assert second["steps"] == 3 and second["m_sha256"] != first["m_sha256"]
    [kept] = second["kept"]  # the replaced start: its m, when it was made, where it is kept
    assert kept == {"file": str(start_cache / "starts" / f"start-tiny-llama.{first['m_sha256'][:16]}.safetensors"),
                    "m_sha256": first["m_sha256"], "made": first["made"]}
    Path(second["file"]).unlink()
    only_kept = runner.invoke(app, ["start", "show", "--model", "tiny-llama"])
    assert only_kept.exit_code == 0 and "no start for tiny-llama" in only_kept.output
    assert json.loads(only_kept.output[only_kept.output.index("{"):]) == {"kept": [kept]}
