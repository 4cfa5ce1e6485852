"""The autoregressive baseline of Kuratov et al. 2025: k trainable [mem] vectors.

Training input is [mem_1..mem_k, emb(t_1)..emb(t_(N-1))] with next-token loss; output
position k-1+i predicts t_(i+1). Decoding is greedy generation from [mem] alone, one
forward pass per token (with a KV cache). It shares the optimisation loop of
`optimize.py`, so a comparison with the one-step method is one flag (Method). With the
recipe's `sink`, the same frozen BOS embedding stands before [mem] as before [e, m, ...].
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .models import LanguageModel
from .optimize import init_vectors
from .recipe import EncodeConfig, Recipe


class MemLayout:
    """Target positions and loss mask of [mem x k, text] rows of different lengths."""

    def __init__(self, k: int, lengths: torch.Tensor):
        n = int(lengths.max())
        ar = torch.arange(n, device=lengths.device)
        self.lengths = lengths  # (A,)
        self.positions = (k - 1 + ar).expand(len(lengths), n)  # (A, Nmax)
        self.mask = ar[None, :] < lengths[:, None]  # (A, Nmax)


@dataclass
class MemProblem:
    lm: LanguageModel
    k: int
    mem_table: torch.Tensor  # (R, k, d)
    text_embeds: torch.Tensor  # (R, Nmax-1, d): embeddings of t_1..t_(N-1), right-padded
    lengths: torch.Tensor  # (R,)
    unit_of_row: torch.Tensor  # (R,)
    params: list[torch.Tensor] = field(default_factory=list)
    sink: torch.Tensor | None = None  # (d,) frozen, before [mem]
    recipe: Recipe | None = None  # how fresh rows start (restarts)

    def forward(self, rows: torch.Tensor) -> tuple[torch.Tensor, MemLayout]:
        rows = rows.to(self.lm.device)
        sub = MemLayout(self.k, self.lengths[rows])
        n = int(sub.lengths.max())
        prefix = with_sink(self.mem_table[rows], self.sink)  # (A, s+k, d)
        z = torch.cat([prefix, self.text_embeds[rows, : n - 1]], 1)  # (A, s+k+n-1, d)
        logits = self.lm.model(inputs_embeds=z.to(self.lm.dtype)).logits  # (A, s+k+n-1, V)
        return logits[:, prefix.shape[1] - 1 :], sub  # (A, Nmax, V)

    def vectors(self, rows: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        mem = self.mem_table[rows.to(self.lm.device)].detach().float().cpu()
        return [{"mem": mem[i].clone()} for i in range(len(rows))]

    def restart_values(self, seeds: list[int]) -> list[torch.Tensor]:
        r = self.recipe or Recipe()
        return [torch.stack([init_vectors(self.lm, r, self.k, seed) for seed in seeds])]  # (len(seeds), k, d)


def mem_problem(lm: LanguageModel, seqs: list[list[int]], cfg: EncodeConfig) -> MemProblem:
    s, k, seeds = len(seqs), cfg.mem_tokens, cfg.recipe.seeds
    width = max(len(q) for q in seqs)
    ids = torch.zeros((s, width), dtype=torch.long)
    for i, q in enumerate(seqs):
        ids[i, : len(q)] = torch.tensor(q)
    with torch.no_grad():
        text = lm.embed(ids[:, :-1]).float()  # (S, Nmax-1, d)
    inits = [init_vectors(lm, cfg.recipe, s * k, cfg.recipe.seed + i).view(s, k, -1) for i in range(seeds)]
    mem = torch.cat(inits).requires_grad_(True)  # (seeds*S, k, d), restart-major
    rows = torch.arange(seeds * s)
    lengths = torch.tensor([len(seqs[r % s]) for r in rows.tolist()], device=lm.device)
    sink = lm.sink_embedding() if cfg.recipe.sink else None
    return MemProblem(lm, k, mem, text.repeat(seeds, 1, 1), lengths, rows, [mem], sink, cfg.recipe)


def with_sink(mem: torch.Tensor, sink: torch.Tensor | None) -> torch.Tensor:
    """(B, k, d) -> (B, 1+k, d) with the frozen sink first, or unchanged without one."""
    if sink is None:
        return mem
    return torch.cat([sink.to(mem.device, mem.dtype).expand(len(mem), 1, -1), mem], 1)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.inference_mode()
def generate(lm: LanguageModel, mem: torch.Tensor, length: int, forced: list[dict[int, int]] | None = None,
             sink: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding from [mem]: (B, k, d) -> raw argmax ids and emitted ids, both (B, length).

    `forced[b]` maps positions to the token emitted there instead of the argmax (stored
    corrections): with the prefix kept right, every later argmax is the teacher-forced one.
    """
    forced = forced or [{} for _ in range(mem.shape[0])]
    mem = with_sink(mem.to(lm.device, torch.float32), lm.sink_embedding() if sink else None)
    cache = {_cache_kwarg(lm.model): DynamicCache()}  # filled in place by every forward
    out = lm.model(inputs_embeds=mem.to(lm.dtype), use_cache=True, **cache)
    raw, emitted = [], []
    for i in range(length):
        if i:
            out = lm.model(inputs_embeds=lm.embed(emitted[-1][:, None]), use_cache=True, **cache)
        guess = out.logits[:, -1].argmax(-1)  # (B,)
        fix = torch.tensor([f.get(i, -1) for f in forced], device=guess.device)
        raw.append(guess)
        emitted.append(torch.where(fix >= 0, fix, guess))
    return torch.stack(raw, 1), torch.stack(emitted, 1)  # (B, length) each
