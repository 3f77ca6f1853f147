"""Parsing and validation of model answers, and their prediction rows."""

import json

import jsonschema
import pytest

from scoring.model_output import (
    OUTPUT_JSON_SCHEMA,
    invalid_output,
    parse_model_output,
    to_prediction_rows,
)
from synthetic.catalog import load_catalog
from synthetic.contracts import PREDICTION_COLUMNS

CATALOG = load_catalog()
RECORD_IDS = ["B1-S01", "B1-S02", "B1-S03"]
GOOD = {
    "summary": "Two findings.",
    "findings": [
        {"record_id": "B1-S02", "deviation_type": "missing_quantity", "field": "qty_actual",
         "evidence": "qty_actual is null"},
        {"record_id": "B1-S03", "deviation_type": "operator_mismatch", "field": None,
         "evidence": "verifier_id equals operator_id"},
    ],
}


def parse(text):
    return parse_model_output(text, "B1", RECORD_IDS, CATALOG)


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(OUTPUT_JSON_SCHEMA)
    assert OUTPUT_JSON_SCHEMA["$schema"].endswith("2020-12/schema")


def test_good_answer_is_valid_and_findings_are_flagged():
    parsed = parse(json.dumps(GOOD))
    assert parsed.valid and parsed.error is None
    assert parsed.summary == "Two findings."
    assert [(f["record_id"], f["deviation_type"], f["field"]) for f in parsed.findings] == [
        ("B1-S02", "missing_quantity", "qty_actual"), ("B1-S03", "operator_mismatch", None)]
    assert all(f["record_in_batch"] and f["known_deviation_type"] for f in parsed.findings)
    assert parsed.n_unknown_record_ids == 0 and parsed.n_unknown_deviation_types == 0


@pytest.mark.parametrize("wrapper", [
    "```json\n{}\n```",
    "Here is my audit:\n```\n{}\n```\nLet me know if you need more.",
    "Sure! {} That is all.",
    "Audit result {{not json}} follows: {}",
])
def test_fences_and_surrounding_prose_are_tolerated(wrapper):
    parsed = parse(wrapper.replace("{}", json.dumps(GOOD)))
    assert parsed.valid, parsed.error
    assert len(parsed.findings) == 2


def test_malformed_json_is_invalid_with_an_error():
    parsed = parse('{"summary": "x", "findings": [')
    assert not parsed.valid and parsed.findings == []
    assert parsed.error.startswith("batch B1: malformed JSON:")


@pytest.mark.parametrize(("answer", "where"), [
    ({"summary": "x"}, "(root)"),
    ({"summary": "x", "findings": [{"record_id": 7, "deviation_type": "missing_quantity",
                                    "field": None, "evidence": "e"}]}, "findings/0/record_id"),
    ({"summary": "x", "findings": [{"record_id": "B1-S01", "deviation_type": "missing_quantity",
                                    "field": None}]}, "findings/0"),
    ({"summary": "x", "findings": [], "confidence": 0.9}, "(root)"),
])
def test_schema_violations_are_invalid_and_name_the_place(answer, where):
    parsed = parse(json.dumps(answer))
    assert not parsed.valid and parsed.findings == []
    assert parsed.error.startswith(f"batch B1: schema violation at {where}:")


@pytest.mark.parametrize("text", [None, "", "   ", "[1, 2]", "no json at all"])
def test_empty_or_non_object_answers_are_invalid(text):
    parsed = parse(text)
    assert not parsed.valid and parsed.error.startswith("batch B1:")


def test_unknown_record_ids_and_slugs_are_kept_and_flagged():
    answer = {"summary": "x", "findings": [
        {"record_id": "B9-S01", "deviation_type": "missing_quantity", "field": None,
         "evidence": "e"},
        {"record_id": "B1-S01", "deviation_type": "made_up_type", "field": None, "evidence": "e"},
    ]}
    parsed = parse(json.dumps(answer))
    assert parsed.valid
    assert [(f["record_in_batch"], f["known_deviation_type"]) for f in parsed.findings] == [
        (False, True), (True, False)]
    assert parsed.n_unknown_record_ids == 1 and parsed.n_unknown_deviation_types == 1


def test_prediction_rows_one_per_finding():
    rows = to_prediction_rows(parse(json.dumps(GOOD)), "gpt-4o", "benchmark", "B1")
    assert [list(row) for row in rows] == [list(PREDICTION_COLUMNS)] * 2
    assert rows[0] == {"model_id": "gpt-4o", "split": "benchmark", "batch_id": "B1",
                       "record_id": "B1-S02", "deviation_type": "missing_quantity",
                       "field": "qty_actual", "evidence": "qty_actual is null",
                       "valid_output": True}


def test_prediction_rows_for_a_clean_and_an_invalid_batch():
    clean = to_prediction_rows(parse('{"summary": "ok", "findings": []}'), "m", "control_clean",
                               "B1")
    broken = to_prediction_rows(invalid_output("batch B1: call failed"), "m", "control_clean", "B1")
    for rows, valid in ((clean, True), (broken, False)):
        assert len(rows) == 1
        assert rows[0]["record_id"] is None and rows[0]["deviation_type"] is None
        assert rows[0]["valid_output"] is valid
