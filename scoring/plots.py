"""Report charts: grouped bars with 95% CI error bars (the evaluation assets' metadata plots).

matplotlib (Agg backend) is imported only when a chart is drawn (`pyplot`); `figure_png` renders
and closes a figure. Plain Python.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """`fig` as PNG bytes; the figure is closed, also when rendering fails."""
    plt = pyplot()
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def grouped_bars_figure(frame: pd.DataFrame, *, group_col: str, bar_col: str,
                        value_col: str = "mean", low_col: str = "ci_low",
                        high_col: str = "ci_high", title: str, ylabel: str,
                        labels: Mapping[Any, str] | None = None,
                        ylim: tuple[float, float] = (0.0, 1.05)) -> Figure:
    """A matplotlib figure: one group of bars per `group_col` value along the x axis (tick label
    `labels[value]`, else the value), in each one bar per `bar_col` value (the legend), of height
    `value_col` with an error bar from `low_col` to `high_col`.

    Groups and bars keep the order in which they first appear. A (group, bar) pair without a row,
    or with a NaN value, draws no bar; a NaN bound draws no error bar on that side. ValueError for
    a missing column or a (group, bar) pair given twice. The caller closes the figure.
    """
    missing = [c for c in (group_col, bar_col, value_col, low_col, high_col)
               if c not in frame.columns]
    if missing:
        raise ValueError(f"grouped_bars: field(s) {missing} missing; columns are "
                         f"{list(frame.columns)}")
    twice = frame[frame.duplicated([group_col, bar_col])]
    if not twice.empty:
        first = twice.iloc[0]
        raise ValueError(f"grouped_bars: {bar_col} {first[bar_col]!r} field {group_col!r}: "
                         f"{first[group_col]!r} occurs more than once")
    plt = pyplot()
    groups = list(dict.fromkeys(frame[group_col]))
    bars = list(dict.fromkeys(frame[bar_col]))
    width = 0.8 / max(1, len(bars))
    fig, axis = plt.subplots(figsize=(max(7.5, 0.6 * len(groups) * max(1, len(bars))), 3.8),
                             constrained_layout=True)
    for k, bar in enumerate(bars):
        part = frame[frame[bar_col] == bar].set_index(group_col).reindex(groups)
        values = part[value_col].astype(float).to_numpy()
        errors = np.vstack([values - part[low_col].astype(float).to_numpy(),
                            part[high_col].astype(float).to_numpy() - values])
        axis.bar(np.arange(len(groups)) + (k - (len(bars) - 1) / 2) * width, values, width,
                 yerr=np.clip(np.nan_to_num(errors), 0.0, None), capsize=3, label=str(bar))
    names = [str((labels or {}).get(group, group)) for group in groups]
    slanted = len(groups) > 4  # long metric names side by side would overlap
    axis.set_xticks(np.arange(len(groups)), names, fontsize=8, rotation=25 if slanted else 0,
                    ha="right" if slanted else "center")
    axis.set_ylim(*ylim)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    if bars:
        axis.legend(fontsize=8)
    return fig


def grouped_bars_png(frame: pd.DataFrame, *, group_col: str, bar_col: str,
                     value_col: str = "mean", low_col: str = "ci_low", high_col: str = "ci_high",
                     title: str, ylabel: str, labels: Mapping[Any, str] | None = None,
                     ylim: tuple[float, float] = (0.0, 1.05)) -> bytes:
    """`grouped_bars_figure` of the same arguments as PNG bytes (100 dpi)."""
    return figure_png(grouped_bars_figure(
        frame, group_col=group_col, bar_col=bar_col, value_col=value_col, low_col=low_col,
        high_col=high_col, title=title, ylabel=ylabel, labels=labels, ylim=ylim))


__all__ = ["figure_png", "grouped_bars_figure", "grouped_bars_png", "pyplot"]
