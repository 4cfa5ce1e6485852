"""summary.md: a header that says what ran where and when, then the experiment's own sections."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from ..models import LanguageModel
from ..recipe import Recipe
from ..results.provenance import machine
from .arguments import Args


def header(title: str, args: Args, out: Path, lm: LanguageModel, recipe: Recipe, n_texts: int) -> list[str]:
    """The title, then model, data and recipe; the machine and date; the command that makes the run."""
    m = machine(lm.device)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    return [f"# {title}", "",
            (f"- model: `{lm.name}`; dataset: `{args.dataset}` ({n_texts} texts, "
             f"data seed {args.data_seed}); recipe: `{args.recipe}` "
             f"(max_steps {recipe.max_steps}, lr {recipe.lr}, sink {recipe.sink}); "
             f"--seeds {args.seeds or 'the experiment default'}"),
            (f"- machine: {m['device_name']} ({m['platform']}, {m['cpu_count']} CPU cores, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}); date: {date}"),
            f"- command: `{args.command(out)}`", ""]


def write(path: Path, head: list[str], body: list[str]) -> Path:
    """Write summary.md (no trailing blank lines) and return its path."""
    path.write_text("\n".join(head + body).rstrip() + "\n")
    return path
