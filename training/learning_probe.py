"""Did an SFT adapter learn its task? Two held-out measures that a broken run cannot fake.

- answer loss: mean token negative log-likelihood of each held-out answer given its prompt;
- answer matching: for each held-out row, is its own answer more likely (mean token log-prob)
  than the answer of another held-out row of a different question type? A model that only learnt
  the answers' vocabulary or form (trained on answers shuffled against their questions) stays
  near chance here, however low its loss; a model that reads the question moves to 1.

`learning_probe(model, tokenizer, rows)` returns both for chat rows (`messages`, the last one
the assistant's answer) with a `kind` per row (the question type); run it on the base model (a
peft model with its adapter disabled) and on the tuned one. Used by the learning regression test
(tests/test_learning_batchqa.py) and bench/bench_learning_adapters.py. Plain Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from training.preference_eval import completion_logprobs

# The small base model of the learning regression test and its bench: the embedded model's
# architecture at hidden 64, 2 layers, a 1,024-token vocabulary, 30 pretraining steps (seconds).
PROBE_BASE = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 1024, "pretrain_steps": 30, "batch_size": 4,
              "sequence_length": 128, "learning_rate": 1e-2, "warmup_steps": 3,
              "eval_max_blocks": 8, "max_documents": 60, "torch_threads": 1, "seed": 7}
# Trainer settings of the two probed tasks (short runs, one thread).
DPO_PROBE_SETTINGS = {"learning_rate": 5e-3, "max_steps": 12, "torch_threads": 1}
BATCHQA_PROBE_SETTINGS = {"learning_rate": 1e-2, "max_steps": 30, "per_device_train_batch_size": 8,
                          "lora_dropout": 0.0, "warmup_ratio": 0.05,
                          "modules_to_save": ["embed_tokens"], "torch_threads": 1}


def mismatched_pairs(rows: Sequence[Mapping[str, Any]], kinds: Sequence[str]
                     ) -> list[dict[str, Any]]:
    """Conversational pairs: each row's prompt with its own answer (`chosen`) and the answer of
    the next row (cyclically) whose kind differs (`rejected`); rows with no such row are left
    out."""
    if len(rows) != len(kinds):
        raise ValueError(f"mismatched_pairs: {len(rows)} rows but {len(kinds)} kinds")
    pairs = []
    n = len(rows)
    for i, row in enumerate(rows):
        other = next((j for j in range(i + 1, i + n) if kinds[j % n] != kinds[i]), None)
        if other is None:
            continue
        messages = list(row["messages"])
        pairs.append({"prompt": messages[:-1], "chosen": [messages[-1]],
                      "rejected": [rows[other % n]["messages"][-1]]})
    return pairs


def learning_probe(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]],
                   kinds: Sequence[str], batch_size: int = 8) -> dict[str, float]:
    """`answer_loss` (mean over rows of the answer's mean token NLL) and `answer_matching`
    (share of rows whose own answer beats a mismatched one) of `model` on held-out chat rows."""
    pairs = mismatched_pairs(rows, kinds)
    if not pairs:
        raise ValueError("learning_probe: needs held-out rows of at least two kinds")
    scores = completion_logprobs(model, tokenizer, pairs, batch_size)
    own, other = scores["chosen_mean"], scores["rejected_mean"]
    return {"answer_loss": -sum(own) / len(own),
            "answer_matching": sum(o > r for o, r in zip(own, other, strict=True)) / len(own),
            "rows": float(len(own))}


def batchqa_learning_case(base_model_path: str, output_dir: Any, *, seed: int = 0,
                          n_train: int = 160, settings: Mapping[str, Any] | None = None,
                          shuffle_answers: bool = False) -> dict[str, float]:
    """Train the batchqa SFT task (training/sft.py) on `n_train` seeded rows of the
    batch_record_qa train split over `base_model_path` and probe base and tuned model on the
    test split (summaries never trained on). `shuffle_answers` pairs every training question with
    another row's answer (a broken data pipeline). Returns base_/tuned_ answer_loss and
    answer_matching, the training steps and wall time."""
    import json
    import random
    from pathlib import Path

    from synthetic.batch_record_qa import batchqa_messages, generate_batch_record_qa
    from training.presets import load_training_preset
    from training.sft import load_adapter, sft_task

    preset = load_training_preset("batchqa_adapter")
    system, end = preset["system_prompt"], preset["end_token"]
    rows = generate_batch_record_qa(seed=seed)
    train = [r for r in rows if r["split"] == "train"]
    random.Random(seed).shuffle(train)
    train = train[:n_train]
    chats = [batchqa_messages(r, system, end) for r in train]
    if shuffle_answers:
        answers = [c["messages"][-1] for c in chats]
        random.Random(seed + 1).shuffle(answers)
        chats = [{"messages": c["messages"][:-1] + [a]} for c, a in zip(chats, answers,
                                                                        strict=True)]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_file = out / "train.jsonl"
    train_file.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
    config = {"base_model_path": base_model_path, "train_file": str(train_file),
              "eval_fraction": 0.0, "seed": seed, "save_steps": 10_000,
              "gradient_checkpointing": False, **(settings or {})}
    metadata = sft_task(config, out, lambda **_: None, task="batchqa_adapter")
    test = [r for r in rows if r["split"] == "test"]
    held_out = [batchqa_messages(r, system, end) for r in test]
    kinds = [r["question_type"] for r in test]
    model = load_adapter(base_model_path, out / "adapter")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out / "adapter"))
    tuned = learning_probe(model, tokenizer, held_out, kinds)
    with model.disable_adapter():
        base = learning_probe(model, tokenizer, held_out, kinds)
    return {"base_answer_loss": base["answer_loss"], "tuned_answer_loss": tuned["answer_loss"],
            "base_answer_matching": base["answer_matching"],
            "tuned_answer_matching": tuned["answer_matching"], "heldout_rows": tuned["rows"],
            "steps": float(metadata["steps"]), "train_wall_s": float(metadata["wall_s"])}


def preference_learning_case(base_model_path: str, output_dir: Any, *, seed: int = 0,
                             method: str = "dpo", settings: Mapping[str, Any] | None = None,
                             flip_labels: bool = False) -> dict[str, Any]:
    """Train DPO or ORPO (training/preference.py) on the offline alignment-instructions pairs
    (synthetic/alignment_instructions.py) with a quarter held out, and return the held-out
    preference metrics (training/preference_eval.py) plus steps and wall time. `flip_labels`
    swaps chosen and rejected in a seeded half of the training pairs (a broken data pipeline)."""
    import json
    import random
    from pathlib import Path

    from synthetic.alignment_instructions import build_alignment_sample, preference_pairs
    from training.preference import preference_task

    pairs = preference_pairs(build_alignment_sample())
    if flip_labels:  # training pairs only: the held-out pairs keep their true labels
        held_out = _held_out_prompts(pairs, seed)
        rng = random.Random(seed)
        pairs = [({**p, "chosen": p["rejected"], "rejected": p["chosen"]}
                  if p["prompt"] not in held_out and rng.random() < 0.5 else p) for p in pairs]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_file = out / "pairs.jsonl"
    train_file.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    config = {"base_model_path": base_model_path, "train_file": str(train_file),
              "method": method, "eval_fraction": 0.25, "seed": seed, "save_steps": 10_000,
              **(settings or {})}
    metadata = preference_task(config, out, lambda **_: None)
    keep = {k: v for k, v in metadata.items() if k.startswith("heldout_")}
    return {**keep, "steps": metadata["steps"], "train_wall_s": metadata["wall_s"]}


def _held_out_prompts(pairs: Sequence[Mapping[str, str]], seed: int) -> set[str]:
    """Prompts of the pairs the preference task holds out (its seeded 25% split)."""
    from training.preference import PreferenceSettings
    from training.sft import split_rows

    _, held_out = split_rows([dict(p) for p in pairs],
                             PreferenceSettings(eval_fraction=0.25, seed=seed))
    return {held_out[i]["prompt"] for i in range(len(held_out))}
