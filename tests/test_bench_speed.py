"""`bench.speed`'s work from the frozen evaluation set (the timed run itself is a benchmark, not a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # bench/ is not an installed package
    from bench import evalset, speed

    return speed, evalset


def test_eval_items_are_the_first_texts_of_every_kind_each_alone(bench):
    speed, evalset = bench
    items = speed.eval_items(2)
    assert [it["kind"] for it in items] == [f"eval-{k}" for k in ("prose", "passage", "random", "mixed") for _ in "ab"]
    for it in items:
        [text] = it["texts"]
        assert text in evalset.texts(it["kind"].removeprefix("eval-"))
    assert {it["texts"][0] for it in items}.isdisjoint(speed.SENTENCES)  # the tuned-on sentences are not there
