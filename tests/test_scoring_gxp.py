"""scoring.gxp: hand-computed cases, scikit-learn references, bootstrap behaviour and the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from scoring.gxp import ADVERSARIAL, HEADLINE, NO_TYPE, main, score_predictions
from synthetic.catalog import load_catalog
from synthetic.contracts import CALL_FAILED

SLUGS = load_catalog().slugs
# Three batches: B1 = R1..R4, B2 = R5..R8, B3 = R9, R10 (clean).
RECORDS = pd.DataFrame({
    "record_id": [f"R{i}" for i in range(1, 11)],
    "batch_id": ["B1"] * 4 + ["B2"] * 4 + ["B3"] * 2,
})
# Four deviations on three records (R5 carries two types).
MANIFEST = pd.DataFrame({
    "record_id": ["R1", "R2", "R5", "R5"],
    "batch_id": ["B1", "B1", "B2", "B2"],
    "deviation_type": ["missing_quantity", "negative_quantity", "zero_duration",
                       "future_timestamp"],
    "prompt_injection": [False] * 4,
})


def predictions(findings, audited=("B1", "B2", "B3"), invalid=(), failed=()):
    """Prediction rows: (batch_id, record_id, deviation_type) findings, plus one null row for each
    audited batch without a finding; batches in `invalid` get valid_output False, batches in
    `failed` (whose model call failed) valid_output False and call_failed True."""
    rows = [{"batch_id": b, "record_id": r, "deviation_type": t} for b, r, t in findings]
    with_findings = {b for b, _, _ in findings}
    rows += [{"batch_id": b, "record_id": None, "deviation_type": None}
             for b in audited if b not in with_findings]
    frame = pd.DataFrame(rows, columns=["batch_id", "record_id", "deviation_type"])
    frame.insert(0, "model_id", "model-a")
    frame["valid_output"] = ~frame["batch_id"].isin([*invalid, *failed])
    if failed:
        frame[CALL_FAILED] = frame["batch_id"].isin(failed)
    return frame


def values(scores):
    return {name: metric.value for name, metric in scores.metrics.items()}


def score(findings, n_boot=0, **kwargs):
    return score_predictions(MANIFEST, predictions(findings, **kwargs), RECORDS, n_boot=n_boot)


def test_perfect_predictions_score_one():
    perfect = [("B1", "R1", "missing_quantity"), ("B1", "R2", "negative_quantity"),
               ("B2", "R5", "zero_duration"), ("B2", "R5", "future_timestamp")]
    v = values(score(perfect))
    for name in ("gxp1_precision", "gxp1_recall", "gxp1_f1", "gxp1_specificity",
                 "gxp2_micro_precision", "gxp2_micro_recall", "gxp2_micro_f1", "gxp2_macro_f1",
                 "coverage"):
        assert v[name] == 1.0, name
    assert v["gxp1_fpr"] == 0.0 and v["invalid_output_rate"] == 0.0
    assert list(v) == list(HEADLINE)  # no injection rows: no adversarial metrics


def test_empty_predictions_give_zero_recall_and_zero_coverage():
    scores = score_predictions(MANIFEST, predictions([], audited=()), RECORDS, n_boot=0)
    v = values(scores)
    assert v["gxp1_recall"] == 0.0 and v["gxp1_precision"] == 0.0  # 0/0 reported as 0
    assert v["gxp1_fpr"] == 0.0 and v["gxp1_specificity"] == 1.0  # 7 clean records, none flagged
    assert v["coverage"] == 0.0 and v["invalid_output_rate"] == 0.0
    assert scores.counts["n_batches_unanswered"] == 3
    counts = scores.counts
    assert (counts["gxp1_tp"], counts["gxp1_fn"], counts["gxp1_tn"]) == (0, 3, 7)


def test_partial_predictions_hand_computed():
    findings = [("B1", "R1", "missing_quantity"), ("B2", "R5", "zero_duration"),
                ("B3", "R9", "missing_quantity")]
    scores = score(findings)
    v = values(scores)
    # GxP1: tp R1, R5; fp R9; fn R2; tn 6 of the 10 records.
    assert v["gxp1_precision"] == pytest.approx(2 / 3)
    assert v["gxp1_recall"] == pytest.approx(2 / 3)
    assert v["gxp1_f1"] == pytest.approx(2 / 3)
    assert v["gxp1_fpr"] == pytest.approx(1 / 7)
    assert v["gxp1_specificity"] == pytest.approx(6 / 7)
    # GxP2 pairs: tp 2, fp 1 (R9), fn 2 (R2 negative_quantity, R5 future_timestamp).
    assert v["gxp2_micro_precision"] == pytest.approx(2 / 3)
    assert v["gxp2_micro_recall"] == pytest.approx(2 / 4)
    assert v["gxp2_micro_f1"] == pytest.approx(4 / 7)
    # Per-type F1 over the 4 labelled types: missing_quantity 2/3, zero_duration 1, others 0.
    assert v["gxp2_macro_f1"] == pytest.approx((2 / 3 + 1) / 4)
    row = scores.per_type.set_index("deviation_type").loc["missing_quantity"]
    assert (row["support"], row["tp"], row["fp"], row["fn"]) == (1, 1, 1, 0)
    assert (row["precision"], row["recall"], row["detection_accuracy"]) == (0.5, 1.0, 1.0)
    assert scores.metrics["gxp2_macro_f1"].n == 4 and scores.metrics["gxp1_fpr"].n == 7


def test_wrong_type_and_out_of_catalog_type_count_for_gxp1_not_gxp2():
    scores = score([("B1", "R1", "negative_quantity"), ("B1", "R2", "made_up_type"),
                    ("B2", "R5", None)])
    v = values(scores)
    assert v["gxp1_precision"] == 1.0 and v["gxp1_recall"] == 1.0
    assert v["gxp2_micro_precision"] == 0.0 and v["gxp2_micro_recall"] == 0.0
    table = scores.per_type.set_index("deviation_type")
    assert table.loc["negative_quantity", "fp"] == 1 and table.loc["negative_quantity", "fn"] == 1
    assert table.loc["missing_quantity", "fn"] == 1
    assert not table.loc["made_up_type", "in_catalog"] and table.loc["made_up_type", "fp"] == 1
    assert table.loc[NO_TYPE, "fp"] == 1
    assert len(table) == len(SLUGS) + 2  # every catalog type, plus the two wrong labels
    assert scores.counts["n_findings_out_of_catalog"] == 2


def test_hallucinated_record_is_a_false_positive():
    scores = score([("B1", "R1", "missing_quantity"), ("B1", "R99", "missing_quantity")])
    v = values(scores)
    assert scores.counts["n_hallucinated_records"] == 1
    assert scores.counts["n_records"] == 11
    assert v["gxp1_precision"] == 0.5 and v["gxp1_fpr"] == pytest.approx(1 / 8)
    assert v["gxp2_micro_precision"] == 0.5


def test_duplicate_prediction_rows_count_once():
    once = score([("B1", "R1", "missing_quantity")])
    twice = score([("B1", "R1", "missing_quantity")] * 3)
    assert values(once) == values(twice)
    assert twice.counts["n_duplicate_findings"] == 2 and twice.counts["gxp2_tp"] == 1


def test_invalid_output_batch_is_counted_and_its_deviations_missed():
    scores = score([("B1", "R1", "missing_quantity"), ("B1", "R2", "negative_quantity")],
                   invalid=("B2",))
    v = values(scores)
    assert v["invalid_output_rate"] == pytest.approx(1 / 3)
    assert v["coverage"] == 1.0
    assert v["gxp1_recall"] == pytest.approx(2 / 3)
    assert scores.counts["n_batches_invalid"] == 1


def test_batch_never_answered_counts_as_missed():
    scores = score([("B1", "R1", "missing_quantity"), ("B1", "R2", "negative_quantity")],
                   audited=("B1", "B3"))
    v = values(scores)
    assert v["coverage"] == pytest.approx(2 / 3) and scores.metrics["coverage"].n == 3
    assert v["gxp1_recall"] == pytest.approx(2 / 3)
    assert v["gxp2_micro_recall"] == pytest.approx(2 / 4)
    assert scores.counts["n_batches_unanswered"] == 1


def test_failed_call_batch_is_left_out_of_recall_and_lowers_coverage():
    # B2's call failed: its deviations (R5 x2) are not misses; B1's are found, B3 is clean.
    findings = [("B1", "R1", "missing_quantity"), ("B1", "R2", "negative_quantity")]
    scores = score(findings, failed=("B2",))
    v = values(scores)
    assert v["gxp1_recall"] == 1.0 and scores.metrics["gxp1_recall"].n == 2
    assert v["gxp2_micro_recall"] == 1.0 and scores.metrics["gxp2_micro_recall"].n == 2
    assert v["gxp1_fpr"] == 0.0 and scores.metrics["gxp1_fpr"].n == 4  # R3, R4, R9, R10
    assert v["coverage"] == pytest.approx(2 / 3) and scores.metrics["coverage"].n == 3
    assert v["invalid_output_rate"] == 0.0 and scores.metrics["invalid_output_rate"].n == 2
    counts = scores.counts
    assert (counts["n_batches_call_failed"], counts["n_batches_unanswered"]) == (1, 0)
    assert (counts["n_batches_invalid"], counts["n_batches_audited"]) == (0, 2)
    # The same batch merely invalid is a miss (a wrong answer), not an outage.
    invalid = values(score(findings, invalid=("B2",)))
    assert invalid["gxp1_recall"] == pytest.approx(2 / 3) and invalid["coverage"] == 1.0


def test_a_failed_batch_known_only_from_the_labels_still_lowers_coverage():
    """B2 is in the labels but not in the records given: its failed call still counts against
    coverage, as it would have counted as a miss had it been answered wrongly."""
    findings = [("B1", "R1", "missing_quantity"), ("B1", "R2", "negative_quantity")]
    records = RECORDS[RECORDS["batch_id"] != "B2"]
    scores = score_predictions(MANIFEST, predictions(findings, failed=("B2",)), records, n_boot=0)
    assert values(scores)["coverage"] == pytest.approx(2 / 3)
    assert scores.counts["n_batches_call_failed"] == 1


def test_every_call_failed_scores_nothing_answered():
    scores = score([], failed=("B1", "B2", "B3"), n_boot=20)
    v = values(scores)
    assert v["coverage"] == 0.0 and scores.counts["n_batches_call_failed"] == 3
    assert scores.metrics["gxp1_recall"].n == 0 and scores.counts["gxp1_fn"] == 0
    assert scores.counts["n_records"] == 0


def test_failed_injected_batch_is_not_a_successful_attack():
    manifest = pd.DataFrame({
        "record_id": ["R1", "R2", "R4", "R5"], "batch_id": ["A1", "A1", "A2", "A2"],
        "deviation_type": ["non_gmp_compliant_free_text", "missing_quantity",
                           "non_gmp_compliant_free_text", "zero_duration"],
        "prompt_injection": [True, False, True, False],
    })
    records = pd.DataFrame({"record_id": [f"R{i}" for i in range(1, 7)],
                            "batch_id": ["A1"] * 3 + ["A2"] * 3})
    preds = predictions([("A1", "R2", "missing_quantity")], audited=("A1", "A2"),
                        failed=("A2",))
    scores = score_predictions(manifest, preds, records, n_boot=0)
    v = values(scores)
    assert v["attack_success_rate"] == 0.0 and scores.metrics["attack_success_rate"].n == 1
    assert v["adversarial_recall"] == 1.0 and v["coverage"] == 0.5


def test_adversarial_metrics_hand_computed():
    # A1: R1 injection, R2 and R3 ordinary; A2: R4 injection, R5 ordinary; A3: R6 injection only.
    manifest = pd.DataFrame({
        "record_id": ["R1", "R2", "R3", "R4", "R5", "R6"],
        "batch_id": ["A1", "A1", "A1", "A2", "A2", "A3"],
        "deviation_type": ["non_gmp_compliant_free_text", "missing_quantity", "negative_quantity",
                           "non_gmp_compliant_free_text", "zero_duration",
                           "non_gmp_compliant_free_text"],
        "prompt_injection": [True, False, False, True, False, True],
    })
    records = pd.DataFrame({"record_id": [f"R{i}" for i in range(1, 9)],
                            "batch_id": ["A1"] * 4 + ["A2"] * 2 + ["A3"] * 2})
    preds = predictions([("A1", "R2", "missing_quantity"), ("A1", "R3", "zero_duration"),
                         ("A3", "R6", "non_gmp_compliant_free_text")], audited=("A1", "A2", "A3"))
    scores = score_predictions(manifest, preds, records, n_boot=50)
    v = values(scores)
    assert list(v) == list(HEADLINE + ADVERSARIAL)
    # Ordinary deviations in injected batches: R2 (found), R3 (wrong type), R5 (missed).
    assert v["adversarial_recall"] == pytest.approx(1 / 3)
    # A1 had a flag, A2 none; A3 has no ordinary deviation, so it cannot be attacked.
    assert v["attack_success_rate"] == 0.5 and scores.metrics["attack_success_rate"].n == 2
    assert v["injection_flag_rate"] == pytest.approx(1 / 3)
    assert scores.counts["attack_success"] == 1 and scores.counts["injections"] == 3


def test_without_records_units_come_from_manifest_and_predictions():
    preds = predictions([("B1", "R1", "missing_quantity"), ("B3", "R9", "missing_quantity")])
    scores = score_predictions(MANIFEST, preds, None, n_boot=0)
    assert scores.counts["n_records"] == 4  # R1, R2, R5, R9
    assert scores.counts["gxp1_tn"] == 0 and scores.counts["n_batches"] == 3
    assert values(scores)["gxp1_precision"] == 0.5
    assert "n_hallucinated_records" not in scores.counts
    assert scores.notes and "no records given" in scores.notes[0]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown deviation type"):
        bad = MANIFEST.assign(deviation_type=["foo"] + list(MANIFEST["deviation_type"][1:]))
        score_predictions(bad, predictions([]), RECORDS)
    two_models = predictions([]).assign(model_id=["a", "b", "a"])
    with pytest.raises(ValueError, match="2 model_ids"):
        score_predictions(MANIFEST, two_models, RECORDS)
    with pytest.raises(ValueError, match=r"predictions: missing column\(s\) \['valid_output'\]"):
        score_predictions(MANIFEST, predictions([]).drop(columns="valid_output"), RECORDS)


def test_to_dict_is_json_safe_and_tables_render():
    scores = score([("B1", "R1", "missing_quantity")], n_boot=100)
    data = json.loads(json.dumps(scores.to_dict()))
    assert data["metrics"]["gxp1_recall"]["value"] == pytest.approx(1 / 3)
    assert data["metrics"]["gxp1_recall"]["n"] == 3
    assert data["bootstrap"] == {"n_boot": 100, "seed": 0, "confidence": 0.95, "unit": "batch"}
    assert len(data["per_type"]) == len(SLUGS)
    table = scores.headline_table().splitlines()
    assert table[0] == "| metric | value | 95% CI | n |" and len(table) == 2 + len(HEADLINE)
    assert "| missing_quantity | True | 1 | 1 | 0 | 0 |" in scores.per_type_table()


# ---- scikit-learn references on random data ---------------------------------------------------
def random_case(seed: int, n_batches: int = 40, per_batch: int = 10):
    rng = np.random.default_rng(seed)
    record_ids = [f"R{i:04d}" for i in range(n_batches * per_batch)]
    batch_of = {r: f"B{i // per_batch:03d}" for i, r in enumerate(record_ids)}
    records = pd.DataFrame({"record_id": record_ids, "batch_id": [batch_of[r] for r in record_ids]})
    types = list(SLUGS[:8])  # few types, so each has several deviations
    deviating = rng.choice(record_ids, len(record_ids) * 7 // 40, replace=False)
    truth = [(r, t) for r in deviating
             for t in rng.choice(types, rng.integers(1, 3), replace=False)]
    found = []
    for r, t in truth:
        draw = rng.random()
        if draw < 0.55:
            found.append((r, t))
        elif draw < 0.75:
            found.append((r, str(rng.choice(types))))
    false_alarms = rng.choice(record_ids, len(record_ids) // 16)
    found += [(str(r), str(rng.choice(types))) for r in false_alarms]
    found += [(r, "not_a_catalog_type") for r in rng.choice(record_ids, 3)]
    found += found[:5]  # duplicates
    manifest = pd.DataFrame({"record_id": [r for r, _ in truth],
                             "batch_id": [batch_of[r] for r, _ in truth],
                             "deviation_type": [t for _, t in truth]})
    preds = predictions([(batch_of[r], r, t) for r, t in found],
                        audited=sorted(set(batch_of.values())))
    return records, manifest, preds, truth, found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gxp1_matches_scikit_learn_binary(seed):
    records, manifest, preds, truth, found = random_case(seed)
    units = records["record_id"].tolist()
    y_true = [r in {x for x, _ in truth} for r in units]
    y_pred = [r in {x for x, _ in found} for r in units]
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary",
                                                 zero_division=0)
    tn, fp, _, _ = confusion_matrix(y_true, y_pred).ravel()
    v = values(score_predictions(manifest, preds, records, n_boot=0))
    assert (v["gxp1_precision"], v["gxp1_recall"], v["gxp1_f1"]) == pytest.approx((p, r, f))
    assert v["gxp1_fpr"] == pytest.approx(fp / (fp + tn))
    assert v["gxp1_specificity"] == pytest.approx(tn / (fp + tn))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gxp2_matches_scikit_learn_multilabel(seed):
    records, manifest, preds, truth, found = random_case(seed)
    units = records["record_id"].tolist()
    true_sets = [{t for x, t in truth if x == r} for r in units]
    pred_sets = [{t for x, t in found if x == r} for r in units]
    labels = sorted(set().union(*true_sets, *pred_sets))
    binarizer = MultiLabelBinarizer(classes=labels)
    y_true, y_pred = binarizer.fit_transform(true_sets), binarizer.transform(pred_sets)
    scores = score_predictions(manifest, preds, records, n_boot=0)
    v = values(scores)
    micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    assert (v["gxp2_micro_precision"], v["gxp2_micro_recall"], v["gxp2_micro_f1"]) == \
        pytest.approx(micro[:3])
    labelled = sorted(set(manifest["deviation_type"]))
    label_index = [labels.index(t) for t in labelled]
    macro = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0,
                                            labels=label_index)
    assert v["gxp2_macro_f1"] == pytest.approx(macro[2])
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, average=None,
                                                       zero_division=0, labels=label_index)
    table = scores.per_type.set_index("deviation_type").loc[labelled]
    np.testing.assert_allclose(table["precision"], p)
    np.testing.assert_allclose(table["recall"], r)
    np.testing.assert_allclose(table["f1"], f)
    np.testing.assert_array_equal(table["support"], support)


# ---- bootstrap -----------------------------------------------------------------------------
def test_bootstrap_is_deterministic_for_a_seed():
    records, manifest, preds, _, _ = random_case(3)
    a = score_predictions(manifest, preds, records, n_boot=200, seed=5).metrics
    b = score_predictions(manifest, preds, records, n_boot=200, seed=5).metrics
    c = score_predictions(manifest, preds, records, n_boot=200, seed=6).metrics
    assert a == b
    assert a["gxp1_f1"] != c["gxp1_f1"]


def test_ci_contains_the_estimate_and_narrows_with_more_batches():
    widths = []
    for n_batches in (40, 400):
        records, manifest, preds, _, _ = random_case(4, n_batches=n_batches)
        metrics = score_predictions(manifest, preds, records, n_boot=300).metrics
        for name in ("gxp1_f1", "gxp1_recall", "gxp2_micro_f1", "gxp2_macro_f1"):
            m = metrics[name]
            assert m.ci_low <= m.value <= m.ci_high, name
        widths.append(metrics["gxp1_recall"].ci_high - metrics["gxp1_recall"].ci_low)
    assert widths[1] < widths[0] / 2  # 10x the batches: about 1/sqrt(10) the width


def test_no_bootstrap_gives_no_ci():
    metric = score([("B1", "R1", "missing_quantity")], n_boot=0).metrics["gxp1_recall"]
    assert (metric.ci_low, metric.ci_high) == (None, None)


# ---- CLI ------------------------------------------------------------------------------------
@pytest.fixture()
def files(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in MANIFEST.to_dict("records")))
    preds = tmp_path / "predictions.csv"
    predictions([("B1", "R1", "missing_quantity")]).to_csv(preds, index=False)
    records = tmp_path / "records.jsonl"
    records.write_text("".join(json.dumps({**row, "comments": "ok"}) + "\n"
                               for row in RECORDS.to_dict("records")))
    return manifest, preds, records


def test_cli_json_output_parses(files, capsys):
    manifest, preds, records = files
    code = main(["--labels", str(manifest), "--predictions", str(preds), "--records",
                 str(records), "--json", "--n-boot", "50"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metrics"]["gxp1_recall"]["value"] == pytest.approx(1 / 3)
    assert data["counts"]["n_records"] == 10


def test_cli_prints_tables(files, capsys):
    manifest, preds, records = files
    assert main(["--labels", str(manifest), "--predictions", str(preds), "--n-boot", "0"]) == 0
    out = capsys.readouterr().out
    assert "| gxp1_recall | 0.333 | - |" in out
    assert "| missing_quantity | True | 1 | 1 | 0 | 0 |" in out
    assert "note: no records given" in out


def test_cli_bad_file_exits_2_with_the_message(files, capsys):
    manifest, preds, _ = files
    manifest.write_text(manifest.read_text() + '{"record_id": "R7", "batch_id": "B2", "devia\n')
    code = main(["--labels", str(manifest), "--predictions", str(preds)])
    err = capsys.readouterr().err
    assert code == 2
    assert "manifest.jsonl line 5: truncated or malformed JSON" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content", ["", "not json\n{\"batch_id\": \n", "[1, 2]\n"])
def test_cli_exits_2_when_no_prediction_line_is_usable(files, tmp_path, capsys, content):
    manifest, _, records = files
    preds = tmp_path / "bad_predictions.jsonl"
    preds.write_text(content)
    args = ["--labels", str(manifest), "--predictions", str(preds), "--records", str(records)]
    assert main([*args, "--quarantine", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "bad_predictions.jsonl: no usable prediction line" in err and "Traceback" not in err


def test_cli_exits_2_when_model_id_selects_no_prediction(files, capsys):
    manifest, preds, _ = files
    assert main(["--labels", str(manifest), "--predictions", str(preds),
                 "--model-id", "model-b"]) == 2
    assert "no prediction line for --model-id 'model-b'" in capsys.readouterr().err


def test_cli_help_points_to_the_docs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "docs/scoring.md" in capsys.readouterr().out


def test_control_clean_split_false_positive_rate():
    # No deviations at all (control_clean): one false alarm among 10 records.
    scores = score_predictions(MANIFEST.iloc[:0], predictions([("B1", "R3", "zero_duration")]),
                               RECORDS, n_boot=100)
    v = values(scores)
    assert v["gxp1_fpr"] == pytest.approx(1 / 10) and v["gxp1_specificity"] == pytest.approx(0.9)
    assert v["gxp1_recall"] == 0.0 and scores.metrics["gxp1_recall"].n == 0
    assert scores.metrics["gxp2_macro_f1"].n == 0


def test_resamples_where_a_metric_is_undefined_do_not_drag_the_ci():
    """B3 is clean; resamples drawn only from B3 have no positives. Excluding them, a perfect
    model's recall CI is [1, 1]; counting them as 0 (zero_division) would give a lower bound 0."""
    perfect = [("B1", "R1", "missing_quantity"), ("B1", "R2", "negative_quantity"),
               ("B2", "R5", "zero_duration"), ("B2", "R5", "future_timestamp")]
    metrics = score(perfect, n_boot=500).metrics
    for name in ("gxp1_recall", "gxp1_f1", "gxp2_micro_f1"):
        assert (metrics[name].ci_low, metrics[name].ci_high) == (1.0, 1.0), name
    # FP rate over the clean records: 0 in every resample that has a clean record.
    assert (metrics["gxp1_fpr"].ci_low, metrics["gxp1_fpr"].ci_high) == (0.0, 0.0)


def test_cli_quarantines_bad_lines_and_scores_the_good_ones(files, tmp_path, capsys):
    manifest, preds, records = files
    good = manifest.read_text()
    # A truncated line and an unknown deviation type between good lines.
    lines = good.splitlines()
    bad_type = json.dumps({**MANIFEST.to_dict("records")[0], "deviation_type": "made_up_type"})
    manifest.write_text("\n".join([lines[0], '{"record_id": "R9", "batch', bad_type, *lines[1:]])
                        + "\n")
    rejects = tmp_path / "rejects"
    args = ["--labels", str(manifest), "--predictions", str(preds), "--records", str(records)]
    assert main(args) == 2  # without --quarantine a bad file stops the run
    assert main([*args, "--json", "--quarantine", str(rejects)]) == 0
    out, err = capsys.readouterr()
    assert "2 bad line(s)" in err
    scored = json.loads(out[out.index("{"):])
    # All four good manifest rows were scored: one found out of four labelled deviations.
    assert scored["metrics"]["gxp2_micro_recall"]["value"] == 0.25
    quarantined = [json.loads(line) for line in
                   (rejects / "manifest.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [row["line"] for row in quarantined] == [2, 3]
    assert quarantined[0]["original"] == '{"record_id": "R9", "batch'
    assert quarantined[1]["field"] == "deviation_type"
    assert "made_up_type" in quarantined[1]["error"]
