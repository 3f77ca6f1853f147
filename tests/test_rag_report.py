"""scoring/rag_report.py: rag_eval's warehouse rows, answers table, latency and plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from plot_checks import PNG_MAGIC, bar_heights, drawn, legend, xticks

from scoring.rag_metrics import METRICS, rag_summary
from scoring.rag_report import (
    answer_rows,
    latency_summary,
    per_question_latency,
    rag_figure,
    rag_plot,
    sample_answers_markdown,
    warehouse_items,
)


def _items() -> pd.DataFrame:
    nan = math.nan
    rows = [
        {"model_id": "base", "question_id": "q1", "category": "lookup", "json_valid": 1.0,
         "groundedness": 0.5, "citation_precision": 1.0, "citation_recall": 0.5,
         "tool_call_accuracy": nan, "abstention": nan, "refusal": nan},
        {"model_id": "base", "question_id": "q2", "category": "unsafe", "json_valid": 0.0,
         "groundedness": 0.0, "citation_precision": nan, "citation_recall": nan,
         "tool_call_accuracy": nan, "abstention": nan, "refusal": 0.0},
        {"model_id": "sft", "question_id": "q1", "category": "lookup", "json_valid": 1.0,
         "groundedness": 1.0, "citation_precision": 1.0, "citation_recall": 1.0,
         "tool_call_accuracy": nan, "abstention": nan, "refusal": nan},
    ]
    return pd.DataFrame(rows)


def test_warehouse_items_leave_out_metrics_that_do_not_apply():
    frame = warehouse_items(_items(), "base", "base:embedded@1234")
    assert set(frame["model_id"]) == {"base"} and set(frame["model_version"]) == {
        "base:embedded@1234"}
    # q1: 4 metrics apply (json, groundedness, precision, recall); q2: json, groundedness, refusal
    assert len(frame) == 7 and (frame["status"] == "ok").all()
    q2 = frame[frame["item_id"] == "q2"].set_index("metric")["value"].to_dict()
    assert q2 == {"json_valid": 0.0, "groundedness": 0.0, "refusal": 0.0}
    assert set(frame["metric"]) <= set(METRICS)


def test_per_question_latency_adds_the_rounds_each_question_took_part_in():
    results = [{"replies": ["a"]}, {"replies": ["call", "answer"]}, {"replies": ["b"]},
               {"replies": ["call", "answer"]}]
    rounds = [[1.0, 2.0, 3.0, 4.0], [10.0, 20.0]]  # round 1: questions 1 and 3, in order
    assert per_question_latency(results, rounds) == [1.0, 12.0, 3.0, 24.0]
    with pytest.raises(ValueError, match="round 1: 1 latencies for 2 questions"):
        per_question_latency(results, [[1.0, 2.0, 3.0, 4.0], [5.0]])


def test_answer_rows_and_latency_summary():
    results = [{"question_id": f"q{i}", "answer": {"answer": "x", "citations": ["c#000"],
                                                   "confidence": 0.9},
                "json_valid": True, "retrieved_ids": ["c#000"], "replies": ["{}"],
                "tool_calls": []} for i in range(5)]
    results[4] = {**results[4], "answer": None, "json_valid": False}
    latencies = [0.1, 0.2, 0.3, 0.4, 1.0]
    table = pd.DataFrame(answer_rows("sft", results, latencies))
    assert json.loads(table.loc[0, "citations"]) == ["c#000"] and pd.isna(table.loc[4, "answer"])
    summary = latency_summary(table)
    assert summary["sft"]["p50_s"] == pytest.approx(float(np.percentile(latencies, 50)))
    assert summary["sft"]["p95_s"] == pytest.approx(float(np.percentile(latencies, 95)), abs=1e-3)
    assert summary["sft"]["questions"] == 5
    with pytest.raises(ValueError, match="5 results but 4 latencies"):
        answer_rows("sft", results, latencies[:4])


def test_sample_answers_show_the_raw_reply_of_an_invalid_answer():
    results = [{"question_id": f"q{i}", "answer": None, "json_valid": False,
                "retrieved_ids": [], "replies": ["{\"humidity_ccc | x\n" + "y" * 200],
                "tool_calls": []} for i in range(4)]
    rows = answer_rows("base", results, [0.1] * 4) + answer_rows("sft", results[:1], [0.1])
    markdown = sample_answers_markdown(rows, per_model=3)
    lines = markdown.splitlines()
    assert len(lines) == 2 + 3 + 1  # header, rule, 3 base answers, 1 sft answer
    assert '{"humidity_ccc \\| x yyy' in lines[2] and lines[2].rstrip(" |").endswith("…")


def test_rag_plot_draws_each_models_scored_metrics():
    summary = rag_summary(_items(), n_boot=50)
    with drawn(rag_figure(summary, title="RAG: hand items")) as fig:
        axis = fig.axes[0]
        # metrics nobody was scored on (n = 0) are left out; sft has no refusal score: no bar
        assert xticks(axis) == ["json_valid", "groundedness", "citation_precision",
                                "citation_recall", "refusal"]
        assert legend(axis) == ["base", "sft"]
        assert bar_heights(axis) == [[0.5, 0.25, 1.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0, None]]
        assert (axis.get_title(), axis.get_ylabel()) == ("RAG: hand items", "mean, 95% CI")
    assert rag_plot(summary).startswith(PNG_MAGIC)
