"""A results.csv that survives being stopped: rows are written a task at a time, read back on resume.

A *task* is a piece of work whose rows are appended in one write once it is done, under one
key (the file's `key` column). A run that is stopped and started again reads the file back,
keeps the tasks whose rows are all there, and redoes the others: `drop` removes the rows of
a task that was cut short. Values read back are numbers again where they parse as numbers
(except in `text_columns`), so resumed rows and fresh rows look alike.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path


class ResultsCSV:
    """One results.csv: the rows in memory, the file on disk, in step.

    Args:
        path: the CSV file; it need not exist yet.
        columns: the header, in order; a row may leave any of them out (written empty).
        key: the column that names each row's task.
        text_columns: columns read back as strings even when they look like numbers.
    """

    def __init__(self, path: Path, columns: list[str], key: str, text_columns: Iterable[str] = ()):
        self.path, self.columns, self.key = Path(path), list(columns), key
        self.text_columns = frozenset(text_columns) | {key}
        self.rows: list[dict] = []

    def read(self) -> list[dict]:
        """Load what an earlier session wrote (nothing if there is no file yet)."""
        self.rows = read_rows(self.path, self.text_columns) if self.path.exists() else []
        return self.rows

    def stored(self, key: str) -> list[dict]:
        """The rows of one task that are already in the file."""
        return [r for r in self.rows if r[self.key] == key]

    def append(self, rows: list[dict]) -> None:
        """Add a finished task's rows: one write to the file, so a kill leaves whole tasks or a cut last line."""
        self._write(rows, mode="a")
        self.rows += [parse_row(r, self.text_columns) for r in rows]

    def drop(self, key: str) -> None:
        """Forget a task (cut short, or its files lost) and rewrite the file without it."""
        self.rows = [r for r in self.rows if r[self.key] != key]
        self._write(self.rows, mode="w")

    def select(self, **match) -> list[dict]:
        """The rows whose columns equal every given value."""
        return [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]

    def _write(self, rows: list[dict], mode: str) -> None:
        """Append rows in one write (or rewrite the whole file with mode "w")."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, restval="")
        if mode == "w" or not self.path.exists():
            writer.writeheader()
        writer.writerows(rows)
        with self.path.open(mode, newline="") as f:
            f.write(buf.getvalue())


def read_rows(path: Path, text_columns: Iterable[str] = ()) -> list[dict]:
    """Every row of a CSV file, numbers parsed (see `parse_row`)."""
    keep = frozenset(text_columns)
    with Path(path).open(newline="") as f:
        return [parse_row(r, keep) for r in csv.DictReader(f)]


def parse_row(row: dict, text_columns: frozenset[str] | Iterable[str] = ()) -> dict:
    """CSV strings back to int or float where they parse, except in `text_columns`; "" stays ""."""
    keep = frozenset(text_columns)
    return {k: _number(v) if isinstance(v, str) and k not in keep else v for k, v in row.items()}


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value
