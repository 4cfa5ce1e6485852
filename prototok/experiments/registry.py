"""The experiments by command name, each a function `(Args, out_dir) -> summary.md path`."""

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
