"""The experiments' progress bar: rows done (texts x settings) and the time left, on stderr.

It exists from the start but shows nothing until `plan` says how many rows to expect, so
code that reports progress never has to ask whether a bar is open.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class RowsBar:
    """A tqdm bar counted in result rows, with a status line updated at most once a second."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None
        self._shown = 0.0

    def plan(self, total_rows: int) -> None:
        """Open the bar for this many rows."""
        self.bar = tqdm(total=total_rows, desc=self.desc, unit="row", file=sys.stderr, dynamic_ncols=True,
                        mininterval=1.0)
        self._shown = 0.0

    def replan(self, delta: int) -> None:
        """Change the planned rows (e.g. capacity stops at a text's first failure: delta < 0)."""
        if self.bar is not None:
            self.bar.total = max(self.bar.n, self.bar.total + delta)
            self.bar.refresh()

    def resumed(self, n_rows: int) -> None:
        """Count rows read back from disk as done, without letting them skew the rate."""
        if self.bar is not None:
            self.bar.n += n_rows
            self.bar.refresh()

    def done(self, n_rows: int) -> None:
        """Count rows just computed."""
        if self.bar is not None:
            self.bar.update(n_rows)

    def status(self, text: str) -> None:
        """Show what the current task is doing, at most once a second."""
        if self.bar is not None and time.monotonic() - self._shown > 1.0:
            self._shown = time.monotonic()
            self.bar.set_postfix_str(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
