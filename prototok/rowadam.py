"""AdamW with a step count per table row, so one row can start over while the others go on.

`torch.optim.AdamW` keeps one step count per tensor: its bias correction and the learning-rate
schedule are shared by every row of a vector table. A restarted row (fresh vectors, see
`Recipe.restart_every`) needs its own warm-up and its own bias correction, as if it were a new
problem; everything else is torch's AdamW update, written out (`torch.optim.AdamW` docs).
With no restarts and no spike guard it computes what `AdamW` + `LambdaLR(lr_lambda(recipe))` compute.

The spike guard (`Recipe.spike_guard`) is per row too: `watch` is told each row's loss before
the step; a row whose loss jumped above its lowest so far is put back, after the step, to the
vectors and moments it had at that lowest point, with its lr scaled down.
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
        self.lr_mult = [torch.ones(p.shape[0], device=p.device) for p in params]  # the spike guard's cuts
        self.low = torch.full((params[0].shape[0],), math.inf)  # (R,) lowest loss seen per row (CPU)
        self.saved: list[tuple[torch.Tensor, ...]] = []  # per param: (p, exp_avg, exp_avg_sq) at `low`
        self.spiked = torch.zeros(0, dtype=torch.long)  # rows `step` puts back to their lowest point

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        r = self.recipe
        for p, k, m, v, t, f in zip(self.params, self.scales, self.exp_avg, self.exp_avg_sq, self.t, self.lr_mult):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)  # per-row scalars broadcast over the row
            lr = (r.lr * k * lr_factors(r, t) * f).view(shape)
            t += 1
            p.mul_(1 - lr * r.weight_decay)
            m.lerp_(p.grad, 1 - r.beta1)
            v.mul_(r.beta2).addcmul_(p.grad, p.grad, value=1 - r.beta2)
            bc1 = (1 - r.beta1 ** t).view(shape)
            bc2 = (1 - r.beta2 ** t).view(shape)
            p.sub_(lr / bc1 * m / ((v / bc2).sqrt() + self.eps))
        if len(self.spiked):
            self._put_back(self.spiked)
            self.spiked = self.spiked[:0]

    @torch.no_grad()
    def watch(self, rows: torch.Tensor, loss: torch.Tensor) -> int:
        """Spike guard, before `step`: (A,) rows of every table and the loss their current vectors
        gave. A new lowest loss saves the row's state; a loss `spike_guard` nats above it marks the
        row to be put back after the step (the step's update of it is thus skipped). Every table
        must have one row per batch row. Returns how many rows spiked."""
        rows, loss = rows.cpu(), loss.detach().float().cpu()
        if not self.saved:
            self.saved = [(p.detach().clone(), m.clone(), v.clone())
                          for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq)]
        low = self.low[rows]
        lower = loss < low
        new = rows[lower]
        if len(new):
            self.low[new] = loss[lower]
            dev = new.to(self.params[0].device)
            for (sp, sm, sv), p, m, v in zip(self.saved, self.params, self.exp_avg, self.exp_avg_sq):
                sp[dev], sm[dev], sv[dev] = p[dev], m[dev], v[dev]
        self.spiked = rows[loss > low + self.recipe.spike_guard]
        return len(self.spiked)

    def _put_back(self, rows: torch.Tensor) -> None:
        dev = rows.to(self.params[0].device)
        for (sp, sm, sv), p, m, v, f in zip(self.saved, self.params, self.exp_avg, self.exp_avg_sq, self.lr_mult):
            p[dev], m[dev], v[dev] = sp[dev], sm[dev], sv[dev]
            f[dev] *= self.recipe.spike_lr

    @torch.no_grad()
    def restart(self, rows: torch.Tensor, values: list[torch.Tensor]) -> None:
        """Rows start over from `values` (one tensor per param, rows x ...), with fresh moments."""
        for p, m, v, t, f, new in zip(self.params, self.exp_avg, self.exp_avg_sq, self.t, self.lr_mult, values):
            p[rows] = new.to(p.device, p.dtype)
            m[rows], v[rows], t[rows], f[rows] = 0.0, 0.0, 0.0, 1.0
        self.low[rows.cpu()] = math.inf
