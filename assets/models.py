"""Models stage: the base model and adapters, each trained in its own process through Pipes.

Model files never pass through the IO manager: a training process writes them under the compute
resource's run-scoped folder, and the asset's value is a small JSON reference (path, sizes, hashes)
that downstream assets receive as their input. With the S3 backend (GXPLAB_ARTIFACTS_S3_BUCKET)
each asset also uploads that folder as `models/<asset>/<run id>.tar.gz`; the archive's URI and
sha256 are in the metadata and the reference (`model_archive_*`).
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.artifacts import environment_artifacts
from resources.compute import ComputeResource
from resources.io_manager import ALL_STORED_PARTITIONS
from resources.warehouse import WarehouseResource
from scoring.record_audit import (
    add_inbox_batches,
    load_record_prompt,
    select_training_records,
    training_rows,
)
from synthetic.alignment_instructions import preference_pairs
from synthetic.audit_training import generate_audit_training_data, record_level_examples
from synthetic.jsonl import dumps_jsonl, sha256_bytes
from synthetic.splits import load_dataset_config


def _reference(result: dg.MaterializeResult, run_id: str,
               extra: dict | None = None) -> dg.Output:
    """The asset's value: a JSON reference (paths, hashes, the training metrics and loss curve)
    with the training metadata (and `extra`) attached to the materialization."""
    metadata = {**dict(result.metadata or {}), **(extra or {})}
    reference: dict = {"run_id": run_id}
    for key, value in _plain_values(metadata).items():
        if key != "loss_curve" and (value is None
                                    or isinstance(value, str | int | float | list | dict)):
            reference[key] = value
    return dg.Output(reference, metadata=metadata)


def _archive_model(context: dg.AssetExecutionContext, name: str, folder: Path) -> dict:
    """With the S3 backend: `folder` uploaded as the run-scoped archive of `name`, and its
    `model_archive_*` metadata; locally: {} (nothing is packed)."""
    with environment_artifacts() as artifacts:
        return artifacts.archive_model(context, name, folder)


def _plain_values(metadata: dict) -> dict:
    """Metadata with each MetadataValue replaced by its plain value."""
    return {k: (v.value if isinstance(v, dg.MetadataValue) else v) for k, v in metadata.items()}


VERSION_METRICS = ("train_loss", "eval_loss", "tokens_per_s", "wall_s", "peak_memory_mb",
                   "trainable_params", "adapter_size_bytes", "quantization", "steps")


class BaseModelConfig(dg.Config):
    """Overrides of configs/base_model.yaml (leave empty for the configured model): the profile,
    the hf model, or the embedded model's sizes."""

    profile: str | None = Field(None, description="embedded (built here) or hf (a hub id or "
                                "local path); default: configs/base_model.yaml `profile`.")
    model_id: str | None = Field(None, description="hf: Hugging Face model id or local folder.")
    trust_remote_code: bool | None = Field(None, description="hf: run the model repo's code.")

    pretrain_steps: int | None = Field(None, description="Causal-LM pretraining steps.")
    vocab_size: int | None = Field(None, description="BPE vocabulary size.")
    hidden_size: int | None = Field(None, description="Model width.")
    intermediate_size: int | None = Field(None, description="MLP width.")
    num_hidden_layers: int | None = Field(None, description="Transformer layers.")
    num_attention_heads: int | None = Field(None, description="Attention heads.")
    num_key_value_heads: int | None = Field(None, description="Key/value heads (GQA).")
    sequence_length: int | None = Field(None, description="Pretraining sequence length.")
    batch_size: int | None = Field(None, description="Pretraining batch size.")
    max_documents: int | None = Field(None, description="Use only the first N corpus documents.")
    seed: int | None = Field(None, description="Seed for corpus, tokenizer and weights.")


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def base_model(
    context: dg.AssetExecutionContext, config: BaseModelConfig, compute: ComputeResource
) -> dg.Output[dict]:
    """The base model every adapter starts from. Profile `embedded` (default): a tiny
    Llama-architecture causal LM with its own BPE tokenizer and chat template, pretrained on the
    platform's corpora, so every later stage runs on a CPU with no download (saved with
    save_pretrained; metadata: size, parameters, perplexity before/after, loss curve, tokens/s).
    Profile `hf`: a Hugging Face model id or local path, resolved and described, not copied."""
    overrides = {key: value for key, value in config.model_dump().items() if value is not None}
    output_dir = compute.output_dir("base_model", context.run.run_id)
    result = compute.run_task(context, "base_model", overrides, output_dir)
    model_path = _plain_values(dict(result.metadata or {})).get("model_path")
    # profile hf names a hub id or an outside folder: nothing of the model is in output_dir
    holds_model = model_path is not None and Path(str(model_path)) == Path(output_dir)
    archive = _archive_model(context, "base_model", output_dir) if holds_model else {}
    return _reference(result, context.run.run_id, archive)


class AdapterConfig(dg.Config):
    """Overrides of training/sft.py's SftSettings (defaults: r 16, alpha 32, lr 2e-4...)."""

    max_steps: int | None = Field(None, description="Stop after this many optimizer steps.")
    num_train_epochs: float | None = Field(None, description="Epochs over the training split.")
    per_device_train_batch_size: int | None = Field(None, description="Batch size per device.")
    learning_rate: float | None = Field(None, description="Peak learning rate.")
    quantization: str | None = Field(None, description="auto | nf4 | none (auto: NF4 on CUDA).")
    save_steps: int | None = Field(None, description="Checkpoint every N steps (default 50); a "
                                   "killed run resumes from the last one when re-materialized.")


class GritAdapterConfig(AdapterConfig):
    grit_preset: str | None = Field(
        None, description="default (factors every step) or periodic (every 20 steps, reprojection "
        "every 40, damping 1e-2)."
    )


def _reported_adapter(task: str, metadata: dict) -> dict:
    """The training metadata as plain values; dg.Failure when it names no adapter."""
    values = _plain_values(metadata)
    missing = [key for key in ("adapter_path", "archive_path", "archive_sha256")
               if not values.get(key)]
    if missing:  # the process ended without reporting its adapter through Pipes
        raise dg.Failure(
            f"{task}: the training process reported no {', '.join(missing)} (metadata keys "
            f"received: {sorted(values) or 'none'}); its log lines above say how it ended")
    return values


def _register_version(context: dg.AssetExecutionContext, warehouse: WarehouseResource, task: str,
                      task_config: dict, base_model: dict, values: dict) -> str:
    """Record the adapter (`values`: from _reported_adapter) in the warehouse's model registry;
    the first version of a task becomes its `production` alias (later ones are promoted with
    `gxplab models promote`)."""
    # The archive hash is in the label: a retried step reuses the run id but writes a new archive.
    version = f"{context.run.run_id[:8]}-{values['archive_sha256'][:12]}"
    client = warehouse.client
    client.register_model_version(
        task, version, artifact_uri=values["adapter_path"], archive_uri=values["archive_path"],
        archive_sha256=values["archive_sha256"], base_model=base_model["model_path"],
        dataset_hash=values.get("dataset_sha256"), config=task_config,
        metrics={k: values.get(k) for k in VERSION_METRICS if values.get(k) is not None},
        dagster_run_id=context.run.run_id)
    if client.get_alias(task) is None:
        client.promote(task, version, reason="first version of the task (automatic)")
        context.log.info(f"{task}: version {version} registered and promoted to production")
    else:
        context.log.info(f"{task}: version {version} registered (promote it with `gxplab models "
                         f"promote {task} {version}`)")
    return version


def train_on_rows(context: dg.AssetExecutionContext, compute: ComputeResource,
                  warehouse: WarehouseResource, task: str, settings: dict, base_model: dict,
                  rows: list[dict], extra: dict | None = None,
                  input_files: dict[str, list[dict]] | None = None) -> dg.Output:
    """Write the training rows (and `input_files`: config key -> rows, e.g. GRPO's
    `cases_file`), run `task` in its own process, register the adapter version, return the model
    reference. The same inputs and settings continue an interrupted run's folder."""
    settings = {k: v for k, v in settings.items() if v is not None}
    # serialized once: the bytes are hashed into the training key, then written as they are
    files = {key: dumps_jsonl(data)
             for key, data in {"train_file": rows, **(input_files or {})}.items()}
    training_key = sha256_bytes(json.dumps(
        {"task": task, "settings": settings, "base_model": base_model["model_path"],
         **{f"{key}_sha256": sha256_bytes(data) for key, data in files.items()}},
        sort_keys=True).encode())
    output_dir, resumed = compute.training_dir(task, context.run.run_id, training_key)
    if resumed:
        context.log.info(f"{task}: an interrupted run with the same inputs and settings left "
                         f"checkpoints in {output_dir}; resuming from the last one")
    paths = {}
    for key, data in files.items():
        path = Path(output_dir) / f"{key.removesuffix('_file')}.jsonl"
        path.write_bytes(data)
        paths[key] = str(path)
    task_config = {**settings, "base_model_path": base_model["model_path"], **paths}
    result = compute.run_task(context, task, task_config, output_dir)
    reported = _reported_adapter(task, dict(result.metadata or {}))  # none: fail before archiving
    # archived before registering, so a failed upload registers no version
    archive = _archive_model(context, task, Path(output_dir))
    version = _register_version(context, warehouse, task, task_config, base_model, reported)
    return _reference(result, context.run.run_id,
                      {**(extra or {}), **archive, "model_version": version,
                       "training_key": training_key, "continued_interrupted_run": resumed})


def _train_adapter(context: dg.AssetExecutionContext, compute: ComputeResource,
                   warehouse: WarehouseResource, task: str, config: dg.Config, base_model: dict,
                   alignment_instructions: list[dict]):
    """Chat rows from the accepted answers -> the SFT task in its own process -> a reference.
    Settings: the task's preset in configs/training.yaml (with its embedded overrides on the
    embedded base model), then the run config."""
    from assets.adapters import adapter_settings  # assets.adapters imports this module

    settings, _, metadata = adapter_settings(context, task, base_model, config)
    rows = [
        {"messages": [{"role": "user", "content": pair["prompt"]},
                      {"role": "assistant", "content": pair["chosen"]}]}
        for pair in preference_pairs(alignment_instructions)
    ]
    return train_on_rows(context, compute, warehouse, task, settings, base_model, rows,
                          extra=metadata)


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def qlora_adapter(
    context: dg.AssetExecutionContext,
    config: AdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    alignment_instructions: list[dict],
) -> dg.Output[dict]:
    """LoRA adapter on the alignment-instructions chosen answers (TRL SFTTrainer): 4-bit NF4 with
    double quantisation on CUDA, plain LoRA on a CPU (said in metadata)."""
    return _train_adapter(context, compute, warehouse, "qlora_adapter", config, base_model,
                          alignment_instructions)


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def grit_adapter(
    context: dg.AssetExecutionContext,
    config: GritAdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    alignment_instructions: list[dict],
) -> dg.Output[dict]:
    """The same SFT as qlora_adapter with the GRIT optimizer (K-FAC preconditioning inside the
    optimizer step, Fisher-guided reprojection); effective rank and parameters in metadata."""
    return _train_adapter(context, compute, warehouse, "grit_adapter", config, base_model,
                          alignment_instructions)


class GxpAuditAdapterConfig(AdapterConfig):
    """Record-by-record audit fine-tuning (configs/prompts.yaml `record_audit`) on generated
    deviation-rich records, the train split's deviating records and every stored inbox batch."""

    method: str = Field("auto", description="full (every weight, plus an LM loss on the record "
                        "tokens: training/audit_sft.py), lora (TRL SFT), or auto: full for the "
                        "embedded base model, lora for an hf one.")
    lm_loss_weight: float | None = Field(None, description="full: weight of the LM loss on the "
                                         "prompt tokens (default 0.3; 0 = answer loss only).")
    generated_batches: int = Field(200, description="Batches of generated training records "
                                   "(about 20 records each; 0: none).")
    generated_deviation_rate: float = Field(0.5, description="Share of deviating generated "
                                            "records.")
    generated_seed: int = Field(7, description="Seed of the generated records; must differ from "
                                "configs/datasets.yaml `seed` (the evaluation splits').")
    heldout_batches: int = Field(10, description="Generated held-out batches whose per-type "
                                 "recall goes into the metadata (0: none).")
    clean_per_deviating: float = Field(
        1.0, description="Train split: clean records sampled per record with a labelled deviation.")
    max_records: int | None = Field(
        400, description="Train split rows at most (deviating records first); None: all selected.")
    sample_seed: int = Field(42, description="Seed of the clean-record sample and the shuffle.")
    prior_correction: bool = Field(
        True, description="full: bias the answer 'no findings' by the log-odds between the "
        "train split's share of clean records and the training chats' (training/answer_prior.py)"
        ": trained at about 50% deviating, the model audits records of which about 2% deviate.")


_GENERATION_FIELDS = {"generated_batches", "generated_deviation_rate", "generated_seed",
                      "heldout_batches", "clean_per_deviating", "max_records", "sample_seed",
                      "prior_correction"}


@dg.asset(
    group_name="models",
    pool="gpu",
    kinds={"pytorch"},
    code_version="2",
    ins={
        "gxp_records": dg.AssetIn(
            partition_mapping=dg.SpecificPartitionsPartitionMapping(["train"])),
        "gxp_labels": dg.AssetIn(
            partition_mapping=dg.SpecificPartitionsPartitionMapping(["train"])),
        # Every accepted inbox batch (inbox_sensor) that is stored: labelled data from the sites.
        "inbox_records": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(),
                                    metadata=ALL_STORED_PARTITIONS),
        "inbox_labels": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(),
                                   metadata=ALL_STORED_PARTITIONS),
    },
)
def gxp_audit_adapter(
    context: dg.AssetExecutionContext,
    config: GxpAuditAdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    gxp_site_master: dict,
    gxp_records: list[dict],
    gxp_labels: list[dict],
    inbox_records: dict[str, list[dict]],
    inbox_labels: dict[str, list[dict]],
) -> dg.Output[dict]:
    """The record auditor: the embedded model fully fine-tuned (an LM loss on the record tokens
    as well as the answer) on generated deviation-rich records (same generator and master data,
    a seed of their own: never an evaluation record), the `train` split's deviating records with
    as many clean ones, and every stored inbox batch; LoRA for an hf base model. Metadata: the
    per-type recall on held-out generated records. Joins the GxP leaderboard as
    `embedded-gxp-audit` beside `embedded-base`."""
    prompt = load_record_prompt()
    merged = add_inbox_batches(gxp_records, gxp_labels, inbox_records, inbox_labels)
    for name, why in merged.left_out.items():
        context.log.warning(f"gxp_audit_adapter: inbox batch {name} left out: {why}")
    chosen = select_training_records(
        merged.records, merged.labels, clean_per_deviating=config.clean_per_deviating,
        max_records=config.max_records, seed=config.sample_seed)
    data = audit_training_rows(gxp_site_master, chosen, merged.labels, prompt, config)
    context.log.info(f"gxp_audit_adapter: {len(data.rows)} training rows ({data.n_deviating} "
                     f"with a deviation; {data.n_generated} generated) from {len(gxp_records)} "
                     f"train records and {len(merged.records) - len(gxp_records)} inbox records "
                     f"({len(merged.used)} batches), prompt {prompt.version}")
    settings = config.model_dump(exclude=_GENERATION_FIELDS)
    if config.prior_correction and gxp_records:
        # where the model audits: the train split's share of records with a deviation one
        # record can show (same generator and rate as the evaluation splits)
        _, visible = record_level_examples(gxp_records, gxp_labels)
        rate = len({str(label["record_id"]) for label in visible}) / len(gxp_records)
        if 0 < rate < 1:
            settings["use_deviation_rate"] = rate
    return train_on_rows(context, compute, warehouse, "gxp_audit_adapter", settings, base_model,
                          data.rows, extra={"prompt_version": prompt.version,
                                            "deviating_rows": data.n_deviating,
                                            "generated_rows": data.n_generated,
                                            "generated_seed": config.generated_seed,
                                            "inbox_batches": merged.used,
                                            "inbox_records": len(merged.records) - len(gxp_records),
                                            "inbox_batches_left_out": merged.left_out},
                          input_files={"heldout_file": data.heldout} if data.heldout else None)


@dataclass(frozen=True)
class AuditTrainingRows:
    """The audit chats to train on, how many deviate / were generated, the held-out rows."""

    rows: list[dict]
    n_deviating: int
    n_generated: int
    heldout: list[dict]


def audit_training_rows(master: dict, chosen: list, labels: list[dict], prompt,
                        config: GxpAuditAdapterConfig) -> AuditTrainingRows:
    """Chats of the generated records and of `chosen` (train split and inbox), shuffled."""
    dataset_seed = load_dataset_config().seed
    data = generate_audit_training_data(
        master, seed=config.generated_seed, dataset_seed=dataset_seed,
        n_batches=max(1, config.generated_batches), heldout_batches=config.heldout_batches,
        deviation_rate=config.generated_deviation_rate)
    generated = (training_rows(data.train.records, data.train.manifest, prompt)
                 if config.generated_batches > 0 else [])
    # the train split's and inbox records whose deviation one record cannot show are left out
    rows = generated + training_rows(*record_level_examples(chosen, labels), prompt)
    random.Random(config.sample_seed).shuffle(rows)
    deviating = ({str(r["record_id"]) for r in labels}
                 | {str(r["record_id"]) for r in data.train.manifest})
    held: dict[str, list[dict]] = {}
    for label in data.heldout.manifest:
        held.setdefault(str(label["record_id"]), []).append(label)
    heldout = [{"record": record, "labels": held.get(str(record["record_id"]), [])}
               for record in data.heldout.records]
    return AuditTrainingRows(rows=rows, n_deviating=sum(r["record_id"] in deviating for r in rows),
                             n_generated=len(generated), heldout=heldout)
