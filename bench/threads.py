"""Torch threads against whatever else runs on the cores: milliseconds per encode step.

An encode step is a forward and a backward of the model over one row of 19 positions (the
shape of a sentence). Each cell runs that step in a fresh process with the model in its default
dtype, and reports the median of the steps after two of warm-up, in one of three settings:
alone; beside one busy process (a Python loop, standing in for an API, a decode or another
job); and as one of two such processes started together (two workers on one host). With every
core, OpenMP's worker threads meet at a barrier in each op: when one of them is descheduled,
the others wait for a whole time slice, so a step can cost many times more than on fewer threads.

Run: python -m bench.threads [--model NAME] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from prototok.results.tables import records_table
from prototok.results.timing import median_seconds

from .common import machine, write

BUSY = "while True: pass"
SETTINGS = ("alone", "beside a busy process", "two at once")


def step_ms(model: str | None, threads: int, steps: int) -> float:
    """In this process: the median ms of one forward + backward after two warm-up steps."""
    import torch

    from prototok import load_model
    from prototok.models import quiet_libraries

    quiet_libraries()
    lm = load_model(model)
    torch.set_num_threads(threads)  # after loading: the cell's count, whatever PROTOTOK_THREADS says
    emb = torch.randn(1, 19, lm.hidden_size, dtype=lm.model.dtype, requires_grad=True)

    def step() -> None:
        lm.model(inputs_embeds=emb).logits.float().logsumexp(-1).sum().backward()

    return 1000 * median_seconds(step, repeats=steps, warmup=2, device=lm.device)


def child(args: argparse.Namespace, threads: int, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench.threads", "--child", str(threads), "--steps", str(args.steps)]
    cmd += ["--model", args.model] if args.model else []
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env})


def measure(args: argparse.Namespace, threads: int, policy: str, setting: str) -> list[float]:
    env = {"OMP_WAIT_POLICY": policy} if policy != "default" else {}
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if setting == "beside a busy process" else None
    try:
        procs = [child(args, threads, env) for _ in range(2 if setting == "two at once" else 1)]
        return [round(json.loads(p.communicate()[0])["ms"], 1) for p in procs]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps({"ms": step_ms(args.model, args.child, args.steps)}))
        return
    cores = len(os.sched_getaffinity(0))
    variants = [(1, "default"), (cores, "default"), (cores, "PASSIVE")] if cores > 1 else [(1, "default")]
    rows = []
    for setting in SETTINGS:
        for threads, policy in variants:
            ms = measure(args, threads, policy, setting)
            rows.append({"setting": setting, "threads": threads, "OMP_WAIT_POLICY": policy,
                         "ms_per_step": max(ms), "each_process": ms})
            print(rows[-1], flush=True)
    md = ("Milliseconds per encode step (forward + backward, 1 row x 19 positions, the model's default "
          "dtype), median after warm-up; `two at once`: the slower of the two processes, both given.\n\n")
    md += records_table(rows, ["setting", "threads", "OMP_WAIT_POLICY", "ms_per_step", "each_process"])
    write("threads", {"machine": machine(), "model": args.model, "rows": rows}, md)


if __name__ == "__main__":
    main()
