"""Task adapters beyond SFT: DPO and ORPO on preference pairs, batch-record QA (seed 002).

Each trains in its own process through the compute resource (Pipes), like assets/models.py's SFT
adapters, with its settings from configs/training.yaml (`training/presets.py`): the preset, then
its `embedded_overrides` when the base model is the embedded one, then the asset's run config.
The settings used and where each came from are in the materialization metadata.
"""

import dagster as dg
from pydantic import Field

from assets.models import AdapterConfig, train_on_rows
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource
from synthetic.alignment_instructions import preference_pairs
from training.presets import embedded_overrides, preset_settings


def adapter_settings(context: dg.AssetExecutionContext, task: str, base_model: dict,
                     config: dg.Config | dict) -> tuple[dict, dict, dict]:
    """(trainer settings, preset extras, metadata naming the preset and the overrides used);
    `config`: the asset's run config (or its trainer fields as a dict)."""
    profile = base_model.get("profile", "embedded")
    overrides = dict(config) if isinstance(config, dict) else config.model_dump()
    settings, extras = preset_settings(task, profile, overrides)
    embedded = embedded_overrides(extras, profile)
    if embedded:
        context.log.info(f"{task}: embedded base model, preset settings overridden by "
                         f"configs/training.yaml embedded_overrides {embedded}")
    metadata = {
        "preset": f"configs/training.yaml [{task}]",
        "embedded_overrides": dg.MetadataValue.json(embedded),
        "run_config_overrides": dg.MetadataValue.json(
            {k: v for k, v in overrides.items() if v is not None}),
    }
    return settings, extras, metadata


class PreferenceAdapterConfig(AdapterConfig):
    """Overrides of training/preference.py's PreferenceSettings and the task's preset."""

    beta: float | None = Field(None, description="DPO beta; ORPO lambda (odds-ratio weight).")


def _preference_adapter_asset(task: str, description: str) -> dg.AssetsDefinition:
    """One preference-tuning asset: `task` (dpo_adapter or orpo_adapter; its preset names the
    method) on the accepted/rejected pairs of alignment_instructions."""

    @dg.asset(name=task, description=description, group_name="models", pool="gpu",
              kinds={"pytorch"}, code_version="1")
    def _asset(context: dg.AssetExecutionContext, config: PreferenceAdapterConfig,
               compute: ComputeResource, warehouse: WarehouseResource, base_model: dict,
               alignment_instructions: list[dict]) -> dg.Output[dict]:
        settings, _, metadata = adapter_settings(context, task, base_model, config)
        rows = preference_pairs(alignment_instructions)
        context.log.info(f"{task}: {len(rows)} accepted/rejected pairs, method "
                         f"{settings['method']}")
        return train_on_rows(context, compute, warehouse, task, settings, base_model, rows,
                             extra=metadata)

    return _asset


dpo_adapter = _preference_adapter_asset(
    "dpo_adapter", "LoRA adapter tuned with TRL's DPOTrainer on the accepted/rejected pairs "
    "(peft reference: the base model with the adapter disabled, ref_model=None); reward "
    "accuracy and margin in metadata.")
orpo_adapter = _preference_adapter_asset(
    "orpo_adapter", "The DPO variant without a reference model: ORPO (trl.experimental.orpo) on "
    "the same pairs; log-odds ratio, reward accuracy and margin in metadata.")


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def batchqa_adapter(
    context: dg.AssetExecutionContext,
    config: AdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    batch_record_qa: list[dict],
) -> dg.Output[dict]:
    """Seed 002's batch-record Q&A LoRA (r 32, alpha 64, lr 5e-5, 5 epochs, batch 2 x 8,
    warmup 0.1) on the train split: its system prompt, summary + question as the user turn, the
    answer and its end-of-answer token as the reply; seed 002's decoding kept for inference."""
    from synthetic.batch_record_qa import batchqa_messages

    settings, extras, metadata = adapter_settings(context, "batchqa_adapter", base_model, config)
    train = [row for row in batch_record_qa if row["split"] == "train"]
    rows = [batchqa_messages(row, extras["system_prompt"], extras["end_token"]) for row in train]
    context.log.info(f"batchqa_adapter: {len(rows)} training pairs from "
                     f"{len({r['batch_number'] for r in train})} batch summaries")
    return train_on_rows(context, compute, warehouse, "batchqa_adapter", settings, base_model,
                         rows, extra={**metadata,
                                      "system_prompt": extras["system_prompt"],
                                      "end_token": extras["end_token"],
                                      "decoding": dg.MetadataValue.json(extras["decoding"])})


class GrpoAdapterConfig(AdapterConfig):
    """Overrides of training/grpo.py's GrpoSettings and the `grpo_adapter` preset."""

    judge: str | None = Field(None, description="reference (offline rubric scorer, not an LLM) "
                              "or the id of a litellm model in configs/models.yaml.")
    priority_metrics: bool | None = Field(None, description="Score only the three priority "
                                          "metrics (seed 001's priority mode).")
    judge_every_k_steps: int | None = Field(None, description="Judge on every k-th step only; "
                                            "the format reward counts on every step.")
    num_generations: int | None = Field(None, description="Answers sampled per prompt.")
    max_completion_length: int | None = Field(None, description="New tokens per answer.")


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1",
          retry_policy=dg.RetryPolicy(max_retries=1, delay=30))
def grpo_adapter(
    context: dg.AssetExecutionContext,
    config: GrpoAdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    amr_cases: list[dict],
) -> dg.Output[dict]:
    """LoRA adapter tuned with TRL's GRPOTrainer on the AMR train cases: the AMR judge's weighted
    score (configs/judge_metrics.yaml, through scoring/judge.py) plus a format reward for a
    valid Approve/Modify/Reject decision with reasoning; judge name, calls, cache hits and
    rewards per step in metadata."""
    from training.grpo import grpo_row

    settings, _, metadata = adapter_settings(context, "grpo_adapter", base_model, config)
    train = [case for case in amr_cases if case["split"] == "train"]
    context.log.info(f"grpo_adapter: {len(train)} train cases, judge {settings.get('judge')}, "
                     f"judged every {settings.get('judge_every_k_steps', 1)} step(s)")
    return train_on_rows(context, compute, warehouse, "grpo_adapter", settings, base_model,
                         [grpo_row(case) for case in train], extra=metadata,
                         input_files={"cases_file": train})
