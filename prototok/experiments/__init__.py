"""`prototok experiment NAME`: every table and figure of the paper as one command.

Each experiment is a function `(Args, out_dir) -> summary.md path` built on the core engine
(`optimize`, `decode_ids`, `generate`); `run.Run` holds what they share (the run folder, model,
texts and resumable tasks), in small modules:

- `arguments`: `Args`, the command line as a value;
- `run`: `Run`, one experiment run (`Run.open` loads the model and starts the folder);
- `prefixes`: the length grid and the prefixes of the texts at a length;
- `solving`: the core's `optimize` with the run's recipe, and a row per solution;
- `bar`: the progress bar in result rows; `vectors`: the .pt files of trained tensors;
- `run_record`: run.json; `summary`: summary.md's header;
- `datasets`: the texts; `paper`: the paper's own numbers; `command`: `prototok experiment`.

What benchmarks share with them (machine, results.csv, tables, timing, figures) is
`prototok.results`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXPERIMENTS", "Args"]


def __getattr__(name: str) -> Any:
    """Import the experiments (and matplotlib, scikit-learn...) on first use, so the CLI can offer
    `prototok experiment` without loading them, and a core install without the extra still starts."""
    if name == "EXPERIMENTS":
        from .registry import EXPERIMENTS

        return EXPERIMENTS
    if name == "Args":
        from .arguments import Args

        return Args
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
