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

from pathlib import Path

from ..recipe import Method, ShareMode
from ..size import zstd_bytes
from . import paper
from .plots import Panel, figure
from .runner import Args, Run, mean_std, table

THRESHOLD = 0.99
SETTINGS = {"one_step": "no", "shared_m": "yes", "mem": "[mem] x1 (autoregressive)"}
VECTORS_PER_TEXT = {"one_step": 2, "shared_m": 1, "mem": 1}  # stored per text (a shared m once per group)


def run(args: Args, out: Path) -> Path:
    run = Run(args, out, columns=[])
    lengths = run.lengths(paper.CAPACITY_GRID)
    run.load_texts(max(lengths))
    restarts = run.seeds(run.recipe.seeds)
    run.plan(len(SETTINGS) * sum(len(run.prefixes(n)) for n in lengths))
    for setting, method in (("one_step", Method.ONE_STEP), ("mem", Method.AUTOREGRESSIVE)):
        alive = list(range(len(run.texts)))
        for k, n in enumerate(lengths):
            rows = run.solve_unit(f"{setting}/L{n}", run.prefixes(n, alive), setting, method=method, seeds=restarts)
            passed = [r["text"] for r in rows if r["accuracy"] >= THRESHOLD]
            run.replan(-sum(len(run.prefixes(m, sorted(set(alive) - set(passed)))) for m in lengths[k + 1:]))
            alive = passed
    for k, n in enumerate(lengths):
        rows = _shared_m(run, n, restarts)
        if not any(r["accuracy"] >= THRESHOLD for r in rows):
            run.replan(-sum(len(run.prefixes(m)) for m in lengths[k + 1:]))
            break
    run.close()
    return _report(run, args)


def _shared_m(run: Run, n: int, restarts: int) -> list[dict]:
    items = run.prefixes(n)
    rows = run.solve_unit(f"shared_m/L{n}", items, "shared_m", save=True, share=ShareMode.SHARED_M, seeds=1, seed=0)
    exact = {r["text"] for r in rows if r["accuracy"] >= run.recipe.stop_accuracy}
    todo = [(i, q) for i, q in items if i not in exact]
    if restarts > 1 and todo:
        run.replan(len(todo))
        m = run.load(f"shared_m/L{n}")["m"][0]  # (d,): every row holds the same shared m
        rows += run.solve_unit(f"shared_m/L{n}/frozen", todo, "shared_m", frozen_m=m, share=ShareMode.FROZEN_M,
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


def _report(run: Run, args: Args) -> Path:
    n = len(run.texts)
    caps = {s: capacities(run.rows, s, n) for s in SETTINGS}
    figure(run.out / "capacity.png", f"H_LM of the longest lossless prefix ({run.lm.name}, {args.dataset})",
           [Panel("H_LM, autoregressive [mem] x1 (nats)", "H_LM, one-step (nats)", diagonal=True, points={
               "one-step, m shared": ([r["h_lm"] for r in caps["mem"]], [r["h_lm"] for r in caps["shared_m"]]),
               "one-step, m per text": ([r["h_lm"] for r in caps["mem"]], [r["h_lm"] for r in caps["one_step"]])})])
    body = [f"## Capacity: longest prefix at >= {THRESHOLD} token accuracy (mean±std over {n} texts)", ""]
    body += table(["data", "m shared", "capacity (tokens)", "C_tokens", "H_LM (nats)", "texts at 0",
                   "vectors (B per text, float32)", "zstd -19 of that prefix (B)"],
                  [[args.dataset, label, mean_std([r["length"] for r in caps[s]], 1),
                    mean_std([r["c_tokens"] for r in caps[s]], 1), mean_std([r["h_lm"] for r in caps[s]], 1),
                    sum(r["length"] == 0 for r in caps[s]), VECTORS_PER_TEXT[s] * run.lm.hidden_size * 4,
                    mean_std([zstd_bytes(run.lm.detokenize(run.texts[r["text"]].ids[: r["length"]]).encode())
                              for r in caps[s] if r["length"]], 1)] for s, label in SETTINGS.items()])
    body += ["", (f"Lengths tried: {', '.join(map(str, run.lengths(paper.CAPACITY_GRID)))} (a text's capacity is 0 "
             "when it fails the shortest). C_tokens counts the correct tokens of that prefix, H_LM its information "
             "content under the same model (teacher-forced, in nats). The bytes columns weigh what a text stores "
             "(e and m; e alone beside a shared m, which is stored once; one [mem] vector) against zstd -19 of "
             "its longest lossless prefix (README, \"What an encoding weighs\")."), "",
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
                 paper.reference_note(run.lm.name, paper.paper_model(run.lm.name) or "Pythia and Llama models"), ""]
        body += table(["m shared", *paper.TABLE3_MODELS],
                      [["yes" if shared else "no", *[f"{c} / {h}" for c, h in zip(paper.TABLE3_C[key, shared],
                                                                                  paper.TABLE3_H[key, shared])]]
                       for shared in (False, True)])
    return run.summary("Capacity (Table 3, Figure 2)", body)
