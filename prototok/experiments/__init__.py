"""`prototok experiment NAME`: every table and figure of the paper as one command.

Each experiment is a function `(Args, out_dir) -> summary.md path` built on the core engine
(`optimize`, `decode_ids`, `generate`); `runner.Run` holds what they share (results.csv with
resume, run.json, the progress bar, summary.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import arrangements, capacity, distances, interpolation, sharing, throughput
from .runner import Args

EXPERIMENTS: dict[str, Callable[[Args, Path], Path]] = {
    "arrangements": arrangements.run,  # Table 1
    "sharing": sharing.run,  # Table 2
    "capacity": capacity.run,  # Table 3, Figure 2
    "throughput": throughput.run,  # Figure 3
    "distances": distances.run,  # Figures 4 and 5
    "interpolation": interpolation.run_line,  # Figure 6 left
    "bezier": interpolation.run_bezier,  # Figure 6 right
}

__all__ = ["EXPERIMENTS", "Args"]
