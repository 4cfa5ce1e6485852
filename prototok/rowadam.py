"""AdamW with a step count per table row, so one row can start over while the others go on.

`torch.optim.AdamW` keeps one step count per tensor: its bias correction and the learning-rate
schedule are shared by every row of a vector table. A restarted row (fresh vectors, see
`Recipe.restart_every`) needs its own warm-up and its own bias correction, as if it were a new
problem; everything else is torch's AdamW update, written out (`torch.optim.AdamW` docs).
With no restarts it computes what `AdamW` + `LambdaLR(lr_lambda(recipe))` compute.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .recipe import Recipe, Schedule


def schedule_span(recipe: Recipe) -> int:
    """Steps over which the cosine decays: one attempt when rows restart, else the whole budget."""
    return recipe.restart_every or recipe.max_steps


def lr_factors(recipe: Recipe, t: torch.Tensor) -> torch.Tensor:
    """The schedule's lr multiplier at step t (0-based, per row): warm-up, then cosine or constant."""
    t = t.float()
    out = torch.ones_like(t)
    if recipe.schedule is Schedule.COSINE:
        span = max(1, schedule_span(recipe) - recipe.warmup_steps)
        x = ((t - recipe.warmup_steps) / span).clamp(0.0, 1.0)
        out = recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + torch.cos(math.pi * x))
    if recipe.warmup_steps:
        out = torch.where(t < recipe.warmup_steps, (t + 1) / recipe.warmup_steps, out)
    return out


def lr_lambda(recipe: Recipe) -> Callable[[int], float]:
    """The schedule's lr multiplier at one step, as torch's LambdaLR takes it (`lr_factors` per row)."""
    return lambda step: float(lr_factors(recipe, torch.tensor([step]))[0])


class RowAdamW:
    """AdamW over vector tables (first dimension = rows), with per-row step counts."""

    def __init__(self, params: list[torch.Tensor], lr_scales: list[float], recipe: Recipe, eps: float = 1e-8):
        self.params, self.scales, self.recipe, self.eps = params, lr_scales, recipe, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.t = [torch.zeros(p.shape[0], device=p.device) for p in params]  # steps taken, per row

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        r = self.recipe
        for p, k, m, v, t in zip(self.params, self.scales, self.exp_avg, self.exp_avg_sq, self.t):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)  # per-row scalars broadcast over the row
            lr = (r.lr * k * lr_factors(r, t)).view(shape)
            t += 1
            p.mul_(1 - lr * r.weight_decay)
            m.lerp_(p.grad, 1 - r.beta1)
            v.mul_(r.beta2).addcmul_(p.grad, p.grad, value=1 - r.beta2)
            bc1 = (1 - r.beta1 ** t).view(shape)
            bc2 = (1 - r.beta2 ** t).view(shape)
            p.sub_(lr / bc1 * m / ((v / bc2).sqrt() + self.eps))

    @torch.no_grad()
    def restart(self, rows: torch.Tensor, values: list[torch.Tensor]) -> None:
        """Rows start over from `values` (one tensor per param, rows x ...), with fresh moments."""
        for p, m, v, t, new in zip(self.params, self.exp_avg, self.exp_avg_sq, self.t, values):
            p[rows] = new.to(p.device, p.dtype)
            m[rows], v[rows], t[rows] = 0.0, 0.0, 0.0
