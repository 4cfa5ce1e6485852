"""Learning a model's warm start (starts.py): one m shared by many texts, and the mean of their e's.

The texts are chunks of the shipped Gutenberg prose (passages 0..n-1, tokens `skip`..`skip+tokens`),
the same kind of text the benchmarks hold out (they use passages from 100 on), so a start made
here never saw a text it is measured on.
"""

from __future__ import annotations

import time

import torch

from .codec import tokenize_checked
from .models import LanguageModel
from .optimize import ProgressFn, optimize
from .recipe import TUNED, EncodeConfig, Recipe, ShareMode


def prose_chunks(lm: LanguageModel, texts: list[str], skip: int = 40, tokens: int = 16) -> list[list[int]]:
    """`tokens` ids from each text after its first `skip` (past titles and chapter headings)."""
    seqs = [tokenize_checked(lm, t)[skip:skip + tokens] for t in texts]
    return [q for q in seqs if len(q) == tokens]


def train_start(lm: LanguageModel, seqs: list[list[int]], steps: int, recipe: Recipe = TUNED,
                progress: ProgressFn | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(e, m, how it was made): every text trains its own e against one shared m for `steps` steps."""
    cfg = EncodeConfig(recipe=recipe.with_(max_steps=steps, start="random", seeds=1),
                       share=ShareMode.SHARED_M, group_size=0)
    t0 = time.perf_counter()
    sols = optimize(lm, seqs, cfg, progress=progress)
    e = torch.stack([s.vectors["e"] for s in sols]).mean(0)
    how = {"texts": len(seqs), "tokens_per_text": len(seqs[0]), "steps": max(s.steps for s in sols),
           "seconds": round(time.perf_counter() - t0, 1), "dtype": str(lm.dtype).removeprefix("torch."),
           "mean_accuracy": round(sum(s.accuracy for s in sols) / len(sols), 4), "recipe": cfg.recipe.to_dict()}
    return e, sols[0].vectors["m"], how
