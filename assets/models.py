"""Models stage: the base model and adapters, each trained in its own process through Pipes.

Model files never pass through the IO manager: a training process writes them under the compute
resource's run-scoped folder, and the asset's value is a small JSON reference (path, sizes, hashes)
that downstream assets receive as their input.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.compute import ComputeResource
from synthetic.alignment_instructions import preference_pairs
from synthetic.jsonl import write_jsonl


def _reference(result: dg.MaterializeResult, run_id: str) -> dg.Output:
    """The asset's value: a JSON reference (paths, hashes, the training metrics and loss curve)
    with the training metadata attached to the materialization."""
    metadata = dict(result.metadata or {})
    reference: dict = {"run_id": run_id}
    for key, value in metadata.items():
        value = value.value if isinstance(value, dg.MetadataValue) else value
        if key != "loss_curve" and (value is None or isinstance(value, str | int | float | list)):
            reference[key] = value
    return dg.Output(reference, metadata=metadata)


class BaseModelConfig(dg.Config):
    """Overrides of configs/base_model.yaml `embedded:` (leave empty for the configured model)."""

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
    """A tiny Llama-architecture causal LM with its own BPE tokenizer and chat template, pretrained
    on the platform's corpora, so every later stage runs on a CPU with no download. Saved with
    save_pretrained; metadata: size, parameters, perplexity before/after, loss curve, tokens/s."""
    overrides = {key: value for key, value in config.model_dump().items() if value is not None}
    output_dir = compute.output_dir("base_model", context.run.run_id)
    result = compute.run_task(context, "base_model", overrides, output_dir)
    return _reference(result, context.run.run_id)


class AdapterConfig(dg.Config):
    """Overrides of training/sft.py's SftSettings (issue 3 defaults: r 16, alpha 32, lr 2e-4...)."""

    max_steps: int | None = Field(None, description="Stop after this many optimizer steps.")
    num_train_epochs: float | None = Field(None, description="Epochs over the training split.")
    per_device_train_batch_size: int | None = Field(None, description="Batch size per device.")
    learning_rate: float | None = Field(None, description="Peak learning rate.")
    quantization: str | None = Field(None, description="auto | nf4 | none (auto: NF4 on CUDA).")


class GritAdapterConfig(AdapterConfig):
    grit_preset: str | None = Field(
        None, description="default (factors every step) or seed003 (every 20 steps, reprojection "
        "every 40, damping 1e-2)."
    )


def _train_adapter(context: dg.AssetExecutionContext, compute: ComputeResource, task: str,
                   config: dg.Config, base_model: dict, alignment_instructions: list[dict]):
    """Chat rows from the accepted answers -> the SFT task in its own process -> a reference."""
    output_dir = compute.output_dir(task, context.run.run_id)
    train_file = Path(output_dir) / "train.jsonl"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"messages": [{"role": "user", "content": pair["prompt"]},
                      {"role": "assistant", "content": pair["chosen"]}]}
        for pair in preference_pairs(alignment_instructions)
    ]
    write_jsonl(rows, train_file)
    settings = {key: value for key, value in config.model_dump().items() if value is not None}
    task_config = {**settings, "base_model_path": base_model["model_path"],
                   "train_file": str(train_file)}
    result = compute.run_task(context, task, task_config, output_dir)
    return _reference(result, context.run.run_id)


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def qlora_adapter(
    context: dg.AssetExecutionContext,
    config: AdapterConfig,
    compute: ComputeResource,
    base_model: dict,
    alignment_instructions: list[dict],
) -> dg.Output[dict]:
    """LoRA adapter on the alignment-instructions chosen answers (TRL SFTTrainer): 4-bit NF4 with
    double quantisation on CUDA, plain LoRA on a CPU (said in metadata)."""
    return _train_adapter(context, compute, "qlora_adapter", config, base_model,
                          alignment_instructions)


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def grit_adapter(
    context: dg.AssetExecutionContext,
    config: GritAdapterConfig,
    compute: ComputeResource,
    base_model: dict,
    alignment_instructions: list[dict],
) -> dg.Output[dict]:
    """The same SFT as qlora_adapter with the GRIT optimizer (K-FAC preconditioning inside the
    optimizer step, Fisher-guided reprojection); effective rank and parameters in metadata."""
    return _train_adapter(context, compute, "grit_adapter", config, base_model,
                          alignment_instructions)
