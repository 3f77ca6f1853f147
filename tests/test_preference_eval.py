"""Held-out preference scoring (training/preference_eval.py) and the learning probe's pairs."""

from __future__ import annotations

import math

import pytest

from training.learning_probe import mismatched_pairs
from training.preference_eval import (
    accuracy_summary,
    log_odds,
    mcnemar_exact_p,
    preference_outcomes,
    wilson_interval,
)


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(15, 15)
    assert low == pytest.approx(0.7961, abs=1e-4) and high == 1.0
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    with pytest.raises(ValueError, match="n must be >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(3, 2)


def test_mcnemar_counts_only_discordant_pairs() -> None:
    assert mcnemar_exact_p([True] * 5, [True] * 5) == 1.0
    # 6 gained, 0 lost: 2 * 0.5**6
    assert mcnemar_exact_p([True] * 6 + [False], [False] * 6 + [False]) == pytest.approx(2 / 64)
    assert mcnemar_exact_p([True, False], [False, True]) == 1.0
    with pytest.raises(ValueError, match="2 tuned vs 1 base"):
        mcnemar_exact_p([True, False], [True])


def test_log_odds_is_logit_of_the_mean_probability() -> None:
    assert log_odds(math.log(0.5)) == pytest.approx(0.0, abs=1e-12)
    assert log_odds(math.log(0.2)) == pytest.approx(math.log(0.2 / 0.8))
    assert math.isfinite(log_odds(0.0))  # p = 1 is clamped, not infinite


def test_dpo_outcome_uses_the_reward_and_orpo_the_policy_alone() -> None:
    policy = {"chosen_sum": [-10.0, -10.0], "rejected_sum": [-12.0, -8.0],
              "chosen_mean": [-1.0, -1.0], "rejected_mean": [-2.0, -0.5]}
    reference = {"chosen_sum": [-11.0, -12.0], "rejected_sum": [-11.0, -7.0],
                 "chosen_mean": [-1.1, -1.2], "rejected_mean": [-1.1, -0.4]}
    base = reference
    dpo = preference_outcomes("dpo", 0.1, policy, reference, base)
    # pair 0: +1 vs -1 -> right; pair 1: +2 vs -1 -> right
    assert dpo["tuned"] == [True, True]
    orpo = preference_outcomes("orpo", 0.1, policy, reference, base)
    assert orpo["tuned"] == [True, False]  # pair 1's rejected answer is likelier
    assert dpo["base"] == orpo["base"] == [False, False]
    with pytest.raises(ValueError, match="dpo or orpo"):
        preference_outcomes("kto", 0.1, policy, reference, base)
    summary = accuracy_summary(orpo["tuned"], "x")
    assert summary["x_accuracy"] == 0.5 and summary["x_pairs"] == 2


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


def test_mismatched_pairs_take_the_next_answer_of_another_kind() -> None:
    rows = [_chat("q1", "a1"), _chat("q2", "a2"), _chat("q3", "a3")]
    pairs = mismatched_pairs(rows, ["code", "code", "status"])
    assert [p["rejected"][0]["content"] for p in pairs] == ["a3", "a3", "a1"]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "q1"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "a1"}]
    assert mismatched_pairs(rows, ["code"] * 3) == []
    with pytest.raises(ValueError, match="3 rows but 2 kinds"):
        mismatched_pairs(rows, ["a", "b"])
