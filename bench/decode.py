"""One-pass decode vs greedy autoregressive decode from [mem], same lengths.

Timing needs no trained vectors: a forward pass costs the same whatever e, m or [mem]
hold, so random vectors at the model's embedding scale are used.
Run: python -m bench.decode [--model NAME] [--lengths 8 16 32 64 128]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from prototok import Arrangement, load_model
from prototok.decoding import decode_ids, generate
from prototok.results.tables import records_table
from prototok.results.timing import median_seconds

from .common import machine, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    lm = load_model(args.model)
    d, std = lm.hidden_size, lm.embedding_std
    rows = []
    for n in args.lengths:
        e, m = torch.randn(1, d) * std, torch.randn(1, d) * std
        mem = torch.randn(1, 1, d) * std
        one = median_seconds(lambda e=e, m=m, n=n: decode_ids(lm, Arrangement.E_MN1, e, m, [n]), args.repeats)
        ar = median_seconds(lambda mem=mem, n=n: generate(lm, mem, n), args.repeats)
        rows.append({"length": n, "one_pass_ms": one * 1e3, "autoregressive_ms": ar * 1e3, "speedup": ar / one})
        print(rows[-1], flush=True)
    mean = statistics.mean(r["speedup"] for r in rows)
    md = records_table(rows, ["length", "one_pass_ms", "autoregressive_ms", "speedup"])
    md += f"\n\nMean speedup of one-pass over autoregressive decoding: **{mean:.1f}x** (model {lm.name}, batch 1)."
    write("decode", {"machine": machine(), "model": lm.name, "rows": rows, "mean_speedup": mean}, md)


if __name__ == "__main__":
    main()
