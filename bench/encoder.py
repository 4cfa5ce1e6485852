"""Warm start against the learned encoder's start, side by side on the frozen evaluation set.

For each text of bench/data/eval.jsonl (the first `--per-kind` of each kind asked for), at each
chunk length: the accuracy of each start before any step (step 0: the loss and token accuracy of
the start itself), then a full encode with today's `tuned` recipe from each start (which goes
first alternates from text to text), one process, the model loaded once: steps and seconds to
lossless (the seconds of `encode_texts`, the encoder's pass included), whether the vectors alone
rebuild the text, and the best accuracy at every step (the curves of the figure).

Run: python -m bench.encoder [--head FILE] [--per-kind 4] [--kinds prose random mixed] [--chunks 32]
`--head` measures a head file that is not installed (it is put in a scratch cache dir).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from prototok.results.provenance import utc_now
from prototok.results.tables import records_table

from . import evalset
from .common import RESULTS, machine, write

STARTS = ("warm", "encoder")


def work(kinds: list[str], per_kind: int) -> list[tuple[str, str]]:
    """(kind, text) pairs: the first `per_kind` texts of each kind, kinds interleaved."""
    by_kind = {kind: evalset.texts(kind, per_kind) for kind in kinds}
    return [(kind, by_kind[kind][i]) for i in range(per_kind) for kind in kinds if i < len(by_kind[kind])]


def use_head(path: Path) -> None:
    """Make `path` the head encodes find: a scratch cache dir holding it (the shipped start stays)."""
    scratch = Path(tempfile.mkdtemp(prefix="prototok-bench-encoder-"))
    os.environ["PROTOTOK_CACHE_DIR"] = str(scratch)
    from prototok import load_model
    from prototok.encoder import candidates

    target = candidates(load_model())[0]
    target.parent.mkdir(parents=True)
    shutil.copyfile(path, target)


def measure(lm, enc, kind: str, text: str, chunk: int, order: tuple[str, ...], max_steps: int | None = None) -> dict:
    """One text at one chunk length: both starts' step-0 numbers and full encodes (`max_steps`: the
    recipe's own budget unless given)."""
    from prototok import TUNED, EncodeConfig, encode_texts
    from prototok.codec import chunk as cut
    from prototok.codec import tokenize_checked
    from prototok.encoder_training import step0

    ids = tokenize_checked(lm, text)
    at0 = step0(lm, enc, cut(ids, chunk))
    row = {"kind": kind, "tokens": len(ids), "chunk_tokens": chunk,
           "warm_acc0": at0["warm_accuracy"], "encoder_acc0": at0["encoder_accuracy"],
           "warm_loss0": at0["warm_loss"], "encoder_loss0": at0["encoder_loss"]}
    for start in order:
        curve: list[float] = []
        cfg = EncodeConfig(recipe=TUNED.with_(start=start, max_steps=max_steps), chunk_tokens=chunk)
        t0 = time.perf_counter()
        [encoding] = encode_texts(lm, [text], cfg, progress=functools.partial(record, curve))
        row.update({f"{start}_s": round(time.perf_counter() - t0, 1), f"{start}_steps": encoding.steps,
                    f"{start}_lossless": encoding.c_tokens == encoding.n_tokens, f"{start}_curve": curve})
    return row


def record(curve: list[float], p) -> None:
    """A progress callback: the mean best accuracy of this step."""
    curve.append(round(sum(p.accuracy) / len(p.accuracy), 3))


def summary(rows: list[dict]) -> list[dict]:
    """Per kind and chunk length, and in all: medians, p90, lossless counts, the seconds ratio."""
    out = []
    groups = sorted({(r["kind"], r["chunk_tokens"]) for r in rows}) + [("all", c) for c in
                                                                         sorted({r["chunk_tokens"] for r in rows})]
    for kind, chunk in groups:
        mine = [r for r in rows if r["chunk_tokens"] == chunk and kind in ("all", r["kind"])]
        rec: dict = {"kind": kind, "chunk_tokens": chunk, "texts": len(mine)}
        for s in STARTS:
            rec[f"{s}_acc0"] = round(statistics.mean(r[f"{s}_acc0"] for r in mine), 3)
            rec[f"{s}_median_steps"] = statistics.median(r[f"{s}_steps"] for r in mine)
            rec[f"{s}_p90_steps"] = p90([r[f"{s}_steps"] for r in mine])
            rec[f"{s}_median_s"] = round(statistics.median(r[f"{s}_s"] for r in mine), 1)
            rec[f"{s}_lossless"] = sum(r[f"{s}_lossless"] for r in mine)
        rec["warm_s / encoder_s"] = round(sum(r["warm_s"] for r in mine) / sum(r["encoder_s"] for r in mine), 2)
        out.append(rec)
    return out


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def figure(rows: list[dict], path: Path) -> None:
    """Mean best accuracy against steps, per start (a text that ended counts at its last value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for s, colour in zip(STARTS, ("tab:blue", "tab:orange")):
        curves = [r[f"{s}_curve"] for r in rows if r[f"{s}_curve"]]
        width = max(len(c) for c in curves)
        mean = [statistics.mean(c[min(i, len(c) - 1)] for c in curves) for i in range(width)]
        ax.plot(range(1, width + 1), mean, label=f"{s} start", color=colour)
    ax.set_xlabel("step")
    ax.set_ylabel("mean best token accuracy")
    ax.set_xscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head", type=Path, default=None, help="head file to measure (default: the installed one)")
    ap.add_argument("--per-kind", type=int, default=4)
    ap.add_argument("--kinds", nargs="+", default=["prose", "random", "mixed"], choices=("prose", "passage", "random", "mixed"))
    ap.add_argument("--chunks", nargs="+", type=int, default=[32])
    ap.add_argument("--name", default="encoder", help="results file name under bench/results/")
    args = ap.parse_args()
    if args.head:
        use_head(args.head)
    from prototok import load_model
    from prototok.encoder import require_encoder

    lm = load_model()
    enc = require_encoder(lm)
    begun, rows = utc_now(), []
    for i, (kind, text) in enumerate(work(args.kinds, args.per_kind)):
        for chunk in args.chunks:
            rows.append(measure(lm, enc, kind, text, chunk, STARTS if i % 2 == 0 else STARTS[::-1]))
            print({k: v for k, v in rows[-1].items() if not k.endswith("_curve")}, flush=True)
            table = summary(rows)
            listed = [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in rows]
            write(args.name, {"started": begun, "machine": machine(), "head": enc.meta, "rows": rows,
                              "summary": table},
                  records_table(table, list(table[0])) + "\n\n" + records_table(listed, list(listed[0])) +
                  f"\n\n![accuracy against steps]({args.name}.png)\n\nTexts: the first {args.per_kind} of each of "
                  f"{', '.join(args.kinds)} in bench/data/eval.jsonl; `tuned` from each start (order alternating), "
                  "seconds of `encode_texts` with the encoder pass, lossless from the vectors alone; acc0/loss0: "
                  f"the start's own token accuracy and loss. `python -m bench.encoder`", append=False)
            figure(rows, RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
