"""The results layer that experiments and benchmarks share (`prototok.results`), the run that
is built on it, the capacity walk, and the benchmark that walks lengths with it."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from prototok.errors import InvalidInput
from prototok.experiments.arguments import Args
from prototok.experiments.capacity import length_walk
from prototok.experiments.run import Run
from prototok.results import provenance, timing
from prototok.results.rows import ResultsCSV, read_rows
from prototok.results.stats import mean, mean_std, std
from prototok.results.tables import markdown_table, records_table

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["task", "setting", "text", "accuracy", "note"]


def test_results_csv_reads_back_what_it_wrote_as_numbers(tmp_path):
    csv = ResultsCSV(tmp_path / "results.csv", COLUMNS, key="task", text_columns=["setting"])
    csv.read()  # no file yet: nothing stored
    csv.append([{"task": "a", "setting": "007", "text": 0, "accuracy": 0.5},
                {"task": "a", "setting": "007", "text": 1, "accuracy": 1.0, "note": "x"}])
    csv.append([{"task": "1", "setting": "b", "text": 0, "accuracy": 0.25}])
    again = ResultsCSV(tmp_path / "results.csv", COLUMNS, key="task", text_columns=["setting"])
    assert [{k: v for k, v in r.items() if v != ""} for r in again.read()] == csv.rows  # fresh rows lack empty cells
    assert again.rows == [
        {"task": "a", "setting": "007", "text": 0, "accuracy": 0.5, "note": ""},  # text columns stay strings
        {"task": "a", "setting": "007", "text": 1, "accuracy": 1.0, "note": "x"},
        {"task": "1", "setting": "b", "text": 0, "accuracy": 0.25, "note": ""}]  # and so does the key
    assert [r["text"] for r in again.stored("a")] == [0, 1] and again.select(setting="b", text=0)[0]["task"] == "1"


def test_results_csv_drops_a_task_from_memory_and_file(tmp_path):
    csv = ResultsCSV(tmp_path / "results.csv", COLUMNS, key="task")
    csv.append([{"task": "a", "text": 0}])
    csv.append([{"task": "b", "text": 0}, {"task": "b", "text": 1}])
    csv.drop("a")
    assert (tmp_path / "results.csv").read_text().splitlines() == [
        "task,setting,text,accuracy,note", "b,,0,,", "b,,1,,"]
    assert csv.rows == [{"task": "b", "text": 0}, {"task": "b", "text": 1}] and csv.stored("a") == []
    assert read_rows(tmp_path / "results.csv", ["task"])[1] == {"task": "b", "setting": "", "text": 1, "accuracy": "",
                                                               "note": ""}


def test_markdown_tables():
    assert markdown_table(["a", 2], [[1, "x"], [0.5, ""]]) == ["| a | 2 |", "|---|---|", "| 1 | x |", "| 0.5 |  |"]
    assert records_table([{"n": 3, "s": 1 / 3}, {"n": 4}], ["n", "s"]).splitlines() == [
        "| n | s |", "|---|---|", "| 3 | 0.333 |", "| 4 |  |"]  # floats to 3 digits, a missing key empty


def test_mean_std_cells_skip_missing_values():
    assert mean_std([1.0, 1.0, ""]) == "1.00"  # every value agrees: no ±
    assert mean_std([0.8, 1.0]) == "0.90±0.10"
    assert mean_std([0.5, None, float("nan")], digits=1) == "0.5"
    assert mean_std(["", None]) == "-"
    assert mean([2, "", 4]) == 3.0 and std([7]) == 0.0
    assert math.isnan(mean(["", None]))  # no value present


def test_median_seconds_warms_up_then_times_each_call(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # start and end of the three timed calls
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    calls = []
    assert timing.median_seconds(lambda: calls.append(1), repeats=3, warmup=2, device=torch.device("cpu")) == 2.0
    assert len(calls) == 5


def test_cpu_name_and_machine(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t: fpu\n")
    assert provenance.cpu_name(tmp_path / "cpuinfo") == "Test CPU 9000"
    m = provenance.machine(torch.device("cpu"))
    assert list(m) == ["device", "device_name", "platform", "cpu", "cpu_count", "torch_threads", "hostname", "python"]
    assert m["device"] == "cpu" and m["device_name"] == f"CPU {provenance.cpu_name()}".strip()
    assert provenance.versions(("torch", "surely-not-installed-pkg")) == {"torch": torch.__version__,
                                                                        "surely-not-installed-pkg": None}


def test_length_walk_stops_each_text_at_its_first_failure():
    ids = [list(range(10)), list(range(10)), list(range(3))]
    capacity = {0: 4, 1: 1, 2: 8}  # text 2 passes everything it is long enough for
    asked = []

    def solve(n, items):
        asked.append((n, [i for i, _ in items]))
        assert all(len(q) == n for _, q in items)
        return [{"text": i, "ok": n <= capacity[i]} for i, _ in items]

    walk = list(length_walk(ids, [1, 2, 4, 8, 16], solve, lambda r: r["ok"]))
    assert asked == [(1, [0, 1, 2]), (2, [0, 1, 2]), (4, [0]), (8, [0])]  # text 2 is too short for 4
    assert [(n, stopped) for n, _, stopped in walk] == [(1, []), (2, [1]), (4, [2]), (8, [0])]
    assert [n for n, _, _ in length_walk(ids, [1, 2, 4], solve, lambda r: r["ok"], texts=[1])] == [1, 2]


def test_run_constructor_touches_nothing_until_start(tmp_path, tiny):
    args = Args(name="arrangements", model="tiny-llama", dataset="prose", texts=1, lengths=[2], seeds=1, max_steps=2)
    run = Run(args, tmp_path / "run", [], tiny)
    assert not (tmp_path / "run").exists() and run.recipe.max_steps == 2
    run.start()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["run.json", "vectors"]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert list(meta) == ["sessions", "command", "args", "model", "recipe", "machine", "versions"]
    assert "finished" not in meta["sessions"][-1]
    rows = run.task("t", 1, lambda: [{"kind": "timing", "setting": "s", "text": 0}])
    assert run.task("t", 1, lambda: pytest.fail("a finished task ran again")) == rows
    run.close()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["sessions"][-1]["finished"]
    with pytest.raises(InvalidInput):  # refused before any model loads
        Run.open(Args(**{**vars(args), "recipe": "nope", "model": "no-such-model"}), tmp_path / "other", [])


@pytest.fixture
def bench_longest(monkeypatch, tmp_path):
    """`bench.longest` with its results written under tmp_path (bench/ is not an installed package)."""
    monkeypatch.syspath_prepend(str(REPO))
    from bench import common, longest

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return longest


def test_bench_longest_walks_each_text_to_its_first_failure(bench_longest, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["longest", "--model", "tiny-llama", "--texts", "2", "--lengths", "1", "2", "4",
                                      "8", "--max-steps", "20"])
    bench_longest.main()
    [record] = json.loads((tmp_path / "longest.json").read_text())
    assert record["finished"] and list(record["machine"]) == [
        "date", "host", "platform", "cpu", "cores", "torch_threads", "gpu", "torch", "load_avg_1m", "cpu_bf16_flags"]
    for text in (0, 1):
        mine = [r for r in record["rows"] if r["text"] == text]
        assert [r["length"] for r in mine] == [1, 2, 4, 8][: len(mine)]  # in order, from the shortest
        assert all(r["lossless"] for r in mine[:-1])  # only the last may fail; after a failure the walk stops
        assert record["longest"][text] == max((r["length"] for r in mine if r["lossless"]), default=0)
    assert (tmp_path / "longest.md").read_text().startswith("# longest\n\n_Measured ")
