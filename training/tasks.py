"""Training and inference tasks that run in their own process (through Dagster Pipes, or
standalone).

A task is `fn(config: dict, output_dir: Path, report: Report) -> dict`: it writes its artifacts
under `output_dir`, calls `report(step=..., **metrics)` while it runs (streamed back to Dagster by
`resources/pipes_entry.py`, printed as JSON lines when run standalone) and returns the final
metadata. Plain Python: no Dagster import here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from training.generate_task import generate_task, hidden_states_task
from training.grpo import grpo_task
from training.sft import sft_task


class Report(Protocol):
    def __call__(self, **metrics: Any) -> None: ...


def base_model_task(config: dict, output_dir: Path, report: Report) -> dict:
    """Build the base model of configs/base_model.yaml's profile (`profile` in the config
    overrides it): `embedded` builds and pretrains the tiny local model (the other keys override
    `embedded:`); `hf` resolves `model_id` (default `hf.model_id`) without copying it."""
    from training.embedded_model import (
        EmbeddedModelConfig,
        build_embedded_base_model,
        load_base_model_settings,
    )

    config = dict(config)
    settings = load_base_model_settings()
    profile = config.pop("profile", None) or settings.profile
    if profile == "hf":
        from training.hf_base import describe_hf_base_model

        unknown = set(config) - {"model_id", "trust_remote_code"}
        if unknown:
            raise ValueError(f"task config: field(s) {sorted(unknown)} do not apply to profile hf")
        return describe_hf_base_model(
            config.get("model_id") or settings.hf_model_id, output_dir,
            trust_remote_code=bool(config.get("trust_remote_code",
                                              settings.hf_trust_remote_code)))
    if profile != "embedded":
        raise ValueError(f"task config: field 'profile': {profile!r} is not embedded or hf")
    defaults = dataclasses.asdict(settings.embedded)
    model_config = EmbeddedModelConfig.from_mapping({**defaults, **config}, "task config")

    def progress(step: int, total: int, loss: float) -> None:
        report(step=step, total=total, loss=loss)

    info = build_embedded_base_model(output_dir, model_config, progress=progress)
    result = info.pretrain
    return {
        "profile": "embedded",
        "model_path": str(output_dir),
        "parameter_count": info.parameter_count,
        "size_bytes": info.size_bytes,
        "corpus_sha256": info.corpus_sha256,
        "documents": info.n_documents,
        "initial_perplexity": result.initial_perplexity,
        "final_perplexity": result.final_perplexity,
        "tokens_per_s": result.tokens_per_s,
        "wall_s": info.timings_s.get("total_s"),
        "losses": list(result.losses),
    }


def grit_task(config: dict, output_dir: Path, report: Report) -> dict:
    """The SFT task with the GRIT optimizer. Activation checkpointing is off by default: its
    recomputed forward passes would feed GRIT's activation hooks a second time."""
    return sft_task({"optimizer": "grit", "gradient_checkpointing": False, **config}, output_dir,
                    report, task="grit_adapter")


def gxp_audit_task(config: dict, output_dir: Path, report: Report) -> dict:
    """The record-audit fine-tuning (scoring/record_audit.py chats). `method`: `full` trains every
    weight with an extra LM loss on the record tokens (training/audit_sft.py; what a tiny model
    needs to learn the task), `lora` is the SFT task (TRL, LoRA); `auto` (default): full for the
    embedded base model (a folder with gxplab_model.json), lora for any other (an hf model)."""
    config = dict(config)
    method = config.pop("method", None) or "auto"
    if method == "auto":
        base = config.get("base_model_path")
        method = "full" if base and (Path(base) / "gxplab_model.json").is_file() else "lora"
    if method == "full":
        from training.audit_sft import full_finetune_task

        return full_finetune_task(config, output_dir, report)
    if method != "lora":
        raise ValueError(f"task config: field 'method': {method!r} is not auto, full or lora")
    config.pop("heldout_file", None)
    # the prior-shift correction is the full method's (a bias on its one-token answer)
    config.pop("use_deviation_rate", None)
    # LoRA through TRL: the answer-only loss. A record prompt is about 200 tokens.
    defaults = {"max_length": 512, "learning_rate": 2e-3, "num_train_epochs": 2.0,
                "per_device_train_batch_size": 8, "gradient_checkpointing": False,
                "warmup_ratio": 0.05}
    return sft_task({**defaults, **config}, output_dir, report, task="gxp_audit_adapter")


def dpo_task(config: dict, output_dir: Path, report: Report) -> dict:
    """DPO on preference pairs (training/preference.py)."""
    from training.preference import preference_task

    return preference_task({"method": "dpo", **config}, output_dir, report)


def orpo_task(config: dict, output_dir: Path, report: Report) -> dict:
    """ORPO on preference pairs (training/preference.py)."""
    from training.preference import preference_task

    return preference_task({"method": "orpo", **config}, output_dir, report)


def rag_sft_task(config: dict, output_dir: Path, report: Report) -> dict:
    """Curriculum SFT for grounded answers: the rows come ordered by stage (single turn, multi
    turn, tool calls, hard negatives; synthetic/rag_training.py) and are trained in that order."""
    defaults = {"max_length": 2560, "train_sampling_strategy": "sequential",
                "gradient_checkpointing": False}
    return sft_task({**defaults, **config}, output_dir, report, task="rag_sft_adapter")


def rag_dpo_task(config: dict, output_dir: Path, report: Report) -> dict:
    """DPO after the curriculum SFT: continues the SFT adapter (`init_adapter_path`) on grounded
    vs ungrounded pairs, with the SFT model as DPO's reference."""
    from training.preference import preference_task

    if not config.get("init_adapter_path"):
        raise ValueError("task config: field 'init_adapter_path' (the SFT adapter) is required")
    return preference_task({"method": "dpo", "max_length": 2560, **config,
                            "task": "rag_dpo_adapter"}, output_dir, report)


TASKS: dict[str, Callable[[dict, Path, Report], dict]] = {
    "base_model": base_model_task,
    "qlora_adapter": sft_task,
    "grit_adapter": grit_task,
    "gxp_audit_adapter": gxp_audit_task,
    "dpo_adapter": dpo_task,
    "orpo_adapter": orpo_task,
    "batchqa_adapter": functools.partial(sft_task, task="batchqa_adapter"),
    "grpo_adapter": grpo_task,
    "rag_sft_adapter": rag_sft_task,
    "rag_dpo_adapter": rag_dpo_task,
    # Local inference, run like training (training/generate_task.py).
    "generate": generate_task,
    "hidden_states": hidden_states_task,
}
