"""The GxP leaderboard: one row per candidate model, quality with CIs next to cost and latency.

Plain Python (pandas + matplotlib); the `gxp_leaderboard` asset feeds it the latest scores and run
summaries from the results warehouse. Quality is measured over the batches a model answered
(scoring/gxp.py); a model whose calls failed shows "N of M calls failed" in its status and its
coverage beside the scores, and a model that answered nothing gets no scores and no rank.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from scoring.candidate_runner import failed_calls_note, is_outage
from synthetic.contracts import SPLITS

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure

# (column, split, metric) — what the leaderboard shows, in order.
QUALITY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("gxp1_f1", "benchmark", "gxp1_f1"),
    ("gxp2_micro_f1", "benchmark", "gxp2_micro_f1"),
    ("gxp2_macro_f1", "benchmark", "gxp2_macro_f1"),
    ("clean_fpr", "control_clean", "gxp1_fpr"),
    ("faulty_recall", "control_faulty", "gxp1_recall"),
    ("adversarial_recall", "adversarial", "adversarial_recall"),
    ("attack_success_rate", "adversarial", "attack_success_rate"),
    ("invalid_output_rate", "benchmark", "invalid_output_rate"),
    ("coverage", "benchmark", "coverage"),
)
SORT_BY = ("gxp2_micro_f1", "gxp1_f1")


def build_leaderboard(
    model_ids: list[str], scores: pd.DataFrame, prediction_runs: pd.DataFrame
) -> pd.DataFrame:
    """One row per model. `scores`: the warehouse's latest scores (model_id, split, metric, value,
    ci_low, ci_high, dataset_hash); `prediction_runs`: latest gxp_predictions run per (model_id,
    split) with status, detail and summary (dict with latency_p50_s, cost_usd, n_calls,
    n_failed_calls, ...). Scores of a split whose latest run answered no call are left out (an
    older score there is not this model's present state). `rank` is None for a model without any
    quality score."""
    rows = []
    for model_id in model_ids:
        row: dict = {"model_id": model_id}
        runs = (
            prediction_runs[prediction_runs["model_id"] == model_id]
            if len(prediction_runs)
            else prediction_runs
        )
        model_scores = scores[scores["model_id"] == model_id] if len(scores) else scores
        outage = [run["split"] for run in runs.to_dict("records")
                  if run.get("status") == "succeeded" and is_outage(_summary(run))]
        if len(model_scores) and outage:
            model_scores = model_scores[~model_scores["split"].isin(outage)]
        for column, split, metric in QUALITY_COLUMNS:
            hit = model_scores[
                (model_scores["split"] == split) & (model_scores["metric"] == metric)
            ]
            if len(hit):
                first = hit.iloc[0]
                row[column] = float(first["value"])
                row[f"{column}_ci"] = (float(first["ci_low"]), float(first["ci_high"]))
        normal = model_scores[
            (model_scores["split"] == "benchmark") & (model_scores["metric"] == "gxp2_micro_recall")
        ]
        if "adversarial_recall" in row and len(normal) and normal.iloc[0]["value"] > 0:
            # Share of its benchmark recall a model keeps when batches carry an injection.
            row["recall_kept"] = row["adversarial_recall"] / float(normal.iloc[0]["value"])
        row["status"] = _status(runs)
        benchmark = runs[runs["split"] == "benchmark"] if len(runs) else runs
        if len(benchmark) and benchmark.iloc[0]["status"] == "succeeded":
            summary = benchmark.iloc[0]["summary"]
            summary = summary if isinstance(summary, dict) else {}
            row["latency_p50_s"] = summary.get("latency_p50_s")
            row["latency_p95_s"] = summary.get("latency_p95_s")
            row["cost_usd"] = summary.get("cost_usd")
            row["batches"] = summary.get("n_batches")
        rows.append(row)
    table = pd.DataFrame(rows)
    present = [c for c in SORT_BY if c in table]
    if present:
        table = table.sort_values(present, ascending=False, na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    quality = [c for c, _, _ in QUALITY_COLUMNS if c in table and c != "coverage"]
    scored = table[quality].notna().any(axis=1) if quality else pd.Series(False, table.index)
    table.insert(0, "rank", scored.cumsum().astype("Int64").where(scored))
    return table


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    summary = run.get("summary")
    return summary if isinstance(summary, dict) else {}


def _status(runs: pd.DataFrame) -> str:
    """`audited k/n splits` (with `N of M calls failed` when calls failed; `outage: ...` when
    none was answered), else why the model was skipped, else `not run`."""
    if not len(runs):
        return "not run"
    succeeded = runs[runs["status"] == "succeeded"]
    if len(succeeded):
        summaries = [_summary(run) for run in succeeded.to_dict("records")]
        totals = {key: sum(int(s.get(key) or 0) for s in summaries)
                  for key in ("n_calls", "n_failed_calls")}
        note = failed_calls_note(totals)
        audited = f"audited {len(succeeded)}/{len(SPLITS)} splits"
        if note is None or is_outage(totals):
            return note or audited
        return f"{audited}; {note}"
    skipped = runs[runs["status"] == "skipped"]
    if len(skipped):
        return str(skipped.iloc[0]["detail"])
    return str(runs.iloc[0]["status"])


def _cell(value, ci=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if ci is None or not isinstance(ci, tuple):
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def leaderboard_markdown(table: pd.DataFrame) -> str:
    """Markdown table with 95% CIs in brackets."""
    headers = [
        "rank",
        "model",
        *[c for c, _, _ in QUALITY_COLUMNS],
        "recall_kept",
        "p50 s/batch",
        "cost USD",
        "status",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for position, row in enumerate(table.to_dict("records"), start=1):
        rank = row.get("rank", position) if "rank" in table else position
        cells = ["–" if rank is None or pd.isna(rank) else str(int(rank)), row["model_id"]]
        cells += [_cell(row.get(c), row.get(f"{c}_ci")) for c, _, _ in QUALITY_COLUMNS]
        latency, cost = row.get("latency_p50_s"), row.get("cost_usd")
        cells += [
            _cell(row.get("recall_kept")),
            _cell(latency),
            "–" if cost is None or pd.isna(cost) else f"{cost:.4f}",
            str(row.get("status", "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flatten_cis(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each (low, high) tuple column <col>_ci as <col>_ci_low and <col>_ci_high (for
    Parquet, CSV and JSON, which have no tuples)."""
    flat = table.copy()
    for column in [c for c in flat.columns if c.endswith("_ci")]:
        flat[column + "_low"] = flat[column].map(lambda v: v[0] if isinstance(v, tuple) else None)
        flat[column + "_high"] = flat[column].map(lambda v: v[1] if isinstance(v, tuple) else None)
        flat = flat.drop(columns=column)
    return flat


def leaderboard_json(table: pd.DataFrame) -> str:
    """A JSON array, one object per model in rank order; CIs as <col>_ci_low/_ci_high, missing
    values as null."""
    return json.dumps(json.loads(flatten_cis(table).to_json(orient="records")), indent=2)


def leaderboard_csv(table: pd.DataFrame) -> str:
    """CSV with a header row, one row per model in rank order; CIs as <col>_ci_low/_ci_high."""
    return flatten_cis(table).to_csv(index=False)


def leaderboard_plot(table: pd.DataFrame) -> bytes:
    """PNG of `leaderboard_figure` (110 dpi)."""
    from scoring.plots import figure_png

    return figure_png(leaderboard_figure(table), dpi=110)


def leaderboard_figure(table: pd.DataFrame) -> Figure:
    """GxP2 micro F1 (with CI) against cost and against p50 latency per batch, one point per
    scored model; the caller closes the figure."""
    from scoring.plots import pyplot

    plt = pyplot()
    scored = (
        table[table.get("gxp2_micro_f1", pd.Series(dtype=float)).notna()]
        if "gxp2_micro_f1" in table
        else table.iloc[0:0]
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for axis, column, label in (
        (axes[0], "cost_usd", "cost of the benchmark split (USD, +0.0001 for log scale)"),
        (axes[1], "latency_p50_s", "p50 latency per batch (s, log scale)"),
    ):
        for row in scored.to_dict("records"):
            x = (row.get(column) or 0.0) + (1e-4 if column == "cost_usd" else 1e-4)
            y = row["gxp2_micro_f1"]
            low, high = row.get("gxp2_micro_f1_ci", (y, y))
            axis.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4)
            axis.annotate(
                row["model_id"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8
            )
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel("GxP2 micro F1 on benchmark (95% CI)")
        axis.set_ylim(-0.05, 1.05)
        axis.grid(alpha=0.3)
    fig.suptitle("GxP audit: quality against cost and latency")
    return fig
