"""What an encoding weighs, per storage option, beside gzip -9 and zstd -19 of the same texts.

For each text (the 10 benchmark sentences, then optionally prose passages of about 32 and 64
tokens) every option is encoded in turn, so a run stopped early still has every option on the
same texts. Per encoding: vectors and file bytes, bits per character (of the vectors), whether
the vectors alone rebuild the text (no corrections), corrections, steps and encode seconds.
The sizes come from the encoding's own `size` (prototok/size.py), the same numbers the CLI and
the API report.

Options of one rank share its optimisation: `encode_texts` runs the same float optimisation
whatever the storage (same seed, same recipe; the storage acts only afterwards, in the
straight-through phase), so each rank is optimised once per text and every storage of it is
finished from that (straight-through steps, then `codec.package`: reference decode of the
stored vectors, corrections, verified decode). An option's encode seconds are the shared
optimisation's plus its own finishing: what `encode_texts` with that option takes.

`model-m-<storage>` options (`model_m`: m is the model's start m, frozen; only e trains, from the
start's e, and only e is stored) are another optimisation, shared by their storages the same way.
Their vectors_bytes count e alone: the model's m is stored once per model, not per text.
Results are rewritten after every text.
Run: nice -n 10 python -m bench.size [--options float32 int8 model-m-float32 model-m-int8 r32-int8 ...]
     [--passages 32 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import NamedTuple

from prototok import RECIPES, EncodeConfig, load_model
from prototok.codec import chunk, chunk_size, package, tokenize_checked
from prototok.optimize import optimize, straight_through_phase
from prototok.results.tables import records_table

from .common import RESULTS, add_encode_options, encode_config, machine, write
from .sentences import SENTENCES, texts_of_about

# name -> (storage, rank); the first option given is the baseline of the time ratio (float32 by default)
OPTIONS = {"float32": ("float32", 0), "float16": ("float16", 0), "bfloat16": ("bfloat16", 0), "int8": ("int8", 0)}
DEFAULT = ["float32", "float16", "bfloat16", "int8", "model-m-float32", "model-m-int8", "r128-int8", "r64-int8",
           "r32-int8", "r16-int8"]
MODEL_M = "model-m"


class Option(NamedTuple):
    storage: str
    rank: int
    model_m: bool = False

    @property
    def problem(self) -> tuple[int, bool]:
        """What decides the optimisation (the storage only finishes it)."""
        return self.rank, self.model_m


def option(name: str) -> Option:
    """'int8' -> int8 full vectors; 'r32-int8' -> int8 at rank 32; 'r64' -> float32 at rank 64;
    'model-m-int8' -> int8 e against the model's shared m ('model-m': float32)."""
    if name.startswith(MODEL_M):
        return Option(name.removeprefix(MODEL_M).removeprefix("-") or "float32", 0, True)
    if name in OPTIONS:
        return Option(*OPTIONS[name])
    rank, _, storage = name.removeprefix("r").partition("-")
    return Option(storage or "float32", int(rank))


def encode_text(lm, text: str, names: list[str], kind: str, cfg: EncodeConfig, args) -> list[dict]:
    """One row per option, in the order given; each problem optimised once (see the module's doc)."""
    ids = tokenize_checked(lm, text)
    pieces = chunk(ids, chunk_size(lm, cfg))
    rows = {}
    for rank, model_m in dict.fromkeys(option(n).problem for n in names):
        start = time.perf_counter()
        budget = cfg.recipe.with_(max_steps=args.rank_max_steps) if rank else cfg.recipe
        sols = optimize(lm, pieces, cfg.with_(rank=rank, model_m=model_m, recipe=budget))
        shared = time.perf_counter() - start
        for name in (n for n in names if option(n).problem == (rank, model_m)):
            mine = cfg.with_(storage=option(name).storage, rank=rank, model_m=model_m, recipe=budget)
            start = time.perf_counter()
            done = straight_through_phase(lm, pieces, mine, sols, None) if mine.storage != "float32" else sols
            enc = package(lm, mine, text, ids, pieces, done)
            rows[name] = row(enc, name, kind, text, shared + time.perf_counter() - start)
    return [rows[n] for n in names]


def row(enc, name: str, kind: str, text: str, wall: float) -> dict:
    s = enc.size
    return {"option": name, "kind": kind, "chars": len(text), "n_tokens": enc.n_tokens,
            "vectors_bytes": s["vectors_bytes"], "file_bytes": s["file_bytes"], "text_bytes": s["text_bytes"],
            "gzip_bytes": s["gzip_bytes"], "zstd_bytes": s["zstd_bytes"], "bits_per_char": s["bits_per_char"],
            "lossless": enc.c_tokens == enc.n_tokens, "corrections": enc.n_corrections,
            "accuracy": round(enc.accuracy, 4), "steps": enc.steps, "seconds": round(wall, 2)}


def summarise(rows: list[dict], kind: str, names: list[str]) -> list[dict]:
    base = [r["seconds"] for r in rows if r["kind"] == kind and r["option"] == names[0]]
    out = []
    for name in names:
        mine = [r for r in rows if r["kind"] == kind and r["option"] == name]
        if not mine:
            continue
        sec = statistics.median(r["seconds"] for r in mine)
        out.append({
            "option": name, "texts": len(mine), "lossless": f"{sum(r['lossless'] for r in mine)}/{len(mine)}",
            "vectors_bytes": round(statistics.median(r["vectors_bytes"] for r in mine)),
            "file_bytes": round(statistics.median(r["file_bytes"] for r in mine)),
            "bits_per_char": round(statistics.mean(r["bits_per_char"] for r in mine), 2),
            "corrections": sum(r["corrections"] for r in mine),
            "median_steps": statistics.median(r["steps"] for r in mine), "median_s": round(sec, 1),
            "time_vs_float32": round(sec / statistics.median(base), 2) if base else None})
    return out


def yardsticks(rows: list[dict], kind: str) -> str:
    mine = [r for r in rows if r["kind"] == kind]
    texts = [r for r in mine if r["option"] == mine[0]["option"]]  # every option encodes each text once
    med = {k: statistics.median(r[k] for r in texts) for k in ("text_bytes", "gzip_bytes", "zstd_bytes")}
    bpc = {k: round(statistics.mean(8 * r[k] / r["chars"] for r in texts), 2)
           for k in ("text_bytes", "gzip_bytes", "zstd_bytes")}
    return (f"The same {len(texts)} texts: raw UTF-8 median {med['text_bytes']:g} B ({bpc['text_bytes']} bits/char), "
            f"gzip -9 {med['gzip_bytes']:g} B ({bpc['gzip_bytes']}), zstd -19 {med['zstd_bytes']:g} B "
            f"({bpc['zstd_bytes']}).")


def plot(rows: list[dict], names: list[str], model: str, name: str) -> None:
    """Bytes vs text length per option (vectors), with raw / gzip / zstd of the same texts as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    texts = sorted({(r["text_bytes"], r["gzip_bytes"], r["zstd_bytes"]) for r in rows})
    for i, (label, style) in enumerate((("raw UTF-8", "k-"), ("gzip -9", "k--"), ("zstd -19", "k:"))):
        ax.plot([t[0] for t in texts], [t[i] for t in texts], style, label=label, linewidth=1.5)
    for opt in names:
        mine = sorted((r["text_bytes"], r["vectors_bytes"], r["lossless"]) for r in rows if r["option"] == opt)
        if mine:
            ok = sum(m[2] for m in mine)
            line, = ax.plot([m[0] for m in mine], [m[1] for m in mine], "-", alpha=0.6,
                            label=f"{opt} ({ok}/{len(mine)} lossless)")
            for x, y, lossless in mine:  # filled: the vectors alone rebuild the text; hollow: corrections needed
                ax.plot([x], [y], "o", markersize=4, color=line.get_color(),
                        markerfacecolor=line.get_color() if lossless else "none")
    ax.set_xlabel("text, UTF-8 bytes")
    ax.set_ylabel("bytes")
    ax.set_yscale("log")
    ax.set_title(f"{model}: stored vectors per option vs. the text compressed", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="best")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)


def report(lm, rows: list[dict], names: list[str], args, done: bool) -> None:
    md = ""
    for kind in dict.fromkeys(r["kind"] for r in rows):
        md += f"## {kind}\n\n{records_table(summarise(rows, kind, names), list(summarise(rows, kind, names)[0]))}\n\n"
        md += yardsticks(rows, kind) + "\n\n"
    md += ("`vectors_bytes`: the stored vectors (int8 includes a float32 scale per vector); `file_bytes`: the whole "
           ".safetensors file (its JSON metadata is most of it); `bits_per_char`: 8 x vectors_bytes / characters; "
           "`lossless`: the vectors alone rebuild the text (else stored corrections make it exact); "
           "`median_s`: encode seconds (the rank's shared optimisation plus this option's straight-through steps, "
           "reference decode and verification: what encode_texts takes with this option); `time_vs_float32`: "
           "median_s over float32's median_s, on the same texts in the same run.\n\n")
    if any(option(n).model_m for n in names):
        md += (f"`model-m-*`: m is the model's shared m (its start, frozen), stored once per model "
               f"({4 * lm.hidden_size} B in float32), not per text; vectors_bytes and file_bytes count e alone. "
               "Its steps train e alone, from the start's e.\n\n")
    caps = f", low-rank options capped at {args.rank_max_steps} steps" if args.rank_max_steps else ""
    md += (f"Model {lm.name} in {lm.dtype}, recipe `{args.recipe}`{caps}"
           f"{'' if done else '; run not finished'}.\n\n")
    md += f"![bytes vs text length]({args.name}.png)\n\nPer encoding:\n\n" + records_table(rows, list(rows[0]))
    write(args.name, {"started": args.started, "machine": machine(), "model": lm.name, "dtype": str(lm.dtype),
                   "recipe": RECIPES[args.recipe].to_dict(), "options": names, "rows": rows, "finished": done},
          md, append=False)
    plot(rows, names, lm.name, args.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_encode_options(ap)
    ap.add_argument("--options", nargs="+", default=DEFAULT)
    ap.add_argument("--texts", type=int, default=len(SENTENCES))
    ap.add_argument("--passages", type=int, nargs="*", default=[], help="also prose passages of these token counts")
    ap.add_argument("--passage-texts", type=int, default=2)
    ap.add_argument("--rank-max-steps", type=int, default=None, help="a smaller step budget for low-rank options")
    ap.add_argument("--name", default="size", help="results file name under bench/results/")
    args = ap.parse_args()
    args.started = machine()["date"]
    lm = load_model(args.model)
    cfg = encode_config(args)
    work = [("sentences", t) for t in SENTENCES[: args.texts]]
    for n in args.passages:
        work += [(f"passages of ~{n} tokens", t) for t in texts_of_about(lm, 10 + args.passage_texts, n)[10:]]
    rows: list[dict] = []
    for kind, text in work:
        rows += encode_text(lm, text, args.options, kind, cfg, args)
        print(*rows[-len(args.options):], sep="\n", flush=True)
        report(lm, rows, args.options, args, done=False)
    report(lm, rows, args.options, args, done=True)


if __name__ == "__main__":
    main()
