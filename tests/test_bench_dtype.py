"""`bench.dtype`'s work list and summary (the timed run itself is a benchmark, not a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench_dtype(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is not an installed package
    from bench import dtype

    return dtype


def test_the_work_interleaves_the_kinds_from_the_frozen_evaluation_set(bench_dtype):
    from bench import evalset

    work = bench_dtype.work(2)
    assert [kind for kind, _ in work] == ["prose", "random", "mixed"] * 2
    for kind, text in work:
        assert text in evalset.texts(kind)


def test_the_summary_takes_medians_counts_and_the_ratio_of_total_seconds(bench_dtype):
    def row(kind, a_s, a_steps, a_ok, b_s, b_steps, b_ok):
        return {"kind": kind, "a_s": a_s, "a_steps": a_steps, "a_lossless": a_ok,
                "b_s": b_s, "b_steps": b_steps, "b_lossless": b_ok}

    rows = [row("prose", 10.0, 100, True, 5.0, 90, True),
            row("prose", 30.0, 300, False, 15.0, 310, True),
            row("mixed", 20.0, 200, True, 20.0, 210, False)]
    table = {r["kind"]: r for r in bench_dtype.summary(rows, ["a", "b"])}
    assert set(table) == {"prose", "mixed", "all"}  # a kind without texts has no row
    prose, every = table["prose"], table["all"]
    assert (prose["texts"], prose["a_median_s"], prose["b_median_steps"]) == (2, 20.0, 200)
    assert (prose["a_lossless"], prose["b_lossless"]) == (1, 2)
    assert prose["a_s / b_s"] == 2.0 and every["a_s / b_s"] == round(60 / 40, 2)
    assert (every["texts"], every["a_median_steps"], every["b_lossless"]) == (3, 200, 2)
