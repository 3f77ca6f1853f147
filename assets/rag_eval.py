"""rag_eval (issue 6): every `rag` candidate of configs/models.yaml answers the rag_questions test
split from the hybrid index, through the GxPLab OpenAI-compatible server and litellm (the way any
client would call the adapters), or in `generate` tasks run like training; scoring/rag_metrics.py
scores the answers.

Baseline RAG is the local candidate without an adapter (embedded-base); each tuned candidate
(embedded-rag-sft, embedded-rag-sft-dpo) is compared with it, paired per question (Holm).
"""

import base64
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.evaluation_records import adapter_version_of, base_version_of, record_evaluation
from assets.generation import generate_in_task
from assets.rag import hybrid_retriever, load_hybrid_index
from resources.artifacts import resolve_model_folder
from resources.compute import ComputeResource
from resources.llm import LLMResource
from resources.warehouse import WarehouseResource
from retrieval.settings import load_rag_settings
from scoring.model_registry import RAG, CandidateModel, enabled_candidates, load_model_registry
from synthetic.jsonl import dumps_jsonl, sha256_bytes
from training.progress import ProgressLog

# The adapters the local rag candidates run (inputs, so lineage shows them).
RAG_ADAPTERS = sorted({model.adapter for model in load_model_registry(benchmark=RAG)
                       if model.kind == "local" and model.adapter})


class RagEvalConfig(dg.Config):
    models: list[str] | None = Field(None, description="Only these rag candidates.")
    split: str = Field("test", description="The rag_questions split answered.")
    max_questions: int | None = Field(None, description="Only the first N questions (a quick "
                                      "look; the comparison's power drops).")
    through_server: bool = Field(True, description="Answer through the GxPLab server and "
                                 "litellm (openai/<model id>); false: in `generate` tasks run "
                                 "like training (one per answer round).")
    max_new_tokens: int = Field(192, description="Tokens per reply (greedy decoding).")
    n_boot: int = Field(1000, description="Bootstrap resamples of the CIs.")
    seed: int = Field(0, description="Bootstrap seed.")


@dg.asset(group_name="evaluation", kinds={"pytorch", "python"}, code_version="1",
          ins={"rag_index": dg.AssetIn(), "rag_questions": dg.AssetIn(),
               "base_model": dg.AssetIn(), **{name: dg.AssetIn() for name in RAG_ADAPTERS}})
def rag_eval(context: dg.AssetExecutionContext, config: RagEvalConfig, llm: LLMResource,
             warehouse: WarehouseResource, compute: ComputeResource, rag_index: pd.DataFrame,
             rag_questions: list[dict],
             base_model: dict, **adapters: dict) -> dg.Output[pd.DataFrame]:
    """Baseline RAG vs curriculum SFT vs SFT+DPO on the test questions: JSON validity,
    groundedness, citation precision and recall, tool-call accuracy, abstention and refusal, each
    with a 95% bootstrap CI; each tuned model vs the baseline paired (Holm); latency per model;
    one warehouse run per model; the answers, a table and a plot."""
    from retrieval.answering import answer_questions, load_rag_prompt
    from scoring.judge_report import warehouse_scores
    from scoring.rag_metrics import compare_rag, rag_markdown, rag_summary, score_results
    from scoring.rag_report import (
        answer_rows,
        latency_summary,
        per_question_latency,
        rag_plot,
        sample_answers_markdown,
        warehouse_items,
    )
    from synthetic.rag_questions import relevant_chunk_ids, retrieval_query

    questions = [q for q in rag_questions if q["split"] == config.split][: config.max_questions]
    if not questions:
        raise dg.Failure(f"rag_eval: rag_questions has no {config.split!r} questions")
    candidates = _candidates(config.models)
    settings, prompt = load_rag_settings(), load_rag_prompt()
    index = load_hybrid_index(rag_index)
    retrieve = hybrid_retriever(index, settings.k)

    relevant = {q["question_id"]: relevant_chunk_ids(q, index.chunks) for q in questions
                if q.get("doc_id")}
    versions = {m.id: (adapter_version_of(adapters[m.adapter]) if m.adapter
                       else base_version_of(base_model)) for m in candidates}
    catalog = [{"name": m.id, "base_model_path": resolve_model_folder(base_model, "model_path"),
                "adapter_path": (resolve_model_folder(adapters[m.adapter], "adapter_path")
                                 if m.adapter else None),
                "description": m.description} for m in candidates]
    dataset_hash = sha256_bytes(dumps_jsonl(questions))
    context.log.info(f"rag_eval: {len(questions)} {config.split} questions, models "
                     f"{', '.join(m.id for m in candidates)}, "
                     + ("through the GxPLab server" if config.through_server
                        else "in generate tasks"))
    frames, answers = [], []
    with _generators(context, catalog, candidates, versions, llm, compute,
                     config) as generators:
        for model in candidates:
            generate, latencies = generators[model.id]
            started = time.perf_counter()
            results = [r.to_dict() for r in answer_questions(
                questions, retrieve, generate, k=settings.k,
                max_tool_rounds=settings.max_tool_rounds, prompt=prompt, query=retrieval_query)]
            items = score_results(questions, results, model_id=model.id, relevant=relevant)
            frames.append(items)
            answers += answer_rows(model.id, results, per_question_latency(results, latencies))
            summary = rag_summary(items, n_boot=config.n_boot, seed=config.seed)
            run = record_evaluation(
                context, warehouse, asset_key="rag_eval", model_id=model.id,
                model_version=versions[model.id], split=config.split, dataset_hash=dataset_hash,
                prompt_version=prompt.version,
                items=warehouse_items(items, model.id, versions[model.id]),
                scores=warehouse_scores(summary, model.id),
                summary={"questions": len(questions), "served": config.through_server,
                         "wall_s": round(time.perf_counter() - started, 1)})
            context.log.info(f"rag_eval: {model.id}: JSON valid "
                             f"{items['json_valid'].mean():.3f}, groundedness "
                             f"{items['groundedness'].mean():.3f}; warehouse run {run}")
    items = pd.concat(frames, ignore_index=True)
    answer_table = pd.DataFrame(answers)
    summary = rag_summary(items, n_boot=config.n_boot, seed=config.seed)
    base_id = next((m.id for m in candidates if not m.adapter), None)
    tuned = [m.id for m in candidates if m.adapter]
    comparison = (compare_rag(items, base_id, tuned, n_boot=config.n_boot, seed=config.seed)
                  if base_id and tuned else None)
    image = base64.b64encode(rag_plot(summary)).decode()
    context.add_output_metadata({
        "questions": len(questions),
        "split": config.split,
        "models": [m.id for m in candidates],
        "answered_through": ("GxPLab server (serving/) via litellm openai/<model id>"
                             if config.through_server
                             else "generate tasks (training/inference.py), run like training"),
        "prompt_version": prompt.version,
        "retrieval": f"hybrid (RRF k {settings.rrf_k}, depth {settings.depth}), top {settings.k}",
        "dataset_hash": dataset_hash,
        "scores": dg.MetadataValue.md(rag_markdown(summary, comparison)),
        "latency": dg.MetadataValue.json(latency_summary(answer_table)),
        "plot": dg.MetadataValue.md(f"![RAG evaluation](data:image/png;base64,{image})"),
        "sample_answers": dg.MetadataValue.md(sample_answers_markdown(answer_table)),
    })
    # typed (dg.Output): generate tasks may have opened Pipes sessions in this step
    return dg.Output(items.merge(answer_table.drop(columns=["json_valid"]),  # items: the score
                                 on=["model_id", "question_id"], how="left"))


def _candidates(only: list[str] | None) -> list[CandidateModel]:
    try:
        return enabled_candidates(RAG, only or None, kinds=("local",))
    except ValueError as error:
        raise dg.Failure(f"rag_eval: {error}") from None


Generator = tuple[Callable[[list[list[dict]]], list[str]], list[list[float]]]


@contextlib.contextmanager
def _generators(context: dg.AssetExecutionContext, catalog: list[dict],
                candidates: list[CandidateModel], versions: dict[str, str], llm: LLMResource,
                compute: ComputeResource, config: RagEvalConfig
                ) -> Iterator[dict[str, Generator]]:
    """{model id: (generate(chats) -> replies, per-round latencies)}, through one GxPLab server
    for every candidate (started on loopback for the step) or in generate tasks."""
    if not config.through_server:
        yield {m.id: _in_process(context, compute, m.id, entry, config.max_new_tokens)
               for m, entry in zip(candidates, catalog, strict=True)}
        return
    from resources.clients.local_server import DEFAULT_TOKEN_ENV, local_server, server_token

    with (local_server(catalog, token_env=DEFAULT_TOKEN_ENV) as (api_base, token),
          server_token(DEFAULT_TOKEN_ENV, token), contextlib.closing(llm.get_client()) as client):
        context.log.info(f"rag_eval: GxPLab server started on {api_base} for "
                         f"{len(catalog)} models")
        yield {m.id: _served(context, m, api_base, client, f"rag:{m.id}@{versions[m.id]}",
                             config.max_new_tokens) for m in candidates}


def _served(context: dg.AssetExecutionContext, model: CandidateModel, api_base: str,
            client: Any, model_key: str, max_new_tokens: int) -> Generator:
    from resources.clients.local_server import DEFAULT_TOKEN_ENV, ask_server, served_api_model

    # response_format none: the model's own reply is scored (the server's JSON enforcement
    # would retry and hide invalid output); greedy, so answers are cacheable.
    target = served_api_model(model, api_base, api_key_env=DEFAULT_TOKEN_ENV,
                              response_format="none", temperature=0.0, max_tokens=max_new_tokens)
    latencies: list[list[float]] = []

    def generate(chats):
        progress = ProgressLog(f"rag_eval: {model.id}", unit="answers", sinks=[context.log])
        answers = ask_server(client, target, chats, model_key=model_key, progress=progress)
        latencies.append([a.latency_s for a in answers])
        return [a.text for a in answers]

    return generate, latencies


def _in_process(context: dg.AssetExecutionContext, compute: ComputeResource, model_id: str,
                entry: dict, max_new_tokens: int) -> Generator:
    """Not through the server: each round of answers (all questions of the round) is one
    `generate` task, run like training (assets/generation.py)."""
    from training.inference import DecodingSettings

    decoding = DecodingSettings(max_new_tokens=max_new_tokens)
    latencies: list[list[float]] = []
    rounds: list[int] = []

    def generate(chats):
        rounds.append(len(rounds) + 1)
        generations = generate_in_task(
            context, compute, base_model_path=entry["base_model_path"],
            adapter_path=entry["adapter_path"], chats=chats, decoding=decoding,
            label=f"rag_eval: {model_id} round {rounds[-1]}", torch_threads=1)
        latencies.append([g.latency_s for g in generations])  # a batch's time, shared
        return [g.text for g in generations]

    return generate, latencies
