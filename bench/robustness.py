"""Do encodings travel? Token flips when an encoding is decoded some other way than it was made.

Each sentence is encoded in float32 and in bfloat16, with and without the recipe's margin.
Its reference is the decode that `encode` verified (its own dtype, alone). It is then decoded
from the vectors alone (no corrections) in other ways: alone again; in a batch of 4 and of
32 with other encodings; with another thread count (1, or 2 when the run uses 1; on a shared
2-core machine run it with PROTOTOK_THREADS=1: two busy OpenMP threads there spend most of
their time waiting for each other); in the other dtype. A *flip*
is a position whose argmax differs from the reference. `decode` catches flips in a batch
(checksum, then the encoding again alone), so only flips that survive decoding alone, i.e.
another thread count, dtype or machine, would reach a user as a `decode_mismatch` error.

Run: python -m bench.robustness [--texts 10] [--margins 0 1.0]
"""

from __future__ import annotations

import argparse
import statistics
from itertools import chain

import torch

from prototok import EncodeConfig, Encoding, decode, decode_ids, encode_texts, load_model
from prototok.errors import DecodeMismatch
from prototok.recipe import TUNED
from prototok.results.provenance import utc_now
from prototok.results.tables import records_table

from .common import machine, write
from .sentences import SENTENCES


def raw_ids(lm, encs: list[Encoding]) -> list[list[int]]:
    """The vectors alone, all encodings in one batch (their chunks side by side)."""
    e = torch.cat([x.vectors["e"] for x in encs])
    m = torch.cat([x.vectors["m"] for x in encs])
    lengths = [n for x in encs for n in x.lengths]
    out = iter(decode_ids(lm, encs[0].arrangement, e, m, lengths, encs[0].sink))
    return [list(chain.from_iterable(next(out) for _ in x.lengths)) for x in encs]


def flips(a: list[int], b: list[int]) -> int:
    return sum(x != y for x, y in zip(a, b))


def decodes(lm, enc: Encoding) -> bool:
    """Does `decode` (corrections, checksum, the batch-shape redo) still rebuild the text exactly in
    lm's own dtype? (No dtype fallback: that would hide what this measures.)"""
    try:
        decode(lm, [enc], fallback=False)
    except DecodeMismatch:
        return False
    return True


def other_threads(threads: int) -> int:
    """The thread count to compare against: 1, or 2 when the run itself uses one thread."""
    return 2 if threads == 1 else 1


def conditions(lm, other_lm, encs: list[Encoding], threads: int) -> dict[str, list[int]]:
    """Flips per encoding under each way of decoding it."""
    ref = [raw_ids(lm, [x])[0] for x in encs]
    out: dict[str, list[int]] = {"alone": [flips(raw_ids(lm, [x])[0], r) for x, r in zip(encs, ref)]}
    for size in (4, 32):
        got = []
        for i, x in enumerate(encs):
            others = [encs[(i + k) % len(encs)] for k in range(1, size)]
            got.append(flips(raw_ids(lm, [*others[: size // 2], x, *others[size // 2:]])[size // 2], ref[i]))
        out[f"batch-{size}"] = got
    torch.set_num_threads(other_threads(threads))
    out["other-threads"] = [flips(raw_ids(lm, [x])[0], r) for x, r in zip(encs, ref)]
    torch.set_num_threads(threads)
    out["other-dtype"] = [flips(raw_ids(other_lm, [x])[0], r) for x, r in zip(encs, ref)]
    out["other-dtype-exact"] = [sum(decodes(other_lm, x) for x in encs)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=len(SENTENCES))
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, TUNED.margin])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="dtypes to encode in")
    args = ap.parse_args()
    models = {"float32": load_model(dtype="float32"), "bfloat16": load_model(dtype="bfloat16")}
    threads = torch.get_num_threads()
    started = utc_now()
    texts = SENTENCES[: args.texts]
    rows = []
    for made, lm in models.items():
        if made not in args.dtypes:
            continue
        other = models["bfloat16" if made == "float32" else "float32"]
        for margin in dict.fromkeys(args.margins):
            cfg = EncodeConfig(recipe=TUNED.with_(margin=margin))
            encs = [encode_texts(lm, [t], cfg)[0] for t in texts]  # each alone, as a user would
            res = conditions(lm, other, encs, threads)
            row = {"made_in": made, "margin": margin, "lossless": f"{sum(x.accuracy == 1 for x in encs)}/{len(encs)}",
                   "median_steps": statistics.median(x.steps for x in encs),
                   "median_s": statistics.median(x.seconds for x in encs),
                   "min_margin": min((x.min_margin for x in encs if x.min_margin is not None), default=None)}
            for cond, per in res.items():
                if cond == "other-dtype-exact":
                    row[cond] = f"{per[0]}/{len(encs)}"
                else:
                    row[cond] = f"{sum(per)} in {sum(p > 0 for p in per)}"
            rows.append(row)
            print(row, flush=True)
            report(rows, started)


def report(rows: list[dict], started: str) -> None:
    """Written after every group, so an interrupted run keeps what it measured."""
    cols = ["made_in", "margin", "lossless", "median_steps", "median_s", "min_margin", "alone", "batch-4",
            "batch-32", "other-threads", "other-dtype", "other-dtype-exact"]
    md = ("Flip cells read `positions in encodings` (vectors alone, against the reference decode). "
          "`other-dtype-exact`: encodings that `decode` still rebuilds exactly (with their corrections) "
          "in the other dtype. `other-threads`: decoded with "
          f"{other_threads(torch.get_num_threads())} torch thread(s) instead of the run's "
          f"{torch.get_num_threads()}.\n\n" + records_table(rows, cols))
    write("robustness", {"started": started, "machine": machine(), "rows": rows}, md, append=False)


if __name__ == "__main__":
    main()
