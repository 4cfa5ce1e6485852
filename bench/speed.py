"""Seconds to lossless: today's default against the default of an older commit, side by side.

Two long-lived processes, one per side, each load the embedded model once; every work item
goes to the old side and then to the new one, so both see the same machine load. The old
side runs a snapshot (`git archive`) of `--baseline` (default 15b1825, the code before the
speed work) exactly as its CLI did: its `tuned` recipe, its dtype, torch's default threads.
"Lossless" means the proto-tokens alone rebuild every token (no stored corrections).

Work: the 10 benchmark sentences, each encoded alone; prose passages of the shipped
Gutenberg data cut to about 32 and 64 tokens; a batch of 8 sentences in one job. The old
side's 64-token passages can take half an hour each on 2 cores: `--baseline-cap` caps its
steps there, and such a row is a lower bound on the speed-up (marked `>=`).

`--eval N` runs the first N texts of each kind of the frozen evaluation set (bench/data/eval.jsonl:
prose, passages, random words, mixed real-world lines) instead, each alone: the report to trust,
since the sentences tuned the recipe.

Run: python -m bench.speed [--passages 5] [--baseline 15b1825] [--baseline-cap 300] [--eval N]
     python -m bench.speed --ablation 5  # each lever alone on the sentences (new code only)
     python -m bench.speed --chunks 16 32 64 --passages 3  # chunk length vs seconds (new code only)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from prototok.results.provenance import utc_now
from prototok.results.tables import records_table

from . import evalset
from .common import machine, write
from .sentences import SENTENCES

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "speed_worker.py"


class Side:
    """A speed_worker process running one version of prototok."""

    def __init__(self, name: str, pythonpath: Path | None, env: dict[str, str] | None = None):
        self.name = name
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PROTOTOK_", "OMP_", "MKL_"))}
        if pythonpath is not None:
            base["PYTHONPATH"] = str(pythonpath)
        base.update(env or {})
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=base, cwd=pythonpath or REPO)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} side exited (code {self.proc.wait()})")
        return json.loads(line)

    def encode(self, texts: list[str], recipe: dict | None = None, dtype: str | None = None,
               chunk_tokens: int | None = None) -> dict:
        req = {"texts": texts, "recipe": recipe or {}, "dtype": dtype, "chunk_tokens": chunk_tokens}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def snapshot(commit: str) -> Path:
    """The prototok package as it was at `commit`, in a temporary directory."""
    out = Path(tempfile.mkdtemp(prefix=f"prototok-{commit}-"))
    blob = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "prototok"],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(out, filter="data")
    return out


def passages_of(tokens: int, count: int, tokenize) -> list[str]:
    """Whole-word prefixes of shipped public-domain passages with at most `tokens` tokens, from
    passage 100 on: the model's warm start (prototok/starts.py) learnt from passages 0-31."""
    from prototok.experiments.datasets import passages

    out = []
    for p in passages()[100:]:
        words, text = p["text"].split(), ""
        for w in words:
            longer = f"{text} {w}".strip()
            if len(tokenize(longer)) > tokens:
                break
            text = longer
        out.append(text)
        if len(out) == count:
            break
    return out


def work_items(passages: int, tokenize) -> list[dict]:
    items = [{"kind": "sentence", "texts": [s]} for s in SENTENCES]
    for n in (32, 64):
        items += [{"kind": f"passage-{n}", "texts": [t]} for t in passages_of(n, passages, tokenize)]
    items.append({"kind": "batch-8", "texts": SENTENCES[:8]})
    return items


def eval_items(per_kind: int) -> list[dict]:
    """The first `per_kind` texts of each kind of the frozen evaluation set (bench/data/eval.jsonl),
    each encoded alone: texts no recipe, start or head was tuned or trained on."""
    return [{"kind": f"eval-{kind}", "texts": [text]} for kind in ("prose", "passage", "random", "mixed")
            for text in evalset.texts(kind, per_kind)]


def row(side: str, item: dict, res: dict, capped: bool) -> dict:
    encs = res["encodings"]
    return {"side": side, "kind": item["kind"], "texts": len(encs), "n_tokens": sum(e["n_tokens"] for e in encs),
            "lossless": all(e["lossless"] for e in encs), "steps": max(e["steps"] for e in encs),
            "seconds": round(res["seconds"], 2), "capped": capped}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for kind in kinds:
        per = {}
        for side in ("old", "new"):
            mine = [r for r in rows if r["kind"] == kind and r["side"] == side]
            if not mine:
                continue
            per[side] = mine
            out.append({"work": kind, "side": side, "lossless": f"{sum(r['lossless'] for r in mine)}/{len(mine)}",
                        "median_s": statistics.median(r["seconds"] for r in mine),
                        "max_s": max(r["seconds"] for r in mine),
                        "median_steps": statistics.median(r["steps"] for r in mine),
                        "tokens_per_s": sum(r["n_tokens"] for r in mine) / sum(r["seconds"] for r in mine),
                        "capped": sum(r["capped"] for r in mine)})
        if "old" in per and "new" in per:
            pairs = [(o, n) for o in per["old"] for n in per["new"] if o.get("item") == n.get("item")]
            ratio = statistics.median(r["seconds"] for r in per["old"]) / statistics.median(
                r["seconds"] for r in per["new"])
            lower = any(o["capped"] or not o["lossless"] for o, _ in pairs)
            out[-1]["speedup_median"] = f"{'>=' if lower else ''}{ratio:.1f}x"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="15b1825")
    ap.add_argument("--passages", type=int, default=5)
    ap.add_argument("--baseline-cap", type=int, default=300, help="old side's max_steps on 64-token passages")
    ap.add_argument("--eval", type=int, default=0, metavar="N",
                    help="instead of the sentences and passages: the first N texts of each kind of the frozen "
                         "evaluation set")
    ap.add_argument("--only", nargs="*", default=None, help="work kinds to run (sentence passage-32 passage-64 batch-8)")
    ap.add_argument("--ablation", type=int, default=0, metavar="N",
                    help="instead: each lever alone on the first N sentences (results in speed-ablation)")
    ap.add_argument("--chunks", type=int, nargs="*", default=None, metavar="TOKENS",
                    help="instead: 64-token passages encoded at each chunk length (results in speed-chunks)")
    ap.add_argument("--cold", action="store_true", help="with --chunks: also each length without the warm start")
    args = ap.parse_args()
    started = utc_now()
    if args.chunks:
        return chunk_curve(started, args, Side("new", None))
    old = Side("old", snapshot(args.baseline))
    new = Side("new", None)
    if args.ablation:
        return ablation(started, args, old, new)
    from prototok import load_model

    items = eval_items(args.eval) if args.eval else work_items(args.passages, load_model().tokenize)
    items = [it for it in items if args.only is None or it["kind"] in args.only]
    rows: list[dict] = []
    for i, item in enumerate(items):
        cap = item["kind"] == "passage-64" and args.baseline_cap
        res = old.encode(item["texts"], {"max_steps": args.baseline_cap} if cap else None)
        rows.append({**row("old", item, res, bool(cap)), "item": i})
        res = new.encode(item["texts"])
        rows.append({**row("new", item, res, False), "item": i})
        print(rows[-2], rows[-1], sep="\n", flush=True)
        report(started, args, old, new, rows)
    old.close()
    new.close()


# Today's recipe with one lever at a time moved back to the old default (dtype, restarts+lr,
# warm start, spike guard); the margin stays (exactness across dtypes needs it), as do the two
# options that are off by default (loss_margin, restart_every; measured in levers.md).
OLD_RECIPE = {"seeds": 4, "lr": 0.05, "margin": 0.0, "start": "random", "spike_guard": 0.0}
LEVERS = {
    "new code, old recipe, float32": (OLD_RECIPE, "float32"),
    "+ bfloat16 only": (OLD_RECIPE, "bfloat16"),
    "+ 1 restart, lr 0.08 only (float32)": ({"margin": 0.0, "start": "random", "spike_guard": 0.0}, "float32"),
    "new default without the warm start": ({"start": "random"}, None),
    "new default without the spike guard": ({"spike_guard": 0.0}, None),
    "new default": ({}, None),
}


def ablation(started: str, args, old: Side, new: Side) -> None:
    rows: list[dict] = []
    for i, text in enumerate(SENTENCES[: args.ablation]):
        res = old.encode([text])
        rows.append({**row("old", {"kind": "old default"}, res, False), "item": i, "lever": "old default"})
        for name, (recipe, dtype) in LEVERS.items():
            res = new.encode([text], recipe, dtype)
            rows.append({**row("new", {"kind": name}, res, False), "item": i, "lever": name,
                         "dtype": res["dtype"]})
            recipe_now = res["recipe"]
            print(rows[-1], flush=True)
        base = statistics.median(r["seconds"] for r in rows if r["lever"] == "old default")
        summary = []
        for lever in ["old default", *LEVERS]:
            mine = [r for r in rows if r["lever"] == lever]
            med = statistics.median(r["seconds"] for r in mine)
            summary.append({"lever": lever, "dtype": mine[0].get("dtype", old.info["dtype"]),
                            "lossless": f"{sum(r['lossless'] for r in mine)}/{len(mine)}",
                            "median_steps": statistics.median(r["steps"] for r in mine), "median_s": med,
                            "speedup": f"{base / med:.1f}x"})
        md = (f"Each lever alone on the first {i + 1} sentences, all sides in one run, one sentence at a time "
              f"(old = `{args.baseline}`). New default recipe: `{recipe_now}`."
              "\n\n" + records_table(summary, ["lever", "dtype", "lossless", "median_steps", "median_s", "speedup"]))
        write("speed-ablation", {"started": started, "machine": machine(), "summary": summary, "rows": rows}, md,
              append=False)
    old.close()
    new.close()


def chunk_curve(started: str, args, new: Side) -> None:
    """The chunk length for throughput: one 64-token passage split into chunks of c
    tokens is c-token rows optimised together in one batch; shorter chunks need far fewer steps
    each, and a batch of rows costs less than that many single rows, but store more vectors."""
    from prototok import load_model

    texts = passages_of(64, args.passages, load_model().tokenize)
    variants = [(c, warm) for c in args.chunks for warm in ((True, False) if args.cold else (True,))]
    rows: list[dict] = []
    for i, text in enumerate(texts):
        for c, warm in variants:
            res = new.encode([text], None if warm else {"start": "random"}, chunk_tokens=c)
            enc = res["encodings"][0]
            rows.append({"item": i, "chunk_tokens": c, "warm_start": warm, "n_tokens": enc["n_tokens"],
                         "vectors": 2 * -(-enc["n_tokens"] // c), "lossless": enc["lossless"],
                         "steps": enc["steps"], "seconds": round(res["seconds"], 2)})
            print(rows[-1], flush=True)
        summary = []
        for c, warm in variants:
            mine = [r for r in rows if r["chunk_tokens"] == c and r["warm_start"] == warm]
            summary.append({"chunk_tokens": c, "warm_start": warm, "passages": len(mine),
                            "lossless": f"{sum(r['lossless'] for r in mine)}/{len(mine)}",
                            "tokens_per_vector": round(sum(r["n_tokens"] for r in mine)
                                                       / sum(r["vectors"] for r in mine), 1),
                            "median_steps": statistics.median(r["steps"] for r in mine),
                            "median_s": statistics.median(r["seconds"] for r in mine),
                            "max_s": max(r["seconds"] for r in mine),
                            "tokens_per_s": round(sum(r["n_tokens"] for r in mine)
                                                  / sum(r["seconds"] for r in mine), 3)})
        md = (f"New default (this commit, {new.info['dtype']}, {new.info['threads']} threads) on {i + 1} prose "
              "passages of about 64 tokens (shipped data, from passage 100 on), each encoded alone at each "
              "chunk length, the lengths interleaved per passage. `steps`: the slowest chunk's; "
              "`tokens_per_vector`: tokens over stored vectors (2 per chunk).\n\n"
              + records_table(summary, ["chunk_tokens", "warm_start", "passages", "lossless", "tokens_per_vector",
                                        "median_steps", "median_s", "max_s", "tokens_per_s"])
              + "\n\nEvery passage:\n\n"
              + records_table(rows, ["item", "chunk_tokens", "warm_start", "n_tokens", "vectors", "lossless",
                                     "steps", "seconds"]))
        write("speed-chunks", {"started": started, "machine": machine(), "new": new.info, "summary": summary,
                               "rows": rows}, md, append=False)
    new.close()


def report(started: str, args, old: Side, new: Side, rows: list[dict]) -> None:
    summary = summarise(rows)
    sides = (f"old = `{args.baseline}` ({old.info['dtype']}, {old.info['threads']} threads), "
             f"new = this commit ({new.info['dtype']}, {new.info['threads']} threads)")
    cap = (f"`capped`: the old side's steps were capped at {args.baseline_cap} (64-token passages), so its time "
           "is a lower bound" if args.baseline_cap else "`capped`: none (--baseline-cap 0: both sides ran to their own max_steps)")
    md = f"{sides}. Each item ran on the old side, then the new, in one run. {cap}.\n\n"
    md += records_table(summary, ["work", "side", "lossless", "median_s", "max_s", "median_steps", "tokens_per_s",
                          "capped", "speedup_median"])
    md += "\n\nEvery item:\n\n" + records_table(rows, ["item", "kind", "side", "texts", "n_tokens", "lossless", "steps",
                                              "seconds", "capped"])
    write("speed", {"started": started, "machine": machine(), "baseline": args.baseline, "old": old.info,
                    "new": new.info, "summary": summary, "rows": rows}, md, append=False)


if __name__ == "__main__":
    main()
