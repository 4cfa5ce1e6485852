"""PNG figures of results, drawn with matplotlib's Agg backend (no display needed).

One function, `figure`, draws one or more side-by-side panels; a panel is a `Panel` of
lines with a ±std band, scattered points (with group means as large markers, as in the
paper's Figure 2), or histograms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

Series = dict[str, tuple[list[float], list[float], list[float]]]  # label -> (x, mean, std)
Points = dict[str, tuple[list[float], list[float]]]  # label -> (x, y)


@dataclass
class Panel:
    xlabel: str
    ylabel: str
    lines: Series = field(default_factory=dict)
    points: Points = field(default_factory=dict)
    hists: dict[str, list[float]] = field(default_factory=dict)
    title: str = ""
    logx: bool = False
    logy: bool = False
    diagonal: bool = False  # y = x, for "one-step vs autoregressive" scatters
    hline: float | None = None


def figure(path: Path, title: str, panels: list[Panel]) -> Path:
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for label, (x, mean, std) in p.lines.items():
            x, mean, std = (np.asarray(v, dtype=float) for v in (x, mean, std))
            ax.plot(x, mean, marker="o", label=label)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
        for label, (x, y) in p.points.items():
            dots = ax.scatter(x, y, s=14, alpha=0.6, label=label)
            if len(x):
                ax.scatter([np.mean(x)], [np.mean(y)], s=120, color=dots.get_facecolor()[0], edgecolor="black")
        if p.hists:
            values = [v for v in p.hists.values() if len(v)]
            bins = np.histogram_bin_edges(np.concatenate(values), bins=20) if values else 10
            for label, v in p.hists.items():
                ax.hist(v, bins=bins, alpha=0.5, label=f"{label} (n={len(v)})")
        if p.diagonal:
            lo, hi = ax.get_xlim()[0], ax.get_xlim()[1]
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
        if p.hline is not None:
            ax.axhline(p.hline, color="gray", ls=":", lw=0.8)
        ax.set(xlabel=p.xlabel, ylabel=p.ylabel, title=p.title)
        if p.logx:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 16, not 2^4
        if p.logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
