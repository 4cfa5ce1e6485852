"""The paper's problem: [e, m, ...] through inputs_embeds, one forward pass predicts the whole text.

e and m are rows of two tables, so sharing one of them inside a group of texts (Table 2) is
an index that several rows point at, and a frozen m is a one-row table that does not train.
With `rank`, the tables hold coefficients in a fixed basis; with a storage below float32, the
forward pass sees each row's stored value (the straight-through phase of `optimize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import storage as st
from .layouts import BatchLayout
from .models import LanguageModel
from .problem import init_vectors
from .recipe import Arrangement, EncodeConfig, Recipe, ShareMode
from .starts import Start

M_SEED_OFFSET = 10_000  # m's init is drawn from seed + this, e's from seed


@dataclass
class OneStepProblem:
    """Rows are ordered restart-major (problem.py)."""

    lm: LanguageModel
    layout: BatchLayout
    e_table: torch.Tensor  # (n_e, d)
    m_table: torch.Tensor  # (n_m, d)
    e_of_row: torch.Tensor  # (R,)
    m_of_row: torch.Tensor  # (R,)
    cohort_of_row: torch.Tensor  # (R,)
    params: list[torch.Tensor] = field(default_factory=list)
    lr_scales: list[float] = field(default_factory=list)  # per param, times the recipe's lr
    basis: torch.Tensor | None = None  # (r, d): the tables hold r coefficients per vector (low rank)
    storage: str = "float32"  # the forward pass sees the stored value of each row (straight-through)
    m_storage: str = "float32"  # the same for m, unless m is frozen (given, used as is: model_m stores it once)
    recipe: Recipe = field(default_factory=Recipe)  # how fresh rows start (restarts)

    def vector(self, rows: torch.Tensor, storage: str) -> torch.Tensor:
        """Table rows (A, w) -> the input vectors (A, d) the model sees."""
        x = st.straight_through(rows, storage)
        return x @ self.basis if self.basis is not None else x

    def inputs(self, rows: torch.Tensor) -> tuple[torch.Tensor, BatchLayout]:
        """(A,) rows -> (A, L, d) input embeddings in the model's dtype, and their layout."""
        rows = rows.to(self.lm.device)
        sub = self.layout.subset(rows)
        e = self.vector(self.e_table[self.e_of_row[rows]], self.storage)  # (A, d)
        m = self.vector(self.m_table[self.m_of_row[rows]], self.m_storage)  # (A, d)
        return sub.inputs(e, m).to(self.lm.dtype), sub  # (A, L, d)

    def target_logits(self, logits: torch.Tensor, sub: BatchLayout) -> torch.Tensor:
        """(A, L', V) logits of `inputs` (L' >= L: right padding is harmless under the causal mask)
        -> (A, Nmax, V), the positions that predict each row's tokens."""
        return sub.target_logits(logits)

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, BatchLayout]:
        z, sub = self.inputs(rows)  # (A, L, d)
        return self.target_logits(self.lm.model(inputs_embeds=z).logits, sub), sub  # (A, Nmax, V)

    def vectors(self, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        rows = rows.to(self.lm.device)
        e = self.e_table[self.e_of_row[rows]].detach().float().cpu()
        m = self.m_table[self.m_of_row[rows]].detach().float().cpu()
        return [{"e": e[i].clone(), "m": m[i].clone()} for i in range(len(rows))]

    def restart_values(self, seeds: list[int]) -> list[torch.Tensor]:
        """Row inits as `one_step_problem` draws them, from other seeds."""
        r = self.recipe
        w = self.e_table.shape[1]  # d, or the rank of low-rank coefficients
        e = torch.cat([init_vectors(self.lm, r, 1, seed, r.init_e, w) for seed in seeds])
        m = torch.cat([init_vectors(self.lm, r, 1, M_SEED_OFFSET + seed, None, w) for seed in seeds])
        return [e, m][: len(self.params)]


def one_step_problem(
    lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig, frozen_m: torch.Tensor | None,
    storage: str = "float32", start: Start | None = None,
) -> OneStepProblem:
    """`frozen_m`: the (d,) m of share=frozen_m (optimize checks it first).
    `storage`: what the forward pass rounds each row to (the straight-through phase).
    `start`: the model's warm start (starts.py); the first restart's rows begin there."""
    recipe, share = cfg.recipe, cfg.share
    width = cfg.rank or lm.hidden_size
    s, k = len(seqs), recipe.seeds
    g = cfg.group_size or s
    n_groups = math.ceil(s / g)
    rows = torch.arange(k * s)
    restart_of_row, seq_of_row = rows // s, rows % s
    group_of_row = restart_of_row * n_groups + seq_of_row // g  # a group's shared vector is per restart
    # e's position alone predicts t1 (E_MN1): it may need another scale than m, hence init_e.
    e_rows = torch.cat([init_vectors(lm, recipe, s, recipe.seed + i, recipe.init_e, width) for i in range(k)])
    m_rows = torch.cat([init_vectors(lm, recipe, s, M_SEED_OFFSET + recipe.seed + i, None, width)
                        for i in range(k)])
    if start is not None:
        e_rows[:s], m_rows[:s] = start.e.to(e_rows), start.m.to(m_rows)
    if share is ShareMode.SHARED_E:
        e_table, e_of_row = _group_table(e_rows, group_of_row), group_of_row
    else:
        e_table, e_of_row = e_rows, rows
    if share is ShareMode.SHARED_M:
        m_table, m_of_row = _group_table(m_rows, group_of_row), group_of_row
    elif share is ShareMode.FROZEN_M:
        m_table, m_of_row = frozen_m.detach().float().reshape(1, -1).to(lm.device), torch.zeros_like(rows)
    else:
        m_table, m_of_row = m_rows, rows
    cohort_of_row = group_of_row if share.joint else rows
    e_table.requires_grad_(True)
    params, lr_scales = [e_table], [recipe.lr_e_scale]
    if share is not ShareMode.FROZEN_M and cfg.arrangement is not Arrangement.ONE:
        params.append(m_table.requires_grad_(True))
        lr_scales.append(1.0)
    sink = lm.sink_embedding() if recipe.sink else None
    layout = BatchLayout(cfg.arrangement, [len(seqs[i]) for i in seq_of_row.tolist()], lm.device, sink)
    dev = lm.device
    basis = st.basis(st.BASIS_SEED, cfg.rank, lm.hidden_size).to(dev) if cfg.rank else None
    m_storage = "float32" if share is ShareMode.FROZEN_M else storage
    return OneStepProblem(lm, layout, e_table, m_table, e_of_row.to(dev), m_of_row.to(dev),
                          cohort_of_row, params, lr_scales, basis, storage, m_storage, recipe)


def _group_table(row_vectors: torch.Tensor, group_of_row: torch.Tensor) -> torch.Tensor:
    """One vector per group: the init of the group's first row."""
    n = int(group_of_row.max()) + 1
    first = torch.stack([torch.nonzero(group_of_row == u)[0, 0] for u in range(n)])
    return row_vectors[first.to(row_vectors.device)].clone()
