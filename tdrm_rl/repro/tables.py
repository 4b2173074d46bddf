"""Markdown tables and PNG curves for the offline tools and `tdrm-rl paper`."""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["mean_std", "fmt_mean_std", "markdown_table", "plot_lines"]


def mean_std(xs: Sequence[Optional[float]]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; 0 for a single value) of the finite values; NaN if there are none."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not vals:
        return math.nan, math.nan
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def fmt_mean_std(xs: Sequence[Optional[float]], digits: int = 3) -> str:
    m, s = mean_std(xs)
    if math.isnan(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_lines(curves: dict[str, tuple[Sequence[float], Sequence[float], Optional[Sequence[float]]]], path: str,
               title: str, xlabel: str, ylabel: str, logx: bool = False) -> str:
    """One line per name: (xs, means, stds or None); the std shows as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, (xs, ys, err) in curves.items():
        line, = ax.plot(xs, ys, marker="o", label=name)
        if err is not None:
            lo = [y - e for y, e in zip(ys, err)]
            hi = [y + e for y, e in zip(ys, err)]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
