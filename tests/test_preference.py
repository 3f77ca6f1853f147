"""DPO / ORPO adapter task (training/preference.py) on a tiny embedded base model, on the CPU."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_embedded_model import TINY

from training.embedded_model import build_embedded_base_model
from training.preference import (
    PreferenceSettings,
    conversational_pair,
    preference_task,
    read_preference_rows,
)
from training.sft import NO_CUDA, load_adapter, split_rows

# Six memorisable pairs, each twice: 12 rows, 2 held out (10% rounded up), 10 trained on.
PAIRS = [{"prompt": f"Step {i}: is the operator signature present?",
          "chosen": f"No: deviation {i}, missing signature.",
          "rejected": "Yes, all fine."} for i in range(6)]
STEPS = 21  # 10 rows at batch 4 = 3 steps per epoch: 7 whole epochs
EPOCHS = 7
FAST = {"torch_threads": 1, "learning_rate": 5e-3, "save_steps": 100}  # tiny model: a high lr


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("preference")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(root / "base", TINY)
    yield SimpleNamespace(root=root, model=str(root / "base"),
                          train_file=_write_jsonl(root / "pairs.jsonl", PAIRS * 2))
    torch.set_num_threads(previous)


def _train(base: SimpleNamespace, method: str) -> SimpleNamespace:
    reports: list[dict] = []
    out = base.root / method
    config = {"base_model_path": base.model, "train_file": str(base.train_file),
              "method": method, "max_steps": STEPS, **FAST}
    metadata = preference_task(config, out, lambda **m: reports.append(m))
    return SimpleNamespace(metadata=metadata, reports=reports, out=out, method=method)


@pytest.fixture(scope="module")
def dpo(base) -> SimpleNamespace:
    return _train(base, "dpo")


@pytest.fixture(scope="module")
def orpo(base) -> SimpleNamespace:
    return _train(base, "orpo")


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _answer_logp(model, tokenizer, row: dict, key: str) -> float:
    """Sum of log p(answer tokens | chat prompt) under `model`."""
    chat = conversational_pair(row)
    prompt = tokenizer.apply_chat_template(chat["prompt"], add_generation_prompt=True,
                                           return_dict=True)["input_ids"]
    ids = tokenizer.apply_chat_template(chat["prompt"] + chat[key], return_dict=True,
                                        return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logp[len(prompt) - 1:].sum())


def test_settings_defaults_and_errors():
    s = PreferenceSettings()
    assert (s.lora_r, s.lora_alpha, s.lora_dropout) == (16, 32, 0.05)
    assert s.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                "down_proj")
    assert (s.learning_rate, s.beta, s.method) == (5e-5, 0.1, "dpo")
    assert (s.lr_scheduler_type, s.warmup_ratio, s.num_train_epochs) == ("cosine", 0.1, 1.0)
    assert (s.per_device_train_batch_size, s.max_length, s.max_steps) == (4, 512, None)
    assert (s.eval_fraction, s.seed, s.quantization) == (0.1, 42, "auto")
    with pytest.raises(ValueError, match="method must be one of dpo, orpo, got 'kto'"):
        PreferenceSettings.from_mapping({"method": "kto"})
    with pytest.raises(ValueError, match="task config: beta must be > 0"):
        PreferenceSettings.from_mapping({"beta": 0})
    with pytest.raises(ValueError, match="field 'optimizer' is unknown"):
        PreferenceSettings.from_mapping({"optimizer": "grit"})


def test_rows_become_conversational_pairs():
    pair = conversational_pair({"prompt": "Q", "chosen": "A", "rejected": "B"})
    assert pair == {"prompt": [{"role": "user", "content": "Q"}],
                    "chosen": [{"role": "assistant", "content": "A"}],
                    "rejected": [{"role": "assistant", "content": "B"}]}
    with_system = conversational_pair({"system": "S", "prompt": "Q", "chosen": "A",
                                       "rejected": "B"})
    assert with_system["prompt"] == [{"role": "system", "content": "S"},
                                     {"role": "user", "content": "Q"}]


def test_bad_rows_name_file_line_and_field(tmp_path):
    good = json.dumps(PAIRS[0])
    cases = [
        ("{oops", "line 2: not valid JSON"),
        (json.dumps({"prompt": "Q", "chosen": "A"}),
         "line 2: field 'rejected' must be a non-empty string"),
        (json.dumps({"prompt": "Q", "chosen": 3, "rejected": "B"}),
         "line 2: field 'chosen' must be a non-empty string"),
        (json.dumps({"record_id": "P-9", "prompt": " ", "chosen": "A", "rejected": "B"}),
         r"line 2 \(record_id P-9\): field 'prompt' must be a non-empty string"),
        (json.dumps({"prompt": "Q", "chosen": "A", "rejected": "A"}),
         "line 2: field 'rejected' equals 'chosen'"),
        (json.dumps({"prompt": "Q", "chosen": "A", "rejected": "B", "system": 1}),
         "line 2: field 'system' must be a string"),
    ]
    path = tmp_path / "pairs.jsonl"
    for bad_line, message in cases:
        path.write_text(good + "\n" + bad_line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message) as info:
            read_preference_rows(path)
        assert str(path) in str(info.value)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no preference rows"):
        read_preference_rows(path)
    with pytest.raises(ValueError, match="field 'base_model_path' is required"):
        preference_task({"train_file": str(path)}, tmp_path, lambda **m: None)


def test_dpo_starts_at_log2_and_learns_the_preference(dpo):
    md = dpo.metadata
    losses, margins = md["losses"], md["reward_margins"]
    assert len(losses) == len(margins) == md["steps"] == STEPS
    # step 1: the LoRA B matrices are zero, policy == reference: loss -log sigmoid(0) = log 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5) and margins[0] == 0.0
    assert sum(losses[-5:]) / 5 < 0.2  # measured ~0.035
    assert sum(margins[-3:]) / 3 > 2.0  # measured ~3.4
    assert md["reward_accuracy"] == 1.0 and md["eval_reward_accuracy"] == 1.0
    assert md["eval_reward_margin"] > 2.0 and md["eval_loss"] < 0.2
    assert "log_odds_ratio" not in md
    # our own held-out scoring agrees with TRL's on the 2 held-out pairs
    assert md["heldout_preference_accuracy"] == 1.0 and md["heldout_preference_pairs"] == 2
    assert 0 < md["heldout_preference_accuracy_ci_low"] < 0.5  # 2 pairs cannot exclude chance
    assert md["heldout_preference_significant"] is False
    assert md["heldout_mean_margin"] == pytest.approx(md["eval_reward_margin"], rel=0.05)


def test_orpo_loss_falls_and_log_odds_rise(orpo):
    md = orpo.metadata
    losses = md["losses"]
    assert len(losses) == md["steps"] == STEPS
    assert sum(losses[-5:]) / 5 < losses[0] - 0.25  # measured 6.21 -> ~5.78
    odds = [r["log_odds_ratio"] for r in orpo.reports if "log_odds_ratio" in r]
    assert len(odds) == STEPS and md["log_odds_ratio"] == odds[-1]
    assert sum(odds[-3:]) / 3 > odds[0] + 0.05  # measured -0.91 -> ~-0.78
    assert md["eval_log_odds_ratio"] > odds[0]
    assert md["heldout_preference_pairs"] == 2
    assert md["heldout_preference_accuracy"] == md["eval_reward_accuracy"]
    assert {"reward_accuracy", "reward_margin", "eval_loss"} <= set(md)


@pytest.mark.parametrize("run", ["dpo", "orpo"])
def test_metadata_describes_the_run(run, request, base):
    result = request.getfixturevalue(run)
    md = result.metadata
    assert md["method"] == run and md["beta"] == 0.1
    assert md["quantization"] == ("nf4" if torch.cuda.is_available() else NO_CUDA)
    assert md["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert md["resumed_from"] is None and md["train_rows"] == 10
    # r=16 on 7 projections x 2 layers (hidden 32, 2 kv heads x 8, intermediate 64)
    assert md["trainable_params"] == 2 * 16 * (4 * (32 + 32) - 2 * 16 + 3 * (32 + 64))
    assert md["tokens_per_s"] > 0 and md["wall_s"] > 0 and md["peak_memory_mb"] > 0
    assert md["dataset_sha256"] == hashlib.sha256(base.train_file.read_bytes()).hexdigest()
    adapter, archive = Path(md["adapter_path"]), Path(md["archive_path"])
    assert adapter == result.out / "adapter" and (adapter / "adapter_model.safetensors").is_file()
    assert md["adapter_size_bytes"] == sum(p.stat().st_size for p in adapter.iterdir())
    assert md["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    card = (result.out / "model_card.md").read_text()
    assert f"# GxPLab LoRA adapter ({run}_adapter)" in card and f"| method | {run} |" in card


def test_tokens_seen_count_every_trained_sequence(base, dpo, orpo):
    """Non-padding tokens of prompt+chosen and prompt+rejected, 7 epochs over the 10 rows."""
    tokenizer = _tokenizer(base.model)
    train, _ = split_rows(read_preference_rows(base.train_file), PreferenceSettings())
    per_epoch = 0
    for row in train:
        chat = conversational_pair(row)
        for key in ("chosen", "rejected"):
            per_epoch += len(tokenizer.apply_chat_template(chat["prompt"] + chat[key],
                                                           return_dict=True)["input_ids"])
    assert dpo.metadata["tokens_seen"] == EPOCHS * per_epoch
    # ORPO appends one more </s> to each answer (after the template's trailing newline)
    assert orpo.metadata["tokens_seen"] == EPOCHS * (per_epoch + 2 * len(train))


def test_report_streams_every_logging_step(dpo, orpo):
    for result in (dpo, orpo):
        steps = [r for r in result.reports if "loss" in r]
        assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
        assert [r["loss"] for r in steps] == result.metadata["losses"]
        assert [r["reward_margin"] for r in steps] == result.metadata["reward_margins"]
        assert all(0.0 <= r["reward_accuracy"] <= 1.0 for r in steps)
        assert any("eval_loss" in r for r in result.reports)
        assert any(r.get("note", "").startswith("quantization") for r in result.reports) \
            or torch.cuda.is_available()


def test_saved_dpo_adapter_prefers_chosen_and_generates(dpo, base):
    from transformers import AutoModelForCausalLM

    tuned = load_adapter(base.model, dpo.metadata["adapter_path"])
    plain = AutoModelForCausalLM.from_pretrained(base.model).eval()
    tokenizer = _tokenizer(dpo.metadata["adapter_path"])
    row = PAIRS[2]

    def margin(model) -> float:
        return (_answer_logp(model, tokenizer, row, "chosen")
                - _answer_logp(model, tokenizer, row, "rejected"))

    # DPO's reward margin is beta x this log-ratio gain: ~3.4 / 0.1 measured
    assert margin(tuned) > margin(plain) + 10.0
    prompt = tokenizer.apply_chat_template(conversational_pair(row)["prompt"],
                                           add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt")
    out = tuned.generate(**prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert new.numel() == 5 and int(new.max()) < len(tokenizer)


def test_saved_orpo_adapter_fits_the_chosen_answers(orpo, base):
    from transformers import AutoModelForCausalLM

    tuned = load_adapter(base.model, orpo.metadata["adapter_path"])
    plain = AutoModelForCausalLM.from_pretrained(base.model).eval()
    tokenizer = _tokenizer(orpo.metadata["adapter_path"])
    row = PAIRS[4]
    assert _answer_logp(tuned, tokenizer, row, "chosen") \
        > _answer_logp(plain, tokenizer, row, "chosen") + 2.0


def test_orpo_rerun_resumes_from_the_last_checkpoint(base):
    out = base.root / "resumable"
    config = {"base_model_path": base.model, "train_file": str(base.train_file),
              "method": "orpo", **FAST, "save_steps": 2}
    first = preference_task({**config, "max_steps": 2}, out, lambda **m: None)
    reports: list[dict] = []
    second = preference_task({**config, "max_steps": 4}, out, lambda **m: reports.append(m))
    assert first["resumed_from"] is None
    assert second["resumed_from"] == str(out / "checkpoints" / "checkpoint-2")
    assert [r["step"] for r in reports if "loss" in r] == [3, 4]
    assert second["losses"][:2] == first["losses"] and len(second["losses"]) == 4
    assert second["tokens_seen"] > first["tokens_seen"] > 0


def test_dpo_continuing_an_adapter_uses_it_as_the_reference(dpo, base):
    """SFT then DPO (the rag_dpo_adapter task): training continues the given adapter, and the
    reference is that adapter merged. The first loss is log 2 again although the adapter already
    prefers the chosen answers (measured margin > 2): with the bare base model as the reference
    the first margin would not be 0."""
    from training.tasks import rag_dpo_task

    reports: list[dict] = []
    config = {"base_model_path": base.model, "train_file": str(base.train_file),
              "init_adapter_path": dpo.metadata["adapter_path"], "max_steps": 3,
              "max_length": 256, **FAST}
    md = rag_dpo_task(config, base.root / "continued", lambda **m: reports.append(m))
    assert md["init_adapter_path"] == dpo.metadata["adapter_path"]
    assert md["losses"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert md["reward_margins"][0] == pytest.approx(0.0, abs=1e-4)  # merged vs unmerged
    # the continued adapter starts from the trained one: it still prefers the chosen answers
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(base.model)

    def margin(model) -> float:
        return (_answer_logp(model, tokenizer, PAIRS[0], "chosen")
                - _answer_logp(model, tokenizer, PAIRS[0], "rejected"))

    plain = AutoModelForCausalLM.from_pretrained(base.model).eval()
    assert margin(load_adapter(base.model, md["adapter_path"])) > margin(plain) + 10.0
    with pytest.raises(ValueError, match="init_adapter_path"):
        rag_dpo_task({k: v for k, v in config.items() if k != "init_adapter_path"},
                     base.root / "x", lambda **m: None)


def test_sequential_sampling_keeps_the_curriculum_order():
    rows = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": "r"} for i in range(20)]
    settings = PreferenceSettings(train_sampling_strategy="sequential", eval_fraction=0.1)
    train, held_out = split_rows(rows, settings)
    kept = [int(r["prompt"][1:]) for r in train]
    assert kept == sorted(kept) and len(kept) == 18 and len(held_out) == 2
    assert set(kept).isdisjoint(int(r["prompt"][1:]) for r in held_out)
    shuffled, _ = split_rows(rows, PreferenceSettings(eval_fraction=0.1))
    assert [r["prompt"] for r in shuffled] != sorted((r["prompt"] for r in shuffled),
                                                     key=lambda p: int(p[1:]))
    with pytest.raises(ValueError, match="train_sampling_strategy"):
        PreferenceSettings(train_sampling_strategy="by_stage")
