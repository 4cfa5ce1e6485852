"""Longest lossless length: prefixes of a prose passage at the paper's length grid.

For each text, prefixes of 16, 22, 32, 45, 64, 90, 128, ... tokens are optimised in turn
(the recipe's restarts side by side) until one is not rebuilt exactly by its proto-tokens
alone; the text's capacity is the last exact length. The paper reports 128 tokens for
Pythia-160M on PG-19 (at >= 0.99 accuracy, 5000 steps, on GPUs); this is the same question
for the model under test, at a budget the machine can afford.
Run: python -m bench.longest [--texts 2] [--lengths 16 22 32 45 64 90 128] [--max-steps 1000]
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from prototok import RECIPES, EncodeConfig, load_model
from prototok.experiments import datasets
from prototok.optimize import optimize

from .common import machine, table, write

GRID = [16, 22, 32, 45, 64, 90, 128, 181, 256]


def capacity(lm, ids: list[int], lengths: list[int], cfg: EncodeConfig, text: int, rows: list[dict]) -> Iterator[None]:
    """Append one row per length tried, stopping after the first that is not exact."""
    for n in (n for n in lengths if n <= len(ids)):
        [sol] = optimize(lm, [ids[:n]], cfg)
        rows.append({"text": text, "length": n, "accuracy": round(sol.accuracy, 4), "lossless": sol.c_tokens == n,
                     "steps": sol.steps, "seconds": round(sol.seconds, 1)})
        yield
        if not rows[-1]["lossless"]:
            return


def report(lm, texts, rows: list[dict], args, cfg: EncodeConfig, done: bool) -> None:
    """Write what is measured so far: a long CPU run keeps its finished lengths if it is stopped."""
    best = [max((r["length"] for r in rows if r["text"] == i and r["lossless"]), default=0)
            for i in range(len(texts))]
    md = table(rows, ["text", "length", "accuracy", "lossless", "steps", "seconds"])
    md += (f"\n\nLongest lossless prefix per text: {best} tokens{'' if done else ' so far (run not finished)'} "
           f"(lengths tried: {args.lengths}; a text stops at its first failure). Model {lm.name}, prose passages "
           f"{[t.source for t in texts]}, recipe `{args.recipe}` ({cfg.recipe.to_dict()}).")
    write("longest", {"started": args.started, "machine": machine(), "model": lm.name, "recipe": cfg.recipe.to_dict(), "rows": rows,
                      "longest": best, "sources": [t.source for t in texts], "finished": done}, md, append=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--recipe", default="tuned")
    ap.add_argument("--texts", type=int, default=2)
    ap.add_argument("--lengths", type=int, nargs="+", default=GRID)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args()
    args.started = machine()["date"]  # one record per run in longest.json, rewritten as rows come
    lm = load_model(args.model)
    cfg = EncodeConfig(recipe=RECIPES[args.recipe].with_(max_steps=args.max_steps, seeds=args.seeds))
    texts = datasets.load(lm, "prose", args.texts, max(args.lengths))
    rows: list[dict] = []
    for i, t in enumerate(texts):
        for _ in capacity(lm, t.ids, args.lengths, cfg, i, rows):
            print(rows[-1], flush=True)
            report(lm, texts, rows, args, cfg, done=False)
    report(lm, texts, rows, args, cfg, done=True)

if __name__ == "__main__":
    main()
