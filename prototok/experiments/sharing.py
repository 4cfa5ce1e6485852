"""Table 2: one proto-token shared inside groups of Sg texts, trained jointly.

For every length, shared token (e or m), group size Sg and seed s, one `optimize` call with
`share=shared_e|shared_m, group_size=Sg` and a single restart seeded s. "max" takes each
text's best seed, then mean±std over texts; "avg" is mean±std over all (text, seed) pairs.
"""

from __future__ import annotations

from pathlib import Path

from ..recipe import ShareMode
from ..results.figures import Panel, figure
from ..results.stats import mean_std, series
from ..results.tables import markdown_table
from . import paper
from .arguments import Args
from .run import Run

DEFAULT_LENGTHS = [256]  # the paper's: the longest length reconstructed without sharing
DEFAULT_SEEDS = 3  # the paper uses 10
MODES = {"e": ShareMode.SHARED_E, "m": ShareMode.SHARED_M}


def group_sizes(n_texts: int) -> list[int]:
    """The paper's grid 1, 4, 16, 64, 256, cut to the number of texts, plus "all texts"."""
    return sorted({g for g in (1, 4, 16, 64, 256) if g < n_texts} | {n_texts})


def aggregate(rows: list[dict], agg: str) -> list[float]:
    """'max': best seed per text; 'avg': every (text, seed)."""
    if agg == "avg":
        return [r["accuracy"] for r in rows]
    best: dict[int, float] = {}
    for r in rows:
        best[r["text"]] = max(best.get(r["text"], 0.0), r["accuracy"])
    return list(best.values())


def run(args: Args, out: Path) -> Path:
    exp = Run.open(args, out, columns=["group_size"])
    lengths = exp.lengths(DEFAULT_LENGTHS)
    exp.load_texts(max(lengths))
    seeds = exp.seeds(DEFAULT_SEEDS)
    sizes = group_sizes(len(exp.texts))
    exp.bar.plan(len(MODES) * len(sizes) * seeds * sum(len(exp.prefixes(n)) for n in lengths))
    for n in lengths:
        for shared, mode in MODES.items():
            for g in sizes:
                for s in range(seeds):
                    exp.solve_task(f"{shared}/Sg{g}/L{n}/seed{s}", exp.prefixes(n), f"shared_{shared}",
                                   extra={"group_size": g}, share=mode, group_size=g, seeds=1, seed=s)
    exp.close()

    body, panels = [], []
    for n in lengths:
        rows = {(shared, g): exp.results.select(setting=f"shared_{shared}", group_size=g, length=n)
                for shared in MODES for g in sizes}
        cells = {(shared, agg, g): aggregate(rows[shared, g], agg) for shared in MODES for agg in ("max", "avg")
                 for g in sizes}
        body += [f"## N = {n} tokens, {seeds} seeds: token accuracy (mean±std over texts), Table 2 layout", ""]
        body += markdown_table(["shared", "agg", *[f"Sg={g}" for g in sizes]],
                               [[shared, agg, *[mean_std(cells[shared, agg, g]) for g in sizes]]
                                for shared in MODES for agg in ("max", "avg")])
        body += [""]
        panels.append(Panel("group size Sg", "token accuracy", title=f"N = {n}", logx=True, lines={
            f"{shared} shared, {agg}": series(sizes, [cells[shared, agg, g] for g in sizes])
            for shared in MODES for agg in ("max", "avg")}))
    figure(exp.out / "sharing.png", f"Sharing one proto-token in groups ({exp.lm.name}, {args.dataset})", panels)
    body += [("Each cell: one `optimize` call per (shared token, Sg, seed) over all texts, texts split in "
             "consecutive groups of Sg (the last group may be smaller); the shared vector is trained jointly "
             "inside its group, the other one per text. Sg=1 shares nothing."), "",
             "![accuracy vs group size](sharing.png)", "",
             "## Paper, Table 2 (Llama-3.2-1B, 256 PG-19 texts, N=256, 10 seeds)", "",
             paper.reference_note(exp.lm.name, paper.TABLE2_MODEL), ""]
    body += markdown_table(["shared", "agg", "Sg=1", "Sg=16", "Sg=256"],
                           [[shared, agg, *c.values()] for (shared, agg), c in paper.TABLE2.items()])
    return exp.summary("Sharing a proto-token across texts (Table 2)", body)
