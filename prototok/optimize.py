"""Batched optimisation of trainable input vectors against a frozen LM.

Every (sequence, restart) pair is one row of one batch. AdamW is element-wise, so rows
that share no vector are exactly independent problems solved side by side; rows that
share a vector (Table 2's groups) are trained jointly through it. A *cohort* is the set
of rows that must be judged together: one row, or one sharing group of one restart.
For each cohort the best state seen (by mean token accuracy) is kept, so the answer
never gets worse than the best step. A sequence stops costing compute as soon as one
of its restarts reconstructs it (`stop_accuracy`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from .errors import InvalidInput
from .mem import mem_problem
from .metrics import c_tokens, lead
from .models import LanguageModel
from .one_step import one_step_problem
from .problem import Problem, first_seeds, pad_right, token_loss
from .recipe import EncodeConfig, Method, Recipe, Schedule, ShareMode
from .rowadam import RowAdamW
from .starts import find_start, shared_start


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


def optimize(
    lm: LanguageModel,
    seqs: list[list[int]],
    cfg: EncodeConfig,
    frozen_m: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    text_of_seq: list[int] | None = None,
) -> list[Solution]:
    """Train vectors that make the frozen LM emit each sequence; one Solution per sequence.

    `frozen_m`: the (d,) m every text shares under share=frozen_m (from an earlier shared_m run);
    with `cfg.model_m` it is the model's start's m, and e begins at the start's e.
    `text_of_seq`: the text each sequence is a chunk of (default: each its own text); a text's
    chunks decode together in one batch, so a solve is judged in that batch's shape too."""
    check_inputs(lm, cfg, frozen_m)
    texts = torch.tensor(text_of_seq if text_of_seq is not None else range(len(seqs)))  # (S,)
    if len(texts) != len(seqs):
        raise InvalidInput(f"text_of_seq has {len(texts)} entries for {len(seqs)} sequences")
    problem: Problem
    if cfg.method is Method.AUTOREGRESSIVE:
        problem = mem_problem(lm, seqs, cfg)
    else:
        warm = (cfg.recipe.warm_start or cfg.model_m) and not cfg.rank
        start = shared_start(lm) if cfg.model_m else find_start(lm) if warm else None
        frozen_m = start.m if cfg.model_m else frozen_m
        problem = one_step_problem(lm, seqs, cfg, frozen_m, start=start)
    polish = cfg.storage != "float32" and cfg.recipe.ste_steps > 0
    one_pass = cfg.method is Method.ONE_STEP  # decode is one pass per encoding: judge a solve in its shape
    sols = _run(lm, problem, seqs, cfg.recipe, _after(progress, 0, cfg.step_budget) if polish else progress,
                texts if one_pass else None)
    if polish:
        sols = straight_through_phase(lm, seqs, cfg, sols, progress, texts)
    return sols


def check_inputs(lm: LanguageModel, cfg: EncodeConfig, frozen_m: torch.Tensor | None) -> None:
    """What the config alone cannot know: the model's width, the vector share=frozen_m freezes, and
    (model_m) that the model has a start to take m from: ModelMMissing before any text is tokenised."""
    if cfg.rank > lm.hidden_size:
        raise InvalidInput(f"rank {cfg.rank} is larger than the model's hidden size {lm.hidden_size}")
    if cfg.model_m:
        if frozen_m is not None:
            raise InvalidInput("frozen_m: model_m freezes the model's own m; give model_m or a frozen_m, not both")
        shared_start(lm)
        return
    if (cfg.share is ShareMode.FROZEN_M) != (frozen_m is not None):
        raise InvalidInput("frozen_m: share=frozen_m needs the m vector to freeze, and only it takes one")
    if frozen_m is not None and frozen_m.numel() != lm.hidden_size:
        raise InvalidInput(f"frozen_m has {frozen_m.numel()} values; model '{lm.name}' takes {lm.hidden_size}")


def straight_through_phase(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig, sols: list[Solution],
                           progress: ProgressFn | None, texts: torch.Tensor) -> list[Solution]:
    """Polish the best float vectors with the stored (rounded) value in the forward pass.

    Starts from each sequence's best vectors at the schedule's final learning rate; a sequence
    whose rounded vectors already reach the margin costs one step. The best state is judged on
    the rounded values, so the result never decodes worse than plain rounding would. Corrections
    and the checksum still come from the decode of the stored vectors (codec), whatever this finds.
    """
    r = cfg.recipe
    ste = r.with_(max_steps=r.ste_steps, seeds=1, lr=r.lr * r.min_lr_ratio, warmup_steps=0,
                  schedule=Schedule.CONSTANT, halve_every=0, restart_every=0)
    frozen = sols[0].vectors["m"] if cfg.share is ShareMode.FROZEN_M else None  # every row's m is that one
    problem = one_step_problem(lm, seqs, cfg.with_(recipe=ste), frozen, cfg.storage)
    with torch.no_grad():
        problem.e_table.copy_(torch.stack([s.vectors["e"] for s in sols]).to(lm.device))
        if frozen is None:
            problem.m_table.copy_(torch.stack([s.vectors["m"] for s in sols]).to(lm.device))
    out = _run(lm, problem, seqs, ste, _after(progress, max(s.steps for s in sols), r.max_steps + ste.max_steps),
               texts)
    for new, old in zip(out, sols):
        new.steps, new.seconds, new.seed = old.steps + new.steps, old.seconds + new.seconds, old.seed
    return out


def _after(progress: ProgressFn | None, done: int, total: int) -> ProgressFn | None:
    """Progress of a second phase, counted on from the first one's steps (a bar never goes back)."""
    if progress is None:
        return None
    return lambda p: progress(replace(p, step=done + p.step, max_steps=total))


@torch.enable_grad()
def _run(lm: LanguageModel, problem: Problem, seqs: list[list[int]], recipe: Recipe,
         progress: ProgressFn | None, text_of_seq: torch.Tensor | None = None) -> list[Solution]:
    """The loop. Grad is switched on here, whatever the caller's mode: a job ended by its time limit
    (SIGALRM) between `torch.no_grad()`'s switch and its `with` block leaves the worker's thread with
    grad off, and every later job of that worker would fail at backward().

    `text_of_seq`: (S,) the text each sequence is a chunk of; when given, a sequence judged robust
    in a training batch of another shape counts as solved only once its row is robust in the
    batch its text's decode runs too (`_confirm_in_decode_shape`)."""
    start = time.perf_counter()
    s, n_rows = len(seqs), len(problem.cohort_of_row)
    targets = pad_right(seqs)[torch.arange(n_rows) % s].to(lm.device)  # (R, Nmax)
    cohorts = problem.cohort_of_row  # (R,) on cpu
    member = torch.zeros((int(cohorts.max()) + 1, s), dtype=torch.bool)  # (C, S): cohort c trains seq q
    member[cohorts, torch.arange(n_rows) % s] = True
    best = _Best(n_rows, member.shape[0], targets.shape[1])
    solved = torch.zeros(s, dtype=torch.bool)
    stop_step = torch.full((s,), recipe.max_steps)
    opt = RowAdamW(problem.params, problem.lr_scales, recipe)
    alive = torch.ones(len(member), dtype=torch.bool)  # (C,): restarts not yet dropped by halving
    one_row_cohorts = bool((member.sum(1) == 1).all()) and len(member) == n_rows
    halving = recipe.halve_every > 0 and recipe.seeds > 1 and one_row_cohorts
    restarts = _Restarts(problem, recipe, s) if recipe.restart_every and one_row_cohorts else None
    seed_of_row = restarts.seed if restarts else first_seeds(n_rows, s, recipe)  # (R,), moved on by restarts
    guard = recipe.spike_guard > 0 and one_table_row_per_batch_row(problem)  # it puts single rows back
    confirm = text_of_seq is not None and one_row_cohorts and recipe.margin > 0
    for step in range(recipe.max_steps):
        active = (member & ~solved).any(1) & alive  # (C,): a cohort trains while one of its seqs is unsolved
        if not active.any():
            break
        rows = torch.nonzero(active[cohorts])[:, 0]  # (A,)
        logits, sub = problem.forward(rows)  # (A, Nmax, V)
        tgt = targets[rows.to(lm.device)][:, : logits.shape[1]]  # (A, Nmax)
        logits = logits.float()
        ce = token_loss(logits, tgt, sub.mask, recipe.loss_margin)  # (A,)
        row_loss = ce.detach().cpu()  # (A,) one device sync, for judging, the guard and halving
        with torch.no_grad():
            pred, acc, robust = judge(logits, tgt, sub.mask, recipe.margin)
            best.update(problem, rows, cohorts[rows], acc.cpu(), robust.cpu(), row_loss, pred.cpu(),
                        seed_of_row[rows])
            now = (member & (best.cohort_robust >= recipe.stop_accuracy)[:, None]).any(0)  # (S,)
            if confirm and (now & ~solved).any():
                _confirm_in_decode_shape(problem, best, rows, cohorts, robust.cpu(), now & ~solved, targets, recipe,
                                         text_of_seq)
                now = (member & (best.cohort_robust >= recipe.stop_accuracy)[:, None]).any(0)
            stop_step[now & ~solved] = step + 1
            solved |= now
        if guard:
            opt.watch(rows, row_loss)
        opt.zero_grad()
        ce.sum().backward()  # sum: a row's gradient does not depend on the batch size
        opt.step()
        if halving and (step + 1) % recipe.halve_every == 0:
            halve(alive, cohorts[rows], rows % s, robust.cpu(), acc.cpu(), row_loss)
        if restarts:
            restarts.due(opt, rows, solved)
        if progress:
            progress(Progress(step + 1, recipe.max_steps, float(ce.detach().mean()), best.per_seq_acc(s),
                              int(solved.sum()), best.per_seq_pred(s)))
    return best.solutions(seqs, stop_step.tolist(), time.perf_counter() - start)


class _Restarts:
    """Rows still unsolved `restart_every` steps after they (re)started begin again from fresh
    vectors: a run that has stalled (one position that will not flip) rarely recovers, while a
    fresh start usually solves the text in its first attempt. The best state of every attempt
    is kept (`_Best`), so a restart can only help. Row r's attempt a uses seed
    `recipe.seed + r // S + a * seeds`, so seeds never repeat between a text's rows.
    Only problems with one table row per batch row can restart a row alone."""

    def __init__(self, problem: Problem, recipe: Recipe, n_seqs: int):
        n_rows = len(problem.cohort_of_row)
        self.problem, self.recipe, self.s = problem, recipe, n_seqs
        self.seed = first_seeds(n_rows, n_seqs, recipe)  # (R,) seed of each row's current attempt
        self.enabled = one_table_row_per_batch_row(problem)

    def due(self, opt: RowAdamW, rows: torch.Tensor, solved: torch.Tensor) -> None:
        if not self.enabled:
            return
        age = opt.t[0].cpu()[rows]  # steps since each active row (re)started
        late = rows[(age >= self.recipe.restart_every) & ~solved[rows % self.s]]
        if len(late):
            self.seed[late] += self.recipe.seeds
            values = self.problem.restart_values(self.seed[late].tolist())
            opt.restart(late.to(opt.t[0].device), values)


def _confirm_in_decode_shape(problem: Problem, best: _Best, rows: torch.Tensor, cohorts: torch.Tensor,
                             robust: torch.Tensor, newly: torch.Tensor, targets: torch.Tensor, recipe: Recipe,
                             text_of_seq: torch.Tensor) -> None:
    """Rows robust in this batch whose sequence was not solved before are run again (no grad) in the
    batch their text's decode runs: that text's chunks in order (`codec.reference_decode`); one not
    robust there keeps training, its best state marked with the robust accuracy it has there. In
    bfloat16 on an AMX Xeon the same vectors gave leads up to 1.5 nats apart in a batch of 8 and
    alone (bench/results/speed.md), more than the margin. A row's result depends on the other rows'
    shape, not their values, so any row of each other chunk stands in for it; chunks of the text
    that another optimisation batch holds are left out (their decode shape cannot be built here).
    One-row cohorts only (cohort = row), so a row's best is its state now."""
    s = len(newly)
    cand = rows[(robust >= recipe.stop_accuracy) & newly[rows % s]]
    for r in cand.tolist():
        mates = torch.nonzero(text_of_seq == text_of_seq[r % s])[:, 0]  # (K,) the text's chunks here, in order
        own = mates == r % s
        shape = torch.where(own, r, mates)  # row r for its own chunk
        if torch.equal(shape, rows):
            continue  # the training batch is that shape already
        logits, sub = problem.forward(shape)
        at = int(torch.nonzero(own)[0, 0])
        tgt = targets[shape.to(targets.device)][at : at + 1, : logits.shape[1]]
        there = float(judge(logits[at : at + 1].float(), tgt, sub.mask[at : at + 1], recipe.margin)[2][0])
        if there < recipe.stop_accuracy:
            best.robust[r] = there
            best.cohort_robust[cohorts[r]] = there


def one_table_row_per_batch_row(problem: Problem) -> bool:
    """Whether every trained table has a row of its own per batch row (no shared m or e), so one
    row can start over (restarts) or go back to an earlier state (the spike guard) alone."""
    return all(p.shape[0] == len(problem.cohort_of_row) for p in problem.params)


def halve(alive: torch.Tensor, cohorts: torch.Tensor, seq: torch.Tensor, robust: torch.Tensor,
          acc: torch.Tensor, loss: torch.Tensor) -> None:
    """Drop the worse half of each sequence's running restarts (one cohort per row), in place.

    Restarts of one text differ mostly in how soon they will finish; after a few steps the
    leaders rarely fall behind, so the compute goes to the runs likely to finish first.
    """
    for q in seq.unique().tolist():
        mine = torch.nonzero(seq == q)[:, 0].tolist()
        if len(mine) < 2:
            continue
        ranked = sorted(mine, key=lambda i: (-float(robust[i]), -float(acc[i]), float(loss[i])))
        for i in ranked[(len(mine) + 1) // 2 :]:
            alive[cohorts[i]] = False


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
    solid = right & (lead(logits, tgt) >= margin) if margin > 0 else right
    return pred, right.sum(1) / n, solid.sum(1) / n


class _Best:
    """Best state per cohort: vectors and predictions at its highest (robust, plain) mean accuracy."""

    def __init__(self, n_rows: int, n_cohorts: int, width: int):
        self.cohort_robust = torch.full((n_cohorts,), -1.0)
        self.cohort_acc = torch.full((n_cohorts,), -1.0)
        self.cohort_loss = torch.full((n_cohorts,), math.inf)
        self.acc = torch.full((n_rows,), -1.0)
        self.robust = torch.full((n_rows,), -1.0)
        self.loss = torch.full((n_rows,), math.inf)
        self.pred = torch.zeros((n_rows, width), dtype=torch.long)
        self.seed = torch.zeros(n_rows, dtype=torch.long)  # seed of the attempt that made the best state
        self.vectors: list[dict[str, torch.Tensor] | None] = [None] * n_rows
        self.n_rows = n_rows

    def update(self, problem: Problem, rows: torch.Tensor, cohorts: torch.Tensor, acc: torch.Tensor,
               robust: torch.Tensor, loss: torch.Tensor, pred: torch.Tensor, seeds: torch.Tensor) -> None:
        n = len(self.cohort_acc)
        count = torch.zeros(n).index_add_(0, cohorts, torch.ones_like(acc)).clamp(min=1)

        def mean(x: torch.Tensor) -> torch.Tensor:  # (A,) -> (C,) mean over a cohort's rows
            return torch.zeros(n).index_add_(0, cohorts, x) / count

        mean_acc, mean_robust, mean_loss = mean(acc), mean(robust), mean(loss)
        # Lexicographic (robust, accuracy, -loss): past full accuracy a lower loss means wider margins.
        same = mean_robust == self.cohort_robust
        better = (mean_robust > self.cohort_robust) | (same & (mean_acc > self.cohort_acc)) | (
            same & (mean_acc == self.cohort_acc) & (mean_loss < self.cohort_loss))
        improved = torch.zeros(n, dtype=torch.bool).index_fill_(0, cohorts, True) & better
        if not improved.any():
            return
        self.cohort_loss = torch.where(improved, mean_loss, self.cohort_loss)
        self.cohort_acc = torch.where(improved, mean_acc, self.cohort_acc)
        self.cohort_robust = torch.where(improved, mean_robust, self.cohort_robust)
        idx = torch.nonzero(improved[cohorts])[:, 0]
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
            c = c_tokens(pred, seq)
            out.append(Solution(self.vectors[r], pred, c, c / len(seq), float(self.loss[r]),
                                int(stop_step[q]), int(self.seed[r]), seconds))
        return out
