"""Leaderboard table: ranking, CIs, derived recall_kept, skipped models; the plot renders."""

from __future__ import annotations

import pandas as pd

from scoring.leaderboard import build_leaderboard, leaderboard_markdown, leaderboard_plot


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
    png = leaderboard_plot(table)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
