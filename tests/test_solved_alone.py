"""A text judged robust inside a training batch of another shape counts as solved only once its row
is robust in the batch its decode runs too (optimize._confirm_in_decode_shape): in bfloat16 on some
CPUs batch shape moves a lead by more than the margin, and decode runs an encoding's chunks, and
only those, as one batch (a one-chunk encoding as a batch of one)."""

import pytest
import torch

from prototok import EncodeConfig, decode, encode_texts
from prototok.errors import InvalidInput
from prototok.one_step import OneStepProblem
from prototok.optimize import optimize
from prototok.recipe import TUNED

RECIPE = TUNED.with_(max_steps=60, lr=0.1, margin=0.1)  # the tiny model solves these texts in a few steps
TEXTS = ["hi", "ok"]


def encode(tiny, monkeypatch, texts: list[str], doubted: int, **cfg) -> tuple[list, list[list[int]]]:
    """Encode `texts`; the rows of each confirmation (the only no-grad forwards), the first
    `doubted` of which see all-zero logits."""
    calls, forward = [], OneStepProblem.forward

    def watched(self, rows):
        logits, sub = forward(self, rows)
        if not torch.is_grad_enabled():
            calls.append(rows.tolist())
            if len(calls) <= doubted:
                logits = torch.zeros_like(logits)  # every token ties: no lead, not robust
        return logits, sub

    monkeypatch.setattr(OneStepProblem, "forward", watched)
    return encode_texts(tiny, texts, EncodeConfig(recipe=RECIPE, **cfg)), calls


def test_a_batch_solve_is_confirmed_row_by_row_alone(tiny, monkeypatch):
    encs, calls = encode(tiny, monkeypatch, TEXTS, doubted=0)
    assert calls and {len(c) for c in calls} == {1}  # one confirmation pass per row, each a batch of one
    for enc, text in zip(encs, TEXTS):
        assert enc.c_tokens == enc.n_tokens and not any(enc.corrections)
        assert enc.min_margin >= RECIPE.margin  # the one-text decode's own weakest lead
        assert decode(tiny, [enc])[0].text == text


def test_a_row_not_robust_alone_keeps_training(tiny, monkeypatch):
    plain, _ = encode(tiny, monkeypatch, TEXTS, doubted=0)
    monkeypatch.undo()
    doubted, calls = encode(tiny, monkeypatch, TEXTS, doubted=2)
    assert len(calls) > 2  # the doubted rows were asked again on later steps
    assert sum(e.steps for e in doubted) > sum(e.steps for e in plain)  # and trained on meanwhile
    assert [decode(tiny, [e])[0].text for e in doubted] == TEXTS


def test_a_text_alone_costs_no_extra_pass(tiny, monkeypatch):
    [enc], calls = encode(tiny, monkeypatch, TEXTS[:1], doubted=0)
    assert calls == [] and enc.c_tokens == enc.n_tokens


def test_a_chunk_is_confirmed_beside_its_own_text_chunks_only(tiny, monkeypatch):
    texts = ["abcd", "okay"]  # with 2-token chunks: 2 chunks each, 4 rows in one training batch
    assert [len(tiny.tokenize(t)) for t in texts] == [4, 4]
    encs, calls = encode(tiny, monkeypatch, texts, doubted=0, chunk_tokens=2)
    assert calls  # the decode's batch: one text's chunks, in order (one restart: row = sequence)
    assert all(rows in ([0, 1], [2, 3]) for rows in calls), calls
    for enc, text in zip(encs, texts):
        assert not any(enc.corrections) and decode(tiny, [enc])[0].text == text


def test_text_of_seq_must_name_every_sequence(tiny):
    with pytest.raises(InvalidInput, match="text_of_seq has 1 entries for 2 sequences"):
        optimize(tiny, [[10, 20], [30, 40]], EncodeConfig(recipe=RECIPE), text_of_seq=[0])
