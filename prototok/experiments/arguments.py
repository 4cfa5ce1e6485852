"""The command line of one experiment run: run.json stores it, and a resumed run must match it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Args:
    """`prototok experiment NAME` as a value: what run.json stores and a resumed run must match."""

    name: str
    model: str | None
    dataset: str
    texts: int
    lengths: list[int] | None
    seeds: int | None
    max_steps: int | None
    recipe: str = "tuned"
    data_seed: int = 0
    device: str | None = None
    capacity: str | None = None  # throughput: a capacity run's folder, to time each text at its own lengths

    def command(self, out: Path) -> str:
        """The shell command that makes (or resumes) this run in `out`."""
        parts = ["prototok", "experiment", self.name]
        for flag in ("model", "dataset", "texts", "seeds", "max_steps", "recipe", "data_seed", "device",
                     "capacity"):
            value = getattr(self, flag)
            if value is not None:
                parts += [f"--{flag.replace('_', '-')}", str(value)]
        if self.lengths:
            parts += ["--lengths", ",".join(map(str, self.lengths))]
        return shlex.join(parts + ["--out", str(out)])
