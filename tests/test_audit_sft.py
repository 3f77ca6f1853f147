"""The record-audit fine-tuning pieces: generated training data, loss masks, the method switch,
whole-model folders, the record metrics."""

from __future__ import annotations

import json

import pytest
from test_embedded_model import TINY

from scoring.record_audit import (
    ANSWER_NONE,
    ANSWER_PIECES,
    load_record_prompt,
    record_answer,
    training_rows,
)
from synthetic.audit_training import (
    OUT_OF_RECORD_TYPES,
    generate_audit_training_data,
    record_level_examples,
)
from synthetic.catalog import load_catalog
from training.audit_eval import record_metrics
from training.audit_sft import AuditSftSettings, audit_loss, batch_tensors, encode_rows
from training.corpus import render_chat
from training.embedded_model import build_model, train_tokenizer
from training.model_folders import generator_paths, is_full_model
from training.tasks import gxp_audit_task

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def data(cfg, master):
    return generate_audit_training_data(master, seed=cfg.seed + 1, dataset_seed=cfg.seed,
                                        n_batches=4, heldout_batches=1, deviation_rate=0.5)


@pytest.fixture(scope="module")
def tokenizer(data):
    rows = training_rows(data.train.records, data.train.manifest, load_record_prompt())
    return train_tokenizer([render_chat(r["messages"]) for r in rows], 400,
                           [*ANSWER_PIECES, *CATALOG.slugs])


def test_generated_training_data_is_deviation_rich_and_never_the_evaluation_seed(cfg, master,
                                                                                 data):
    deviating = {row["record_id"] for row in data.train.manifest}
    assert 0.4 <= len(deviating) / len(data.train.records) <= 0.6
    assert data.heldout.records and not {r["record_id"] for r in data.heldout.records} & {
        r["record_id"] for r in data.train.records}
    with pytest.raises(ValueError, match="field 'seed'.*evaluation splits' seed"):
        generate_audit_training_data(master, seed=cfg.seed, dataset_seed=cfg.seed, n_batches=1,
                                     heldout_batches=0)


def test_answers_are_a_few_single_tokens(tokenizer):
    answer = record_answer([{"deviation_type": "zero_duration"}])
    assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) == 3
    assert len(tokenizer(ANSWER_NONE, add_special_tokens=False)["input_ids"]) == 1


def test_loss_masks_split_prompt_and_answer_and_the_lm_weight_counts(data, tokenizer):
    rows = training_rows(data.train.records[:4], data.train.manifest, load_record_prompt())
    examples = encode_rows(tokenizer, rows, 512)
    for example, row in zip(examples, rows, strict=True):
        answer = tokenizer.decode(example.ids[example.prompt_length:], skip_special_tokens=True)
        assert answer.strip() == row["messages"][-1]["content"]
    batch = batch_tensors(examples, tokenizer.pad_token_id)
    assert not (batch["answer"] & batch["prompt"]).any()
    assert (batch["answer"] | batch["prompt"]).sum() == batch["attention_mask"].sum()
    model = build_model(TINY, tokenizer)
    loss, answer_loss, lm_loss = audit_loss(model, batch, 0.3)
    assert float(loss.detach()) == pytest.approx(answer_loss + 0.3 * lm_loss, rel=1e-5)
    only_answer, _, _ = audit_loss(model, batch, 0.0)
    assert float(only_answer) == pytest.approx(answer_loss, rel=1e-5)


def test_a_too_long_chat_keeps_its_answer(data, tokenizer):
    rows = training_rows(data.train.records[:1], data.train.manifest, load_record_prompt())
    example = encode_rows(tokenizer, rows, 40)[0]
    assert len(example.ids) == 40
    assert tokenizer.decode(example.ids[example.prompt_length:], skip_special_tokens=True
                            ).strip() == rows[0]["messages"][-1]["content"]


def test_settings_name_the_bad_field():
    with pytest.raises(ValueError, match="'max_steps'"):
        AuditSftSettings.from_mapping({"max_steps": 0})
    with pytest.raises(ValueError, match="num_train_epochs"):
        AuditSftSettings.from_mapping({"num_train_epochs": 2})


def test_method_switch(tmp_path):
    with pytest.raises(ValueError, match="field 'method': 'qlora'"):
        gxp_audit_task({"method": "qlora", "base_model_path": str(tmp_path)}, tmp_path,
                       lambda **_: None)


def test_a_whole_model_folder_replaces_the_base(tmp_path, tokenizer):
    full = tmp_path / "adapter"
    build_model(TINY, tokenizer).save_pretrained(full)
    assert is_full_model(full) and not is_full_model(None)
    assert generator_paths("/base", full) == (str(full), None)
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text(json.dumps({}))
    assert generator_paths("/base", lora) == ("/base", str(lora))
    assert generator_paths("/base", None) == ("/base", None)


def test_record_metrics_count_records_and_types():
    labels = [[{"deviation_type": "zero_duration"}], [], [{"deviation_type": "negative_quantity"}],
              []]
    answers = [record_answer([{"deviation_type": "zero_duration"}]),
               record_answer([{"deviation_type": "empty_notes_field"}]), ANSWER_NONE, "{oops"]
    metrics = record_metrics(labels, answers, CATALOG)
    assert metrics["record_precision"] == 0.5 and metrics["record_recall"] == 0.5
    assert metrics["clean_fpr"] == 0.5 and metrics["invalid_rate"] == 0.25
    assert metrics["per_type_recall"]["zero_duration"]["recall"] == 1.0
    assert metrics["per_type_recall"]["negative_quantity"]["recall"] == 0.0


def test_types_one_record_cannot_show_are_left_out_of_training(data):
    assert not {row["deviation_type"] for row in data.train.manifest} & OUT_OF_RECORD_TYPES
    records = [{"record_id": "A"}, {"record_id": "B"}, {"record_id": "C"}]
    labels = [{"record_id": "A", "deviation_type": "duplicate_record_id"},
              {"record_id": "B", "deviation_type": "redundant_step"},
              {"record_id": "B", "deviation_type": "zero_duration"}]
    kept_records, kept_labels = record_level_examples(records, labels)
    assert [r["record_id"] for r in kept_records] == ["B", "C"]  # A looks clean: left out
    assert kept_labels == [labels[2]]
