"""Table 1: token accuracy of the five input arrangements over prefix lengths.

Each (arrangement, length) is one `optimize` call over the prefixes of all texts, with the
recipe's restarts (best kept); accuracy is what the vectors reconstruct alone.
"""

from __future__ import annotations

from pathlib import Path

from ..recipe import Arrangement
from ..results.figures import Panel, figure
from ..results.stats import mean_std, series
from ..results.tables import markdown_table
from . import paper
from .arguments import Args
from .run import Run

DEFAULT_LENGTHS = [2**k for k in range(11)]  # 1, 2, 4, ..., 1024 (cut to the context)


def run(args: Args, out: Path) -> Path:
    exp = Run.open(args, out, columns=[])
    lengths = exp.lengths(DEFAULT_LENGTHS)
    exp.load_texts(max(lengths))
    exp.bar.plan(len(Arrangement) * sum(len(exp.prefixes(n)) for n in lengths))
    for arr in Arrangement:
        for n in lengths:
            exp.solve_task(f"{arr.value}/L{n}", exp.prefixes(n), arr.value, arrangement=arr,
                           seeds=exp.seeds(exp.recipe.seeds))
    exp.close()

    acc = {(a.value, n): [r["accuracy"] for r in exp.results.select(setting=a.value, length=n)]
           for a in Arrangement for n in lengths}
    figure(exp.out / "arrangements.png", f"Token accuracy by input arrangement ({exp.lm.name}, {args.dataset})",
           [Panel("prefix length N (tokens)", "token accuracy", logx=True, lines={
               a.value: series(lengths, [acc[a.value, n] for n in lengths]) for a in Arrangement})])
    body = ["## Token accuracy (mean±std over texts), Table 1 layout", ""]
    body += markdown_table(["input", *[f"N={n}" for n in lengths]],
                           [[a.value, *[mean_std(acc[a.value, n]) for n in lengths]] for a in Arrangement])
    body += ["", (f"Restarts per text: {exp.seeds(exp.recipe.seeds)} (best kept). Inputs: `one` = [e]xN, "
             "`halves` = [e]x(N/2) then [m]x(N/2), `pairs` = (e, m) pairs, `e_mN` = e then [m]xN "
             "(e's own prediction unsupervised), `e_mN-1` = e then [m]x(N-1) (the paper's main scheme)."),
             "", "![accuracy vs length](arrangements.png)", "",
             "## Paper, Table 1 (Llama-3.2-1B, 50 PG-19 texts)", "", paper.reference_note(exp.lm.name, paper.TABLE1_MODEL), ""]
    body += markdown_table(["input", "N=1", "N=2", "N=4", "N=256"],
                           [[a, *cells.values()] for a, cells in paper.TABLE1.items()])
    return exp.summary("Arrangements (Table 1)", body)

