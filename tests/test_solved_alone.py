"""A text judged robust inside a batch of several rows counts as solved only once its row is robust
alone too (optimize._confirm_alone): in bfloat16 on some CPUs batch shape moves a lead by more
than the margin, and decode runs a one-chunk encoding as a batch of one."""

import torch

from prototok import EncodeConfig, decode, encode_texts
from prototok.one_step import OneStepProblem
from prototok.recipe import TUNED

RECIPE = TUNED.with_(max_steps=60, lr=0.1, margin=0.1)  # the tiny model solves these texts in a few steps
TEXTS = ["hi", "ok"]


def encode(tiny, monkeypatch, texts: list[str], doubted: int) -> tuple[list, list[int]]:
    """Encode `texts`; the first `doubted` confirmations (the only no-grad forwards) see all-zero logits."""
    calls, forward = [], OneStepProblem.forward

    def watched(self, rows):
        logits, sub = forward(self, rows)
        if not torch.is_grad_enabled():
            calls.append(len(rows))
            if len(calls) <= doubted:
                logits = torch.zeros_like(logits)  # every token ties: no lead, not robust
        return logits, sub

    monkeypatch.setattr(OneStepProblem, "forward", watched)
    return encode_texts(tiny, texts, EncodeConfig(recipe=RECIPE)), calls


def test_a_batch_solve_is_confirmed_row_by_row_alone(tiny, monkeypatch):
    encs, calls = encode(tiny, monkeypatch, TEXTS, doubted=0)
    assert calls and set(calls) == {1}  # one confirmation pass per row, each a batch of one
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
