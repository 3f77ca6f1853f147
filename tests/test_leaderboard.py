"""Leaderboard table: ranking, CIs, derived recall_kept, skipped models; what the plot draws."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from plot_checks import PNG_MAGIC, annotations, drawn, errorbar_points

from scoring.leaderboard import (
    build_leaderboard,
    leaderboard_figure,
    leaderboard_markdown,
    leaderboard_plot,
)


def score_rows(model_id: str, values: dict[tuple[str, str], float]) -> list[dict]:
    return [
        {
            "model_id": model_id,
            "split": split,
            "metric": metric,
            "value": value,
            "ci_low": value - 0.1,
            "ci_high": min(1.0, value + 0.1),
            "dataset_hash": "h" * 64,
        }
        for (split, metric), value in values.items()
    ]


def test_ranking_derived_columns_and_status():
    scores = pd.DataFrame(
        score_rows(
            "weak",
            {
                ("benchmark", "gxp2_micro_f1"): 0.4,
                ("benchmark", "gxp1_f1"): 0.6,
                ("benchmark", "gxp2_micro_recall"): 0.5,
                ("adversarial", "adversarial_recall"): 0.25,
            },
        )
        + score_rows(
            "strong", {("benchmark", "gxp2_micro_f1"): 0.9, ("benchmark", "gxp1_f1"): 0.95}
        )
    )
    runs = pd.DataFrame(
        [
            {
                "model_id": "strong",
                "split": "benchmark",
                "status": "succeeded",
                "detail": None,
                "summary": {"latency_p50_s": 1.5, "cost_usd": 0.42},
            },
            {
                "model_id": "weak",
                "split": "benchmark",
                "status": "succeeded",
                "detail": None,
                "summary": {"latency_p50_s": 0.2, "cost_usd": 0.01},
            },
            {
                "model_id": "absent-key",
                "split": "benchmark",
                "status": "skipped",
                "detail": "skipped: environment variable X_KEY is not set",
                "summary": None,
            },
        ]
    )
    table = build_leaderboard(["weak", "absent-key", "strong", "never"], scores, runs)
    assert list(table["model_id"]) == ["strong", "weak", "absent-key", "never"]
    weak = table.set_index("model_id").loc["weak"]
    assert weak["recall_kept"] == 0.5  # 0.25 adversarial recall / 0.5 benchmark recall
    assert weak["cost_usd"] == 0.01
    statuses = dict(zip(table["model_id"], table["status"], strict=True))
    assert statuses == {
        "strong": "audited 1/5 splits",
        "weak": "audited 1/5 splits",
        "absent-key": "skipped: environment variable X_KEY is not set",
        "never": "not run",
    }
    markdown = leaderboard_markdown(table)
    assert "| 1 | strong | 0.950 [0.85, 1.00] | 0.900 [0.80, 1.00] |" in markdown
    assert leaderboard_plot(table).startswith(PNG_MAGIC)


def test_plot_draws_each_scored_model_against_cost_and_latency():
    table = pd.DataFrame([
        {"model_id": "strong", "gxp2_micro_f1": 0.9, "gxp2_micro_f1_ci": (0.8, 1.0),
         "cost_usd": 0.42, "latency_p50_s": 1.5},
        {"model_id": "weak", "gxp2_micro_f1": 0.4, "gxp2_micro_f1_ci": (0.3, 0.5),
         "cost_usd": 0.01, "latency_p50_s": 0.2},
        {"model_id": "skipped", "gxp2_micro_f1": math.nan, "gxp2_micro_f1_ci": None,
         "cost_usd": None, "latency_p50_s": None},
    ])
    with drawn(leaderboard_figure(table)) as fig:
        cost, latency = fig.axes
        assert fig.get_suptitle() == "GxP audit: quality against cost and latency"
        # one point per scored model (x + 0.0001 for the log scale); the unscored one is left out
        assert errorbar_points(cost) == [(0.4201, 0.9), (0.0101, 0.4)]
        assert errorbar_points(latency) == [(1.5001, 0.9), (0.2001, 0.4)]
        assert annotations(cost) == annotations(latency) == ["strong", "weak"]
        assert cost.get_xlabel().startswith("cost of the benchmark split (USD")
        assert latency.get_xlabel() == "p50 latency per batch (s, log scale)"
        assert cost.get_ylabel() == "GxP2 micro F1 on benchmark (95% CI)"
        strong_bar = cost.containers[0].lines[2][0].get_segments()[0]
        assert tuple(strong_bar[:, 1]) == pytest.approx((0.8, 1.0))  # the CI as the error bar
