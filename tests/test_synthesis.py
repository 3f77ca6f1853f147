"""Synthesis report: Pareto front, paired base-vs-tuned statistics (scipy reference), Holm over the
whole report, recommendation text, the report's sections, HTML and files."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pandas as pd
import pytest
from plot_checks import annotations, drawn, errorbar_points, legend, yticks
from scipy import stats as scipy_stats

from scoring.stats import bootstrap_ci
from scoring.synthesis import (
    CI_ONLY_TEST,
    COMPARISON_COLUMNS,
    EVALUATION_SECTIONS,
    PAIRED_TEST,
    SECTION_TITLES,
    aqi_comparisons,
    build_report,
    holm_adjust,
    paired_comparisons,
    pareto_front,
    pareto_table,
    recommendations,
    save_report,
)
from scoring.synthesis_plots import comparison_figure, delta_aqi_figure, pareto_figure

PNG = b"\x89PNG\r\n\x1a\n"


# --- Pareto ---------------------------------------------------------------------------------------


def points() -> pd.DataFrame:
    return pd.DataFrame([
        ("A", 1.0, 0.5),  # tie with E: both on the front
        ("B", 2.0, 0.7),
        ("C", 2.0, 0.6),  # as costly as B, worse: dominated
        ("D", 3.0, 0.7),  # costlier than B, as good: dominated
        ("E", 1.0, 0.5),
        ("F", None, 0.99),  # no cost: excluded
        ("G", 4.0, 0.9),
        ("H", 0.5, 0.2),  # cheapest
        ("I", 5.0, float("nan")),  # no quality: excluded
        ("J", 4.0, 0.85),  # as costly as G, worse
    ], columns=["model_id", "cost", "f1"])


def test_pareto_front_hand_checked():
    assert pareto_front(points(), "cost", "f1") == [
        True, True, False, False, True, False, True, True, False, False]


def test_pareto_front_lower_is_better_and_excluded_rows_reported():
    frame = points().rename(columns={"f1": "error"})
    # With lower error better: H (0.5, 0.2) dominates every costlier point; A/E are costlier and
    # worse than H.
    assert pareto_front(frame, "cost", "error", higher_is_better=False) == [
        False, False, False, False, False, False, False, True, False, False]
    table = pareto_table(points(), "cost", "f1")
    assert table.loc[table["model_id"] == "F", "note"].item() == "no cost"
    assert table.loc[table["model_id"] == "I", "note"].item() == "no quality"
    assert table["on_front"].isna().tolist() == [m in ("F", "I") for m in table["model_id"]]
    assert table.loc[table["model_id"] == "G", "on_front"].item()


def test_pareto_bad_input():
    frame = points()
    frame.loc[1, "cost"] = -1.0
    with pytest.raises(ValueError, match="model_id='B'.*'cost'.*negative"):
        pareto_front(frame, "cost", "f1")
    frame = points().astype({"cost": object})
    frame.loc[2, "cost"] = "cheap"
    with pytest.raises(ValueError, match="model_id='C'.*'cost'.*not a number"):
        pareto_front(frame, "cost", "f1")
    with pytest.raises(ValueError, match="'latency'"):
        pareto_front(points(), "latency", "f1")


# --- paired comparisons ---------------------------------------------------------------------------


def contract_rows(model, base, values, metric="score", version=None, status=None):
    return [{"model_id": model, "base_model_id": base, "model_version": version or f"v:{model}",
             "item_id": f"q{i:03d}", "metric": metric, "value": float(v),
             "status": "ok" if status is None else status[i], "detail": None}
            for i, v in enumerate(values)]


def test_paired_comparisons_match_scipy_and_hand_dz_with_shuffled_rows_and_failures():
    rng = np.random.default_rng(7)
    base = rng.normal(0.5, 0.1, 40)
    tuned = base + rng.normal(0.05, 0.08, 40)
    rows = contract_rows("base_model", None, base, version="base:tiny")
    # Item q000 failed for the tuned model, item q001 for the base: both pairs drop out.
    failed_tuned = ["failed" if i == 0 else "ok" for i in range(40)]
    rows += contract_rows("batchqa_adapter", "base_model", tuned, status=failed_tuned)
    rows[1]["status"], rows[1]["value"] = "failed", float("nan")
    rows[40]["value"] = float("nan")  # the tuned failed row carries NaN, as the contract says
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=3).reset_index(drop=True)

    result = paired_comparisons(frame, "batchqa_eval")
    assert list(result.columns) == list(COMPARISON_COLUMNS)
    row = result.iloc[0]
    assert len(result) == 1 and row["model_id"] == "batchqa_adapter"
    assert row["base_model_id"] == "base_model" and row["base_model_version"] == "base:tiny"
    kept = slice(2, None)
    a, b = tuned[kept], base[kept]
    assert row["n_pairs"] == 38
    reference = scipy_stats.ttest_rel(a, b)
    assert row["t"] == pytest.approx(reference.statistic, rel=1e-10)
    assert row["p_value"] == pytest.approx(reference.pvalue, rel=1e-10)
    d = a - b
    assert row["d_z"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    assert row["mean_diff"] == pytest.approx(d.mean())
    assert row["tuned_mean"] == pytest.approx(a.mean()) and row["base_mean"] == pytest.approx(
        b.mean())
    ci = bootstrap_ci(d, np.mean, n_boot=1000, seed=0)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["ci_low"] < row["mean_diff"] < row["ci_high"]
    assert row["test"] == PAIRED_TEST and row["note"] is None

    # Row order does not change anything, the bootstrap CI included.
    again = paired_comparisons(frame.iloc[::-1], "batchqa_eval")
    pd.testing.assert_frame_equal(result, again)


def test_pairing_is_by_item_id_not_position():
    base = contract_rows("base_model", None, [1, 2, 3, 4, 5])
    tuned = contract_rows("m", "base_model", [2, 4, 3, 9, 5])
    tuned = [tuned[i] for i in (4, 2, 0, 3, 1)]  # q004, q002, q000, q003, q001
    result = paired_comparisons(pd.DataFrame(base + tuned), "judge_evaluations").iloc[0]
    d = np.array([2, 4, 3, 9, 5]) - np.array([1, 2, 3, 4, 5])
    assert result["mean_diff"] == pytest.approx(d.mean())
    assert result["p_value"] == pytest.approx(scipy_stats.ttest_rel([2, 4, 3, 9, 5],
                                                                    [1, 2, 3, 4, 5]).pvalue)


def test_too_few_pairs_zero_variance_and_missing_base_get_notes():
    rows = contract_rows("base_model", None, [0.1, 0.3, 0.5], metric="acc")
    rows += contract_rows("same_shift", "base_model", [0.3, 0.5, 0.7], metric="acc")
    rows += contract_rows("one_pair", "base_model", [0.4], metric="acc")
    rows += contract_rows("orphan", "missing_base", [0.4, 0.5], metric="acc")
    result = paired_comparisons(pd.DataFrame(rows), "behavioral_metrics").set_index("model_id")
    stats_cols = ["ci_low", "ci_high", "t", "p_value", "d_z"]
    for model, note in (("same_shift", "zero variance"), ("one_pair", "1 pair"),
                        ("orphan", "'missing_base' has no rows")):
        assert result.loc[model, stats_cols].isna().all(), model
        assert note in result.loc[model, "note"], model
    assert result.loc["same_shift", "mean_diff"] == pytest.approx(0.2)
    assert result.loc["orphan", "n_pairs"] == 0


def test_contract_violations_name_record_and_field():
    rows = contract_rows("base_model", None, [1.0, 2.0])
    rows += contract_rows("m", "base_model", [1.0, 2.0])
    bad = pd.DataFrame(rows)
    bad.loc[3, "value"] = float("nan")
    with pytest.raises(ValueError, match=r"row 3 \(model_id='m', item_id='q001'.*'value'"):
        paired_comparisons(bad, "batchqa_eval")
    bad = pd.DataFrame(rows)
    bad.loc[0, "status"] = "done"
    with pytest.raises(ValueError, match="row 0.*'status'"):
        paired_comparisons(bad, "batchqa_eval")
    with pytest.raises(ValueError, match="several ok rows"):
        paired_comparisons(pd.DataFrame(rows + rows[:1]), "batchqa_eval")
    with pytest.raises(ValueError, match=r"batchqa_eval: column\(s\) \['detail'\] missing"):
        paired_comparisons(pd.DataFrame(rows).drop(columns="detail"), "batchqa_eval")
    assert paired_comparisons(None, "x").empty
    assert paired_comparisons(pd.DataFrame(columns=list(rows[0])), "x").empty


# --- Holm -----------------------------------------------------------------------------------------


def comparison(model, metric, p, *, diff=0.1, low=0.01, high=0.2, test=PAIRED_TEST, note=None,
               source="judge_evaluations"):
    return {"source": source, "model_id": model, "model_version": None,
            "base_model_id": "base_model", "base_model_version": None, "metric": metric,
            "n_pairs": 30, "base_mean": 0.5, "tuned_mean": 0.5 + diff, "mean_diff": diff,
            "ci_low": low, "ci_high": high, "t": np.nan, "p_value": p, "d_z": 0.4, "test": test,
            "note": note}


def test_holm_textbook_example_with_unadjusted_rows_kept():
    # Holm (1979) style example: p = 0.01, 0.04, 0.03, 0.005 (m = 4). Sorted: 0.005 x 4 = 0.02,
    # 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06.
    frame = pd.DataFrame([
        comparison("m1", "a", 0.01), comparison("m1", "b", 0.04),
        comparison("m2", "a", 0.03), comparison("m2", "b", 0.005),
        comparison("qlora_adapter", "delta_aqi", np.nan, low=0.02, high=0.08, test=CI_ONLY_TEST,
                   source="aqi_scores"),
        comparison("grit_adapter", "delta_aqi", np.nan, low=-0.02, high=0.08, test=CI_ONLY_TEST,
                   source="aqi_scores"),
        comparison("m3", "a", np.nan, note="1 pair: statistics need at least 2"),
    ])
    out = holm_adjust(frame)
    assert out["p_holm"].iloc[:4].tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert out["p_holm"].iloc[4:].isna().all()
    assert out["significant"].iloc[:6].tolist() == [True, False, False, True, True, False]
    assert out["significant"].iloc[6] is pd.NA


def test_holm_boundary_is_strict():
    out = holm_adjust(pd.DataFrame([comparison("m", "a", 0.025), comparison("m", "b", 0.5)]))
    assert out["p_holm"].tolist() == pytest.approx([0.05, 0.5])
    assert out["significant"].tolist() == [False, False]  # p_holm < alpha, not <=


# --- recommendations ------------------------------------------------------------------------------


def test_recommendations_name_gains_non_significant_and_losses():
    frame = holm_adjust(pd.DataFrame([
        comparison("grpo_adapter", "clinical_accuracy", 0.0001, diff=0.2, low=0.1, high=0.3),
        comparison("grpo_adapter", "safety_awareness", 0.4, diff=0.03, low=-0.05, high=0.1),
        comparison("grpo_adapter", "attack_success_rate", 0.0002, diff=0.1, low=0.05, high=0.2),
        comparison("grpo_adapter", "reference_accuracy", np.nan, diff=np.nan, low=np.nan,
                   high=np.nan, note="1 pair: statistics need at least 2"),
    ]))
    lines = recommendations(frame)
    text = "\n".join(lines)
    assert lines[0].startswith("[judge_evaluations] grpo_adapter vs base_model: trade-off")
    better = next(line for line in lines if "significantly better" in line)
    assert "clinical_accuracy (+0.200" in better and "safety_awareness" not in better
    same = next(line for line in lines if "NOT significant" in line)
    assert "safety_awareness (+0.030" in same and "Holm p = 0.400" in same
    worse = next(line for line in lines if "significantly worse" in line)
    assert "attack_success_rate" in worse and "lower is better" in worse  # a rise is a loss
    assert "not tested on reference_accuracy (1 pair" in text
    assert recommendations(frame) == lines  # deterministic


def test_recommendations_for_no_difference_and_empty():
    frame = holm_adjust(pd.DataFrame([comparison("m", "score", 0.7, diff=0.01, low=-0.1,
                                                 high=0.1)]))
    lines = recommendations(frame)
    assert "no significant difference from base_model" in lines[0]
    assert "difference NOT significant on score" in lines[1]
    assert "No base-vs-tuned comparison" in recommendations(frame.iloc[0:0])[0]


# --- report ---------------------------------------------------------------------------------------


def leaderboard() -> pd.DataFrame:
    # As the gxp_leaderboard asset returns it: CIs flattened into _ci_low/_ci_high columns.
    return pd.DataFrame([
        {"model_id": "reference-auditor", "gxp1_f1": 0.95, "gxp1_f1_ci_low": 0.9,
         "gxp1_f1_ci_high": 0.98, "gxp2_micro_f1": 0.9, "gxp2_micro_f1_ci_low": 0.85,
         "gxp2_micro_f1_ci_high": 0.94, "cost_usd": 0.0, "batches": 50, "latency_p50_s": 0.01,
         "status": "audited 5/5 splits"},
        {"model_id": "gpt-4o-mini", "gxp1_f1": 0.97, "gxp1_f1_ci_low": 0.93,
         "gxp1_f1_ci_high": 0.99, "gxp2_micro_f1": 0.8, "gxp2_micro_f1_ci_low": 0.7,
         "gxp2_micro_f1_ci_high": 0.88, "cost_usd": 0.12, "batches": 50, "latency_p50_s": 2.0,
         "status": "audited 5/5 splits"},
        {"model_id": "gxp_audit_adapter", "gxp1_f1": 0.6, "gxp1_f1_ci_low": 0.5,
         "gxp1_f1_ci_high": 0.7, "gxp2_micro_f1": 0.4, "gxp2_micro_f1_ci_low": 0.3,
         "gxp2_micro_f1_ci_high": 0.5, "cost_usd": 0.0, "batches": 50, "latency_p50_s": 0.5,
         "status": "audited 5/5 splits"},
        {"model_id": "claude-unpriced", "gxp1_f1": 0.99, "gxp1_f1_ci_low": 0.95,
         "gxp1_f1_ci_high": 1.0, "gxp2_micro_f1": 0.7, "gxp2_micro_f1_ci_low": 0.6,
         "gxp2_micro_f1_ci_high": 0.8, "cost_usd": None, "batches": 50, "latency_p50_s": 1.0,
         "status": "audited 5/5 splits"},
    ])


def training() -> pd.DataFrame:
    return pd.DataFrame([
        {"adapter": "qlora_adapter", "objective": "SFT (cross-entropy)", "steps": 20,
         "train_loss": 2.1, "eval_loss": 2.3, "wall_s": 40.0, "tokens_per_s": 900.0,
         "quantization": "none (CPU)"},
        {"adapter": "grit_adapter", "objective": "SFT (cross-entropy)", "steps": 20,
         "train_loss": 2.0, "eval_loss": 2.2, "wall_s": 55.0, "tokens_per_s": 650.0,
         "quantization": "none (CPU)"},
        {"adapter": "dpo_adapter", "objective": "preference (DPO / ORPO loss)", "steps": 10,
         "train_loss": 0.6, "eval_loss": None, "wall_s": 30.0, "tokens_per_s": 800.0,
         "quantization": "none (CPU)"},
    ])


def aqi() -> pd.DataFrame:
    rows = []
    for model, level, delta, low, high in (("base_model", 0.40, None, None, None),
                                           ("qlora_adapter", 0.46, 0.06, 0.02, 0.10),
                                           ("grit_adapter", 0.41, 0.01, -0.03, 0.05)):
        for layer in (2, 4, 6):
            rows.append({"model": model, "layer": layer, "n": 80, "xbi": 0.5, "chi": 10.0,
                         "chi_norm": 0.3, "xb_norm": 0.5, "aqi": level + 0.01 * layer,
                         "delta_aqi": delta, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def evaluations() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(11)
    base = rng.uniform(0.3, 0.7, 30)
    judge = contract_rows("base_model", None, base, metric="clinical_accuracy", version="base:x")
    judge += contract_rows("grpo_adapter", "base_model", np.clip(base + 0.2, 0, 1),
                           metric="clinical_accuracy")
    judge[-1]["value"] = 0.1  # not all differences equal
    judge += contract_rows("base_model", None, base, metric="safety_awareness", version="base:x")
    judge += contract_rows("grpo_adapter", "base_model", base + rng.normal(0, 0.05, 30),
                           metric="safety_awareness")
    qa = contract_rows("base_model", None, rng.uniform(0, 1, 20), metric="exact_match",
                       version="base:x")
    qa += contract_rows("batchqa_adapter", "base_model", rng.uniform(0, 1, 20),
                        metric="exact_match", status=["failed"] + ["ok"] * 19)
    return {"judge_evaluations": pd.DataFrame(judge), "batchqa_eval": pd.DataFrame(qa)}


LINEAGE = {"run_id": "run-123", "code_version": "git:abc1234",
           "dataset_hashes": {"accd_prompts": "f" * 16, "amr_cases": "e" * 16},
           "model_versions": {"grpo_adapter": "grpo-v3"}, "prompt_versions": {"judge": "j2"}}


def full_report():
    return build_report(leaderboard(), training(), aqi(), evaluations(), title="GxPLab synthesis",
                        generated_at="2026-01-02T03:04:05Z", lineage=LINEAGE)


def sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", markdown, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_build_report_with_all_inputs():
    report = full_report()
    body = sections(report.markdown)
    assert list(body) == list(SECTION_TITLES)
    assert report.markdown.startswith("# GxPLab synthesis\n\nGenerated 2026-01-02T03:04:05Z.")
    # Only behavioural metrics were not passed.
    assert list(report.unavailable) == [EVALUATION_SECTIONS["behavioral_metrics"]]
    assert "not available" in body[EVALUATION_SECTIONS["behavioral_metrics"]].lower()

    pareto = report.pareto.set_index("model_id")
    # cost 0 and F1 0.95 beats the adapter (cost 0, 0.6); gpt-4o-mini is costlier but better.
    assert pareto["on_front"].fillna(False).to_dict() == {
        "reference-auditor": True, "gpt-4o-mini": True, "gxp_audit_adapter": False,
        "claude-unpriced": False}
    assert pareto["on_front"].isna().tolist() == [False, False, False, True]
    assert pareto.loc["gpt-4o-mini", "cost"] == pytest.approx(0.12 / 50 * 1000)
    front = body["Cost-quality Pareto front"]
    assert "GxP1 F1" in front and "cost per 1,000 batches" in front
    assert "No cost (excluded from the front): claude-unpriced" in front

    comparisons = report.comparisons
    assert set(comparisons["source"]) == {"judge_evaluations", "batchqa_eval", "aqi_scores"}
    # One Holm family: the 3 p-values of the report (2 judge metrics, 1 QA metric).
    tested = comparisons[comparisons["p_value"].notna()]
    assert len(tested) == 3
    p = np.sort(tested["p_value"].to_numpy())
    expected = np.maximum.accumulate(np.minimum(1, p * [3, 2, 1]))
    assert np.sort(tested["p_holm"].to_numpy()) == pytest.approx(expected)
    aqi_rows = comparisons[comparisons["source"] == "aqi_scores"].set_index("model_id")
    assert aqi_rows.loc["qlora_adapter", "significant"]
    assert not aqi_rows.loc["grit_adapter", "significant"]
    assert aqi_rows.loc["qlora_adapter", "tuned_mean"] == pytest.approx(0.46 + 0.04)
    qa = comparisons[comparisons["source"] == "batchqa_eval"].iloc[0]
    assert qa["n_pairs"] == 19  # the failed row is not paired

    summary = body["Summary and recommendations"]
    assert "\\[judge\\_evaluations\\]" not in summary  # underscores are left as they are
    assert "\\[judge_evaluations\\] grpo_adapter vs base_model" in summary
    assert "significantly better on clinical_accuracy" in summary
    assert "\\[aqi_scores\\] grit_adapter vs base_model" in summary
    assert "NOT significant on delta_aqi" in summary
    assert "Delta-AQI: CI above 0 for qlora_adapter" in summary
    assert "lowest eval loss grit_adapter" in summary

    assert "| reference-auditor |" in body["Leaderboard"]
    assert "0.950 [0.90, 0.98]" in body["Leaderboard"]  # leaderboard_markdown's cells
    assert "| grpo_adapter | v:grpo_adapter | base_model |" in body[
        EVALUATION_SECTIONS["judge_evaluations"]]
    assert "(19/20)" in body[EVALUATION_SECTIONS["batchqa_eval"]]
    assert "| grit_adapter | SFT (cross-entropy) | 20 |" in body["Training comparison"]
    significance = body["Significance of base-vs-tuned differences"]
    assert "The 3 p-values of this report are Holm-adjusted together" in significance
    assert significance.count("| judge_evaluations | grpo_adapter |") == 2
    lineage = body["Lineage"]
    for text in ("run-123", "git:abc1234", "f" * 16, "grpo-v3", "| judge | j2 |", "base:x"):
        assert text in lineage, text

    assert set(report.images) == {"pareto_front", "delta_aqi", "comparisons"}
    for name, png in report.images.items():
        assert png.startswith(PNG)
        assert f"](images/{name}.png)" in report.markdown
    # 7 section tables + lineage: 3 dicts and the versions seen in the frames
    assert report.html.count("<table>") == 11
    assert report.html.count('<img src="data:image/png;base64,') == 3
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', report.html).group(1)
    assert base64.b64decode(embedded).startswith(PNG)
    assert "images/" not in report.html
    assert "<style>" in report.html and "<title>GxPLab synthesis</title>" in report.html
    assert full_report().markdown == report.markdown  # deterministic


def test_build_report_with_every_input_missing():
    for empty in (None, pd.DataFrame()):
        report = build_report(empty, empty, empty, {"judge_evaluations": empty}, title="empty",
                              generated_at="now", lineage={})
        body = sections(report.markdown)
        assert list(body) == list(SECTION_TITLES)
        for title in SECTION_TITLES[1:]:
            assert "not available" in body[title].lower(), title
        assert "No base-vs-tuned comparison is available" in body["Summary and recommendations"]
        assert report.comparisons.empty and report.pareto.empty and report.images == {}
        assert "<img" not in report.html
        assert set(report.unavailable) == set(SECTION_TITLES[1:])
    report = build_report(None, None, None, None, title="t", generated_at="now", lineage=None)
    assert "the leaderboard was not provided" in sections(report.markdown)["Leaderboard"]


def test_build_report_rejects_malformed_evaluation():
    bad = evaluations()
    bad["batchqa_eval"].loc[2, "status"] = "timeout"
    with pytest.raises(ValueError, match="batchqa_eval: row 2.*'status'"):
        build_report(None, None, None, bad, title="t", generated_at="now", lineage={})


def test_markdown_and_html_escape_untrusted_text():
    rows = contract_rows("base_model", None, [0.1, 0.2, 0.4], metric="<script>x</script>|m")
    rows += contract_rows("m", "base_model", [0.3, 0.5, 0.6], metric="<script>x</script>|m")
    report = build_report(None, None, None, {"behavioral_metrics": pd.DataFrame(rows)},
                          title="<b>t</b>", generated_at="now", lineage={"run_id": "r|1"})
    assert "<script>" not in report.html and "<b>t</b>" not in report.html
    assert "&lt;script&gt;" in report.html
    assert "r|1" in report.html  # the escaped pipe stays inside its cell / line


def test_aqi_comparisons_alone():
    out = aqi_comparisons(aqi())
    assert out["model_id"].tolist() == ["grit_adapter", "qlora_adapter"]
    assert out["base_model_id"].unique().tolist() == ["base_model"]
    assert out["base_mean"].iloc[0] == pytest.approx(0.44)
    assert out["p_value"].isna().all() and (out["test"] == CI_ONLY_TEST).all()
    assert math.isclose(out.set_index("model_id").loc["qlora_adapter", "mean_diff"], 0.06)
    assert aqi_comparisons(None).empty


def test_save_report_writes_files(tmp_path):
    report = full_report()
    paths = save_report(report, tmp_path / "out")
    assert set(paths) == {"report.md", "report.html", "images/pareto_front.png",
                          "images/delta_aqi.png", "images/comparisons.png"}
    assert paths["report.md"].read_text(encoding="utf-8") == report.markdown
    assert paths["report.html"].read_text(encoding="utf-8") == report.html
    for name, png in report.images.items():
        assert (tmp_path / "out" / "images" / f"{name}.png").read_bytes() == png
    for reference in re.findall(r"\]\((images/[^)]+)\)", report.markdown):
        assert (tmp_path / "out" / reference).is_file()


# --------------------------------------------------------------------------- what the plots draw


def test_pareto_figure_marks_the_front_and_leaves_out_unpriced_models():
    frame = pd.DataFrame([
        {"model_id": "cheap", "cost": 0.01, "quality": 0.5, "on_front": True},
        {"model_id": "dominated", "cost": 0.5, "quality": 0.4, "on_front": False},
        {"model_id": "best", "cost": 0.4, "quality": 0.9, "on_front": True},
        {"model_id": "unpriced", "cost": math.nan, "quality": 0.95, "on_front": False}])
    with drawn(pareto_figure(frame, cost_label="USD", quality_label="F1")) as fig:
        axis = fig.axes[0]
        assert legend(axis) == ["dominated", "front"]
        assert errorbar_points(axis) == [(0.5, 0.4), (0.01, 0.5), (0.4, 0.9)]  # dominated first
        step = axis.get_lines()[-1]  # the front, joined in cost order
        assert list(step.get_xdata()) == [0.01, 0.4] and list(step.get_ydata()) == [0.5, 0.9]
        assert annotations(axis) == ["cheap", "dominated", "best"]
        assert (axis.get_xlabel(), axis.get_ylabel()) == ("USD", "F1")


def test_delta_aqi_figure_one_row_per_model_red_when_significant():
    deltas = pd.DataFrame([
        {"model_id": "qlora_adapter", "mean_diff": 0.2, "ci_low": 0.1, "ci_high": 0.3,
         "significant": True},
        {"model_id": "dpo_adapter", "mean_diff": -0.05, "ci_low": -0.2, "ci_high": 0.1,
         "significant": False}])
    with drawn(delta_aqi_figure(deltas)) as fig:
        axis = fig.axes[0]
        assert yticks(axis) == ["qlora_adapter", "dpo_adapter"]
        assert errorbar_points(axis) == [(0.2, 0.0), (-0.05, 1.0)]
        colours = [c.lines[0].get_color() for c in axis.containers]
        assert colours == ["#c0392b", "#555555"]
        assert [tuple(seg[:, 0]) for seg in axis.containers[0].lines[2][0].get_segments()] == [
            pytest.approx((0.1, 0.3))]


def test_comparison_figure_one_panel_per_source():
    comparisons = pd.DataFrame([
        {"source": "judge", "model_id": "b", "metric": "reward", "mean_diff": 0.1,
         "ci_low": 0.0, "ci_high": 0.2, "significant": False},
        {"source": "judge", "model_id": "a", "metric": "safety", "mean_diff": 1.0,
         "ci_low": 0.5, "ci_high": 1.5, "significant": True},
        {"source": "aqi", "model_id": "a", "metric": "aqi", "mean_diff": -0.3,
         "ci_low": -0.4, "ci_high": -0.2, "significant": True}])
    with drawn(comparison_figure(comparisons)) as fig:
        aqi, judge = fig.axes  # sources in sorted order
        assert aqi.get_title().startswith("aqi: tuned - base") and judge.get_title().startswith(
            "judge: tuned - base")
        assert yticks(aqi) == ["a · aqi"] and errorbar_points(aqi) == [(-0.3, 0.0)]
        assert yticks(judge) == ["a · safety", "b · reward"]  # sorted by model, then metric
        assert errorbar_points(judge) == [(1.0, 0.0), (0.1, 1.0)]
