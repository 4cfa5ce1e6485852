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

from collections.abc import Callable
from pathlib import Path

from . import arrangement_accuracy, capacity, distances, interpolation, sharing, throughput
from .arguments import Args

EXPERIMENTS: dict[str, Callable[[Args, Path], Path]] = {
    "arrangements": arrangement_accuracy.run,  # Table 1
    "sharing": sharing.run,  # Table 2
    "capacity": capacity.run,  # Table 3, Figure 2
    "throughput": throughput.run,  # Figure 3
    "distances": distances.run,  # Figures 4 and 5
    "interpolation": interpolation.run_line,  # Figure 6 left
    "bezier": interpolation.run_bezier,  # Figure 6 right
}

__all__ = ["EXPERIMENTS", "Args"]
