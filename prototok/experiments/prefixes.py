"""Which prefixes of the texts a run optimises: the length grid and the prefixes at one length."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import InvalidInput


def length_grid(requested: list[int] | None, default: list[int], cap: int) -> list[int]:
    """--lengths or the experiment's default grid, sorted, cut to what the model's context holds (`cap`)."""
    lengths = sorted(set(requested or default))
    if any(n < 1 for n in lengths):
        raise InvalidInput("lengths must be >= 1")
    kept = [n for n in lengths if n <= cap]
    if not kept:
        raise InvalidInput(f"no length fits the model's context ({cap} tokens)")
    return kept


def prefixes(ids: Sequence[list[int]], length: int, which: Iterable[int] | None = None) -> list[tuple[int, list[int]]]:
    """(text index, first `length` token ids) of the texts (all, or `which`) that are long enough."""
    which = range(len(ids)) if which is None else which
    return [(i, ids[i][:length]) for i in which if len(ids[i]) >= length]
