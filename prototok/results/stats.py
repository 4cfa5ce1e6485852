"""Aggregates over result rows, where a missing value ("" or None in a CSV, or NaN) is skipped."""

from __future__ import annotations

import math
import statistics


def _clean(values: list) -> list[float]:
    return [float(v) for v in values if v not in (None, "") and not math.isnan(float(v))]


def mean(values: list) -> float:
    """Mean of the values present; NaN when none is."""
    values = _clean(values)
    return statistics.fmean(values) if values else float("nan")


def std(values: list) -> float:
    """Population standard deviation of the values present; 0 for fewer than two."""
    values = _clean(values)
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def series(xs: list, values: list[list]) -> tuple[list, list[float], list[float]]:
    """(x, mean, std) of a line with a band: one list of values per x."""
    return list(xs), [mean(v) for v in values], [std(v) for v in values]


def mean_std(values: list, digits: int = 2) -> str:
    """The paper's cell format: "0.97±0.15", or "1.00" when every value agrees, "-" when none is present."""
    if not _clean(values):
        return "-"
    m, s = mean(values), std(values)
    return f"{m:.{digits}f}" if round(s, digits) == 0 else f"{m:.{digits}f}±{s:.{digits}f}"
