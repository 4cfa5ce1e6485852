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
import torch.nn.functional as F

from .encoder import predict, require_encoder
from .errors import InvalidInput
from .mem import mem_problem
from .metrics import c_tokens, lead
from .models import LanguageModel
from .one_step import OneStepProblem, one_step_problem
from .problem import Problem, first_seeds, pad_right, token_loss
from .recipe import EncodeConfig, Method, Recipe, Schedule, ShareMode, StartFrom
from .rowadam import RowAdamW
from .starts import Start, find_start, shared_start


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
    job = Optimization(lm, seqs, cfg, frozen_m, progress, text_of_seq)
    while not job.done:
        step_runs(lm, [job.run])
        job.advance()
    return job.solutions


class Optimization:
    """The runs of one optimisation batch: the main run, then, for a storage below float32, the
    straight-through polish (`straight_through_run`). `optimize` steps it alone; a continuous
    batch (prototok/continuous.py) steps its current `run` beside other requests' runs."""

    def __init__(self, lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig,
                 frozen_m: torch.Tensor | None = None, progress: ProgressFn | None = None,
                 text_of_seq: list[int] | None = None):
        started = time.perf_counter()  # an encoder's pass is part of the encode's seconds
        check_inputs(lm, cfg, frozen_m)
        texts = torch.tensor(text_of_seq if text_of_seq is not None else range(len(seqs)))  # (S,)
        if len(texts) != len(seqs):
            raise InvalidInput(f"text_of_seq has {len(texts)} entries for {len(seqs)} sequences")
        problem: Problem
        if cfg.method is Method.AUTOREGRESSIVE:
            problem = mem_problem(lm, seqs, cfg)
        else:
            start = first_start(lm, seqs, cfg)
            frozen_m = start.m if cfg.model_m else frozen_m
            problem = one_step_problem(lm, seqs, cfg, frozen_m, start=start)
        self.lm, self.seqs, self.cfg, self.progress, self.texts = lm, seqs, cfg, progress, texts
        self.polish = cfg.storage != "float32" and cfg.recipe.ste_steps > 0
        one_pass = cfg.method is Method.ONE_STEP  # decode is one pass per encoding: judge a solve in its shape
        self.run = Run(lm, problem, seqs, cfg.recipe, _after(progress, 0, cfg.step_budget) if self.polish else progress,
                       texts if one_pass else None, started)
        self.first: list[Solution] | None = None  # the main run's solutions, while the polish runs
        self.solutions: list[Solution] | None = None

    @property
    def done(self) -> bool:
        return self.solutions is not None

    def advance(self) -> None:
        """After a step: once the current run has ended, start the polish or take the solutions
        (re-raising what the progress callback raised)."""
        if not self.run.finished or self.done:
            return
        sols = self.run.result()
        if self.first is not None:
            self.solutions = merged_phases(self.first, sols)
        elif self.polish:
            self.first = sols
            self.run = straight_through_run(self.lm, self.seqs, self.cfg, sols, self.progress, self.texts)
        else:
            self.solutions = sols


def first_start(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig) -> Start | None:
    """Where the first restart of a one-step problem begins (Recipe.start), None for at random:
    model_m begins at the shared start; low-rank codes always at random (a start is a full vector)."""
    if cfg.model_m:
        return shared_start(lm)
    if cfg.rank or cfg.recipe.start is StartFrom.RANDOM:
        return None
    if cfg.recipe.start is StartFrom.WARM:
        return find_start(lm)
    enc = require_encoder(lm)
    e, m = predict(lm, enc, seqs)
    return Start(e, m, enc.meta, enc.path)


def check_inputs(lm: LanguageModel, cfg: EncodeConfig, frozen_m: torch.Tensor | None) -> None:
    """What the config alone cannot know: the model's width, the vector share=frozen_m freezes, and
    (model_m) that the model has a start to take m from: ModelMMissing before any text is tokenised."""
    if cfg.rank > lm.hidden_size:
        raise InvalidInput(f"rank {cfg.rank} is larger than the model's hidden size {lm.hidden_size}")
    if cfg.recipe.start is StartFrom.ENCODER and cfg.method is Method.ONE_STEP and not cfg.rank:
        require_encoder(lm)
    if cfg.model_m:
        if frozen_m is not None:
            raise InvalidInput("frozen_m: model_m freezes the model's own m; give model_m or a frozen_m, not both")
        shared_start(lm)
        return
    if (cfg.share is ShareMode.FROZEN_M) != (frozen_m is not None):
        raise InvalidInput("frozen_m: share=frozen_m needs the m vector to freeze, and only it takes one")
    if frozen_m is not None and frozen_m.numel() != lm.hidden_size:
        raise InvalidInput(f"frozen_m has {frozen_m.numel()} values; model '{lm.name}' takes {lm.hidden_size}")


def straight_through_run(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig, sols: list[Solution],
                         progress: ProgressFn | None, texts: torch.Tensor) -> Run:
    """The polish of the best float vectors, with the stored (rounded) value in the forward pass.

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
    return Run(lm, problem, seqs, ste, _after(progress, max(s.steps for s in sols), r.max_steps + ste.max_steps),
               texts)


def straight_through_phase(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig, sols: list[Solution],
                           progress: ProgressFn | None = None, texts: torch.Tensor | None = None) -> list[Solution]:
    """`straight_through_run` to its end, alone (bench.size polishes solutions it already holds)."""
    run = straight_through_run(lm, seqs, cfg, sols, progress, texts)
    while not run.finished:
        step_runs(lm, [run])
    return merged_phases(sols, run.result())


def merged_phases(first: list[Solution], polished: list[Solution]) -> list[Solution]:
    """The polish's solutions, counting the steps and seconds of both phases and the main run's seed."""
    for new, old in zip(polished, first):
        new.steps, new.seconds, new.seed = old.steps + new.steps, old.seconds + new.seconds, old.seed
    return polished


def _after(progress: ProgressFn | None, done: int, total: int) -> ProgressFn | None:
    """Progress of a second phase, counted on from the first one's steps (a bar never goes back)."""
    if progress is None:
        return None
    return lambda p: progress(replace(p, step=done + p.step, max_steps=total))


class Run:
    """One phase of one optimisation: a problem's rows, their optimiser and what judges them.

    `step_runs` advances runs one step at a time, alone or several in one forward and backward
    pass (the worker's continuous batch): each row has its own vectors, Adam moments, step count
    and schedule, so a run's rows learn as they would alone; only the batch's shape differs,
    which the judging in the decode's shape and the reference decode account for.

    `text_of_seq`: (S,) the text each sequence is a chunk of; when given, a sequence judged robust
    in a training batch of another shape counts as solved only once its row is robust in the
    batch its text's decode runs too (`_confirm_in_decode_shape`).
    """

    def __init__(self, lm: LanguageModel, problem: Problem, seqs: list[list[int]], recipe: Recipe,
                 progress: ProgressFn | None, text_of_seq: torch.Tensor | None = None, started: float | None = None):
        self.start = time.perf_counter() if started is None else started  # the seconds solutions report count from here
        self.lm, self.problem, self.seqs, self.recipe, self.progress = lm, problem, seqs, recipe, progress
        s, n_rows = len(seqs), len(problem.cohort_of_row)
        self.targets = pad_right(seqs)[torch.arange(n_rows) % s].to(lm.device)  # (R, Nmax)
        self.cohorts = problem.cohort_of_row  # (R,) on cpu
        self.member = torch.zeros((int(self.cohorts.max()) + 1, s), dtype=torch.bool)  # (C, S): cohort c trains seq q
        self.member[self.cohorts, torch.arange(n_rows) % s] = True
        self.best = _Best(n_rows, self.member.shape[0], self.targets.shape[1])
        self.solved = torch.zeros(s, dtype=torch.bool)
        self.stop_step = torch.full((s,), recipe.max_steps)
        self.opt = RowAdamW(problem.params, problem.lr_scales, recipe)
        self.alive = torch.ones(len(self.member), dtype=torch.bool)  # (C,): restarts not yet dropped by halving
        one_row_cohorts = bool((self.member.sum(1) == 1).all()) and len(self.member) == n_rows
        self.halving = recipe.halve_every > 0 and recipe.seeds > 1 and one_row_cohorts
        self.restarts = _Restarts(problem, recipe, s) if recipe.restart_every and one_row_cohorts else None
        self.seed_of_row = self.restarts.seed if self.restarts else first_seeds(n_rows, s, recipe)  # (R,)
        self.guard = recipe.spike_guard > 0 and one_table_row_per_batch_row(problem)  # it puts single rows back
        self.confirm = text_of_seq is not None and one_row_cohorts and recipe.margin > 0
        self.text_of_seq = text_of_seq
        self.step, self.finished = 0, False
        self.rows = torch.zeros(0, dtype=torch.long)  # (A,) the rows of the step under way
        self.error: Exception | None = None  # what the progress callback raised (the run then ended)
        self._judged: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (acc, robust, loss) of the step

    def next_rows(self) -> torch.Tensor | None:
        """(A,) the rows that train this step: every cohort with a sequence not yet solved. None,
        and `finished`, once the budget is spent or every sequence is solved."""
        if self.finished:
            return None
        active = (self.member & ~self.solved).any(1) & self.alive  # (C,)
        if self.step >= self.recipe.max_steps or not active.any():
            self.finished = True
            return None
        self.rows = torch.nonzero(active[self.cohorts])[:, 0]  # (A,)
        return self.rows

    def learn(self, logits: torch.Tensor, sub, alone: bool) -> torch.Tensor:
        """Judge this step's (A, Nmax, V) logits of `rows` and return their (A,) losses to backprop.
        `alone`: the forward pass held these rows only (a solve in that shape needs no second look)."""
        recipe, rows = self.recipe, self.rows
        tgt = self.targets[rows.to(self.lm.device)][:, : logits.shape[1]]  # (A, Nmax)
        logits = logits.float()
        ce = token_loss(logits, tgt, sub.mask, recipe.loss_margin)  # (A,)
        row_loss = ce.detach().cpu()  # (A,) one device sync, for judging, the guard and halving
        with torch.no_grad():
            pred, acc, robust = judge(logits, tgt, sub.mask, recipe.margin)
            acc, robust = acc.cpu(), robust.cpu()
            self.best.update(self.problem, rows, self.cohorts[rows], acc, robust, row_loss, pred.cpu(),
                             self.seed_of_row[rows])
            now = self._solved_now()
            if self.confirm and (now & ~self.solved).any():
                _confirm_in_decode_shape(self.problem, self.best, rows, self.cohorts, robust, now & ~self.solved,
                                         self.targets, recipe, self.text_of_seq, alone)
                now = self._solved_now()
            self.stop_step[now & ~self.solved] = self.step + 1
            self.solved |= now
        if self.guard:
            self.opt.watch(rows, row_loss)
        self._judged = (acc, robust, row_loss)
        return ce

    def _solved_now(self) -> torch.Tensor:
        """(S,) sequences one of whose cohorts has reached the stop accuracy, robustly."""
        return (self.member & (self.best.cohort_robust >= self.recipe.stop_accuracy)[:, None]).any(0)

    def update(self, ce: torch.Tensor) -> None:
        """After the backward pass: the optimiser step, halving, restarts, the progress report."""
        recipe, rows = self.recipe, self.rows
        acc, robust, row_loss = self._judged
        self.opt.step()
        self.step += 1
        if self.halving and self.step % recipe.halve_every == 0:
            halve(self.alive, self.cohorts[rows], rows % len(self.seqs), robust, acc, row_loss)
        if self.restarts:
            self.restarts.due(self.opt, rows, self.solved)
        if self.progress:
            report = Progress(self.step, recipe.max_steps, float(ce.detach().mean()),
                              self.best.per_seq_acc(len(self.seqs)), int(self.solved.sum()),
                              self.best.per_seq_pred(len(self.seqs)))
            try:
                self.progress(report)
            except Exception as exc:  # noqa: BLE001 - the caller's (a canceled job): ends this run only
                self.error, self.finished = exc, True

    @property
    def active_rows(self) -> int:
        """Rows the next step would train (0 once finished): what the run costs a batch now."""
        if self.finished:
            return 0
        active = (self.member & ~self.solved).any(1) & self.alive
        return int(active[self.cohorts].sum())

    def result(self) -> list[Solution]:
        """The best state of every sequence; re-raises what the progress callback raised."""
        if self.error is not None:
            raise self.error
        return self.best.solutions(self.seqs, self.stop_step.tolist(), time.perf_counter() - self.start)


@torch.enable_grad()
def step_runs(lm: LanguageModel, runs: list[Run]) -> None:
    """One step of every run that has rows left. Runs whose problems can share a forward pass (every
    one-step problem: each builds its own [e, m, ...] rows) go in one pass, right-padded to the
    longest input (under the causal mask a padded tail cannot change the positions before it), and
    one backward pass; a [mem] run goes alone. Grad is switched on here, whatever the caller's mode:
    a job ended by its time limit (SIGALRM) between `torch.no_grad()`'s switch and its `with` block
    leaves the worker's thread with grad off, and every later job of that worker would fail at backward()."""
    live = [run for run in runs if run.next_rows() is not None]
    shared = [run for run in live if isinstance(run.problem, OneStepProblem)]
    groups = ([shared] if shared else []) + [[run] for run in live if run not in shared]
    for group in groups:
        losses = _forward(lm, group)
        for run in group:
            run.opt.zero_grad()
        torch.stack([ce.sum() for ce in losses]).sum().backward()  # sum: a row's gradient ignores the batch
        for run, ce in zip(group, losses):
            run.update(ce)


def _forward(lm: LanguageModel, group: list[Run]) -> list[torch.Tensor]:
    """Each run's (A_i,) losses from one forward pass over all of the group's rows."""
    if len(group) == 1:
        run = group[0]
        logits, sub = run.problem.forward(run.rows)  # (A, Nmax, V)
        return [run.learn(logits, sub, alone=True)]
    parts = [run.problem.inputs(run.rows) for run in group]  # each (A_i, L_i, d)
    width = max(z.shape[1] for z, _ in parts)
    z = torch.cat([F.pad(z, (0, 0, 0, width - z.shape[1])) for z, _ in parts])  # (sum A_i, L, d)
    logits = lm.model(inputs_embeds=z).logits  # (sum A_i, L, V)
    losses, at = [], 0
    for run, (zi, sub) in zip(group, parts):
        mine = logits[at : at + len(zi)]  # (A_i, L, V)
        at += len(zi)
        losses.append(run.learn(run.problem.target_logits(mine, sub), sub, alone=False))
    return losses


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
                             text_of_seq: torch.Tensor, alone: bool = True) -> None:
    """Rows robust in this batch whose sequence was not solved before are run again (no grad) in the
    batch their text's decode runs: that text's chunks in order (`codec.reference_decode`); one not
    robust there keeps training, its best state marked with the robust accuracy it has there. The
    batch's shape can move a lead by more than the margin (in bfloat16 especially:
    bench/results/speed.md). A row's result depends on the other rows' shape, not their values, so
    any row of each other chunk stands in for it; chunks of the text that another optimisation
    batch holds are left out (their decode shape cannot be built here).
    One-row cohorts only (cohort = row), so a row's best is its state now."""
    s = len(newly)
    cand = rows[(robust >= recipe.stop_accuracy) & newly[rows % s]]
    for r in cand.tolist():
        mates = torch.nonzero(text_of_seq == text_of_seq[r % s])[:, 0]  # (K,) the text's chunks here, in order
        own = mates == r % s
        shape = torch.where(own, r, mates)  # row r for its own chunk
        if alone and torch.equal(shape, rows):
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
