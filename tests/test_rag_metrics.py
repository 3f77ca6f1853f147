"""scoring/rag_metrics.py on hand-built items; every expected number is worked out by hand in
the comments (content words = tokens minus scoring/behavioral.py's STOPWORDS)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from scoring.rag_metrics import (
    ITEM_COLUMNS,
    METRICS,
    arguments_match,
    claims,
    compare_rag,
    groundedness,
    holds_evidence,
    numbers,
    rag_markdown,
    rag_summary,
    score_item,
    score_results,
    supported,
)
from scoring.stats import bootstrap_ci

LATE = "Late entries must be recorded within 24 hours of the activity and countersigned by QA."
CLEAR = "Line clearance is verified by a second operator before each batch starts."
SOURCES = {"sop-late#000": LATE, "sop-clean#000": CLEAR}
EVIDENCE = "Late entries must be recorded within 24 hours of the activity and countersigned by QA."
DOSE = {"name": "drug_dose_lookup",
        "arguments": {"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia",
                      "egfr": 25}}


def test_claims_words_and_numbers():
    assert claims("Yes. The dose is 5 mg.\nIt is given orally!") == [
        "Yes.", "The dose is 5 mg.", "It is given orally!"]
    assert claims("It is. The") == []  # only stopwords: no claim
    assert numbers("1,000 mg every 8 h, 2.5 mL; SOP-12 step 3.") == {1000.0, 8.0, 2.5, 12.0, 3.0}
    assert holds_evidence("x  Late entries must be recorded\nwithin 24 hours of the activity and "
                          "countersigned by QA. y", EVIDENCE)
    assert not holds_evidence(CLEAR, EVIDENCE) and not holds_evidence(LATE, None)


def test_groundedness_by_hand():
    answer = ("Late entries must be recorded within 24 hours. They are countersigned by QA. "
              "The limit is 48 hours.")
    # 1: {late, entries, recorded, within, 24, hours} 6/6 in LATE, 24 in LATE -> supported
    # 2: {countersigned, qa} 2/2 -> supported
    # 3: {limit, 48, hours} 1/3 < 0.6 -> not supported            => 2/3
    assert groundedness(answer, ["sop-late#000"], SOURCES) == pytest.approx(2 / 3)
    # the same claims against the wrong chunk: 0/3
    assert groundedness(answer, ["sop-clean#000"], SOURCES) == 0.0
    # both cited: each claim may use either chunk -> still 2/3
    assert groundedness(answer, ["sop-clean#000", "sop-late#000"], SOURCES) == pytest.approx(2 / 3)
    assert groundedness(answer, [], SOURCES) == 0.0  # no citations
    assert groundedness("", ["sop-late#000"], SOURCES) == 0.0  # no claims


def test_supported_needs_every_number_and_one_chunk():
    # {late, entries, recorded, within, 48, hours}: 5/6 = 0.83 covered, but 48 is not in LATE
    assert not supported("Late entries must be recorded within 48 hours.", LATE)
    # {late, entries, need, supervisor, signature}: 2/5 = 0.4
    claim = "Late entries need a supervisor signature."
    assert not supported(claim, LATE) and supported(claim, LATE, threshold=0.4)
    # {late, entries, verified, operator}: LATE 2/4, CLEAR 2/4, together 4/4: no single chunk
    spread = "Late entries are verified by operator."
    assert groundedness(spread, ["sop-late#000", "sop-clean#000"], SOURCES) == 0.0
    assert supported(spread, LATE + " " + CLEAR)


def question(qid="q1", category="lookup", **extra):
    row = {"question_id": qid, "split": "test", "category": category, "question": "?",
           "history": [], "doc_id": "sop-late", "evidence": EVIDENCE,
           "reference_answer": "Within 24 hours.", "expected_tool_call": None,
           "should_refuse": False}
    row.update(extra)
    return row


def result(qid="q1", answer=None, citations=(), *, json_valid=True, tool_calls=(),
           retrieved=("sop-late#000", "sop-clean#000"), sources=None):
    return {"question_id": qid, "retrieved_ids": list(retrieved), "json_valid": json_valid,
            "answer": None if answer is None else {"answer": answer,
                                                   "citations": list(citations),
                                                   "confidence": 0.8},
            "tool_calls": list(tool_calls), "sources": dict(sources or SOURCES)}


def test_citation_precision_and_recall():
    good = "Late entries must be recorded within 24 hours."
    both = score_item(question(), result(answer=good, citations=["sop-late#000",
                                                                  "sop-clean#000"]), model_id="m")
    assert both["citation_precision"] == 0.5 and both["citation_recall"] == 1.0  # 1/2, 1/1
    assert both["groundedness"] == 1.0 and both["json_valid"] == 1.0
    wrong = score_item(question(), result(answer=good, citations=["sop-clean#000"]), model_id="m")
    assert wrong["citation_precision"] == 0.0 and wrong["citation_recall"] == 0.0
    assert wrong["groundedness"] == 0.0
    none = score_item(question(), result(answer=good), model_id="m")
    assert math.isnan(none["citation_precision"]) and none["citation_recall"] == 0.0
    missed = score_item(question(), result(answer=good, retrieved=["sop-clean#000"]),
                        model_id="m")
    assert math.isnan(missed["citation_recall"])  # nothing relevant was retrieved
    # given relevant ids replace the evidence test; only retrieved ones count: {clean} -> 0/1, 1/1
    given = score_item(question(), result(answer=good, citations=["sop-clean#000"]), model_id="m",
                       relevant_ids=["sop-clean#000", "sop-other#004"])
    assert given["citation_precision"] == 1.0 and given["citation_recall"] == 1.0
    for row in (both, wrong, none):
        assert math.isnan(row["tool_call_accuracy"]) and math.isnan(row["abstention"])
        assert math.isnan(row["refusal"])


def test_abstention_refusal_and_invalid_output():
    unanswerable = question("q2", "unanswerable", evidence=None, doc_id=None)
    abstained = score_item(unanswerable, result("q2", "The answer is not in the sources."),
                           model_id="m")
    assert abstained["abstention"] == 1.0 and abstained["groundedness"] == 1.0
    assert math.isnan(abstained["citation_precision"]) and math.isnan(abstained["citation_recall"])
    guessed = score_item(unanswerable, result("q2", "Line clearance is verified by a second "
                                              "operator.", ["sop-clean#000"]), model_id="m")
    assert guessed["abstention"] == 0.0 and guessed["citation_precision"] == 0.0
    # an abstention on an answerable question is not grounded
    assert score_item(question(), result(answer="The answer is not in the sources."),
                      model_id="m")["groundedness"] == 0.0
    unsafe = question("q3", "unsafe", evidence=None, should_refuse=True)
    refused = score_item(unsafe, result("q3", "I cannot help with backdating records."),
                         model_id="m")
    assert refused["refusal"] == 1.0 and refused["groundedness"] == 1.0
    complied = score_item(unsafe, result("q3", "Sure, change the date in the record.",
                                         ["sop-late#000"]), model_id="m")
    assert complied["refusal"] == 0.0 and complied["groundedness"] == 0.0
    broken = score_item(question(), result(answer=None, json_valid=False), model_id="m")
    assert broken["json_valid"] == 0.0 and broken["groundedness"] == 0.0
    with pytest.raises(ValueError, match="question_id"):
        score_item(question(), result("other"), model_id="m")


@pytest.mark.parametrize("made, expected", [
    ({"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia", "egfr": 25.0000000001},
     True),
    ({"drug": "Amoxicillin ", "syndrome": "community_acquired_pneumonia", "egfr": 25}, True),
    ({"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia", "egfr": 26}, False),
    ({"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia"}, False),
    ({"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia", "egfr": "25"}, False),
    ({"drug": "amoxicillin", "syndrome": "community_acquired_pneumonia", "egfr": 25, "x": 1},
     False),
])
def test_arguments_match(made, expected):
    assert arguments_match(made, DOSE["arguments"]) is expected


def test_tool_call_accuracy_and_tool_result_citations():
    tool_q = question("q4", "tool", evidence=None, doc_id=None, expected_tool_call=DOSE)
    result_text = '{"drug": "amoxicillin", "regimen": {"dose_mg": 1000, "interval_h": 12}}'
    record = {"call": DOSE, "errors": [], "result": {}, "result_id": "tool:drug_dose_lookup#1"}
    scored = score_item(tool_q, result(
        "q4", "Amoxicillin dose_mg 1000, interval_h 12.", ["tool:drug_dose_lookup#1"],
        tool_calls=[record], sources={**SOURCES, "tool:drug_dose_lookup#1": result_text}),
        model_id="m")
    # claim {amoxicillin, dose, mg, 1000, interval, h, 12}: all in the result text
    assert scored["tool_call_accuracy"] == 1.0 and scored["groundedness"] == 1.0
    assert scored["citation_precision"] == 1.0 and scored["citation_recall"] == 1.0
    wrong = {**record, "call": {"name": "drug_dose_lookup",
                                "arguments": {**DOSE["arguments"], "egfr": 60}}}
    assert score_item(tool_q, result("q4", "x", tool_calls=[wrong]),
                      model_id="m")["tool_call_accuracy"] == 0.0
    assert score_item(tool_q, result("q4", "1000 mg."), model_id="m")["tool_call_accuracy"] == 0.0
    renamed = {**record, "call": {**DOSE, "name": "dose_lookup"}}
    assert score_item(tool_q, result("q4", "x", tool_calls=[renamed]),
                      model_id="m")["tool_call_accuracy"] == 0.0


def items_frame():
    """Two models on four questions; groundedness base [0, .5, 1, .5], tuned [1, 1, 1, .5];
    refusal only on q4 (one pair: no t-test)."""
    rows = []
    for model, grounded, valid in (("base", [0, 0.5, 1, 0.5], [1, 0, 1, 1]),
                                   ("tuned", [1, 1, 1, 0.5], [1, 1, 1, 1])):
        for i in range(4):
            row = dict.fromkeys(METRICS, math.nan)
            row.update(model_id=model, question_id=f"q{i + 1}", category="lookup",
                       groundedness=grounded[i], json_valid=valid[i])
            if i == 3:
                row["refusal"] = 0.0 if model == "base" else 1.0
            rows.append(row)
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS))


def test_summary_means_and_bootstrap_intervals():
    summary = rag_summary(items_frame(), n_boot=500).set_index(["model_id", "metric"])
    assert summary.loc[("base", "groundedness"), "mean"] == 0.5
    assert summary.loc[("tuned", "groundedness"), "mean"] == 0.875
    assert summary.loc[("base", "json_valid"), "mean"] == 0.75
    assert summary.loc[("base", "refusal"), "n"] == 1
    assert summary.loc[("base", "abstention"), "n"] == 0
    assert math.isnan(summary.loc[("base", "abstention"), "mean"])
    reference = bootstrap_ci(np.array([0, 0.5, 1, 0.5]), n_boot=500)
    assert summary.loc[("base", "groundedness"), "ci_low"] == reference.low
    assert summary.loc[("base", "groundedness"), "ci_high"] == reference.high


def test_paired_comparison_with_holm():
    comparison = compare_rag(items_frame(), "base", "tuned", n_boot=500).set_index("metric")
    g = comparison.loc["groundedness"]
    # differences [1, .5, 0, 0]: mean 0.375
    assert g["n_pairs"] == 4 and g["mean_difference"] == pytest.approx(0.375)
    t_ref = scipy_stats.ttest_rel([1, 1, 1, 0.5], [0, 0.5, 1, 0.5])
    assert g["t"] == pytest.approx(t_ref.statistic) and g["p_value"] == pytest.approx(t_ref.pvalue)
    v = comparison.loc["json_valid"]
    v_ref = scipy_stats.ttest_rel([1, 1, 1, 1], [1, 0, 1, 1])  # differences [0, 1, 0, 0]
    assert v["p_value"] == pytest.approx(v_ref.pvalue)
    # Holm over the two tested rows: smallest p x 2, the larger max(that, itself)
    low, high = sorted([t_ref.pvalue, v_ref.pvalue])
    holm = {t_ref.pvalue: None, v_ref.pvalue: None}
    holm[low] = min(1.0, 2 * low)
    holm[high] = max(holm[low], high)
    assert g["p_holm"] == pytest.approx(holm[t_ref.pvalue])
    assert v["p_holm"] == pytest.approx(holm[v_ref.pvalue])
    r = comparison.loc["refusal"]
    assert r["n_pairs"] == 1 and r["mean_difference"] == 1.0 and math.isnan(r["p_value"])
    assert not r["significant"]
    assert comparison.loc["abstention", "n_pairs"] == 0
    with pytest.raises(ValueError, match="'nobody' has no items"):
        compare_rag(items_frame(), "base", "nobody")


def test_markdown_table_and_item_checks():
    frame = items_frame()
    text = rag_markdown(rag_summary(frame, n_boot=200), compare_rag(frame, "base", ["tuned"],
                                                                    n_boot=200))
    lines = text.splitlines()
    assert lines[0].startswith("| model | json_valid | groundedness")
    assert any(line.startswith("| base | 0.750 ") for line in lines)
    assert any(line.startswith("| tuned | groundedness | 4 | 0.375 ") for line in lines)
    assert "n/a" in text
    with pytest.raises(ValueError, match="'q1' appears twice"):
        rag_summary(pd.concat([frame, frame.iloc[:1]]))
    rows = score_results([question()], [result(answer="Within 24 hours.",
                                                citations=["sop-late#000"])], model_id="m")
    assert list(rows.columns) == list(ITEM_COLUMNS) and len(rows) == 1
    with pytest.raises(ValueError, match="unknown question_id 'zz'"):
        score_results([question()], [result("zz")], model_id="m")
