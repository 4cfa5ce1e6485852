"""Steps and row-steps of recipe variants on six held-out ~18-token prose texts (not the
benchmark sentences), one text at a time. Row-steps (restarts x steps actually run) are what a
CPU pays for; steps alone are what a GPU with idle width pays for. Counts, not seconds, so the
numbers do not depend on the machine's load.

Run: python -m bench.levers bfloat16 '{"name": {"seeds": 1, "lr": 0.08, "max_steps": 400}, ...}'
     LEVERS_TEXTS=passages python -m bench.levers ...   # 16-token cuts of shipped passages 100-104
Printed lines are collected by hand into bench/results/levers.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import warnings

import torch

from prototok import TUNED, EncodeConfig, load_model
from prototok.codec import tokenize_checked
from prototok.one_step import OneStepProblem

TEXTS = ["It is a truth universally acknowledged, that a single man in possession of a good fortune",
         "Call me Ishmael. Some years ago, never mind how long precisely, having little money",
         "The morning was bright and cold, and the fields lay silent under a thin coat of frost.",
         "Her brother wrote that the ship would sail on Tuesday, weather permitting, from Dover.",
         "Nobody in the house had slept, for the storm had torn half the roof from the barn.",
         "He counted the coins again, slowly, as if they might have multiplied in the night."]


def held_out(lm) -> list[list[int]]:
    """The six prose texts above (18 tokens), or tokens 40-56 of shipped passages 100-104
    (LEVERS_TEXTS=passages): neither is a benchmark sentence, so the recipe is not tuned on them."""
    if os.environ.get("LEVERS_TEXTS") == "passages":
        from prototok.experiments.datasets import passages

        return [tokenize_checked(lm, p["text"])[40:56] for p in passages()[100:105]]
    return [tokenize_checked(lm, t)[:18] for t in TEXTS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dtype", help="the model's dtype: float32 or bfloat16")
    ap.add_argument("variants", help='JSON: {"variant name": {recipe field: value, ...}, ...}')
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dtype, variants = args.dtype, json.loads(args.variants)
    opt = importlib.import_module("prototok.optimize")
    opt = sys.modules["prototok.optimize"]  # the module (prototok.optimize the name is the function)
    lm = load_model(dtype=dtype)
    seqs = held_out(lm)
    count = [0]
    forward = OneStepProblem.forward

    def counting(self, rows):
        count[0] += len(rows)
        return forward(self, rows)

    OneStepProblem.forward = counting
    for name, kw in variants.items():
        steps, row_steps, accs = [], [], []
        start = time.perf_counter()
        for q in seqs:
            count[0] = 0
            [s] = opt.optimize(lm, [q], EncodeConfig(recipe=TUNED.with_(**kw)))
            steps.append(s.steps)
            row_steps.append(count[0])
            accs.append(round(s.accuracy, 2))
        print(f"{dtype} {name:24s} steps {steps} rowsteps {row_steps} sum_rs {sum(row_steps)} acc {accs} "
              f"{time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
