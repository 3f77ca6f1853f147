"""Batch-record QA generator (synthetic/batch_record_qa.py): determinism, grounding, splits."""

from __future__ import annotations

import copy
import re
from collections import Counter

import pytest

from synthetic.batch_record_qa import (
    MAX_SUMMARY_CHARS,
    QA_FIELDS,
    TEMPLATES,
    batchqa_messages,
    generate_batch_record_qa,
    validate_batch_record_qa,
)
from synthetic.master_data import build_site_master
from synthetic.splits import load_dataset_config


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_batch_record_qa(n_batches=40, seed=11)


def _by_batch(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["batch_number"], []).append(row)
    return out


def test_same_seed_same_rows_other_seed_other_rows(rows):
    assert generate_batch_record_qa(n_batches=40, seed=11) == rows
    other = generate_batch_record_qa(n_batches=40, seed=12)
    assert [r["source"] for r in other] != [r["source"] for r in rows]


def test_rows_have_the_contract_fields(rows):
    for row in rows:
        assert tuple(row) == QA_FIELDS
        assert re.fullmatch(r"[A-Z]{3}\d{3}-Q\d{2}", row["qa_id"])
        assert row["qa_id"].startswith(row["batch_number"])
        assert row["question_type"] in TEMPLATES
    assert len({r["qa_id"] for r in rows}) == len(rows)


def test_six_to_ten_questions_per_summary_on_one_summary(rows):
    batches = _by_batch(rows)
    assert len(batches) == 40
    for questions in batches.values():
        assert 6 <= len(questions) <= 10
        assert len({q["source"] for q in questions}) == 1
        assert len({q["question_type"] for q in questions}) == len(questions)


def test_answers_state_facts_found_in_the_summary(rows):
    for row in rows:
        assert row["facts"]
        for value in row["facts"].values():
            assert value in row["source"] and value in row["answer"]
        assert row["answer"].endswith(".") and row["batch_number"] in row["answer"]


def test_summary_fields_parse_back(rows):
    """Each fact is the summary's own value for that field (not just some substring)."""
    labels = {"product_code": r"product code (\S+)", "qa_manager": r"QA Manager: ([^.\n]+)",
              "production_manager": r"Production Manager: ([^.\n]+)",
              "actual_yield": r"Actual yield: ([\d.]+%)", "status": r"Status: (\w+)",
              "expiry_date": r"Expiry: (\S+)", "manufacture_date": r"Manufactured: ([\d-]+)",
              "batch_size": r"Batch size: ([\d,]+ \w+)", "equipment_line": r"line: (\S+)",
              "deviation_count": r"Deviations \((\d)\)"}
    for row in rows:
        for field, value in row["facts"].items():
            if field in labels:
                assert re.search(labels[field], row["source"]).group(1) == value, row["qa_id"]


def test_product_example_from_seed_002_reads_the_same(rows):
    row = next(r for r in rows if r["question_type"] == "product_code")
    b, code = row["batch_number"], row["facts"]["product_code"]
    assert row["question"] == f"What is the product code for batch {b}?"
    assert row["answer"] == f"The product code for batch {b} is {code}."


def test_master_data_supplies_products_and_people(rows):
    cfg = load_dataset_config()
    master = build_site_master(cfg.site_master, cfg.seed)
    products = {r["product_code"]: r["name"] for r in master["recipes"]}
    verifiers = {o["name"] for o in master["operators"] if o["role"] == "verifier"}
    equipment = {e["equipment_id"] for e in master["equipment"]}
    for row in rows:
        facts = row["facts"]
        if "product_code" in facts:
            assert facts["product_code"] in products
            assert products[facts["product_code"]] in row["source"]
        if "qa_manager" in facts:
            assert facts["qa_manager"] in verifiers
        if "equipment_line" in facts:
            assert facts["equipment_line"] in equipment


def test_statuses_yields_and_deviations_vary(rows):
    sources = {r["source"] for r in rows}
    statuses = Counter(re.search(r"Status: (\w+)", s).group(1) for s in sources)
    assert set(statuses) == {"Released", "Quarantine", "Rejected"}
    counts = Counter(re.search(r"Deviations \((\d)\)", s).group(1) for s in sources)
    assert {"0", "1", "2"} <= set(counts)
    assert all("Deviations (0): none" in s for s in sources if "Deviations (0)" in s)
    detail = next(r for r in rows if r["question_type"] == "deviation_detail")
    dev_id = detail["facts"]["deviation_id"]
    assert re.fullmatch(r"DEV-\d{2}-\d{4}", dev_id)
    assert f"{dev_id} ({detail['facts']['deviation_description']})" in detail["source"]


def test_summaries_fit_the_context(rows):
    assert max(len(r["source"]) for r in rows) <= MAX_SUMMARY_CHARS


def test_whole_batches_split_by_test_fraction():
    rows = generate_batch_record_qa(n_batches=30, seed=5, test_fraction=0.2)
    split_of = {b: {q["split"] for q in qs} for b, qs in _by_batch(rows).items()}
    assert all(len(s) == 1 for s in split_of.values())
    assert Counter(s.pop() for s in split_of.values()) == {"train": 24, "test": 6}
    assert {r["split"] for r in generate_batch_record_qa(5, seed=5, test_fraction=0)} == {"train"}
    with pytest.raises(ValueError, match="test_fraction must be in"):
        generate_batch_record_qa(5, seed=5, test_fraction=1.0)


def test_validation_names_qa_id_and_field(rows):
    qa_id = rows[3]["qa_id"]

    def broken(change) -> list[dict]:
        bad = copy.deepcopy(rows)
        change(bad[3])
        return bad

    cases = [
        (lambda r: r.update(answer="I do not know."), r"field 'facts\.\w+': .* the answer"),
        (lambda r: r["facts"].update(extra="Z-999"), r"field 'facts\.extra': 'Z-999' does not"),
        (lambda r: r.update(question=""), "field 'question' must be a non-empty string"),
        (lambda r: r.update(split="dev"), "field 'split' must be one of train, test"),
        (lambda r: r.update(facts={}), "field 'facts' must be a non-empty mapping"),
        (lambda r: r.update(source=r["source"] + "x" * MAX_SUMMARY_CHARS),
         "field 'source' has .* characters"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=f"qa.jsonl: qa_id {qa_id}: {message}"):
            validate_batch_record_qa(broken(change), source="qa.jsonl")
    duplicate = copy.deepcopy(rows)
    duplicate[4]["qa_id"] = duplicate[3]["qa_id"]
    with pytest.raises(ValueError, match=f"qa_id {qa_id}: field 'qa_id' is duplicated"):
        validate_batch_record_qa(duplicate)
    mixed = copy.deepcopy(rows)
    mixed[1]["split"] = "test" if mixed[0]["split"] == "train" else "train"
    with pytest.raises(ValueError, match="field 'split': batch .* is in both splits"):
        validate_batch_record_qa(mixed)


def test_messages_for_sft_and_for_generation(rows):
    row = rows[0]
    chat = batchqa_messages(row, "You are a batch record assistant.", "<|end|>")
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
    system, user, assistant = (m["content"] for m in chat["messages"])
    assert system == "You are a batch record assistant."
    assert user == f"{row['source']}\n\nQuestion: {row['question']}"
    assert assistant == row["answer"] + "<|end|>"
    prompt = batchqa_messages(row, "S", "<|end|>", with_answer=False)["messages"]
    assert [m["role"] for m in prompt] == ["system", "user"]
