"""Models stage: the base model (embedded profile), trained in its own process through Pipes."""

import dagster as dg
from pydantic import Field

from resources.compute import ComputeResource


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
) -> dg.MaterializeResult:
    """A tiny Llama-architecture causal LM with its own BPE tokenizer and chat template, pretrained
    on the platform's corpora, so every later stage runs on a CPU with no download. Saved with
    save_pretrained; metadata: size, parameters, perplexity before/after, loss curve, tokens/s."""
    overrides = {key: value for key, value in config.model_dump().items() if value is not None}
    output_dir = compute.output_dir("base_model", context.run.run_id)
    return compute.run_task(context, "base_model", overrides, output_dir)
