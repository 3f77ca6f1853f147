"""AMR judge evaluation: every `amr_judge` candidate of configs/models.yaml answers the amr_cases
test split, and the judge (scoring/judge.py: the offline reference rubric, which is not an LLM,
or an LLM through litellm) scores each answer on the six weighted metrics.

Local candidates (the embedded base model, the GRPO adapter) answer with training/inference.py
in a `generate` task run like training (assets/generation.py), in the chat format GRPO trained on
(synthetic/amr_cases.py's case prompt as the user message); API candidates answer through the LLM
resource with the same message. A tuned local model is compared with the local candidate without
an adapter (its `base_model_id`).
"""

import base64
import dataclasses
import hashlib
import math
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.automation import REFRESH
from assets.evaluation_records import adapter_version_of, base_version_of, record_evaluation
from assets.generation import generate_in_task
from resources.artifacts import resolve_model_folder
from resources.compute import ComputeResource
from resources.llm import LLMResource
from resources.warehouse import WarehouseResource
from scoring.model_registry import (
    AMR_JUDGE,
    CandidateModel,
    enabled_candidates,
    load_model_registry,
)
from synthetic.jsonl import dumps_jsonl, sha256_bytes
from training.progress import ProgressLog

# The adapters the local amr_judge candidates run (inputs, so lineage shows them).
AMR_ADAPTERS = sorted({model.adapter for model in load_model_registry(benchmark=AMR_JUDGE)
                       if model.kind == "local" and model.adapter})


class JudgeEvaluationsConfig(dg.Config):
    judge: str = Field("reference", description="'reference' (the offline rubric, not an LLM) or "
                       "the id of a litellm model of configs/models.yaml.")
    priority_metrics: bool = Field(False, description="Score only the priority metrics (clinical "
                                   "accuracy, guideline adherence, reasoning completeness).")
    models: list[str] | None = Field(None, description="Only these amr_judge candidates.")
    max_cases: int | None = Field(None, description="Only the first N test cases (a quick look).")
    n_boot: int = Field(1000, description="Bootstrap resamples of the CIs.")
    seed: int = Field(0, description="Bootstrap seed.")


@dg.asset(group_name="evaluation", kinds={"pytorch", "python"}, code_version="1",
          automation_condition=REFRESH,
          ins={"amr_cases": dg.AssetIn(), "base_model": dg.AssetIn(),
               **{name: dg.AssetIn() for name in AMR_ADAPTERS}})
def judge_evaluations(context: dg.AssetExecutionContext, config: JudgeEvaluationsConfig,
                      llm: LLMResource, warehouse: WarehouseResource, compute: ComputeResource,
                      amr_cases: list[dict], base_model: dict, **adapters: dict
                      ) -> dg.Output[pd.DataFrame]:
    """Each amr_judge candidate's answers on the AMR test split, judged on the six weighted
    metrics: per-metric scores, weighted reward and decision accuracy with 95% bootstrap CIs,
    judge calls and cost; one warehouse run per model; a table and a plot in metadata."""
    from scoring.judge import judge_responses, load_judge_config, summarize_scores
    from scoring.judge_report import (
        judge_items,
        judge_plot,
        model_summary,
        summary_markdown,
    )
    from scoring.model_registry import model_availability
    from training.grpo import build_judge

    cases = [case for case in amr_cases if case["split"] == "test"][: config.max_cases]
    if not cases:
        raise dg.Failure("judge_evaluations: amr_cases has no test cases")
    judge_config = load_judge_config()
    candidates = _candidates(config.models)
    client = llm.get_client()
    try:
        judge, _ = build_judge(config.judge, client=client)
        context.log.info(f"judge_evaluations: {len(cases)} test cases, judge {judge.name}, "
                         f"{len(candidates)} candidates")
        frames, extra, skipped = [], {}, {}
        base_id = next((m.id for m in candidates if m.kind == "local" and not m.adapter), None)
        for model in candidates:
            available, reason = model_availability(model)
            if not available:
                skipped[model.id] = reason
                context.log.info(f"judge_evaluations: {model.id} {reason}")
                continue
            answers, answer_calls, failed = _answers(context, compute, model, cases, base_model,
                                                     adapters, client)
            judged = [i for i, case in enumerate(cases) if case["case_id"] not in failed]
            scores = judge_responses(judge, [cases[i] for i in judged],
                                     [answers[i] for i in judged],
                                     priority=config.priority_metrics)
            totals = summarize_scores(scores)
            base_model_id = base_id if model.adapter and model.id != base_id else None
            items = judge_items(model.id, base_model_id,
                                _model_version(model, base_model, adapters), scores,
                                judge_config.metric_names(config.priority_metrics),
                                failed_answers=failed)
            frames.append(items)
            answer_cost = _cost(answer_calls)
            extra[model.id] = {
                "answers failed": len(failed), "judge failed": totals["n_failed"],
                "judge calls": totals["n_calls"], "cached": totals["n_cached"],
                "judge cost USD": totals["cost_usd"], "answer cost USD": answer_cost}
            summary = model_summary(items, n_boot=config.n_boot, seed=config.seed)
            warehouse_run = _record(context, warehouse, model, items, summary, base_model,
                                    adapters, cases, judge, judge_config, extra[model.id],
                                    [c for s in scores for c in s.calls] + answer_calls)
            context.log.info(
                f"judge_evaluations: {model.id}: reward {_fmt(totals['mean_weighted_reward'])}, "
                f"decision accuracy {_fmt(totals['decision_accuracy'])}, "
                f"{totals['n_failed']} judgement(s) failed; warehouse run {warehouse_run}")
    finally:
        client.close()
    items = (pd.concat(frames, ignore_index=True) if frames
             else judge_items("none", None, "none", [], []))
    summary = model_summary(items, n_boot=config.n_boot, seed=config.seed)
    metadata: dict[str, Any] = {
        "judge": judge.name,
        "judge_is_llm": config.judge != "reference",
        "judge_prompt_version": judge_config.prompt_version,
        "priority_metrics": config.priority_metrics,
        "test_cases": len(cases),
        "cases_hash": sha256_bytes(dumps_jsonl(cases)),
        "models_judged": len(frames),
        "scores": dg.MetadataValue.md(summary_markdown(summary, extra)),
        "skipped": dg.MetadataValue.json(skipped),
    }
    if frames:
        image = base64.b64encode(judge_plot(summary)).decode()
        metadata["plot"] = dg.MetadataValue.md(
            f"![AMR judge scores](data:image/png;base64,{image})")
    context.add_output_metadata(metadata)
    return dg.Output(items)  # typed: a generate task may have opened a Pipes session


def _candidates(only: list[str] | None) -> list[CandidateModel]:
    try:
        return enabled_candidates(AMR_JUDGE, only or None)
    except ValueError as error:
        raise dg.Failure(f"judge_evaluations: {error}") from None


def _answers(context: dg.AssetExecutionContext, compute: ComputeResource, model: CandidateModel,
             cases: list[dict], base_model: dict, adapters: dict[str, dict], client: Any,
             ) -> tuple[list[str], list[dict], dict[str, str]]:
    """(answers in case order, answer-call records, {case_id: why no answer})."""
    from synthetic.amr_cases import case_prompt

    chats = [[{"role": "user", "content": case_prompt(case)}] for case in cases]
    progress = ProgressLog(f"judge_evaluations: {model.id}", unit="answers", sinks=[context.log])
    if model.kind == "local":  # one generate task, run like training (assets/generation.py)
        from training.inference import DecodingSettings

        adapter_path = (resolve_model_folder(adapters[model.adapter], "adapter_path")
                        if model.adapter else None)  # fetched from S3 when not local
        generations = generate_in_task(
            context, compute, base_model_path=resolve_model_folder(base_model, "model_path"),
            adapter_path=adapter_path, chats=chats,
            decoding=DecodingSettings(max_new_tokens=model.max_tokens,
                                      temperature=model.temperature),
            batch_size=model.batch_size, label=f"judge_evaluations: {model.id}",
            torch_threads=1, progress=progress)
        return [g.text for g in generations], [], {}
    # Free text is asked for: the answer is a Decision line and the reasoning, not JSON.
    plain = dataclasses.replace(model, response_format="none")
    requests = [(case["case_id"], chat, "amr-answer|" + hashlib.sha256(
        chat[0]["content"].encode()).hexdigest()[:16]) for case, chat in zip(cases, chats,
                                                                               strict=True)]
    results = client.complete_many(plain, requests, progress=progress)
    failed = {r.request_id: f"answer call failed: {r.error}" for r in results if r.status != "ok"}
    calls = [r.to_dict() for r in results]
    context.log.info(f"judge_evaluations: {model.id}: {len(results) - len(failed)} answers, "
                     f"{len(failed)} failed calls")
    return [r.text or "" for r in results], calls, failed


def _model_version(model: CandidateModel, base_model: dict, adapters: dict[str, dict]) -> str:
    """Local: the adapter's registered version (or the base model's run); API: the model string."""
    if model.kind == "local":
        if model.adapter:
            return adapter_version_of(adapters[model.adapter])
        return base_version_of(base_model)
    from scoring.model_registry import resolve_litellm_model

    return resolve_litellm_model(model)


def _record(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
            model: CandidateModel, items: pd.DataFrame, summary: pd.DataFrame, base_model: dict,
            adapters: dict[str, dict], cases: list[dict], judge: Any, judge_config: Any,
            totals: dict[str, Any], calls: list[dict]) -> int:
    from scoring.judge import REFERENCE_JUDGE_NAME
    from scoring.judge_report import warehouse_scores

    return record_evaluation(
        context, warehouse, asset_key="judge_evaluations", model_id=model.id,
        model_version=_model_version(model, base_model, adapters), split="test",
        dataset_hash=sha256_bytes(dumps_jsonl(cases)),
        prompt_version=(f"{judge_config.version} (reference rubric)"
                        if judge.name == REFERENCE_JUDGE_NAME else judge_config.prompt_version),
        items=items, scores=warehouse_scores(summary, model.id),
        summary={"judge": judge.name, **totals}, llm_calls=calls)


def _cost(calls: list[dict]) -> float | None:
    fresh = [c for c in calls if c.get("status") == "ok" and not c.get("cached")]
    if any(c.get("cost_usd") is None for c in fresh):
        return None
    return float(sum(c["cost_usd"] for c in fresh))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
