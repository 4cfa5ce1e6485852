"""The autoregressive baseline of Kuratov et al. 2025: k trainable [mem] vectors per text.

Training input is [mem_1..mem_k, emb(t_1)..emb(t_(N-1))] with next-token loss (teacher
forcing, layouts.MemLayout); decoding is greedy generation from [mem] alone
(decoding.generate). It runs in the same optimiser loop as the one-step problem, so a
comparison with the paper's method is one flag (Method). With the recipe's `sink`, the same
frozen BOS embedding stands before [mem] as before [e, m, ...].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layouts import MemLayout, with_sink
from .models import LanguageModel
from .problem import init_vectors, pad_right
from .recipe import EncodeConfig, Recipe


@dataclass
class MemProblem:
    """One (k, d) table row per batch row (restart-major, problem.py); no sharing."""

    lm: LanguageModel
    k: int
    mem_table: torch.Tensor  # (R, k, d)
    text_embeds: torch.Tensor  # (R, Nmax-1, d): embeddings of t_1..t_(N-1), right-padded
    lengths: torch.Tensor  # (R,)
    cohort_of_row: torch.Tensor  # (R,)
    params: list[torch.Tensor] = field(default_factory=list)
    lr_scales: list[float] = field(default_factory=list)  # per param, times the recipe's lr
    sink: torch.Tensor | None = None  # (d,) frozen, before [mem]
    recipe: Recipe = field(default_factory=Recipe)  # how fresh rows start (restarts)

    def inputs(self, rows: torch.Tensor) -> tuple[torch.Tensor, MemLayout]:
        """(A,) rows -> (A, s+k+n-1, d) input embeddings in the model's dtype, and their layout."""
        rows = rows.to(self.lm.device)
        sub = MemLayout(self.k, self.lengths[rows])
        n = int(sub.lengths.max())
        prefix = with_sink(self.mem_table[rows], self.sink)  # (A, s+k, d)
        z = torch.cat([prefix, self.text_embeds[rows, : n - 1]], 1)  # (A, s+k+n-1, d)
        return z.to(self.lm.dtype), sub

    def target_logits(self, logits: torch.Tensor, sub: MemLayout) -> torch.Tensor:
        """(A, L', V) logits of `inputs` (L' >= its length) -> (A, Nmax, V): position s+k-1+i predicts t_(i+1)."""
        first = (0 if self.sink is None else 1) + self.k - 1
        return logits[:, first : first + sub.positions.shape[1]]

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, MemLayout]:
        z, sub = self.inputs(rows)
        return self.target_logits(self.lm.model(inputs_embeds=z).logits, sub), sub  # (A, Nmax, V)

    def vectors(self, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        mem = self.mem_table[rows.to(self.lm.device)].detach().float().cpu()
        return [{"mem": mem[i].clone()} for i in range(len(rows))]

    def restart_values(self, seeds: list[int]) -> list[torch.Tensor]:
        r = self.recipe
        return [torch.stack([init_vectors(self.lm, r, self.k, seed) for seed in seeds])]  # (len(seeds), k, d)


def mem_problem(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig) -> MemProblem:
    s, k, seeds = len(seqs), cfg.mem_tokens, cfg.recipe.seeds
    with torch.no_grad():
        text = lm.embed(pad_right(seqs)[:, :-1]).float()  # (S, Nmax-1, d)
    inits = [init_vectors(lm, cfg.recipe, s * k, cfg.recipe.seed + i).view(s, k, -1) for i in range(seeds)]
    mem = torch.cat(inits).requires_grad_(True)  # (seeds*S, k, d), restart-major
    rows = torch.arange(seeds * s)
    lengths = torch.tensor([len(seqs[r % s]) for r in rows.tolist()], device=lm.device)
    sink = lm.sink_embedding() if cfg.recipe.sink else None
    return MemProblem(lm, k, mem, text.repeat(seeds, 1, 1), lengths, rows, [mem], [1.0], sink, cfg.recipe)
