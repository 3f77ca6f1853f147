"""Preference tuning of a LoRA adapter with TRL, DPO or ORPO: the `dpo_adapter` task.

`preference_task(config, output_dir, report)` trains on a JSONL file of `{"prompt", "chosen",
"rejected"}` rows (plain strings; an optional `system` string). Each row becomes TRL's
conversational preference format (prompt = system + user messages, chosen / rejected = one
assistant message), so the tokenizer's chat template renders it exactly as at inference.

- `method: dpo` (default): `trl.DPOTrainer` with a peft LoRA config and `ref_model=None`: the base
  model with the adapter disabled is the reference. `beta` is DPO's beta.
- `method: orpo`: `trl.experimental.orpo.ORPOTrainer` (no reference model); `beta` is ORPO's
  lambda (the weight of the odds-ratio term, TRL's `ORPOConfig.beta`).

Quantization, checkpoints and resume, the adapter archive and the model card are those of the SFT
task (training/sft.py). The metadata adds the preference metrics TRL logs: reward accuracy and
margin (and ORPO's log-odds ratio) at the last logging step and on the held-out pairs, and
`heldout_preference_accuracy` with its Wilson 95% CI (training/preference_eval.py): the share of
held-out pairs (`eval_fraction`, never trained on) the adapter ranks chosen above rejected, beside
the base model's own ranking of the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.sft import (
    LoraSettings,
    TrainingRun,
    _load_model,
    _report_callback,
    file_sha256,
    iter_jsonl_rows,
    lora_config,
    model_card,
    save_adapter,
    split_rows,
    start_run,
    task_inputs,
    torch_threads,
    train_and_measure,
    trainer_arguments,
)

if TYPE_CHECKING:  # training.tasks imports the task modules; torch loads only when a task runs
    from training.tasks import Report

METHODS = ("dpo", "orpo")
PAIR_FIELDS = ("prompt", "chosen", "rejected")
# TRL log key -> the name it is reported under per logging step and in the metadata
LOGGED_METRICS = {
    "rewards/accuracies": "reward_accuracy",
    "rewards/margins": "reward_margin",
    "log_odds_ratio": "log_odds_ratio",  # ORPO only
}


@dataclass(frozen=True)
class PreferenceSettings(LoraSettings):
    """LoRA (r 16, alpha 32, dropout 0.05, q/k/v/o/gate/up/down) and preference settings.

    DPO on billion-parameter models usually runs at lr 5e-7 to 5e-6; the default 5e-5 suits the
    embedded default's tiny model (measured: 5e-6 barely moves its reward margin in a short run).
    Lower it through the config for a real model."""

    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    method: str = "dpo"
    beta: float = 0.1  # DPO: beta (deviation from the reference); ORPO: lambda

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


def read_preference_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a JSONL preference file: non-empty `prompt`, `chosen`, `rejected` strings that
    differ between chosen and rejected, and an optional `system` string."""
    rows: list[dict[str, str]] = []
    for where, row in iter_jsonl_rows(path):
        for name in PAIR_FIELDS:
            value = row.get(name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: field {name!r} must be a non-empty string")
        if row["chosen"] == row["rejected"]:
            raise ValueError(f"{where}: field 'rejected' equals 'chosen': nothing to prefer")
        if not isinstance(row.get("system", ""), str):
            raise ValueError(f"{where}: field 'system' must be a string")
        pair = {name: row[name] for name in PAIR_FIELDS}
        if row.get("system"):
            pair["system"] = row["system"]
        rows.append(pair)
    if not rows:
        raise ValueError(f"{path}: no preference rows")
    return rows


def conversational_pair(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational preference example for a plain-string row."""
    prompt = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    prompt.append({"role": "user", "content": row["prompt"]})
    return {"prompt": prompt,
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


def preference_task(config: dict, output_dir: Path, report: Report) -> dict:
    """Train a DPO or ORPO LoRA adapter on `config["train_file"]` over its base model."""
    base_model_path, train_file, overrides = task_inputs(config)
    init_adapter_path = overrides.pop("init_adapter_path", None)
    task = overrides.pop("task", None)
    settings = PreferenceSettings.from_mapping(overrides)
    rows = [conversational_pair(row) for row in read_preference_rows(train_file)]
    task = task or f"{settings.method}_adapter"
    run = start_run(output_dir, settings.quantization, task, report)
    with torch_threads(settings.torch_threads):
        trainer = _build_trainer(base_model_path, rows, settings, run, report,
                                 init_adapter_path=init_adapter_path)
        metrics = train_and_measure(trainer, run)
        heldout = _heldout_metrics(trainer, rows, settings, init_adapter_path)
    metadata: dict[str, Any] = {
        **save_adapter(trainer, run.output_dir), **metrics,
        **preference_metrics(trainer.state.log_history),
        **heldout,
        "method": settings.method,
        "beta": settings.beta,
        "train_rows": len(trainer.train_dataset),
        "dataset_sha256": file_sha256(train_file),
        "init_adapter_path": init_adapter_path,
    }
    (run.output_dir / "model_card.md").write_text(
        model_card(base_model_path, settings, metadata, task=task), encoding="utf-8")
    return metadata


def _heldout_metrics(trainer: Any, rows: list[dict[str, Any]], settings: PreferenceSettings,
                     init_adapter_path: str | None) -> dict[str, Any]:
    """Held-out preference accuracy (training/preference_eval.py) on the pairs `split_rows` held
    out of training (the same seeded split the trainer got)."""
    from training.preference_eval import heldout_preference_metrics

    _, held_out = split_rows(rows, settings)
    if held_out is None:
        return {}
    pairs = [held_out[i] for i in range(len(held_out))]
    ref_model = getattr(trainer, "ref_model", None) if init_adapter_path else None
    return heldout_preference_metrics(trainer.model, trainer.processing_class, pairs,
                                      settings.method, settings.beta, ref_model=ref_model)


def preference_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Reward accuracy, reward margin and (ORPO) log-odds ratio at the last training log and the
    last evaluation, plus the reward margin per logging step (`reward_margins`)."""
    train = [e for e in log_history if "loss" in e]
    evals = [e for e in log_history if "eval_loss" in e]
    out: dict[str, Any] = {"reward_margins": [float(e["rewards/margins"]) for e in train
                                              if "rewards/margins" in e]}
    for key, name in LOGGED_METRICS.items():
        if train and key in train[-1]:
            out[name] = float(train[-1][key])
        if evals and f"eval_{key}" in evals[-1]:
            out[f"eval_{name}"] = float(evals[-1][f"eval_{key}"])
    return out


def _build_trainer(base_model_path: str, rows: list[dict[str, Any]],
                   settings: PreferenceSettings, run: TrainingRun, report: Report, *,
                   init_adapter_path: str | None = None) -> Any:
    """The TRL trainer. With `init_adapter_path` (SFT then DPO), training continues that adapter
    and DPO's reference is the base model with it merged (frozen), not the bare base model."""
    from transformers import PrinterCallback

    model, tokenizer = _load_model(base_model_path, run.quantization)
    ref_model = None
    if init_adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, init_adapter_path, is_trainable=True)
        if settings.method == "dpo":
            reference, _ = _load_model(base_model_path, run.quantization)
            ref_model = PeftModel.from_pretrained(reference, init_adapter_path).merge_and_unload()
            ref_model.eval().requires_grad_(False)
    dataset, eval_dataset = split_rows(rows, settings)
    common = {**trainer_arguments(settings, run.checkpoints, run.quantization,
                                  eval_dataset is not None),
              "beta": settings.beta, "dataset_num_proc": None}
    shared = {"model": model, "train_dataset": dataset, "eval_dataset": eval_dataset,
              "processing_class": tokenizer,
              "peft_config": None if init_adapter_path else lora_config(settings),
              "callbacks": [_report_callback(report, LOGGED_METRICS)]}
    if settings.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(ref_model=ref_model, args=DPOConfig(**common), **shared)
    else:
        from trl.experimental.orpo import ORPOConfig

        # ORPO's collator needs the chosen_/rejected_ columns that the Trainer would drop
        args = ORPOConfig(**common, remove_unused_columns=False)
        trainer = _orpo_trainer_class()(args=args, **shared)
    # The printer writes Python dicts to stdout, where a standalone task prints JSON lines.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _orpo_trainer_class() -> type:
    import torch
    from trl.experimental.orpo import ORPOTrainer

    class TokenCountingORPOTrainer(ORPOTrainer):
        """ORPO batches carry `chosen_*` / `rejected_*` tensors, not `input_ids`, so the Trainer's
        token count (tokens/s in the metadata) counts their attention masks instead."""

        def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
            if self.args.include_num_input_tokens_seen == "no":
                return
            tokens = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
            tokens = torch.as_tensor(tokens, device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    return TokenCountingORPOTrainer
