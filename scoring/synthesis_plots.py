"""Plots of the synthesis report (matplotlib, Agg backend): `*_figure` draws (the caller closes
the figure), `*_plot` renders it as PNG bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from scoring.plots import figure_png, pyplot

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure


def pareto_plot(points: pd.DataFrame, *, cost_label: str, quality_label: str) -> bytes:
    """PNG of `pareto_figure`."""
    return figure_png(pareto_figure(points, cost_label=cost_label, quality_label=quality_label))


def delta_aqi_plot(deltas: pd.DataFrame) -> bytes:
    """PNG of `delta_aqi_figure`."""
    return figure_png(delta_aqi_figure(deltas))


def comparison_plot(comparisons: pd.DataFrame) -> bytes:
    """PNG of `comparison_figure`."""
    return figure_png(comparison_figure(comparisons))


def pareto_figure(points: pd.DataFrame, *, cost_label: str, quality_label: str) -> Figure:
    """Quality against cost, one point per model (error bars where quality_ci_low/high exist);
    the Pareto front (on_front) drawn as filled points joined by a step line.
    `points`: model_id, cost, quality, on_front [, quality_ci_low, quality_ci_high]."""
    plt = pyplot()
    shown = points[points["cost"].notna() & points["quality"].notna()]
    fig, axis = plt.subplots(figsize=(7.5, 4.4), constrained_layout=True)
    front_mask = shown["on_front"].fillna(False).astype(bool).to_numpy()
    for on_front, colour, label in ((False, "#999999", "dominated"), (True, "#c0392b", "front")):
        part = shown[front_mask == on_front]
        if part.empty:
            continue
        y = part["quality"].to_numpy(dtype=float)
        yerr = None
        if {"quality_ci_low", "quality_ci_high"} <= set(part.columns):
            low = part["quality_ci_low"].to_numpy(dtype=float)
            high = part["quality_ci_high"].to_numpy(dtype=float)
            yerr = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)]).clip(min=0)
        axis.errorbar(part["cost"], y, yerr=yerr, fmt="o", color=colour, capsize=3,
                      markerfacecolor=colour if on_front else "white", label=label)
    front = shown[front_mask].sort_values(["cost", "quality"])
    if len(front) > 1:
        axis.step(front["cost"], front["quality"], where="post", color="#c0392b", alpha=0.5)
    for row in shown.itertuples(index=False):
        axis.annotate(row.model_id, (row.cost, row.quality), textcoords="offset points",
                      xytext=(5, 4), fontsize=8)
    costs = shown["cost"].to_numpy(dtype=float)
    if len(costs) and costs.min() > 0 and costs.max() / costs.min() > 100:
        axis.set_xscale("log")
    axis.set_xlabel(cost_label)
    axis.set_ylabel(quality_label, fontsize=8)
    axis.set_title("Cost against quality: the Pareto front", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return fig


def delta_aqi_figure(deltas: pd.DataFrame) -> Figure:
    """Delta-AQI (tuned - base) per tuned model with its 95% CI as error bars, a line at 0.
    `deltas`: model_id, mean_diff, ci_low, ci_high [, significant]."""
    plt = pyplot()
    rows = deltas.reset_index(drop=True)
    fig, axis = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.6), constrained_layout=True)
    y = np.arange(len(rows))
    x = rows["mean_diff"].to_numpy(dtype=float)
    low = rows["ci_low"].to_numpy(dtype=float)
    high = rows["ci_high"].to_numpy(dtype=float)
    significant = (rows["significant"].fillna(False).astype(bool).to_numpy()
                   if "significant" in rows else np.zeros(len(rows), dtype=bool))
    for i in range(len(rows)):
        err = np.array([[np.nan_to_num(x[i] - low[i])], [np.nan_to_num(high[i] - x[i])]])
        axis.errorbar([x[i]], [y[i]], xerr=err.clip(min=0), fmt="o", capsize=4,
                      color="#c0392b" if significant[i] else "#555555")
    axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set_yticks(y, rows["model_id"].astype(str).tolist())
    axis.invert_yaxis()
    axis.set_xlabel("delta-AQI vs base (95% CI; red: CI excludes 0)")
    axis.set_title("Alignment quality change per tuned model", fontsize=10)
    axis.grid(alpha=0.3, axis="x")
    return fig


def comparison_figure(comparisons: pd.DataFrame) -> Figure:
    """Forest plot: each base-vs-tuned mean difference with its 95% CI, one panel per source;
    each difference is on its metric's own scale (e.g. judge 1-5 scores beside a 0-1 reward);
    red when significant."""
    plt = pyplot()
    sources = sorted(comparisons["source"].unique())
    heights = [max(1, int((comparisons["source"] == s).sum())) for s in sources]
    fig, axes = plt.subplots(len(sources), 1, figsize=(8, 0.32 * sum(heights) + 1.2 * len(sources)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False,
                             constrained_layout=True)
    for axis, source in zip(axes[:, 0], sources, strict=True):
        rows = comparisons[comparisons["source"] == source].sort_values(["model_id", "metric"])
        y = np.arange(len(rows))
        x = rows["mean_diff"].to_numpy(dtype=float)
        err = np.vstack([x - rows["ci_low"].to_numpy(dtype=float),
                         rows["ci_high"].to_numpy(dtype=float) - x]).clip(min=0)
        significant = (rows["significant"].fillna(False).astype(bool).to_numpy()
                       if "significant" in rows else np.zeros(len(rows), dtype=bool))
        for i in range(len(rows)):
            axis.errorbar([x[i]], [y[i]], xerr=err[:, i : i + 1], fmt="o", capsize=3,
                          color="#c0392b" if significant[i] else "#555555")
        axis.axvline(0.0, color="black", linewidth=0.8)
        labels = [f"{m} · {k}" for m, k in zip(rows["model_id"], rows["metric"], strict=True)]
        axis.set_yticks(y, labels, fontsize=7)
        axis.invert_yaxis()
        axis.set_title(f"{source}: tuned - base (95% CI; red: significant)", fontsize=9)
        axis.grid(alpha=0.3, axis="x")
    return fig
