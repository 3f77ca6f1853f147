"""Behavioural assessment (seed 003, 2.4 G-Eval): the base model and each alignment adapter answer
the ACCD prompts; the answers are judged on safety refusal (unsafe prompts), helpfulness and
instruction following (safe prompts) by scoring/behavioral.py.

The default judge is the offline refusal-pattern + heuristic judge, which is NOT an LLM (its
name and the metadata say so; its values are proxies). `judge` set to a litellm model id of
configs/models.yaml judges with that LLM and the versioned `behavioral_judge` prompt of
configs/prompts.yaml (the seed's "baseline model as judge" is such an entry pointing at an
OpenAI-compatible server that serves the base model).
"""

import base64
import math
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.alignment import AQI_ADAPTERS
from assets.automation import REFRESH
from assets.evaluation_records import adapter_version_of, base_version_of, record_evaluation
from assets.generation import generate_models_in_task
from resources.artifacts import resolve_model_folder
from resources.compute import ComputeResource
from resources.llm import LLMResource
from resources.warehouse import WarehouseResource
from synthetic.jsonl import dumps_jsonl, sha256_bytes

ASSET_KEY = "behavioral_metrics"
SPLIT = "accd"  # the ACCD prompts are one evaluation set, not a split of a training corpus
BASE_MODEL_ID = "base_model"


class BehavioralMetricsConfig(dg.Config):
    judge: str = Field("reference", description="'reference' (refusal patterns + heuristics, not "
                       "an LLM) or the id of a litellm model of configs/models.yaml.")
    max_new_tokens: int = Field(64, description="New tokens per response (greedy decoding).")
    batch_size: int = Field(16, description="Chats generated together.")
    max_prompts: int | None = Field(None, description="Only N prompts, half unsafe and half "
                                    "safe, drawn with `seed` (a quick look).")
    seed: int = Field(0, description="Seed of the prompt draw, the generation and the bootstrap.")
    n_boot: int = Field(1000, description="Bootstrap resamples of the CIs.")


@dg.asset(group_name="evaluation", kinds={"pytorch"}, code_version="1",
          automation_condition=REFRESH,
          ins={"base_model": dg.AssetIn(), "accd_prompts": dg.AssetIn(),
               **{name: dg.AssetIn() for name in AQI_ADAPTERS}})
def behavioral_metrics(context: dg.AssetExecutionContext, config: BehavioralMetricsConfig,
                       warehouse: WarehouseResource, llm: LLMResource,
                       compute: ComputeResource, base_model: dict, accd_prompts: list[dict],
                       **adapters: dict) -> dg.Output[pd.DataFrame]:
    """Refusal rate on the unsafe ACCD prompts, helpfulness and instruction following on the safe
    ones, for the base model and each alignment adapter (greedy answers), with 95% bootstrap CIs,
    base-vs-tuned paired comparisons (t-test, d_z, Holm-adjusted p); one warehouse run per model;
    tables, examples and a plot in metadata."""
    from scoring.behavioral import (
        DEFAULT_JUDGE,
        behaviour_plot,
        build_behaviour_judge,
        compare_to_base,
        example_responses,
        items_frame,
        score_behaviour,
        select_prompts,
        summarize_behaviour,
        summary_table,
    )

    rows = select_prompts(accd_prompts, config.max_prompts, config.seed)
    if not rows:
        raise dg.Failure("behavioral_metrics: accd_prompts has no prompts", allow_retries=False)
    client = llm.get_client() if config.judge != DEFAULT_JUDGE else None
    try:
        try:  # checked before any generation: a wrong judge id fails in seconds
            judge = build_behaviour_judge(config.judge, client)
        except ValueError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        context.log.info(f"behavioral_metrics: {len(rows)} prompts, judge {judge.name}"
                         + ("" if judge.is_llm else " (not an LLM)"))
        models = {BASE_MODEL_ID: (None, base_version_of(base_model)),
                  **{name: (resolve_model_folder(adapters[name], "adapter_path"),
                            adapter_version_of(adapters[name]))
                     for name in AQI_ADAPTERS}}
        frames: list = []
        answers = _generate(context, compute, base_model,
                            {model_id: path for model_id, (path, _) in models.items()}, rows,
                            config)
        generation = {model_id: totals for model_id, (_, totals) in answers.items()}
        scores = {model_id: score_behaviour(judge, rows, responses)
                  for model_id, (responses, _) in answers.items()}
    finally:
        if client is not None:
            client.close()

    summaries = {model_id: summarize_behaviour(model_scores, n_boot=config.n_boot,
                                               seed=config.seed)
                 for model_id, model_scores in scores.items()}
    comparison = compare_to_base(scores[BASE_MODEL_ID],
                                 {name: scores[name] for name in AQI_ADAPTERS},
                                 n_boot=config.n_boot, seed=config.seed)
    dataset_hash = sha256_bytes(dumps_jsonl(rows))
    runs = {}
    for model_id, (_path, version) in models.items():
        base_model_id = None if model_id == BASE_MODEL_ID else BASE_MODEL_ID
        items = items_frame(scores[model_id], model_id, base_model_id, version)
        frames.append(items)
        runs[model_id] = _record(context, warehouse, model_id, version, dataset_hash, judge,
                                 items, summaries[model_id], generation[model_id],
                                 comparison[comparison["model_id"] == model_id], config)
        metrics = summaries[model_id]["metrics"]
        context.log.info(
            f"behavioral_metrics: {model_id}: refusal rate {_fmt(metrics['refusal']['value'])}, "
            f"helpfulness {_fmt(metrics['helpfulness']['value'])}, instruction following "
            f"{_fmt(metrics['instruction_following']['value'])}, "
            f"{summaries[model_id]['n_failed']} failed; warehouse run {runs[model_id]}")
    frame = pd.concat(frames, ignore_index=True)
    image = base64.b64encode(behaviour_plot(summaries)).decode()
    unsafe = sum(row["safety_label"] == "unsafe" for row in rows)
    metadata: dict[str, Any] = {
        "judge": judge.name,
        "judge_is_llm": judge.is_llm,
        "judge_note": ("an LLM judge with the behavioral_judge prompt of configs/prompts.yaml"
                       if judge.is_llm else "NOT an LLM: refusal patterns and deterministic "
                       "heuristics (scoring/behavioral.py); the values are proxies"),
        "judge_prompt_version": judge.prompt_version,
        "prompts": len(rows),
        "unsafe_prompts": unsafe,
        "safe_prompts": len(rows) - unsafe,
        "prompts_hash": dataset_hash,
        "max_new_tokens": config.max_new_tokens,
        "scores": dg.MetadataValue.md(summary_table(summaries).to_markdown(index=False)),
        "base_vs_tuned": dg.MetadataValue.md(_comparison_markdown(comparison)),
        "significant_after_holm": int(comparison["significant"].sum()),
        "failed_judgements": sum(s["n_failed"] for s in summaries.values()),
        "judge_calls": sum(s["n_calls"] for s in summaries.values()),
        "examples": dg.MetadataValue.md(example_responses(frame, n=3).to_markdown(index=False)),
        "plot": dg.MetadataValue.md(f"![behavioural metrics](data:image/png;base64,{image})"),
        "warehouse_runs": dg.MetadataValue.json(runs),
        "generation": dg.MetadataValue.json(generation),
    }
    context.add_output_metadata(metadata)
    return dg.Output(frame)  # typed: the generate tasks opened Pipes sessions in this step




def _generate(context: dg.AssetExecutionContext, compute: ComputeResource, base_model: dict,
              adapters: dict[str, str | None], rows: list[dict], config: BehavioralMetricsConfig,
              ) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """{model id: (greedy answers, token totals)} of the base model and each adapter to each
    prompt as a user message, every model in one `generate` task run like training
    (assets/generation.py)."""
    from training.inference import DecodingSettings

    answers = generate_models_in_task(
        context, compute, base_model_path=resolve_model_folder(base_model, "model_path"),
        adapters=adapters, chats=[[{"role": "user", "content": row["prompt"]}] for row in rows],
        decoding=DecodingSettings(max_new_tokens=config.max_new_tokens, temperature=0.0,
                                  seed=config.seed),
        batch_size=config.batch_size, label="behavioral_metrics")
    out = {}
    for model_id, generations in answers.items():
        totals = {"prompt_tokens": sum(g.prompt_tokens for g in generations),
                  "completion_tokens": sum(g.completion_tokens for g in generations),
                  "truncated_prompts": sum(g.truncated_prompt_tokens > 0 for g in generations),
                  "wall_s": sum(g.latency_s for g in generations)}
        out[model_id] = ([g.text for g in generations], totals)
    return out


def _record(context: dg.AssetExecutionContext, warehouse: WarehouseResource, model_id: str,
            model_version: str, dataset_hash: str, judge: Any, items: pd.DataFrame,
            summary: dict[str, Any], generation: dict[str, Any], comparison: pd.DataFrame,
            config: BehavioralMetricsConfig) -> int:
    from scoring.behavioral import warehouse_scores

    return record_evaluation(
        context, warehouse, asset_key=ASSET_KEY, model_id=model_id, model_version=model_version,
        split=SPLIT, dataset_hash=dataset_hash, prompt_version=judge.prompt_version,
        items=items, scores=warehouse_scores(summary),
        summary={**summary, "judge": judge.name, "judge_is_llm": judge.is_llm,
                 "max_new_tokens": config.max_new_tokens, "generation": generation,
                 "compared_to_base": _plain_records(comparison)})


def _plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts (NaN -> None, numpy scalars -> Python)."""
    records = []
    for record in frame.to_dict(orient="records"):
        plain = {}
        for key, value in record.items():
            value = value.item() if hasattr(value, "item") else value
            plain[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        records.append(plain)
    return records


def _comparison_markdown(comparison: pd.DataFrame) -> str:
    shown = comparison.assign(
        ci_95=[f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) else "n/a"
               for low, high in zip(comparison["ci_low"], comparison["ci_high"], strict=True)])
    columns = ["model_id", "metric", "n_pairs", "base_mean", "tuned_mean", "mean_difference",
               "ci_95", "p_value", "p_holm", "cohens_dz", "significant"]
    return shown[columns].to_markdown(index=False, floatfmt=".4f")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
