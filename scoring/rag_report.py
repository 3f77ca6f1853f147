"""rag_eval's outputs: the per-item metrics in the warehouse's long form, the answers table, the
plot, and latency per model. Plain Python: no Dagster."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scoring.rag_metrics import METRICS

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure


def warehouse_items(items: pd.DataFrame, model_id: str, model_version: str) -> pd.DataFrame:
    """One model's rows of score_results in the evaluation contract's long form (item_id,
    metric, value, status, detail): a metric that does not apply to a question (NaN) is left
    out, not stored as a failure."""
    rows = []
    for row in items[items["model_id"] == model_id].itertuples(index=False):
        for metric in METRICS:
            value = getattr(row, metric)
            if value is not None and math.isfinite(value):
                rows.append({"item_id": row.question_id, "metric": metric,
                             "value": float(value), "status": "ok",
                             "detail": row.category})
    frame = pd.DataFrame(rows, columns=["item_id", "metric", "value", "status", "detail"])
    frame.insert(0, "model_version", model_version)
    frame.insert(0, "model_id", model_id)
    return frame


def answer_rows(model_id: str, results: Sequence[Mapping[str, Any]],
                latencies: Sequence[float]) -> list[dict[str, Any]]:
    """One row per question: the final answer, citations, confidence, tool calls, every raw
    reply (JSON text) and the summed latency of its calls, for the stored table."""
    if len(results) != len(latencies):
        raise ValueError(f"{model_id}: {len(results)} results but {len(latencies)} latencies")
    rows = []
    for result, latency in zip(results, latencies, strict=True):
        answer = result.get("answer") or {}
        rows.append({
            "model_id": model_id, "question_id": result["question_id"],
            "answer": answer.get("answer"), "citations": json.dumps(answer.get("citations", [])),
            "confidence": answer.get("confidence"), "json_valid": bool(result["json_valid"]),
            "retrieved_ids": json.dumps(result["retrieved_ids"]),
            "tool_calls": json.dumps([c["call"] for c in result.get("tool_calls") or []],
                                     default=str),
            "replies": json.dumps(result["replies"]), "latency_s": float(latency)})
    return rows


def sample_answers_markdown(answers: Any, per_model: int = 3, width: int = 120) -> str:
    """The first `per_model` answers of each model as a Markdown table, with the model's last raw
    reply (cut to `width` characters, one line) beside the parsed answer: an invalid reply has
    no parsed answer, and its text is what shows why."""
    table = pd.DataFrame(answers).groupby("model_id", sort=False).head(per_model)
    last = [(json.loads(replies) or [""])[-1] for replies in table["replies"]]
    table = table.assign(reply=[_one_line(text, width) for text in last])
    return table[["model_id", "question_id", "json_valid", "answer", "citations",
                  "reply"]].to_markdown(index=False)


def _one_line(text: str, width: int) -> str:
    line = " ".join(str(text).split()).replace("|", "\\|")
    return line if len(line) <= width else line[: width - 1] + "…"


def per_question_latency(results: Sequence[Mapping[str, Any]],
                         rounds: Sequence[Sequence[float]]) -> list[float]:
    """Each question's latency from the per-round latencies of answer_questions' `generate`
    calls: round r holds the questions with more than r replies, in question order."""
    totals = [0.0] * len(results)
    for r, latencies in enumerate(rounds):
        members = [i for i, result in enumerate(results) if len(result["replies"]) > r]
        if len(members) != len(latencies):
            raise ValueError(f"round {r}: {len(latencies)} latencies for {len(members)} "
                             "questions with a reply in that round")
        for i, latency in zip(members, latencies, strict=True):
            totals[i] += latency
    return totals


def latency_summary(answers: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per model: p50 and p95 seconds per question (all rounds of its calls) and the count."""
    out = {}
    for model_id, group in answers.groupby("model_id", sort=False):
        values = group["latency_s"].to_numpy(dtype=float)
        out[str(model_id)] = {"p50_s": round(float(np.percentile(values, 50)), 3),
                              "p95_s": round(float(np.percentile(values, 95)), 3),
                              "questions": int(len(values))}
    return out


def rag_plot(summary: pd.DataFrame, title: str = "RAG evaluation: test split") -> bytes:
    """PNG of `rag_figure`."""
    from scoring.plots import figure_png

    return figure_png(rag_figure(summary, title))


def rag_figure(summary: pd.DataFrame, title: str = "RAG evaluation: test split") -> Figure:
    """Per metric, each model's mean with its 95% bootstrap CI (every metric is 0-1)."""
    from scoring.plots import grouped_bars_figure

    return grouped_bars_figure(summary[summary["n"] > 0], group_col="metric",
                               bar_col="model_id", title=title, ylabel="mean, 95% CI")
