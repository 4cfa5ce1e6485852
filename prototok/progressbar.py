"""The encode progress bar, one look for local compute (`prototok encode`) and for a job on a
server (`prototok encode --server`, `Job.wait(progress=True)`): steps, loss, mean best
accuracy so far, chunks solved. tqdm only; no torch, so the thin client can use it.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


def encode_bar(total: int, file: TextIO | None = None) -> tqdm:
    """A bar on stderr that hides itself when stderr is not a terminal; shown on an explicit file."""
    return tqdm(total=total, desc="encode", unit="step", file=file or sys.stderr,
                disable=None if file is None else False, leave=False)


def show(bar: tqdm, step: int, loss: float | None, accuracy: float, done: int, chunks: int | None) -> None:
    """Move the bar to `step`; a step below the bar's means the next batch of chunks began."""
    if step < bar.n:
        bar.reset(total=bar.total)
    bar.update(step - bar.n)
    postfix = {"loss": f"{loss:.3f}"} if loss is not None else {}
    postfix.update(acc=f"{accuracy:.2f}", done=f"{done}/{chunks}" if chunks else str(done))
    bar.set_postfix(postfix, refresh=True)
