"""Leaderboard table: ranking, CIs, derived recall_kept, skipped models; what the plot draws."""

from __future__ import annotations

import csv
import io
import json
import math

import pandas as pd
import pytest
from plot_checks import PNG_MAGIC, annotations, drawn, errorbar_points

from scoring.leaderboard import (
    build_leaderboard,
    leaderboard_csv,
    leaderboard_figure,
    leaderboard_json,
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
    assert table["rank"].tolist()[:2] == [1, 2] and table["rank"].iloc[2:].isna().all()
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


def run_row(model_id: str, split: str, n_calls: int, n_failed: int) -> dict:
    return {"model_id": model_id, "split": split, "status": "succeeded", "detail": None,
            "summary": {"n_calls": n_calls, "n_failed_calls": n_failed, "latency_p50_s": 1.0,
                        "cost_usd": 0.0, "n_batches": n_calls}}


def outage_board() -> pd.DataFrame:
    """`up` answered everything; `flaky` lost 2 of 5 benchmark calls; `down` lost every call on
    both splits, and an older benchmark score of `down` is still in the warehouse."""
    scores = pd.DataFrame(
        score_rows("up", {("benchmark", "gxp2_micro_f1"): 0.7, ("benchmark", "gxp1_f1"): 0.8,
                          ("benchmark", "coverage"): 1.0})
        + score_rows("flaky", {("benchmark", "gxp2_micro_f1"): 0.9, ("benchmark", "gxp1_f1"): 0.9,
                               ("benchmark", "coverage"): 0.6})
        + score_rows("down", {("benchmark", "gxp2_micro_f1"): 0.0, ("benchmark", "gxp1_f1"): 0.0,
                              ("adversarial", "attack_success_rate"): 1.0})
    )
    runs = pd.DataFrame([run_row("up", "benchmark", 5, 0), run_row("flaky", "benchmark", 5, 2),
                         run_row("down", "benchmark", 5, 5), run_row("down", "adversarial", 4, 4)])
    return build_leaderboard(["down", "up", "flaky"], scores, runs)


def test_an_outage_is_not_ranked_and_a_partial_outage_shows_its_coverage():
    table = outage_board().set_index("model_id")
    assert table.loc["down", "status"] == "outage: 9 of 9 calls failed"
    assert pd.isna(table.loc["down", "rank"])
    assert pd.isna(table.loc["down", "gxp1_f1"])
    assert "attack_success_rate" not in table  # down's 1.000 came from no answer at all
    assert table.loc["flaky", "status"] == "audited 1/5 splits; 2 of 5 calls failed"
    assert (table.loc["flaky", "rank"], table.loc["up", "rank"]) == (1, 2)
    assert table.loc["flaky", "coverage"] == 0.6
    markdown = leaderboard_markdown(outage_board())
    [down] = [line for line in markdown.splitlines() if "| down |" in line]
    assert down.startswith("| – | down | – |") and "outage: 9 of 9 calls failed" in down
    assert "| coverage |" in markdown.splitlines()[0] + "|"


def test_json_and_csv_formats_parse_with_the_same_rows():
    table = outage_board()
    rows = json.loads(leaderboard_json(table))
    assert [row["model_id"] for row in rows] == ["flaky", "up", "down"]
    assert [row["rank"] for row in rows] == [1, 2, None]
    assert rows[0]["gxp1_f1"] == 0.9 and rows[0]["gxp1_f1_ci_low"] == pytest.approx(0.8)
    assert rows[2]["status"] == "outage: 9 of 9 calls failed" and rows[2]["gxp1_f1"] is None
    parsed = list(csv.DictReader(io.StringIO(leaderboard_csv(table))))
    assert [row["model_id"] for row in parsed] == ["flaky", "up", "down"]
    assert [row["rank"] for row in parsed] == ["1", "2", ""]
    assert float(parsed[1]["gxp1_f1_ci_high"]) == pytest.approx(0.9)
    assert parsed[0]["status"] == "audited 1/5 splits; 2 of 5 calls failed"
    assert set(parsed[0]) == set(rows[0])


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
