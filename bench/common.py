"""What only the benchmarks share: their machine record, their results files and their options.

Numbers go to bench/results/<name>.json (raw, appended per run) and <name>.md (the
latest run as a table). Timings on a shared machine are only as good as its load, so
the load average is recorded with every run. Tables, timing and the CPU/GPU names come
from the results layer the experiments use too (`prototok.results`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from prototok import RECIPES, EncodeConfig
from prototok.results.provenance import cpu_name, gpu_name, utc_now

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """The machine and its load now, as every bench/results/<name>.json record stores it."""
    from prototok.models import cpu_bf16_flags

    return {
        "date": utc_now(), "host": platform.node(), "platform": platform.platform(), "cpu": cpu_name(),
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu_name(),
        "torch": torch.__version__, "load_avg_1m": round(os.getloadavg()[0], 2), "cpu_bf16_flags": cpu_bf16_flags(),
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


def add_encode_options(ap: argparse.ArgumentParser) -> None:
    """--model, --recipe and --max-steps, as the benchmarks that encode take them."""
    ap.add_argument("--model", default=None)
    ap.add_argument("--recipe", default="tuned")
    ap.add_argument("--max-steps", type=int, default=None)


def encode_config(args: argparse.Namespace, **recipe_changes) -> EncodeConfig:
    """The --recipe preset with --max-steps (and any other recipe field given) applied."""
    return EncodeConfig(recipe=RECIPES[args.recipe].with_(max_steps=args.max_steps, **recipe_changes))
