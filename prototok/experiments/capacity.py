"""Table 3 and Figure 2: the longest prefix each text is reconstructed from at >= 0.99 accuracy.

Three settings, each walking the paper's length grid upwards:
- `one_step`: e and m per text, the recipe's restarts (best kept); a text stops at its first
  length below 0.99 (its capacity is the last length it passed).
- `shared_m`: one m for all texts at each length, trained jointly with their e's
  (`share=shared_m, group_size=0`, one restart); then, if restarts > 1, texts not yet exact get
  more restarts of e alone with that m frozen (`share=frozen_m`), so m is shared by texts and
  seeds as in the paper; a text's result is its best. The walk stops at a length no text passes.
- `mem`: the autoregressive baseline, one [mem] vector (Kuratov et al.), teacher-forced
  accuracy, stopping like `one_step`. Figure 2 plots its H_LM against the one-step ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..recipe import Method, ShareMode
from ..results.figures import Panel, figure
from ..results.stats import mean_std
from ..results.tables import markdown_table
from ..size import zstd_bytes
from . import paper
from .arguments import Args
from .prefixes import prefixes
from .run import Run
from .solving import Items

THRESHOLD = 0.99
SETTINGS = {"one_step": "no", "shared_m": "yes", "mem": "[mem] x1 (autoregressive)"}
VECTORS_PER_TEXT = {"one_step": 2, "shared_m": 1, "mem": 1}  # stored per text (a shared m once per group)


def length_walk(ids: Sequence[list[int]], lengths: Iterable[int], solve: Callable[[int, Items], list[dict]],
                passes: Callable[[dict], bool], texts: Iterable[int] | None = None,
                ) -> Iterator[tuple[int, list[dict], list[int]]]:
    """Walk up the length grid, each text until its first failure (the `one_step` and `mem` settings).

    At each length n, `solve(n, items)` optimises the n-token prefixes of the texts still
    walking (all texts, or `texts`) and returns a row per text with its `text` index; the texts
    whose row `passes` go on to the next length. Yields (n, rows, the texts that stop at n), so
    a caller can replan or report as it goes; ends when no text is left.
    """
    alive = list(range(len(ids))) if texts is None else list(texts)
    for n in lengths:
        if not alive:
            return
        rows = solve(n, prefixes(ids, n, alive))
        passed = [r["text"] for r in rows if passes(r)]
        yield n, rows, [i for i in alive if i not in passed]
        alive = passed


def run(args: Args, out: Path) -> Path:
    exp = Run.open(args, out, columns=[])
    lengths = exp.lengths(paper.CAPACITY_GRID)
    exp.load_texts(max(lengths))
    restarts = exp.seeds(exp.recipe.seeds)
    exp.bar.plan(len(SETTINGS) * sum(len(exp.prefixes(n)) for n in lengths))
    for setting, method in (("one_step", Method.ONE_STEP), ("mem", Method.AUTOREGRESSIVE)):
        def solve(n: int, items: Items, setting: str = setting, method: Method = method) -> list[dict]:
            return exp.solve_task(f"{setting}/L{n}", items, setting, method=method, seeds=restarts)

        walk = length_walk([t.ids for t in exp.texts], lengths, solve, lambda r: r["accuracy"] >= THRESHOLD)
        for n, _, stopped in walk:
            exp.bar.replan(-sum(len(exp.prefixes(m, stopped)) for m in lengths if m > n))
    for k, n in enumerate(lengths):
        rows = _shared_m(exp, n, restarts)
        if not any(r["accuracy"] >= THRESHOLD for r in rows):
            exp.bar.replan(-sum(len(exp.prefixes(m)) for m in lengths[k + 1:]))
            break
    exp.close()
    return _report(exp, args)


def _shared_m(exp: Run, n: int, restarts: int) -> list[dict]:
    items = exp.prefixes(n)
    rows = exp.solve_task(f"shared_m/L{n}", items, "shared_m", save=True, share=ShareMode.SHARED_M, seeds=1, seed=0)
    exact = {r["text"] for r in rows if r["accuracy"] >= exp.recipe.stop_accuracy}
    todo = [(i, q) for i, q in items if i not in exact]
    if restarts > 1 and todo:
        exp.bar.replan(len(todo))
        m = exp.vectors.load(f"shared_m/L{n}")["m"][0]  # (d,): every row holds the same shared m
        rows += exp.solve_task(f"shared_m/L{n}/frozen", todo, "shared_m", frozen_m=m, share=ShareMode.FROZEN_M,
                               seeds=restarts, seed=1)
    return rows


def capacities(rows: list[dict], setting: str, n_texts: int) -> list[dict]:
    """Per text, the row of its longest prefix at >= 0.99 (a zero row if none passed)."""
    best = {i: {"text": i, "length": 0, "c_tokens": 0, "h_lm": 0.0} for i in range(n_texts)}
    for r in rows:
        ok = r["setting"] == setting and r["kind"] == "solution" and r["accuracy"] >= THRESHOLD
        if ok and (r["length"], r["accuracy"]) > (best[r["text"]]["length"], best[r["text"]].get("accuracy", 0)):
            best[r["text"]] = r
    return [best[i] for i in range(n_texts)]


def _report(exp: Run, args: Args) -> Path:
    n = len(exp.texts)
    caps = {s: capacities(exp.results.rows, s, n) for s in SETTINGS}
    figure(exp.out / "capacity.png", f"H_LM of the longest lossless prefix ({exp.lm.name}, {args.dataset})",
           [Panel("H_LM, autoregressive [mem] x1 (nats)", "H_LM, one-step (nats)", diagonal=True, points={
               "one-step, m shared": ([r["h_lm"] for r in caps["mem"]], [r["h_lm"] for r in caps["shared_m"]]),
               "one-step, m per text": ([r["h_lm"] for r in caps["mem"]], [r["h_lm"] for r in caps["one_step"]])})])
    body = [f"## Capacity: longest prefix at >= {THRESHOLD} token accuracy (mean±std over {n} texts)", ""]
    body += markdown_table(["data", "m shared", "capacity (tokens)", "C_tokens", "H_LM (nats)", "texts at 0",
                            "vectors (B per text, float32)", "zstd -19 of that prefix (B)"],
                           [[args.dataset, label, mean_std([r["length"] for r in caps[s]], 1),
                             mean_std([r["c_tokens"] for r in caps[s]], 1), mean_std([r["h_lm"] for r in caps[s]], 1),
                             sum(r["length"] == 0 for r in caps[s]), VECTORS_PER_TEXT[s] * exp.lm.hidden_size * 4,
                             mean_std([zstd_bytes(exp.lm.detokenize(exp.texts[r["text"]].ids[: r["length"]]).encode())
                                       for r in caps[s] if r["length"]], 1)] for s, label in SETTINGS.items()])
    body += ["", (f"Lengths tried: {', '.join(map(str, exp.lengths(paper.CAPACITY_GRID)))} (a text's capacity is 0 "
             "when it fails the shortest). C_tokens counts the correct tokens of that prefix, H_LM its information "
             "content under the same model (teacher-forced, in nats). The bytes columns weigh what a text stores "
             "(e and m; e alone beside a shared m, which is stored once; one [mem] vector) against zstd -19 of "
             "its longest lossless prefix (docs/how-it-works/file-format.md, \"What an encoding weighs\")."), "",
             ("How each setting ran: *m shared = no*: e and m per text, the recipe's restarts, best kept; a text "
             "stops at its first failing length. *m shared = yes*: at each length one m for all texts, trained "
             "jointly with their e's (`share=shared_m`, `group_size=0`, one restart); texts not yet exact then get "
             "more restarts of e alone with that m frozen (`share=frozen_m`), so m is shared by texts and seeds as "
             "in the paper; each text keeps its best. *[mem]*: Kuratov's autoregressive baseline with one [mem] "
             "vector, teacher-forced accuracy, the same restarts and stopping rule."), "",
             "![Figure 2: H_LM one-step vs autoregressive](capacity.png)", ""]
    key = {"random": "random", "prose": "prose", "generated": "generated"}.get(args.dataset)
    if key:
        name = {"random": "random words", "prose": "PG-19", "generated": "PG-19 generated"}[key]
        body += [f"## Paper, Table 3 ({name}): capacity / H_LM", "",
                 paper.reference_note(exp.lm.name, paper.paper_model(exp.lm.name) or "Pythia and Llama models"), ""]
        cells = {shared: [f"{c} / {h}" for c, h in zip(paper.TABLE3_C[key, shared], paper.TABLE3_H[key, shared])]
                 for shared in (False, True)}
        body += markdown_table(["m shared", *paper.TABLE3_MODELS],
                               [["yes" if shared else "no", *cells[shared]] for shared in (False, True)])
    return exp.summary("Capacity (Table 3, Figure 2)", body)
