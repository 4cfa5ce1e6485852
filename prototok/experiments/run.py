"""One experiment run: its folder, model, texts and recipe, and the tasks that fill its results.csv.

A run is a list of *tasks*: a task is a piece of work (usually one `optimize` call over several
texts) that writes all its rows to `results.csv` at once, after saving any tensors it made under
`vectors/`. A task whose rows (and files) are already there is skipped, so an interrupted run
picks up where it stopped without redoing finished rows. The CSV column that names a row's
task is still `unit`, so results.csv files written before stay readable and resumable; in the
code "unit" is the core's word for rows trained jointly (`optimize.py`), hence "task" here.

`Run(...)` only holds things; `Run.open(...)` loads the model and `start()` touches the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..errors import InvalidInput
from ..models import LanguageModel, load_model
from ..recipe import RECIPES, Recipe
from ..results.provenance import machine, versions
from ..results.rows import ResultsCSV
from ..results.rows import read_rows as read_csv
from . import datasets, summary
from .arguments import Args
from .bar import RowsBar
from .prefixes import length_grid, prefixes
from .run_record import RunRecord
from .solving import Items, progress_text, solution_rows, solve
from .vectors import VectorFiles

BASE_COLUMNS = ["experiment", "model", "dataset", "unit", "kind", "setting", "text", "seed", "length",
                "accuracy", "c_tokens", "h_lm", "steps", "seconds"]
TASK_COLUMN = "unit"
TEXT_COLUMNS = ("unit", "setting", "model", "dataset", "experiment", "kind")  # read back as strings


def recipe_for(args: Args) -> Recipe:
    """The recipe preset named by --recipe, with --max-steps applied."""
    if args.recipe not in RECIPES:
        raise InvalidInput(f"unknown recipe '{args.recipe}' (choose from {', '.join(RECIPES)})")
    return RECIPES[args.recipe].with_(max_steps=args.max_steps)


def read_rows(csv_path: Path) -> list[dict]:
    """A results.csv as the experiments read it back (numbers parsed, labels kept as strings)."""
    return read_csv(csv_path, TEXT_COLUMNS)


class Run:
    """One experiment's output folder, its model, texts and recipe.

    Args:
        args: the command line; `args.name` is the experiment.
        out: the run folder (results.csv, vectors/, run.json, summary.md, figures).
        columns: the experiment's own CSV columns, after BASE_COLUMNS.
        lm: the model under test.
        recipe: the optimisation recipe (default: --recipe with --max-steps).
    """

    def __init__(self, args: Args, out: Path, columns: list[str], lm: LanguageModel, recipe: Recipe | None = None):
        self.args, self.out, self.lm = args, Path(out), lm
        self.recipe = recipe or recipe_for(args)
        self.cap = lm.max_length - 2  # longest prefix any arrangement fits in the context
        self.texts: list[datasets.Text] = []
        self.columns = BASE_COLUMNS + [c for c in columns if c not in BASE_COLUMNS]
        self.results = ResultsCSV(self.out / "results.csv", self.columns, TASK_COLUMN, TEXT_COLUMNS)
        self.vectors = VectorFiles(self.out / "vectors")
        self.record = RunRecord(self.out / "run.json")
        self.bar = RowsBar(args.name)

    @classmethod
    def open(cls, args: Args, out: Path, columns: list[str]) -> Run:
        """Load the model named by --model and start the run in `out` (an unknown recipe fails first)."""
        recipe = recipe_for(args)
        return cls(args, out, columns, load_model(args.model, args.device), recipe).start()

    def start(self) -> Run:
        """Make the folder, refuse one that holds another run, read finished rows, log this session."""
        self.vectors.folder.mkdir(parents=True, exist_ok=True)
        self.record.check_same(asdict(self.args))
        self.results.read()
        self.record.start(self._provenance())
        return self

    def close(self) -> None:
        self.bar.close()
        self.record.finish(self._provenance())

    # ---------------------------------------------------------------- inputs
    def lengths(self, default: list[int]) -> list[int]:
        """--lengths or the experiment's default grid, cut to what the model's context holds."""
        return length_grid(self.args.lengths, default, self.cap)

    def load_texts(self, min_tokens: int) -> list[datasets.Text]:
        self.texts = datasets.load(self.lm, self.args.dataset, self.args.texts, min_tokens, self.args.data_seed)
        return self.texts

    def prefixes(self, length: int, which: list[int] | None = None) -> Items:
        """(text index, first `length` token ids) of the texts that are long enough."""
        return prefixes([t.ids for t in self.texts], length, which)

    def seeds(self, default: int) -> int:
        return self.args.seeds or default

    # ---------------------------------------------------------------- tasks
    def task(self, key: str, n_rows: int, work: Callable[[], list[dict]], files: tuple[str, ...] = ()) -> list[dict]:
        """Run `work` unless its rows (and tensor files) are already stored; return its rows either way."""
        done = self.results.stored(key)
        if len(done) == n_rows and all(self.vectors.has(f) for f in files):
            self.bar.resumed(len(done))
            return done
        if done:  # a task cut short (or its tensors lost): drop its rows, then redo it
            self.results.drop(key)
        rows = [{"experiment": self.args.name, "model": self.lm.name, "dataset": self.args.dataset,
                 TASK_COLUMN: key, **r} for r in work()]
        self.results.append(rows)
        self.bar.done(len(rows))
        return rows

    def solve_task(self, key: str, items: Items, setting: str, save: bool = False,
                   frozen_m: torch.Tensor | None = None, extra: dict | None = None, **cfg) -> list[dict]:
        """One optimize() call over (text, ids) items as a resumable task; `save` keeps its vectors."""
        def work() -> list[dict]:
            sols = solve(self.lm, self.recipe, [q for _, q in items], frozen_m,
                         lambda p: self.bar.status(progress_text(p)), **cfg)
            if save:
                self.vectors.save(key, {k: torch.stack([s.vectors[k] for s in sols]) for k in sols[0].vectors})
            return solution_rows(self.lm, items, sols, setting, **(extra or {}))

        if not items:
            return []
        return self.task(key, len(items), work, files=(key,) if save else ())

    # ---------------------------------------------------------------- reports
    def summary(self, title: str, body: list[str]) -> Path:
        """summary.md: a header that says what ran where and when, then the experiment's sections."""
        head = summary.header(title, self.args, self.out, self.lm, self.recipe, len(self.texts))
        return summary.write(self.out / "summary.md", head, body)

    def _provenance(self) -> dict:
        """What run.json says about the run, rewritten at each session's start and end."""
        return {"command": self.args.command(self.out), "args": asdict(self.args), "model": self.lm.name,
                "recipe": self.recipe.to_dict(), "machine": machine(self.lm.device), "versions": versions()}
