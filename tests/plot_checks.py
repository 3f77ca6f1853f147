"""What a matplotlib figure drew, for the plot tests: bar heights per series, tick, legend and
axis texts, error-bar points (the PNG bytes alone say nothing about the chart)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

from matplotlib.axes import Axes
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@contextmanager
def drawn(fig: Figure) -> Iterator[Figure]:
    """`fig`, closed afterwards."""
    import matplotlib.pyplot as plt

    try:
        yield fig
    finally:
        plt.close(fig)


def bar_heights(axis: Axes) -> list[list[float | None]]:
    """Each bar series' heights, in drawing order (None for a NaN height: no bar)."""
    return [[None if math.isnan(bar.get_height()) else round(bar.get_height(), 6) for bar in c]
            for c in axis.containers if isinstance(c, BarContainer)]


def errorbar_points(axis: Axes) -> list[tuple[float, float]]:
    """The (x, y) of every marker drawn by errorbar, in drawing order (rounded to 6 places)."""
    found = []
    for container in axis.containers:
        if isinstance(container, ErrorbarContainer):
            xs, ys = container.lines[0].get_data()
            found += [(round(float(x), 6), round(float(y), 6))
                      for x, y in zip(xs, ys, strict=True)]
    return found


def xticks(axis: Axes) -> list[str]:
    return [t.get_text() for t in axis.get_xticklabels()]


def yticks(axis: Axes) -> list[str]:
    return [t.get_text() for t in axis.get_yticklabels()]


def legend(axis: Axes) -> list[str]:
    return [t.get_text() for t in axis.get_legend().get_texts()]


def annotations(axis: Axes) -> list[str]:
    return [t.get_text() for t in axis.texts]
