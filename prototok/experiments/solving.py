"""How the experiments optimise: always through the core's `optimize`, the code the service runs.

The experiments only choose inputs (texts, arrangement, sharing, seeds) and turn solutions
into result rows; nothing here changes how a proto-token is trained.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..metrics import h_lm
from ..models import LanguageModel
from ..optimize import Progress, Solution, optimize
from ..recipe import EncodeConfig, Recipe

Items = list[tuple[int, list[int]]]  # (text index, token ids) of the sequences one call optimises


def solve(lm: LanguageModel, recipe: Recipe, seqs: list[list[int]], frozen_m: torch.Tensor | None = None,
          progress: Callable[[Progress], None] | None = None, **cfg) -> list[Solution]:
    """optimize() with the run's recipe; `cfg` holds EncodeConfig fields and recipe `seeds`/`seed`."""
    recipe = recipe.with_(seeds=cfg.pop("seeds", None), seed=cfg.pop("seed", None))
    config = EncodeConfig(recipe=recipe, **cfg)
    return optimize(lm, seqs, config, frozen_m, progress=progress)


def solution_rows(lm: LanguageModel, items: Items, sols: list[Solution], setting: str, **extra) -> list[dict]:
    """One row per text; `seconds` is the optimize call's wall time shared out over its texts."""
    seconds = sols[0].seconds / len(sols) if sols else 0.0
    return [dict(kind="solution", setting=setting, text=i, seed=s.seed, length=len(q), accuracy=s.accuracy,
                 c_tokens=s.c_tokens, h_lm=h_lm(lm, q), steps=s.steps, seconds=seconds, **extra)
            for (i, q), s in zip(items, sols)]


def progress_text(p: Progress) -> str:
    """The status line of an optimize call in progress."""
    return f"step {p.step}/{p.max_steps}, solved {p.done}/{len(p.accuracy)}"
