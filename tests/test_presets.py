"""Training presets (configs/training.yaml, training/presets.py)."""

from __future__ import annotations

import pytest

from training.preference import PreferenceSettings
from training.presets import (
    CONFIG_PATH,
    EXTRA_KEYS,
    load_training_preset,
    preset_settings,
    split_preset,
)
from training.sft import SftSettings

# Seed 002 ("Production Model Upgrade Guide"), verbatim numbers.
SEED_002_SETTINGS = {"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "learning_rate": 5e-5,
                     "num_train_epochs": 5, "per_device_train_batch_size": 2,
                     "gradient_accumulation_steps": 8, "warmup_ratio": 0.1}
# Greedy, no n-gram ban: the seed's no_repeat_ngram_size 3 also counted the prompt's tokens, and
# every reference answer repeats the question's words, so exact answers were impossible.
BATCHQA_DECODING = {"temperature": 0.0, "max_new_tokens": 96}
SEED_002_SYSTEM = ("You are a pharmaceutical batch record assistant.\n"
                   "Provide precise, factual answers based only on the batch data.\n"
                   "Keep responses concise and accurate.")


def test_batchqa_preset_is_seed_002():
    settings, extras = split_preset(load_training_preset("batchqa_adapter"))
    assert settings == SEED_002_SETTINGS
    embedded = extras.pop("embedded_overrides")  # the tiny CPU model only
    assert extras == {"system_prompt": SEED_002_SYSTEM, "end_token": "<|end|>",
                      "decoding": BATCHQA_DECODING}
    # the embedded model also trains its token embeddings (tied to the output layer)
    assert set(embedded) <= set(SEED_002_SETTINGS) | {"modules_to_save"}
    assert embedded["modules_to_save"] == ["embed_tokens"]
    sft = SftSettings.from_mapping(settings)
    assert (sft.lora_r, sft.lora_alpha, sft.lora_dropout) == (32, 64, 0.05)
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == 16
    assert (sft.learning_rate, sft.num_train_epochs, sft.warmup_ratio) == (5e-5, 5.0, 0.1)


def test_preference_presets_choose_the_method():
    for task, method in (("dpo_adapter", "dpo"), ("orpo_adapter", "orpo")):
        settings, extras = split_preset(load_training_preset(task))
        # a quarter held out on the embedded default: the held-out preference accuracy's pairs
        assert extras == {"embedded_overrides": {"eval_fraction": 0.25}}
        assert PreferenceSettings.from_mapping(settings).method == method


def test_sft_presets_apply_on_the_embedded_profile_only():
    for task in ("qlora_adapter", "grit_adapter"):
        embedded, _ = preset_settings(task, "embedded")
        assert embedded["modules_to_save"] == ["embed_tokens"]
        assert SftSettings.from_mapping(embedded).learning_rate == 2e-3
        assert preset_settings(task, "hf")[0] == {}  # SftSettings defaults for real models
    grit, _ = preset_settings("grit_adapter", "embedded", {"grit_reproject_every": 7})
    assert SftSettings.from_mapping(grit).grit_reproject_every == 7


def test_split_preset_separates_extras():
    settings, extras = split_preset({"lora_r": 8, "end_token": "<|end|>", "decoding": {}})
    assert settings == {"lora_r": 8} and extras == {"end_token": "<|end|>", "decoding": {}}
    assert set(EXTRA_KEYS) == {"system_prompt", "end_token", "decoding", "embedded_overrides"}


def test_embedded_overrides_apply_only_to_the_embedded_profile():
    embedded, _ = preset_settings("batchqa_adapter", "embedded", {"max_steps": 3, "seed": None})
    real, _ = preset_settings("batchqa_adapter", "hf", {"max_steps": 3})
    assert real == {**SEED_002_SETTINGS, "max_steps": 3}  # seed 002 exactly, plus the run config
    assert embedded["learning_rate"] != real["learning_rate"] and embedded["max_steps"] == 3
    assert "seed" not in embedded  # None in the run config means "not set"


def test_bad_embedded_overrides_name_the_section(tmp_path):
    path = tmp_path / "training.yaml"
    path.write_text("batchqa_adapter:\n  embedded_overrides:\n    lora_rnk: 4\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[batchqa_adapter\] embedded_overrides: field "
                                         "'lora_rnk' is unknown"):
        load_training_preset("batchqa_adapter", path)


def test_errors_name_file_and_section(tmp_path):
    path = tmp_path / "training.yaml"
    path.write_text("batchqa_adapter:\n  lora_rank: 8\nodd: [1]\ndpo_adapter:\n  beta: 0\n"
                    "orpo_adapter:\n  decoding: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path} \[batchqa_adapter\]: field 'lora_rank' is "
                                         "unknown"):
        load_training_preset("batchqa_adapter", path)
    with pytest.raises(ValueError, match=rf"{path}: no section 'grpo_adapter'; sections: "
                                         "batchqa_adapter, odd"):
        load_training_preset("grpo_adapter", path)
    with pytest.raises(ValueError, match=rf"{path} \[odd\]: expected a mapping"):
        load_training_preset("odd", path)
    with pytest.raises(ValueError, match=rf"{path} \[dpo_adapter\]: beta must be > 0"):
        load_training_preset("dpo_adapter", path)
    with pytest.raises(ValueError, match=rf"{path} \[orpo_adapter\]: field 'decoding' must be"):
        load_training_preset("orpo_adapter", path)
    with pytest.raises(ValueError, match="training presets file not found"):
        load_training_preset("dpo_adapter", tmp_path / "missing.yaml")
    assert CONFIG_PATH.name == "training.yaml" and CONFIG_PATH.parent.name == "configs"


def test_rag_presets_keep_row_sampling_out_of_the_trainer_settings():
    for task, key, settings_class in (("rag_sft_adapter", "max_rows_per_stage", SftSettings),
                                      ("rag_dpo_adapter", "max_pairs_per_kind",
                                       PreferenceSettings)):
        embedded, embedded_extras = preset_settings(task, "embedded")
        real, real_extras = preset_settings(task, "hf", {key: 5})
        assert key not in embedded and key not in real  # the trainer never sees them
        assert isinstance(embedded_extras[key], int) and real_extras[key] == 5
        settings_class.from_mapping(embedded)  # what the task will build
        settings_class.from_mapping(real)
        assert embedded["max_length"] == real["max_length"] == 2560


def test_a_bad_row_sampling_value_names_the_file_and_field(tmp_path):
    path = tmp_path / "training.yaml"
    path.write_text("rag_sft_adapter:\n  embedded_overrides:\n    max_rows_per_stage: 0\n",
                    encoding="utf-8")
    with pytest.raises(ValueError, match=r"training.yaml \[rag_sft_adapter\].*"
                                         r"'max_rows_per_stage'"):
        load_training_preset("rag_sft_adapter", path)
