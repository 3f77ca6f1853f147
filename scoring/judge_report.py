"""Tables and a plot of AMR judge results (the `judge_evaluations` asset's metadata and rows).

`judge_items` turns one model's `JudgeScore`s into the evaluation assets' long per-item frame
(model_id, base_model_id, model_version, item_id, metric, value, status, detail); `model_summary`
gives each model's means with percentile bootstrap CIs; `judge_plot` draws them. Plain Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scoring.judge import JudgeScore
from scoring.stats import bootstrap_ci

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure

# Per-answer values beside the six metrics: the weighted reward (None when the judge failed),
# whether the decision matched the reference, and the format reward (always computable).
REWARD, DECISION, FORMAT = "weighted_reward", "decision_correct", "format_reward"


def judge_items(model_id: str, base_model_id: str | None, model_version: str,
                scores: Sequence[JudgeScore], metric_names: Sequence[str],
                failed_answers: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (case, metric): the judge metrics and the weighted reward are `failed` (value
    NaN, the judge's error in `detail`) when the judgement failed; decision_correct and
    format_reward are read from the answer itself and are `ok` whenever there is an answer.
    `failed_answers` ({case_id: error}: the candidate gave no answer) get every metric failed."""
    rows: list[dict[str, Any]] = []
    for case_id, error in (failed_answers or {}).items():
        rows.extend(_row(case_id, metric, None, error)
                    for metric in (*metric_names, REWARD, DECISION, FORMAT))
    for score in scores:
        failed = score.weighted_reward is None
        judged = {**{name: score.scores.get(name) for name in metric_names},
                  REWARD: score.weighted_reward}
        for metric, value in judged.items():
            rows.append(_row(score.case_id, metric, None if failed else value,
                             score.error if failed else None))
        rows.append(_row(score.case_id, DECISION, float(score.decision_correct),
                         f"decision {score.decision or 'none'}"))
        rows.append(_row(score.case_id, FORMAT, float(score.format_reward), None))
    frame = pd.DataFrame(rows, columns=["item_id", "metric", "value", "status", "detail"])
    frame.insert(0, "model_version", model_version)
    frame.insert(0, "base_model_id", base_model_id)
    frame.insert(0, "model_id", model_id)
    return frame


def _row(item_id: str, metric: str, value: float | None, detail: str | None) -> dict[str, Any]:
    ok = value is not None and math.isfinite(value)
    return {"item_id": item_id, "metric": metric, "value": float(value) if ok else math.nan,
            "status": "ok" if ok else "failed", "detail": detail}


def model_summary(items: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per model and metric: n scored, n failed, mean and its 95% percentile bootstrap CI."""
    rows = []
    for (model_id, metric), group in items.groupby(["model_id", "metric"], sort=False):
        values = group.loc[group["status"] == "ok", "value"].to_numpy(dtype=float)
        ci = bootstrap_ci(values, n_boot=n_boot, seed=seed) if len(values) else None
        rows.append({"model_id": model_id, "metric": metric, "n": len(values),
                     "failed": int((group["status"] == "failed").sum()),
                     "mean": ci.estimate if ci else math.nan,
                     "ci_low": ci.low if ci else math.nan, "ci_high": ci.high if ci else math.nan})
    return pd.DataFrame(rows, columns=["model_id", "metric", "n", "failed", "mean", "ci_low",
                                       "ci_high"])


def warehouse_scores(summary: pd.DataFrame, model_id: str) -> list[dict[str, Any]]:
    """The warehouse `scores` rows of one model (metric, value, ci_low, ci_high, n)."""
    rows = summary[summary["model_id"] == model_id]
    return [{"metric": row.metric, "value": _finite(row.mean), "ci_low": _finite(row.ci_low),
             "ci_high": _finite(row.ci_high), "n": int(row.n)} for row in rows.itertuples()]


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def summary_markdown(summary: pd.DataFrame, extra: Mapping[str, Mapping[str, Any]]) -> str:
    """Models as rows, metrics as columns ("mean [low, high]"), then the `extra` columns (e.g.
    calls and cost per model)."""
    if summary.empty:
        return "no model was judged"
    cells = summary.assign(cell=[
        "n/a" if not math.isfinite(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
        for m, lo, hi in zip(summary["mean"], summary["ci_low"], summary["ci_high"], strict=True)])
    table = cells.pivot(index="model_id", columns="metric", values="cell")
    order = [m for m in (REWARD, DECISION) if m in table.columns]
    table = table[order + [c for c in table.columns if c not in order]]
    for column in next(iter(extra.values()), {}):
        table[column] = [extra.get(model, {}).get(column) for model in table.index]
    return table.reset_index().to_markdown(index=False)


def judge_plot(summary: pd.DataFrame) -> bytes:
    """PNG of `judge_figure`."""
    from scoring.plots import figure_png

    return figure_png(judge_figure(summary))


def judge_figure(summary: pd.DataFrame) -> Figure:
    """Per model, each metric's mean with its 95% CI (1-5 metrics rescaled to 0-1)."""
    from scoring.plots import grouped_bars_figure

    frame = summary[summary["n"] > 0].copy()
    # metrics scored 1-5 are shown as (s - 1) / 4, the share of the way to 5 (the reward's scale)
    one_to_five = ~frame["metric"].isin([REWARD, DECISION, FORMAT])
    for column in ("mean", "ci_low", "ci_high"):
        frame[column] = np.where(one_to_five, (frame[column] - 1) / 4, frame[column])
    return grouped_bars_figure(frame, group_col="metric", bar_col="model_id",
                               title="AMR judge: test split",
                               ylabel="mean (1-5 metrics as (s-1)/4), 95% CI")
