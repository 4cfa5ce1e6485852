"""Restarts of stalled rows: the per-row AdamW, and rows that start over from the next seed."""

import pytest
import torch

from prototok import EncodeConfig, Method, decode, encode_texts, optimize
from prototok.one_step import one_step_problem
from prototok.optimize import _Restarts
from prototok.problem import init_vectors
from prototok.recipe import PAPER, TUNED, Schedule
from prototok.rowadam import RowAdamW, lr_factors, lr_lambda

RECIPES = [PAPER.with_(lr=0.05), TUNED.with_(max_steps=30, warmup_steps=4, lr=0.1, weight_decay=0.05)]


@pytest.mark.parametrize("recipe", RECIPES, ids=["constant", "warmup-cosine"])
def test_row_adamw_is_torch_adamw_when_no_row_restarts(recipe):
    """Same updates as AdamW + LambdaLR (what the optimiser used before restarts existed)."""
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 5, generator=gen), torch.randn(3, 2, 4, generator=gen)]
    b = [x.clone().requires_grad_(True) for x in a]
    a = [x.requires_grad_(True) for x in a]
    mine = RowAdamW(a, [1.0, 0.5], recipe)
    ref = torch.optim.AdamW([{"params": [b[0]], "lr": recipe.lr}, {"params": [b[1]], "lr": recipe.lr * 0.5}],
                            lr=recipe.lr, betas=(recipe.beta1, recipe.beta2), weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lr_lambda(recipe))
    for _ in range(12):
        grads = [torch.randn(x.shape, generator=gen) for x in a]
        for x, y, g in zip(a, b, grads):
            x.grad, y.grad = g.clone(), g.clone()
        mine.step()
        ref.step()
        sched.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_a_restarted_row_steps_like_a_fresh_problem():
    recipe = TUNED.with_(max_steps=40, warmup_steps=3)
    gen = torch.Generator().manual_seed(1)
    used = torch.randn(4, 6, generator=gen).requires_grad_(True)
    opt = RowAdamW([used], [1.0], recipe)
    for _ in range(7):
        used.grad = torch.randn(4, 6, generator=gen)
        opt.step()
    start = torch.randn(1, 6, generator=gen)
    opt.restart(torch.tensor([2]), [start])
    fresh = start.clone().requires_grad_(True)
    new = RowAdamW([fresh], [1.0], recipe)
    for _ in range(5):
        g = torch.randn(4, 6, generator=gen)
        used.grad, fresh.grad = g, g[2:3].clone()
        opt.step()
        new.step()
    torch.testing.assert_close(used[2:3], fresh)
    assert opt.t[0].tolist() == [12, 12, 5, 12]


def test_the_schedule_spans_one_attempt_when_rows_restart():
    r = TUNED.with_(max_steps=1000, warmup_steps=10, min_lr_ratio=0.1, restart_every=100)
    f = lr_factors(r, torch.tensor([0, 10, 100, 500]))
    torch.testing.assert_close(f, torch.tensor([0.1, 1.0, 0.1, 0.1]))
    assert lr_factors(r.with_(schedule=Schedule.CONSTANT), torch.tensor([50]))[0] == 1.0


def test_only_late_unsolved_rows_start_over_from_the_next_seed(tiny):
    recipe = TUNED.with_(seeds=2, restart_every=5, seed=3)
    seqs = [[10, 20, 30], [40, 50]]
    problem = one_step_problem(tiny, seqs, EncodeConfig(recipe=recipe), None)
    opt = RowAdamW(problem.params, problem.lr_scales, recipe)
    restarts = _Restarts(problem, recipe, len(seqs))
    before = [p.detach().clone() for p in problem.params]
    opt.t[0][:] = torch.tensor([5.0, 5.0, 4.0, 5.0])  # rows: (seed 3: seq 0, seq 1), (seed 4: seq 0, seq 1)
    opt.t[1][:] = opt.t[0]
    restarts.due(opt, torch.arange(4), solved=torch.tensor([False, True]))
    # Row 0 (seq 0, old enough) restarts with seed 3 + 2; row 2 is too young; rows 1, 3 are solved.
    assert restarts.seed.tolist() == [5, 3, 4, 4]
    torch.testing.assert_close(problem.e_table[0], init_vectors(tiny, recipe, 1, 5, recipe.init_e)[0])
    torch.testing.assert_close(problem.m_table[0], init_vectors(tiny, recipe, 1, 10_005)[0])
    for p, b in zip(problem.params, before):
        assert torch.equal(p[1:], b[1:])
    assert opt.t[0].tolist() == [0, 5, 4, 5]


@pytest.mark.parametrize("method", list(Method))
def test_encodings_made_with_restarts_decode_exactly(tiny, method):
    """An unreachable margin keeps every row unsolved, so rows restart twice; the best state of
    any attempt is kept and its seed recorded."""
    recipe = TUNED.with_(max_steps=12, seeds=1, restart_every=5, margin=50.0)
    [enc] = encode_texts(tiny, ["restart me"], EncodeConfig(recipe=recipe, method=method))
    assert enc.seeds[0] in (0, 1, 2) and enc.steps == 12
    assert decode(tiny, [enc])[0].text == "restart me"
    [sol] = optimize(tiny, [[10, 20, 30]], EncodeConfig(recipe=recipe, method=method))
    assert sol.seed in (0, 1, 2)


def test_loss_margin_lowers_the_right_logit_before_cross_entropy():
    from prototok.problem import token_loss

    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])  # (1, 2, 3)
    tgt, mask = torch.tensor([[0, 1]]), torch.tensor([[True, False]])
    plain = token_loss(logits, tgt, mask, 0.0)
    shifted = token_loss(logits, tgt, mask, 1.5)
    expect = -torch.log_softmax(torch.tensor([0.5, 0.0, 0.0]), 0)[0]  # position 0 only (mask)
    torch.testing.assert_close(shifted, expect[None])
    assert shifted > plain


def test_a_margin_loss_encoding_decodes_exactly(tiny):
    recipe = TUNED.with_(max_steps=20, loss_margin=1.5, margin=0.0)
    [enc] = encode_texts(tiny, ["margin loss"], EncodeConfig(recipe=recipe))
    assert decode(tiny, [enc])[0].text == "margin loss" and enc.recipe["loss_margin"] == 1.5


def test_low_rank_int8_rows_restart_in_their_own_width(tiny):
    """A restarted low-rank row draws `rank` coefficients, and the stored int8 code still decodes."""
    recipe = TUNED.with_(max_steps=9, seeds=1, restart_every=3, margin=50.0, ste_steps=2)
    [enc] = encode_texts(tiny, ["low rank"], EncodeConfig(recipe=recipe, rank=8, storage="int8"))
    assert decode(tiny, [enc])[0].text == "low rank" and enc.seeds[0] in (0, 1, 2)
