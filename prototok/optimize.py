"""Batched optimisation of trainable input vectors against a frozen LM.

Every (sequence, restart) pair is one row of one batch. AdamW is element-wise, so rows
that share no vector are exactly independent problems solved side by side; rows that
share a vector (Table 2's groups) are trained jointly through it. A "unit" is the set
of rows that must be judged together: one row, or one sharing group of one restart.
For each unit the best state seen (by mean token accuracy) is kept, so the answer
never gets worse than the best step. A sequence stops costing compute as soon as one
of its restarts reconstructs it (`stop_accuracy`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
import torch.nn.functional as F

from . import storage as st
from .arrangements import BatchLayout
from .models import LanguageModel
from .recipe import Arrangement, EncodeConfig, Init, Method, Recipe, Schedule, ShareMode
from .rowadam import RowAdamW, lr_factors


@dataclass
class Progress:
    """What a long optimisation reports: the CLI draws it, the worker stores it."""

    step: int
    max_steps: int
    loss: float
    accuracy: list[float]  # best token accuracy so far, per sequence of this call
    done: int  # sequences already reconstructed
    # (S, Nmax) token ids the best vectors so far rebuild, per sequence of this call (padded; CPU).
    # A fresh tensor each step, cheap to build: convert it only when you report (the web page's token strip).
    predicted: torch.Tensor | None = None


ProgressFn = Callable[[Progress], None]


@dataclass
class Solution:
    """The best vectors found for one token sequence, and what they reconstruct alone."""

    vectors: dict[str, torch.Tensor]  # one-step: e (d,), m (d,); autoregressive: mem (k, d)
    predicted: list[int]
    c_tokens: int
    accuracy: float
    loss: float
    steps: int
    seed: int
    seconds: float = 0.0


class Problem(Protocol):
    """A way of turning trainable tables into LM inputs for a subset of rows."""

    params: list[torch.Tensor]
    unit_of_row: torch.Tensor  # (R,)

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, BatchLayout]: ...

    def vectors(self, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]: ...

    # Optional: fresh values of every param table's row for each seed (one tensor per param,
    # len(seeds) x ...), for problems whose rows can start over (Recipe.restart_every).
    # def restart_values(self, seeds: list[int]) -> list[torch.Tensor]: ...


def init_vectors(lm: LanguageModel, recipe: Recipe, n: int, seed: int, init: Init | None = None,
                 width: int | None = None) -> torch.Tensor:
    """(n, width or d) fresh vectors, reproducible from the seed alone (independent of batch layout).

    Low-rank coefficients take the same std: the basis (storage.basis) maps coefficients of a
    scale to vectors of that scale."""
    init = init or recipe.init
    std = recipe.init_scale * (lm.embedding_std if init is Init.EMBEDDING else 1.0)
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, width or lm.hidden_size, generator=gen) * std).to(lm.device)


@dataclass
class OneStepProblem:
    """[e, m, ...] through inputs_embeds (the paper). Rows are ordered restart-major."""

    lm: LanguageModel
    layout: BatchLayout
    e_table: torch.Tensor  # (n_e, d)
    m_table: torch.Tensor  # (n_m, d)
    e_of_row: torch.Tensor  # (R,)
    m_of_row: torch.Tensor  # (R,)
    unit_of_row: torch.Tensor  # (R,)
    params: list[torch.Tensor] = field(default_factory=list)
    lr_scales: list[float] = field(default_factory=list)  # per param, times the recipe's lr (default 1)
    basis: torch.Tensor | None = None  # (r, d): the tables hold r coefficients per vector (low rank)
    storage: str = "float32"  # the forward pass sees the stored value of each row (straight-through)
    recipe: Recipe | None = None  # how fresh rows start (restarts)

    def vector(self, rows: torch.Tensor) -> torch.Tensor:
        """Table rows (A, w) -> the input vectors (A, d) the model sees."""
        x = st.straight_through(rows, self.storage)
        return x @ self.basis if self.basis is not None else x

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, BatchLayout]:
        rows = rows.to(self.lm.device)
        sub = self.layout.subset(rows)
        e = self.vector(self.e_table[self.e_of_row[rows]])  # (A, d)
        m = self.vector(self.m_table[self.m_of_row[rows]])  # (A, d)
        z = sub.inputs(e, m).to(self.lm.dtype)  # (A, L, d)
        logits = self.lm.model(inputs_embeds=z).logits  # (A, L, V)
        return sub.target_logits(logits), sub  # (A, Nmax, V)

    def vectors(self, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        rows = rows.to(self.lm.device)
        e = self.e_table[self.e_of_row[rows]].detach().float().cpu()
        m = self.m_table[self.m_of_row[rows]].detach().float().cpu()
        return [{"e": e[i].clone(), "m": m[i].clone()} for i in range(len(rows))]

    def restart_values(self, seeds: list[int]) -> list[torch.Tensor]:
        """Row inits as `one_step_problem` draws them, from other seeds."""
        r = self.recipe or Recipe()
        w = self.e_table.shape[1]  # d, or the rank of low-rank coefficients
        e = torch.cat([init_vectors(self.lm, r, 1, seed, r.init_e, w) for seed in seeds])
        m = torch.cat([init_vectors(self.lm, r, 1, 10_000 + seed, None, w) for seed in seeds])
        return [e, m][: len(self.params)]


def one_step_problem(
    lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig, frozen_m: torch.Tensor | None,
    storage: str = "float32",
) -> OneStepProblem:
    """`storage`: what the forward pass rounds each row to (the straight-through phase)."""
    recipe, share = cfg.recipe, cfg.share
    width = cfg.rank or lm.hidden_size
    s, k = len(seqs), recipe.seeds
    g = cfg.group_size or s
    n_groups = math.ceil(s / g)
    rows = torch.arange(k * s)
    seed_of_row, seq_of_row = rows // s, rows % s
    group_of_row = seed_of_row * n_groups + seq_of_row // g  # a group's shared vector is per restart
    # e's position alone predicts t1 (E_MN1): it may need another scale than m, hence init_e.
    e_rows = torch.cat([init_vectors(lm, recipe, s, recipe.seed + i, recipe.init_e, width) for i in range(k)])
    m_rows = torch.cat([init_vectors(lm, recipe, s, 10_000 + recipe.seed + i, None, width) for i in range(k)])
    if share is ShareMode.SHARED_E:
        e_table, e_of_row = _group_table(e_rows, group_of_row), group_of_row
    else:
        e_table, e_of_row = e_rows, rows
    if share is ShareMode.SHARED_M:
        m_table, m_of_row = _group_table(m_rows, group_of_row), group_of_row
    elif share is ShareMode.FROZEN_M:
        if frozen_m is None:
            raise ValueError("share=frozen_m needs the m vector to freeze")
        m_table, m_of_row = frozen_m.detach().float().reshape(1, -1).to(lm.device), torch.zeros_like(rows)
    else:
        m_table, m_of_row = m_rows, rows
    shared = share in (ShareMode.SHARED_E, ShareMode.SHARED_M)
    unit_of_row = group_of_row if shared else rows
    e_table.requires_grad_(True)
    params, lr_scales = [e_table], [recipe.lr_e_scale]
    if share is not ShareMode.FROZEN_M and cfg.arrangement is not Arrangement.ONE:
        params.append(m_table.requires_grad_(True))
        lr_scales.append(1.0)
    sink = lm.sink_embedding() if recipe.sink else None
    layout = BatchLayout(cfg.arrangement, [len(seqs[i]) for i in seq_of_row.tolist()], lm.device, sink)
    dev = lm.device
    basis = st.basis(st.BASIS_SEED, cfg.rank, lm.hidden_size).to(dev) if cfg.rank else None
    return OneStepProblem(lm, layout, e_table, m_table, e_of_row.to(dev), m_of_row.to(dev),
                          unit_of_row, params, lr_scales, basis, storage, recipe)


def _group_table(row_vectors: torch.Tensor, group_of_row: torch.Tensor) -> torch.Tensor:
    """One vector per group: the init of the group's first row."""
    n = int(group_of_row.max()) + 1
    first = torch.stack([torch.nonzero(group_of_row == u)[0, 0] for u in range(n)])
    return row_vectors[first.to(row_vectors.device)].clone()


def lr_lambda(recipe: Recipe) -> Callable[[int], float]:
    """The schedule's lr multiplier at one step (the per-row form is `rowadam.lr_factors`)."""
    return lambda step: float(lr_factors(recipe, torch.tensor([step]))[0])


def optimize(
    lm: LanguageModel,
    seqs: list[list[int]],
    cfg: EncodeConfig,
    frozen_m: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
) -> list[Solution]:
    """Train vectors that make the frozen LM emit each sequence; one Solution per sequence."""
    if cfg.method is Method.AUTOREGRESSIVE:
        from .baseline import mem_problem

        problem: Problem = mem_problem(lm, seqs, cfg)
    else:
        if cfg.rank > lm.hidden_size:
            raise ValueError(f"rank {cfg.rank} is larger than the model's hidden size {lm.hidden_size}")
        problem = one_step_problem(lm, seqs, cfg, frozen_m)
    polish = cfg.storage != "float32" and cfg.recipe.ste_steps > 0
    total = cfg.recipe.max_steps + (cfg.recipe.ste_steps if polish else 0)  # the budget a progress bar shows
    sols = _run(lm, problem, seqs, cfg.recipe, _after(progress, 0, total) if polish else progress)
    if polish:
        sols = straight_through_phase(lm, seqs, cfg, sols, progress)
    return sols


def straight_through_phase(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig, sols: list[Solution],
                           progress: ProgressFn | None) -> list[Solution]:
    """Polish the best float vectors with the stored (rounded) value in the forward pass.

    Starts from each sequence's best vectors at the schedule's final learning rate; a sequence
    whose rounded vectors already reach the margin costs one step. The best state is judged on
    the rounded values, so the result never decodes worse than plain rounding would. Corrections
    and the checksum still come from the decode of the stored vectors (codec), whatever this finds.
    """
    r = cfg.recipe
    ste = r.with_(max_steps=r.ste_steps, seeds=1, lr=r.lr * r.min_lr_ratio, warmup_steps=0,
                  schedule=Schedule.CONSTANT, halve_every=0, restart_every=0)
    problem = one_step_problem(lm, seqs, cfg.with_(recipe=ste), None, cfg.storage)
    with torch.no_grad():
        problem.e_table.copy_(torch.stack([s.vectors["e"] for s in sols]).to(lm.device))
        problem.m_table.copy_(torch.stack([s.vectors["m"] for s in sols]).to(lm.device))
    out = _run(lm, problem, seqs, ste, _after(progress, max(s.steps for s in sols), r.max_steps + ste.max_steps))
    for new, old in zip(out, sols):
        new.steps, new.seconds, new.seed = old.steps + new.steps, old.seconds + new.seconds, old.seed
    return out


def _after(progress: ProgressFn | None, done: int, total: int) -> ProgressFn | None:
    """Progress of a second phase, counted on from the first one's steps (a bar never goes back)."""
    if progress is None:
        return None
    return lambda p: progress(replace(p, step=done + p.step, max_steps=total))


def _run(lm: LanguageModel, problem: Problem, seqs: list[list[int]], recipe: Recipe,
         progress: ProgressFn | None) -> list[Solution]:
    start = time.perf_counter()
    s, n_rows = len(seqs), len(problem.unit_of_row)
    width = max(len(q) for q in seqs)
    targets = torch.zeros((n_rows, width), dtype=torch.long)
    for r in range(n_rows):
        targets[r, : len(seqs[r % s])] = torch.tensor(seqs[r % s])
    targets = targets.to(lm.device)
    units = problem.unit_of_row  # (R,) on cpu
    member = torch.zeros((int(units.max()) + 1, s), dtype=torch.bool)  # (U, S): unit u trains seq q
    member[units, torch.arange(n_rows) % s] = True
    best = _Best(n_rows, member.shape[0], width)
    solved = torch.zeros(s, dtype=torch.bool)
    stop_step = torch.full((s,), recipe.max_steps)
    scales = getattr(problem, "lr_scales", None) or [1.0] * len(problem.params)
    opt = RowAdamW(problem.params, scales, recipe)
    alive = torch.ones(len(member), dtype=torch.bool)  # (U,): restarts not yet dropped by halving
    one_row_units = bool((member.sum(1) == 1).all()) and len(member) == n_rows
    halving = recipe.halve_every > 0 and recipe.seeds > 1 and one_row_units
    restarts = _Restarts(problem, recipe, s) if recipe.restart_every and one_row_units else None
    for step in range(recipe.max_steps):
        active = (member & ~solved).any(1) & alive  # (U,): a unit trains while one of its seqs is unsolved
        if not active.any():
            break
        rows = torch.nonzero(active[units])[:, 0]  # (A,)
        logits, sub = problem.forward(rows)  # (A, Nmax, V)
        tgt = targets[rows.to(lm.device)][:, : logits.shape[1]]  # (A, Nmax)
        logits = logits.float()
        ce = _loss(logits, tgt, sub.mask, recipe.loss_margin)  # (A,)
        with torch.no_grad():
            pred, acc, robust = judge(logits, tgt, sub.mask, recipe.margin)
            seeds = restarts.seed[rows] if restarts else rows // s + recipe.seed
            best.update(problem, rows, units[rows], acc.cpu(), robust.cpu(), ce.detach().cpu(), pred.cpu(), seeds)
            now = (member & (best.unit_robust >= recipe.stop_accuracy)[:, None]).any(0)  # (S,)
            stop_step[now & ~solved] = step + 1
            solved |= now
        opt.zero_grad()
        ce.sum().backward()  # sum: a row's gradient does not depend on the batch size
        opt.step()
        if halving and (step + 1) % recipe.halve_every == 0:
            halve(alive, units[rows], rows % s, robust.cpu(), acc.cpu(), ce.detach().cpu())
        if restarts:
            restarts.due(opt, rows, solved)
        if progress:
            progress(Progress(step + 1, recipe.max_steps, float(ce.detach().mean()), best.per_seq_acc(s),
                              int(solved.sum()), best.per_seq_pred(s)))
    return best.solutions(seqs, stop_step.tolist(), time.perf_counter() - start)


def _loss(logits: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    """(A, N, V) float logits -> (A,) mean cross-entropy over real tokens, with the right token's
    logit lowered by `margin` nats first (Recipe.loss_margin)."""
    if margin:
        logits = logits.scatter_add(-1, tgt[..., None], torch.full_like(logits[..., :1], -margin))
    ce = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")  # (A, N)
    return (ce * mask).sum(1) / mask.sum(1)


class _Restarts:
    """Rows still unsolved `restart_every` steps after they (re)started begin again from fresh
    vectors: a run that has stalled (one position that will not flip) rarely recovers, while a
    fresh start usually solves the text in its first attempt. The best state of every attempt
    is kept (`_Best`), so a restart can only help. Row r's attempt a uses seed
    `recipe.seed + r // S + a * seeds`, so seeds never repeat between a text's rows."""

    def __init__(self, problem: Problem, recipe: Recipe, n_seqs: int):
        n_rows = len(problem.unit_of_row)
        self.problem, self.recipe, self.s = problem, recipe, n_seqs
        self.seed = torch.arange(n_rows) // n_seqs + recipe.seed  # (R,) seed of each row's current attempt
        self.enabled = hasattr(problem, "restart_values") and all(p.shape[0] == n_rows for p in problem.params)

    def due(self, opt: RowAdamW, rows: torch.Tensor, solved: torch.Tensor) -> None:
        if not self.enabled:
            return
        age = opt.t[0].cpu()[rows]  # steps since each active row (re)started
        late = rows[(age >= self.recipe.restart_every) & ~solved[rows % self.s]]
        if len(late):
            self.seed[late] += self.recipe.seeds
            values = self.problem.restart_values(self.seed[late].tolist())
            opt.restart(late.to(opt.t[0].device), values)


def halve(alive: torch.Tensor, units: torch.Tensor, seq: torch.Tensor, robust: torch.Tensor,
          acc: torch.Tensor, loss: torch.Tensor) -> None:
    """Drop the worse half of each sequence's running restarts (one unit per row), in place.

    Restarts of one text differ mostly in how soon they will finish; after a few steps the
    leaders rarely fall behind, so the compute goes to the runs likely to finish first.
    """
    for q in seq.unique().tolist():
        mine = torch.nonzero(seq == q)[:, 0].tolist()
        if len(mine) < 2:
            continue
        ranked = sorted(mine, key=lambda i: (-float(robust[i]), -float(acc[i]), float(loss[i])))
        for i in ranked[(len(mine) + 1) // 2 :]:
            alive[units[i]] = False


def judge(logits: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor,
          margin: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Argmax ids, token accuracy and *robust* accuracy per row, from (A, N, V) float logits.

    A position is robust when its target leads every other token by at least `margin`
    nats. Another batch shape, thread count, dtype or device perturbs logits a little; a
    robust position keeps its argmax through that, a barely-right one may not.
    """
    pred = logits.argmax(-1)  # (A, N)
    n = mask.sum(1).float()
    right = (pred == tgt) & mask  # (A, N)
    if margin > 0:
        correct = logits.gather(-1, tgt[..., None])[..., 0]  # (A, N)
        rival = logits.scatter(-1, tgt[..., None], float("-inf")).amax(-1)  # (A, N): best other token
        solid = right & (correct - rival >= margin)
    else:
        solid = right
    return pred, right.sum(1) / n, solid.sum(1) / n


class _Best:
    """Best state per unit: vectors and predictions at its highest (robust, plain) mean accuracy."""

    def __init__(self, n_rows: int, n_units: int, width: int):
        self.unit_robust = torch.full((n_units,), -1.0)
        self.unit_acc = torch.full((n_units,), -1.0)
        self.unit_loss = torch.full((n_units,), math.inf)
        self.acc = torch.full((n_rows,), -1.0)
        self.robust = torch.full((n_rows,), -1.0)
        self.loss = torch.full((n_rows,), math.inf)
        self.pred = torch.zeros((n_rows, width), dtype=torch.long)
        self.seed = torch.zeros(n_rows, dtype=torch.long)  # seed of the attempt that made the best state
        self.vectors: list[dict[str, torch.Tensor] | None] = [None] * n_rows
        self.n_rows = n_rows

    def update(self, problem: Problem, rows: torch.Tensor, units: torch.Tensor, acc: torch.Tensor,
               robust: torch.Tensor, loss: torch.Tensor, pred: torch.Tensor, seeds: torch.Tensor) -> None:
        n = len(self.unit_acc)
        count = torch.zeros(n).index_add_(0, units, torch.ones_like(acc)).clamp(min=1)

        def mean(x: torch.Tensor) -> torch.Tensor:  # (A,) -> (U,) mean over a unit's rows
            return torch.zeros(n).index_add_(0, units, x) / count

        mean_acc, mean_robust, mean_loss = mean(acc), mean(robust), mean(loss)
        # Lexicographic (robust, accuracy, -loss): past full accuracy a lower loss means wider margins.
        same = mean_robust == self.unit_robust
        better = (mean_robust > self.unit_robust) | (same & (mean_acc > self.unit_acc)) | (
            same & (mean_acc == self.unit_acc) & (mean_loss < self.unit_loss))
        improved = torch.zeros(n, dtype=torch.bool).index_fill_(0, units, True) & better
        if not improved.any():
            return
        self.unit_loss = torch.where(improved, mean_loss, self.unit_loss)
        self.unit_acc = torch.where(improved, mean_acc, self.unit_acc)
        self.unit_robust = torch.where(improved, mean_robust, self.unit_robust)
        idx = torch.nonzero(improved[units])[:, 0]
        r = rows[idx]
        self.acc[r], self.robust[r], self.loss[r] = acc[idx], robust[idx], loss[idx]
        self.pred[r, : pred.shape[1]] = pred[idx]
        self.seed[r] = seeds[idx]
        for row, vec in zip(r.tolist(), problem.vectors(r)):
            self.vectors[row] = vec

    def per_seq_acc(self, s: int) -> list[float]:
        return self.acc.view(-1, s).max(0).values.clamp(min=0).tolist()

    def per_seq_pred(self, s: int) -> torch.Tensor:
        """(S, width) predictions of each sequence's best restart, chosen as `solutions` does."""
        acc, loss = self.acc.view(-1, s), self.loss.view(-1, s)  # (k, S)
        top = acc == acc.max(0, keepdim=True).values  # (k, S): restarts at the best accuracy
        restart = torch.where(top, loss, torch.full_like(loss, math.inf)).argmin(0)  # (S,) lowest loss among them
        return self.pred[restart * s + torch.arange(s)]  # (S, width), a copy

    def solutions(self, seqs: list[list[int]], stop_step: list[int], seconds: float) -> list[Solution]:
        s = len(seqs)
        out = []
        for q, seq in enumerate(seqs):
            rows = list(range(q, self.n_rows, s))  # this sequence under every restart
            r = max(rows, key=lambda r: (float(self.robust[r]), float(self.acc[r]), -float(self.loss[r])))
            pred = self.pred[r, : len(seq)].tolist()
            c = sum(int(a == b) for a, b in zip(pred, seq))
            out.append(Solution(self.vectors[r], pred, c, c / len(seq), float(self.loss[r]),
                                int(stop_step[q]), int(self.seed[r]), seconds))
        return out
