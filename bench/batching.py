"""Encode throughput: B texts optimised in one batch vs. the same texts one at a time.

Each text gets its own e and m and its restarts; a batch of B texts is B x seeds rows of one
optimisation, and a text's rows leave the forward pass once it is exact, so the batch shrinks
until its slowest text is done (the price of batching is waiting for it). Throughput is texts
per second until every text of the batch reconstructs losslessly from its proto-tokens
(or the step budget ends: `lossless` says how many made it).
Run: python -m bench.batching [--sizes 1 8 32] [--sequential 8] [--max-steps N]
"""

from __future__ import annotations

import argparse
import time

from prototok import EncodeConfig, encode_texts, load_model
from prototok.results.tables import records_table

from .common import add_encode_options, encode_config, machine, write
from .sentences import texts_of_about


def encode(lm, texts: list[str], cfg: EncodeConfig) -> tuple[float, int]:
    t0 = time.perf_counter()
    encs = encode_texts(lm, texts, cfg)
    return time.perf_counter() - t0, sum(e.c_tokens == e.n_tokens for e in encs)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_encode_options(ap)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--sequential", type=int, default=8, help="texts encoded one at a time, for comparison")
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    lm = load_model(args.model)
    cfg = encode_config(args)
    texts = texts_of_about(lm, max(args.sizes + [args.sequential]), args.tokens)
    rows = []
    if args.sequential:
        runs = [encode(lm, [t], cfg) for t in texts[: args.sequential]]
        secs = sum(s for s, _ in runs)
        rows.append({"mode": "one at a time", "texts": args.sequential, "lossless": sum(n for _, n in runs),
                     "seconds": secs, "texts_per_s": args.sequential / secs})
        print(rows[-1], flush=True)
    for b in args.sizes:
        secs, ok = encode(lm, texts[:b], cfg)
        rows.append({"mode": f"batch of {b}", "texts": b, "lossless": ok, "seconds": secs, "texts_per_s": b / secs})
        print(rows[-1], flush=True)
    md = records_table(rows, ["mode", "texts", "lossless", "seconds", "texts_per_s"])
    md += f"\n\nModel {lm.name}, recipe `{args.recipe}` ({cfg.recipe.to_dict()}), texts of about {args.tokens} tokens."
    write("batching", {"machine": machine(), "model": lm.name, "recipe": cfg.recipe.to_dict(), "rows": rows}, md)


if __name__ == "__main__":
    main()
