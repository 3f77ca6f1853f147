"""RAG grounding adapters (issue 6, seed 004): curriculum SFT, then DPO continuing it.

Both train on the rag_questions train split with the prompts answering uses at test time: each
question's top chunks are retrieved from rag_index (hybrid, configs/rag.yaml) and rendered by
retrieval/answering.py; synthetic/rag_training.py builds the targets. Settings come from
configs/training.yaml like assets/adapters.py's (preset, embedded_overrides, run config), plus
`max_rows_per_stage` / `max_pairs_per_kind`, which sample the rows.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.adapters import adapter_settings
from assets.models import AdapterConfig, train_on_rows
from assets.rag import hybrid_retriever, load_hybrid_index
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource
from retrieval.settings import load_rag_settings

RETRIEVED_CANDIDATES = 10  # hits per query handed to the row builders (hard negatives skip some)


class RagAdapterConfig(AdapterConfig):
    """Overrides of the task's preset (configs/training.yaml)."""

    max_rows_per_stage: int | None = Field(None, description="rag_sft_adapter: curriculum rows "
                                           "trained per stage (default: the preset's).")
    max_pairs_per_kind: int | None = Field(None, description="rag_dpo_adapter: preference "
                                           "pairs trained per rejected kind (default: preset).")
    sample_seed: int = Field(0, description="Seed of the per-stage / per-kind row sample.")


def _retriever(rag_index: pd.DataFrame):
    """(retrieve(query) -> hits, k): the hybrid search answering uses, deep enough for the
    hard negatives (the best chunks without the evidence)."""
    return (hybrid_retriever(load_hybrid_index(rag_index), RETRIEVED_CANDIDATES),
            load_rag_settings().k)


def _counts(rows: list[dict], key: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in pd.Series([row[key] for row in rows]).value_counts()
            .sort_index().items()} if rows else {}


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def rag_sft_adapter(
    context: dg.AssetExecutionContext,
    config: RagAdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    rag_index: pd.DataFrame,
    rag_questions: list[dict],
) -> dg.Output[dict]:
    """LoRA adapter trained by curriculum SFT to answer from the retrieved chunks in strict JSON
    with citations: single-turn, then multi-turn, then tool-call rows, then hard negatives (the
    evidence removed: abstain; unsafe requests: refuse), in that order. Rows per stage (all and
    trained) in metadata; joins rag_eval as `embedded-rag-sft`."""
    from retrieval.answering import load_rag_prompt
    from synthetic.rag_questions import retrieval_query
    from synthetic.rag_training import STAGES, curriculum_sft_rows, sample_per_group

    settings, extras, metadata = adapter_settings(context, "rag_sft_adapter", base_model,
                                                  config.model_dump(exclude={"sample_seed"}))
    retrieve, k = _retriever(rag_index)
    prompt = load_rag_prompt()
    rows = curriculum_sft_rows(rag_questions, retrieve, k, prompt=prompt, query=retrieval_query)
    limit = extras.get("max_rows_per_stage")
    chosen = sample_per_group(rows, "stage", limit, seed=config.sample_seed)
    trained = _counts(chosen, "stage")
    context.log.info(f"rag_sft_adapter: {len(chosen)} of {len(rows)} curriculum rows "
                     f"({', '.join(f'{s} {trained.get(s, 0)}' for s in STAGES)}; at most "
                     f"{limit or 'all'} per stage), prompt {prompt.version}")
    return train_on_rows(
        context, compute, warehouse, "rag_sft_adapter", settings, base_model,
        [{"messages": row["messages"]} for row in chosen],
        extra={**metadata, "prompt_version": prompt.version, "retrieved_k": k,
               "max_rows_per_stage": limit,
               "rows_by_stage": dg.MetadataValue.json({"available": _counts(rows, "stage"),
                                                       "trained": trained}),
               "curriculum_order": ", ".join(STAGES)})


@dg.asset(group_name="models", pool="gpu", kinds={"pytorch"}, code_version="1")
def rag_dpo_adapter(
    context: dg.AssetExecutionContext,
    config: RagAdapterConfig,
    compute: ComputeResource,
    warehouse: WarehouseResource,
    base_model: dict,
    rag_sft_adapter: dict,
    rag_index: pd.DataFrame,
    rag_questions: list[dict],
) -> dg.Output[dict]:
    """rag_sft_adapter continued by DPO (the SFT model merged as the frozen reference) on pairs
    preferring the grounded, cited JSON over an uncited answer, a citation that was not
    retrieved, a contradicted number, invalid JSON, compliance with an unsafe request or an
    invalid tool call. Pairs per kind in metadata; joins rag_eval as `embedded-rag-sft-dpo`."""
    from retrieval.answering import load_rag_prompt
    from synthetic.rag_questions import retrieval_query
    from synthetic.rag_training import grounding_preference_rows, sample_per_group

    settings, extras, metadata = adapter_settings(context, "rag_dpo_adapter", base_model,
                                                  config.model_dump(exclude={"sample_seed"}))
    retrieve, k = _retriever(rag_index)
    prompt = load_rag_prompt()
    pairs = grounding_preference_rows(rag_questions, retrieve, k, prompt=prompt,
                                      query=retrieval_query)
    limit = extras.get("max_pairs_per_kind")
    chosen = sample_per_group(pairs, "kind", limit, seed=config.sample_seed)
    context.log.info(f"rag_dpo_adapter: {len(chosen)} of {len(pairs)} preference pairs (at most "
                     f"{limit or 'all'} per rejected kind), continuing rag_sft_adapter "
                     f"{rag_sft_adapter.get('model_version')}")
    settings = {**settings, "init_adapter_path": rag_sft_adapter["adapter_path"]}
    return train_on_rows(
        context, compute, warehouse, "rag_dpo_adapter", settings, base_model,
        [{key: row[key] for key in ("prompt", "chosen", "rejected", "system")} for row in chosen],
        extra={**metadata, "prompt_version": prompt.version, "retrieved_k": k,
               "max_pairs_per_kind": limit,
               "sft_adapter_version": rag_sft_adapter.get("model_version"),
               "pairs_by_kind": dg.MetadataValue.json({"available": _counts(pairs, "kind"),
                                                       "trained": _counts(chosen, "kind")})})
