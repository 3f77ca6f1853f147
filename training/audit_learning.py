"""A small, seeded learning check of the record audit: a tiny base model (own tokenizer, random
weights), fully fine-tuned with training/audit_sft.py on generated records of a few deviation
types with obvious cues, measured on held-out generated records before and after. Used by
tests/test_learning_gxp_audit.py and bench/bench_learning.py; about a minute on two cores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Types whose cue is in the record itself and quick to learn (see docs/training.md).
EASY_TYPES = ("empty_notes_field", "missing_operator_id", "negative_quantity",
              "placeholder_text_in_notes")


@dataclass(frozen=True)
class LearningSetup:
    """Sizes of the check: data, model, training."""

    train_batches: int = 24
    heldout_batches: int = 6
    deviation_rate: float = 0.5
    types: tuple[str, ...] = EASY_TYPES
    vocab_size: int = 512
    hidden_size: int = 64
    layers: int = 2
    steps: int = 150
    batch_size: int = 16
    learning_rate: float = 3e-3
    lm_loss_weight: float = 0.3


def learning_run(seed: int, setup: LearningSetup | None = None) -> dict[str, Any]:
    """{"base": metrics, "tuned": metrics, "train": training metrics} for one seed (metrics:
    training/audit_eval.py on the held-out records)."""
    import torch

    from scoring.record_audit import load_record_prompt, record_messages, training_rows
    from synthetic.audit_training import generate_audit_training_data
    from synthetic.catalog import load_catalog
    from synthetic.master_data import build_site_master
    from synthetic.splits import load_dataset_config
    from training.audit_eval import record_metrics
    from training.audit_sft import (
        AuditSftSettings,
        encode_rows,
        generate_answers,
        train_full,
    )

    setup = setup or LearningSetup()
    full = load_catalog()
    catalog = dataclasses.replace(full, types=tuple(t for t in full.types
                                                    if t.slug in setup.types))
    config = load_dataset_config()
    master = build_site_master(config.site_master, config.seed)
    data = generate_audit_training_data(
        master, seed=config.seed + 1000 + seed, dataset_seed=config.seed,
        n_batches=setup.train_batches, heldout_batches=setup.heldout_batches,
        deviation_rate=setup.deviation_rate, catalog=catalog)
    prompt = load_record_prompt()
    rows = training_rows(data.train.records, data.train.manifest, prompt)
    model, tokenizer = tiny_base(rows, setup, seed, catalog.slugs)
    labels: dict[str, list[dict]] = {}
    for label in data.heldout.manifest:
        labels.setdefault(str(label["record_id"]), []).append(label)
    truth = [labels.get(str(r["record_id"]), []) for r in data.heldout.records]
    chats = [record_messages(prompt, r) for r in data.heldout.records]
    settings = AuditSftSettings(max_steps=setup.steps, per_device_train_batch_size=setup.batch_size,
                                learning_rate=setup.learning_rate, warmup_steps=10,
                                lm_loss_weight=setup.lm_loss_weight, seed=seed, max_new_tokens=6)
    heldout = encode_rows(tokenizer, training_rows(data.heldout.records, data.heldout.manifest,
                                                   prompt), 512)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.eval()
        base = {**record_metrics(truth, generate_answers(model, tokenizer, chats, 6, 64), full),
                **heldout_losses(model, tokenizer, heldout)}
        trained = train_full(model, tokenizer, encode_rows(tokenizer, rows, 512), settings)
        tuned = {**record_metrics(truth, generate_answers(model, tokenizer, chats, 6, 64), full),
                 **heldout_losses(model, tokenizer, heldout)}
    finally:
        torch.set_num_threads(previous)
    trained.pop("losses")
    return {"base": base, "tuned": tuned, "train": trained}


def heldout_losses(model: Any, tokenizer: Any, examples: Sequence[Any]) -> dict[str, float]:
    """Mean answer loss and LM loss on the prompt tokens over `examples` (batches of 32): how
    well the model knows the answers and the records' text."""
    import torch

    from training.audit_sft import audit_loss, batch_tensors

    answer, lm, n = 0.0, 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(examples), 32):
            chunk = examples[start:start + 32]
            _, answer_loss, lm_loss = audit_loss(
                model, batch_tensors(chunk, tokenizer.pad_token_id), 1.0)
            answer, lm, n = answer + answer_loss * len(chunk), lm + lm_loss * len(chunk), \
                n + len(chunk)
    return {"answer_loss": answer / n, "lm_loss": lm / n}


def tiny_base(rows: Sequence[dict], setup: LearningSetup, seed: int,
              slugs: Sequence[str]) -> tuple[Any, Any]:
    """A tokenizer trained on the rows' text (with the answer pieces and `slugs` as tokens) and
    a seeded, randomly initialised tiny Llama."""
    from scoring.record_audit import ANSWER_PIECES
    from training.corpus import render_chat
    from training.embedded_model import EmbeddedModelConfig, build_model, train_tokenizer

    tokenizer = train_tokenizer([render_chat(r["messages"]) for r in rows], setup.vocab_size,
                                [*ANSWER_PIECES, *slugs])
    config = EmbeddedModelConfig(vocab_size=setup.vocab_size, hidden_size=setup.hidden_size,
                                 intermediate_size=2 * setup.hidden_size,
                                 num_hidden_layers=setup.layers, num_attention_heads=2,
                                 num_key_value_heads=1, max_position_embeddings=512, seed=seed)
    return build_model(config, tokenizer), tokenizer
