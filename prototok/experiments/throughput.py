"""Figure 3: reconstruction throughput, one forward pass vs autoregressive decoding from [mem].

Throughput = reconstructed length / reconstruction time. Timing needs no trained vectors
(the cost of a pass does not depend on the values), so random e, m and [mem] are decoded
with the core's own decoders: `decode_ids` (one pass over [e, m x (N-1)]) and
`decoding.generate` (greedy, one pass per token with a KV cache). Each time is the median
of repeats after a warm-up call, with the GPU synchronised around each call.

Lengths: `--lengths`, or `--capacity DIR` of a capacity run to time each text at its own
longest lossless lengths (one-step with m shared, and [mem]), as the paper does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..decoding import decode_ids, generate
from ..errors import InvalidInput
from ..recipe import Arrangement
from ..results.figures import Panel, figure
from ..results.stats import mean, mean_std
from ..results.tables import markdown_table
from ..results.timing import median_seconds
from . import paper
from .arguments import Args
from .capacity import capacities
from .run import Run, read_rows

DEFAULT_LENGTHS = [16, 64, 256]
REPEATS, WARMUP = 5, 1
METHODS = ("one_step", "autoregressive")


def decoder(exp: Run, method: str, n: int):
    """A call that reconstructs n tokens from (random) vectors with the core's decoder."""
    lm, gen = exp.lm, torch.Generator().manual_seed(n)
    v = torch.randn(2, lm.hidden_size, generator=gen) * lm.embedding_std  # (2, d)
    if method == "one_step":
        return lambda: decode_ids(lm, Arrangement.E_MN1, v[:1], v[1:], [n], exp.recipe.sink)
    return lambda: generate(lm, v[:1, None], n, sink=exp.recipe.sink)  # mem: (1, 1, d)


def lossless_lengths(folder: Path) -> dict[str, dict[int, int]]:
    """method -> text -> its capacity, from a capacity run's results.csv."""
    rows = read_rows(folder / "results.csv") if (folder / "results.csv").exists() else []
    if not rows:
        raise InvalidInput(f"no capacity results in {folder}")
    n = max(r["text"] for r in rows) + 1
    return {m: {r["text"]: r["length"] for r in capacities(rows, s, n) if r["length"]}
            for m, s in (("one_step", "shared_m"), ("autoregressive", "mem"))}


def run(args: Args, out: Path) -> Path:
    exp = Run.open(args, out, columns=["throughput", "repeats"])
    if args.capacity:  # method -> length -> the texts whose capacity it is
        todo = {m: {} for m in METHODS}
        for m, caps in lossless_lengths(Path(args.capacity)).items():
            for t, n in caps.items():
                todo[m].setdefault(n, []).append(t)
    else:  # method -> length -> one row with no text
        todo = {m: {n: [""] for n in exp.lengths(DEFAULT_LENGTHS)} for m in METHODS}
    exp.bar.plan(sum(len(ts) for v in todo.values() for ts in v.values()))
    for method in METHODS:
        for n, texts in sorted(todo[method].items()):
            def work(method=method, n=n, texts=texts) -> list[dict]:
                seconds = median_seconds(decoder(exp, method, n), REPEATS, WARMUP, exp.lm.device)
                return [{"kind": "timing", "setting": method, "text": t, "length": n, "seconds": seconds,
                             "throughput": n / seconds, "repeats": REPEATS} for t in texts]

            exp.task(f"{method}/L{n}", len(texts), work)
    exp.close()
    return _report(exp, args)


def _report(exp: Run, args: Args) -> Path:
    rows = exp.results.select(kind="timing")
    by = {(r["setting"], r["text"]): r for r in rows}
    if args.capacity:
        texts = sorted({r["text"] for r in rows if ("one_step", r["text"]) in by and ("autoregressive", r["text"]) in by})
        pairs = [(f"text {t}", by["one_step", t], by["autoregressive", t]) for t in texts]
    else:
        lengths = sorted({r["length"] for r in rows})
        one = {r["length"]: r for r in rows if r["setting"] == "one_step"}
        ar = {r["length"]: r for r in rows if r["setting"] == "autoregressive"}
        pairs = [(f"N={n}", one[n], ar[n]) for n in lengths if n in one and n in ar]
    ratios = [a["throughput"] / b["throughput"] for _, a, b in pairs]
    if not pairs:  # e.g. no text had a lossless length under both methods in the capacity run
        return exp.summary("Reconstruction throughput (Figure 3)", [
            ("No text has a timing under both methods (in a capacity run: no text reached a lossless length "
             "with both one-step and [mem]); nothing to compare. Time fixed lengths with `--lengths`.")])
    figure(exp.out / "throughput.png", f"Reconstruction throughput ({exp.lm.name}, {exp.lm.device})", [
        Panel("reconstructed length (tokens)", "throughput (tokens/s)", logx=True, logy=True, points={
            "one forward pass": ([a["length"] for _, a, _ in pairs], [a["throughput"] for _, a, _ in pairs]),
            "autoregressive [mem]": ([b["length"] for _, _, b in pairs], [b["throughput"] for _, _, b in pairs])})])
    body = [f"## Throughput (median of {REPEATS} timed calls after {WARMUP} warm-up, batch of one text)", ""]
    body += markdown_table(
        ["", "one-step N", "one-step s", "one-step tok/s", "[mem] N", "[mem] s", "[mem] tok/s", "ratio"],
        [[label, a["length"], f"{a['seconds']:.4f}", f"{a['throughput']:.0f}", b["length"], f"{b['seconds']:.4f}",
          f"{b['throughput']:.0f}", f"{a['throughput'] / b['throughput']:.1f}x"] for label, a, b in pairs])
    source = (f"each text's own lossless lengths from `{args.capacity}` (one-step: m shared; [mem]: one vector)"
              if args.capacity else "the same length for both methods")
    median = sorted(ratios)[len(ratios) // 2] if ratios else float("nan")
    body += ["", (f"**Mean ratio one-step / autoregressive: {mean(ratios):.1f}x** "
             f"(median {median:.1f}x; {mean_std(ratios, 1)}) on {exp.lm.device}; "
             f"lengths: {source}. The paper reports {paper.THROUGHPUT_RATIO}x on average on GPUs, at each "
             "method's own lossless length (PyTorch profiler timings)."), "",
             "![throughput](throughput.png)"]
    return exp.summary("Reconstruction throughput (Figure 3)", body)
