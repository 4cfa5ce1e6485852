"""Wall time of a call, as a benchmark needs it: warmed up, repeated, the GPU synchronised."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
                   device: torch.device | None = None) -> float:
    """Median wall seconds of `repeats` calls of fn() after `warmup` untimed ones.

    CUDA runs asynchronously, so the GPU is synchronised before and after each timed call: on
    `device` when it is a CUDA device, or, with no device given, whenever a GPU is present.
    """
    cuda = torch.cuda.is_available() if device is None else device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
