"""What every benchmark shares: the machine it ran on, and writing results next to it.

Numbers go to bench/results/<name>.json (raw, appended per run) and <name>.md (the
latest run as a table). Timings on a shared machine are only as good as its load, so
the load average is recorded with every run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from prototok.models import cpu_bf16_flags

    flags = cpu_bf16_flags()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
        "load_avg_1m": round(os.getloadavg()[0], 2), "cpu_bf16_flags": flags,
    }


def write(name: str, record: dict, markdown: str, append: bool = True) -> None:
    """Append the raw record to <name>.json (or, append=False, replace this run's last
    record: a run that reports as it goes) and replace <name>.md with this run."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"{name}.json"
    runs = json.loads(raw.read_text()) if raw.exists() else []
    if not append and runs and runs[-1].get("started") == record.get("started"):
        runs.pop()
    runs.append(record)
    raw.write_text(json.dumps(runs, indent=1))
    m = record["machine"]
    head = (f"_Measured {m['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']}, "
            f"{m['torch_threads']} threads, CPU bf16 support: {', '.join(m.get('cpu_bf16_flags') or []) or 'none'}, "
            f"GPU: {m['gpu'] or 'none'}; 1-min load average when written {m['load_avg_1m']})._\n\n")
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n{head}{markdown}\n")


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of fn(), after warm-up, synchronising the GPU if there is one."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def _fmt(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
