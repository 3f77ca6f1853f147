"""Task presets from configs/training.yaml: trainer settings plus a task's prompt and decoding.

`load_training_preset(task)` returns a task's section, checked: its settings part must build the
task's settings class (`PRESET_SETTINGS`), and `decoding` must be a mapping. `split_preset` parts a
preset into trainer settings overrides and the extras (`EXTRA_KEYS`) an asset uses itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from training.grpo import GrpoSettings
from training.preference import PreferenceSettings
from training.sft import SftSettings

CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "training.yaml"
EXTRA_KEYS = ("system_prompt", "end_token", "decoding", "embedded_overrides")
# Keys that choose the training rows (the asset applies them), allowed at the top level and in
# `embedded_overrides`: how many rows of each curriculum stage / pairs of each rejected kind.
DATA_KEYS = ("max_rows_per_stage", "max_pairs_per_kind")
# task -> the settings class its preset's settings part must build
PRESET_SETTINGS: dict[str, type[SftSettings] | type[PreferenceSettings] | type[GrpoSettings]] = {
    "qlora_adapter": SftSettings,
    "grit_adapter": SftSettings,
    "batchqa_adapter": SftSettings,
    "dpo_adapter": PreferenceSettings,
    "orpo_adapter": PreferenceSettings,
    "grpo_adapter": GrpoSettings,
    "rag_sft_adapter": SftSettings,
    "rag_dpo_adapter": PreferenceSettings,
}


def load_training_preset(task: str, path: str | Path | None = None) -> dict[str, Any]:
    """The `task` section of configs/training.yaml (or `path`); errors name file and section."""
    path = Path(path) if path is not None else CONFIG_PATH
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: training presets file not found") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(document, Mapping):
        raise ValueError(f"{path}: expected a mapping of task sections")
    if task not in document:
        raise ValueError(f"{path}: no section {task!r}; sections: {', '.join(map(str, document))}")
    preset = document[task] if document[task] is not None else {}
    where = f"{path} [{task}]"
    if not isinstance(preset, Mapping):
        raise ValueError(f"{where}: expected a mapping of settings")
    preset = dict(preset)
    settings, extras = split_preset(preset)
    for key in ("decoding", "embedded_overrides"):
        if key in extras and not isinstance(extras[key], Mapping):
            raise ValueError(f"{where}: field {key!r} must be a mapping")
    for key in ("system_prompt", "end_token"):
        if key in extras and not isinstance(extras[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string")
    embedded = dict(extras.get("embedded_overrides", {}))
    for key, value in [*settings.items(), *embedded.items()]:
        if key in DATA_KEYS and value is not None and (not isinstance(value, int)
                                                       or isinstance(value, bool) or value < 1):
            raise ValueError(f"{where}: field {key!r} must be a positive integer or null")
    if task in PRESET_SETTINGS:
        trainer = _without_data_keys(settings)
        PRESET_SETTINGS[task].from_mapping(trainer, source=where)  # raises naming the field
        PRESET_SETTINGS[task].from_mapping({**trainer, **_without_data_keys(embedded)},
                                           source=f"{where} embedded_overrides")
    return preset


def preset_settings(task: str, profile: str, overrides: Mapping[str, Any] | None = None,
                    path: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer settings, extras) of `task` for a base model of `profile`: the preset's settings,
    then its `embedded_overrides` when the base model is the embedded one, then `overrides`
    (an asset's run config; None values ignored). DATA_KEYS end up in the extras."""
    settings, extras = split_preset(load_training_preset(task, path))
    settings.update(embedded_overrides(extras, profile))
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    extras = {**extras, **{key: settings.pop(key) for key in DATA_KEYS if key in settings}}
    return settings, extras


def _without_data_keys(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in DATA_KEYS}


def embedded_overrides(extras: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """The preset's `embedded_overrides` when the base model's profile is embedded, else {}."""
    return dict(extras.get("embedded_overrides", {})) if profile == "embedded" else {}


def split_preset(preset: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer settings overrides, extras: system_prompt / end_token / decoding) of a preset."""
    settings = {k: v for k, v in preset.items() if k not in EXTRA_KEYS}
    extras = {k: v for k, v in preset.items() if k in EXTRA_KEYS}
    return settings, extras

