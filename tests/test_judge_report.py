"""judge_evaluations' tables: per-item rows from judgements, summaries checked by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from plot_checks import PNG_MAGIC, bar_heights, drawn, legend, xticks

from scoring.item_scores import ITEM_COLUMNS
from scoring.judge import JudgeScore
from scoring.judge_report import (
    judge_figure,
    judge_items,
    judge_plot,
    model_summary,
    summary_markdown,
    warehouse_scores,
)
from scoring.plots import grouped_bars_figure
from scoring.stats import bootstrap_ci

METRICS = ("clinical_accuracy", "safety_awareness")


def _score(case_id, scores, reward, correct, error=None):
    return JudgeScore(case_id=case_id, scores=scores, weighted_reward=reward, decision="Approve",
                      decision_correct=correct, justification="", judge="j", error=error,
                      format_reward=1.0)


def _items():
    scores = [
        _score("c1", {"clinical_accuracy": 5.0, "safety_awareness": 3.0}, 0.75, True),
        _score("c2", {"clinical_accuracy": 1.0, "safety_awareness": 5.0}, 0.5, False),
        _score("c3", {}, None, True, error="unusable judge answer (attempt 2): no JSON"),
    ]
    return judge_items("tuned", "base", "v1", scores, METRICS,
                       failed_answers={"c4": "answer call failed: HTTP 500"})


def test_items_follow_the_contract_and_keep_failures_explicit():
    items = _items()
    assert tuple(items.columns) == ITEM_COLUMNS
    assert set(items["item_id"]) == {"c1", "c2", "c3", "c4"}
    by = items.set_index(["item_id", "metric"])
    # a failed judgement: judge metrics and reward failed (never 0), decision still read
    assert by.loc[("c3", "weighted_reward"), "status"] == "failed"
    assert math.isnan(by.loc[("c3", "clinical_accuracy"), "value"])
    assert "unusable judge answer" in by.loc[("c3", "weighted_reward"), "detail"]
    assert by.loc[("c3", "decision_correct"), "value"] == 1.0
    # no answer at all: every metric failed, decision included
    assert (items[items["item_id"] == "c4"]["status"] == "failed").all()
    assert by.loc[("c2", "decision_correct"), "value"] == 0.0
    assert (items["model_id"] == "tuned").all() and (items["base_model_id"] == "base").all()


def test_summary_means_and_cis_match_a_direct_computation():
    summary = model_summary(_items(), n_boot=300, seed=3).set_index("metric")
    reward = summary.loc["weighted_reward"]
    assert (reward["n"], reward["failed"]) == (2, 2)
    assert reward["mean"] == pytest.approx(0.625)
    expected = bootstrap_ci(np.array([0.75, 0.5]), n_boot=300, seed=3)
    assert (reward["ci_low"], reward["ci_high"]) == pytest.approx((expected.low, expected.high))
    decision = summary.loc["decision_correct"]
    assert decision["mean"] == pytest.approx(2 / 3) and decision["n"] == 3
    rows = {row["metric"]: row for row in warehouse_scores(summary.reset_index(), "tuned")}
    assert rows["clinical_accuracy"]["value"] == pytest.approx(3.0)
    assert rows["clinical_accuracy"]["n"] == 2


def test_markdown_and_plot():
    summary = model_summary(_items(), n_boot=100)
    text = summary_markdown(summary, {"tuned": {"judge calls": 7}})
    assert "| tuned " in text and "judge calls" in text and "0.625 [" in text
    with drawn(judge_figure(summary)) as fig:
        axis = fig.axes[0]
        assert xticks(axis) == ["clinical_accuracy", "safety_awareness", "weighted_reward",
                                "decision_correct", "format_reward"]
        assert legend(axis) == ["tuned"]
        # 1-5 metrics (means 3 and 4) as (s - 1) / 4; the reward and rates as they are
        assert bar_heights(axis) == [[0.5, 0.75, 0.625, round(2 / 3, 6), 1.0]]
        assert axis.get_title() == "AMR judge: test split"
    assert judge_plot(summary).startswith(PNG_MAGIC)
    assert summary_markdown(summary.iloc[0:0], {}) == "no model was judged"


def test_grouped_bars_heights_order_and_error_bars():
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    frame = pd.DataFrame([
        {"model": "tuned", "metric": "b", "mean": 0.5, "ci_low": 0.25, "ci_high": 0.75},
        {"model": "tuned", "metric": "a", "mean": 0.9, "ci_low": math.nan, "ci_high": 1.0},
        {"model": "base", "metric": "a", "mean": math.nan, "ci_low": math.nan,
         "ci_high": math.nan}])
    fig = grouped_bars_figure(frame, group_col="metric", bar_col="model", title="t",
                              ylabel="y", labels={"a": "metric A"})
    try:
        axis = fig.axes[0]
        assert [t.get_text() for t in axis.get_xticklabels()] == ["b", "metric A"]
        assert [t.get_text() for t in axis.get_legend().get_texts()] == ["tuned", "base"]
        tuned, base = [c for c in axis.containers if isinstance(c, BarContainer)]
        assert [bar.get_height() for bar in tuned] == [0.5, 0.9]
        assert all(math.isnan(bar.get_height()) for bar in base)  # no row / NaN: no bar
        # error bars span ci_low..ci_high; a NaN bound draws none on its side
        segments = tuned.errorbar.lines[2][0].get_segments()
        assert [tuple(seg[:, 1]) for seg in segments] == [(0.25, 0.75), (0.9, 1.0)]
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match=r"field\(s\) \['ci_high'\] missing"):
        grouped_bars_figure(frame.drop(columns="ci_high"), group_col="metric", bar_col="model",
                            title="t", ylabel="y")
    with pytest.raises(ValueError, match="model 'tuned' field 'metric': 'b' occurs more than"):
        grouped_bars_figure(pd.concat([frame, frame.iloc[:1]]), group_col="metric",
                            bar_col="model", title="t", ylabel="y")
