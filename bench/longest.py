"""Longest lossless length: prefixes of a prose passage at the paper's length grid.

For each text, prefixes of 16, 22, 32, 45, 64, 90, 128, ... tokens are optimised in turn
(the recipe's restarts side by side) until one is not rebuilt exactly by its proto-tokens
alone; the text's capacity is the last exact length. This is the capacity experiment's
length walk (`prototok.experiments.capacity.length_walk`), one text at a time and with
"lossless" (every token right) for its >= 0.99 accuracy. The paper reports 128 tokens for
Pythia-160M on PG-19 (at >= 0.99 accuracy, 5000 steps, on GPUs); this is the same question
for the model under test, at a budget the machine can afford.
Run: python -m bench.longest [--texts 2] [--lengths 16 22 32 45 64 90 128] [--max-steps 1000]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from prototok import EncodeConfig, load_model
from prototok.experiments import datasets
from prototok.experiments.capacity import length_walk
from prototok.experiments.solving import Items
from prototok.optimize import optimize
from prototok.results.tables import records_table

from .common import add_encode_options, encode_config, machine, write

GRID = [16, 22, 32, 45, 64, 90, 128, 181, 256]


def solver(lm, cfg: EncodeConfig) -> Callable[[int, Items], list[dict]]:
    """The walk's `solve`: each prefix optimised on its own, one row per text."""
    def solve(n: int, items: Items) -> list[dict]:
        rows = []
        for text, ids in items:
            [sol] = optimize(lm, [ids], cfg)
            rows.append({"text": text, "length": n, "accuracy": round(sol.accuracy, 4),
                         "lossless": sol.c_tokens == n, "steps": sol.steps, "seconds": round(sol.seconds, 1)})
        return rows

    return solve


def report(lm, texts, rows: list[dict], args, cfg: EncodeConfig, done: bool) -> None:
    """Write what is measured so far: a long CPU run keeps its finished lengths if it is stopped."""
    best = [max((r["length"] for r in rows if r["text"] == i and r["lossless"]), default=0)
            for i in range(len(texts))]
    md = records_table(rows, ["text", "length", "accuracy", "lossless", "steps", "seconds"])
    md += (f"\n\nLongest lossless prefix per text: {best} tokens{'' if done else ' so far (run not finished)'} "
           f"(lengths tried: {args.lengths}; a text stops at its first failure). Model {lm.name}, prose passages "
           f"{[t.source for t in texts]}, recipe `{args.recipe}` ({cfg.recipe.to_dict()}).")
    write("longest", {"started": args.started, "machine": machine(), "model": lm.name, "recipe": cfg.recipe.to_dict(),
                      "rows": rows, "longest": best, "sources": [t.source for t in texts], "finished": done},
          md, append=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_encode_options(ap)
    ap.add_argument("--texts", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=GRID)
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args()
    args.started = machine()["date"]  # one record per run in longest.json, rewritten as rows come
    lm = load_model(args.model)
    cfg = encode_config(args, seeds=args.seeds)
    texts = datasets.load(lm, "prose", args.texts, max(args.lengths))
    ids, solve = [t.ids for t in texts], solver(lm, cfg)
    rows: list[dict] = []
    for i in range(len(texts)):  # one text at a time: its whole walk, then the next text's
        for _, new, _ in length_walk(ids, args.lengths, solve, lambda r: r["lossless"], texts=[i]):
            for row in new:
                rows.append(row)
                print(row, flush=True)
                report(lm, texts, rows, args, cfg, done=False)
    report(lm, texts, rows, args, cfg, done=True)


if __name__ == "__main__":
    main()
