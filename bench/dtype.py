"""Seconds to lossless in each compute dtype, side by side on this host.

`dtype=auto` picks bfloat16 where the CPU multiplies it natively (AVX512-BF16, AMX) and float32
elsewhere. Whether that choice is the faster one depends on the host: a bfloat16 step is cheaper
only where the hardware makes it so, and a text can need more steps in bfloat16. This benchmark
encodes texts of the frozen evaluation set (bench/data/eval.jsonl) with today's `tuned` recipe
in each dtype, alternating which goes first from text to text, in one process that loads the
model once per dtype, and reports steps and seconds to lossless per dtype.

Run: python -m bench.dtype [--per-kind 3] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import argparse
import statistics

from prototok.results.provenance import utc_now
from prototok.results.tables import records_table

from . import evalset
from .common import machine, write
from .speed import Side

KINDS = ("prose", "random", "mixed")


def work(per_kind: int) -> list[tuple[str, str]]:
    """(kind, text) pairs: the first `per_kind` texts of each kind, kinds interleaved."""
    by_kind = {kind: evalset.texts(kind, per_kind) for kind in KINDS}
    return [(kind, by_kind[kind][i]) for i in range(per_kind) for kind in KINDS if i < len(by_kind[kind])]


def summary(rows: list[dict], dtypes: list[str]) -> list[dict]:
    """Per kind and in all: median steps and seconds per dtype, lossless counts, the seconds ratio."""
    out = []
    for kind in (*KINDS, "all"):
        mine = [r for r in rows if kind in ("all", r["kind"])]
        if not mine:
            continue
        rec = {"kind": kind, "texts": len(mine)}
        for d in dtypes:
            rec[f"{d}_median_s"] = round(statistics.median(r[f"{d}_s"] for r in mine), 1)
            rec[f"{d}_median_steps"] = statistics.median(r[f"{d}_steps"] for r in mine)
            rec[f"{d}_lossless"] = sum(r[f"{d}_lossless"] for r in mine)
        a, b = dtypes[0], dtypes[-1]
        rec[f"{a}_s / {b}_s"] = round(sum(r[f"{a}_s"] for r in mine) / sum(r[f"{b}_s"] for r in mine), 2)
        out.append(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-kind", type=int, default=3, help="texts of each kind (prose, random, mixed)")
    ap.add_argument("--dtypes", nargs=2, default=["float32", "bfloat16"])
    args = ap.parse_args()
    side, begun, rows = Side("today", None), utc_now(), []
    try:
        for i, (kind, text) in enumerate(work(args.per_kind)):
            row = {"kind": kind, "chars": len(text)}
            for d in (args.dtypes if i % 2 == 0 else args.dtypes[::-1]):
                res = side.encode([text], dtype=d)
                [enc] = res["encodings"]
                row.update({f"{d}_s": round(res["seconds"], 1), f"{d}_steps": enc["steps"],
                            f"{d}_lossless": enc["lossless"], "tokens": enc["n_tokens"]})
            rows.append(row)
            print(row, flush=True)
            table = summary(rows, args.dtypes)
            write("dtype", {"started": begun, "machine": machine(), "auto": side.info["dtype"], "rows": rows,
                            "summary": table},
                  records_table(table, list(table[0])) + "\n\n" + records_table(rows, list(rows[0])) +
                  f"\n\n`dtype=auto` picks {side.info['dtype']} here. Texts: the first {args.per_kind} prose, random "
                  "and mixed texts of bench/data/eval.jsonl, each encoded alone with `tuned` in each dtype (which "
                  "goes first alternates), seconds of `encode_texts`, lossless from the vectors alone. "
                  "`python -m bench.dtype`", append=False)
    finally:
        side.close()


if __name__ == "__main__":
    main()
