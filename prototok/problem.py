"""What every optimisation problem shares, so the optimiser loop (`optimize.py`) can run any of them.

A problem holds trainable vector tables and turns a subset of batch rows into target logits.
Rows are ordered restart-major: row r trains sequence r % S under restart r // S, so a row's
starting vectors depend on its seed alone, never on how many texts share the batch.
The problems themselves live one per module: `one_step.py` (the paper's [e, m, ...]) and
`mem.py` (Kuratov's [mem] baseline).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from .layouts import BatchLayout, MemLayout
from .models import LanguageModel
from .recipe import Init, Recipe


class Problem(Protocol):
    """A way of turning trainable tables into LM inputs for a subset of rows."""

    params: list[torch.Tensor]  # the trainable tables; first dimension = table rows
    lr_scales: list[float]  # per param, times the recipe's lr
    # (R,) the cohort of each batch row: rows that share a trained vector (a sharing group of one
    # restart) are judged together, and their best state is kept together; otherwise a row alone.
    cohort_of_row: torch.Tensor

    def inputs(self, rows: torch.Tensor) -> tuple[torch.Tensor, BatchLayout | MemLayout]:
        """(A,) rows -> (A, L, d) input embeddings (model dtype), and the layout with their mask."""
        ...

    def target_logits(self, logits: torch.Tensor, sub: BatchLayout | MemLayout) -> torch.Tensor:
        """(A, L', V) logits of `inputs`, right-padded to any L' >= L -> (A, Nmax, V) predicting each row's tokens."""
        ...

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, BatchLayout | MemLayout]:
        """`inputs` through the model, then `target_logits`: (A,) rows -> (A, Nmax, V), and the layout."""
        ...

    def vectors(self, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """What a Solution holds for each row (float32, CPU)."""
        ...

    def restart_values(self, seeds: list[int]) -> list[torch.Tensor]:
        """Fresh values of every param table's row for each seed (one tensor per param, len(seeds) x ...),
        drawn as the problem draws its first rows, for rows that start over (Recipe.restart_every)."""
        ...


def init_vectors(lm: LanguageModel, recipe: Recipe, n: int, seed: int, init: Init | None = None,
                 width: int | None = None) -> torch.Tensor:
    """(n, width or d) fresh vectors, reproducible from the seed alone (independent of batch layout).

    Low-rank coefficients take the same std: the basis (storage.basis) maps coefficients of a
    scale to vectors of that scale."""
    init = init or recipe.init
    std = recipe.init_scale * (lm.embedding_std if init is Init.EMBEDDING else 1.0)
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, width or lm.hidden_size, generator=gen) * std).to(lm.device)


def first_seeds(n_rows: int, n_seqs: int, recipe: Recipe) -> torch.Tensor:
    """(R,) the seed of each row's first attempt: restart k of every text uses recipe.seed + k."""
    return torch.arange(n_rows) // n_seqs + recipe.seed


def pad_right(seqs: list[list[int]], width: int | None = None) -> torch.Tensor:
    """(S, width or longest) token ids, zero after each sequence's end (the mask hides the zeros)."""
    out = torch.zeros((len(seqs), width or max(len(q) for q in seqs)), dtype=torch.long)
    for i, q in enumerate(seqs):
        out[i, : len(q)] = torch.tensor(q)
    return out


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A, N) -> (A,) mean over the real tokens of each row."""
    return (values * mask).sum(1) / mask.sum(1)


def token_loss(logits: torch.Tensor, tgt: torch.Tensor, mask: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """(A, N, V) float logits -> (A,) mean cross-entropy over real tokens, with the right token's
    logit lowered by `margin` nats first (Recipe.loss_margin)."""
    if margin:
        logits = logits.scatter_add(-1, tgt[..., None], torch.full_like(logits[..., :1], -margin))
    ce = F.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")  # (A, N)
    return masked_mean(ce, mask)
