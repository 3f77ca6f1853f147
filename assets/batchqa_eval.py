"""Batch-record Q&A evaluation (seed 002): the base model and the batchqa_adapter answer the test
split's questions; exact match, semantic match and hallucination rate per model, and the adapter
compared with its base on the same questions.

Generation runs like training: one `generate` task for both models, in its own process through
the compute resource (assets/generation.py), with the batchqa preset's system prompt, chat format
and decoding; scoring is scoring/batchqa_metrics.py. One warehouse run per model
(assets/evaluation_records.py).
"""

import base64
import json
import math
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.automation import REFRESH
from assets.evaluation_records import base_version_of, record_evaluation
from assets.generation import generate_models_in_task
from resources.artifacts import resolve_model_folder
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource
from synthetic.jsonl import dumps_jsonl, sha256_bytes

BASE_ID, ADAPTER_ID = "base_model", "batchqa_adapter"


class BatchQaEvalConfig(dg.Config):
    threshold: float = Field(0.8, ge=-1.0, le=1.0, description="Semantic match: cosine "
                             "similarity of answer and reference at or above this.")
    max_questions: int | None = Field(None, ge=2, description="Answer only the first N test "
                                      "questions (a quick look; metadata says so).")
    batch_size: int = Field(16, ge=1, description="Chats per generation batch.")
    seed: int = Field(0, description="Decoding seed (sampled decoding) and bootstrap seed.")
    similarity_model_path: str | None = Field(None, description="A SentenceTransformer folder "
                                              "instead of the packaged all-MiniLM-L6-v2.")


def _jsonable(value):
    """Plain JSON values: non-finite floats (a t statistic of +/-inf) as strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


@dg.asset(group_name="evaluation", kinds={"pytorch"}, code_version="1",
          automation_condition=REFRESH,
          ins={"base_model": dg.AssetIn(), "batchqa_adapter": dg.AssetIn(),
               "batch_record_qa": dg.AssetIn()})
def batchqa_eval(context: dg.AssetExecutionContext, config: BatchQaEvalConfig,
                 compute: ComputeResource, warehouse: WarehouseResource, base_model: dict,
                 batchqa_adapter: dict, batch_record_qa: list[dict]) -> dg.Output[pd.DataFrame]:
    """Seed 002's metrics on the batch_record_qa test split for the base model and the
    batchqa_adapter: exact match, semantic match (all-MiniLM-L6-v2 cosine >= threshold) and
    hallucination rate (answers stating facts absent from their summary), with 95% bootstrap CIs;
    adapter vs base by paired t-test and Cohen's d_z. Returns the evaluation contract's long
    per-item frame; one warehouse run per model."""
    from scoring.batchqa_metrics import (
        SemanticMatcher,
        item_rows,
        paired_comparison,
        rates_plot_png,
        score_answers,
        summarise_scores,
    )
    from synthetic.batch_record_qa import batchqa_messages
    from training.inference import DecodingSettings
    from training.presets import load_training_preset

    test = [row for row in batch_record_qa if row["split"] == "test"]
    rows = test[:config.max_questions] if config.max_questions else test
    if len(rows) < 2:
        raise dg.Failure(f"batchqa_eval: {len(rows)} test question(s) in batch_record_qa; the "
                         f"paired comparison needs at least 2", allow_retries=False)
    if not batchqa_adapter.get("model_version") or not batchqa_adapter.get("adapter_path"):
        raise dg.Failure("batchqa_eval: the batchqa_adapter input lacks model_version or "
                         "adapter_path; re-materialize batchqa_adapter", allow_retries=False)
    # The prompt and decoding the adapter was trained with (its metadata), else the preset's.
    preset = load_training_preset("batchqa_adapter")
    system_prompt = batchqa_adapter.get("system_prompt") or preset["system_prompt"]
    end_token = batchqa_adapter.get("end_token") or preset["end_token"]
    raw_decoding = dict(batchqa_adapter.get("decoding") or preset.get("decoding") or {})
    # Generation stops at the end token the adapter learned to write (seed 002's stop point).
    stops = [*raw_decoding.get("stop_strings", []), end_token]
    decoding = DecodingSettings.from_mapping(
        {**raw_decoding, "seed": config.seed, "stop_strings": list(dict.fromkeys(stops))},
        source="batchqa_adapter decoding")
    chats = [batchqa_messages(row, system_prompt, end_token, with_answer=False)["messages"]
             for row in rows]
    prompt_version = "batchqa:" + sha256_bytes(
        json.dumps({"system_prompt": system_prompt, "end_token": end_token,
                    "user": "{source}\n\nQuestion: {question}"}).encode())[:12]
    versions = {BASE_ID: base_version_of(base_model),
                ADAPTER_ID: batchqa_adapter["model_version"]}
    adapters = {BASE_ID: None, ADAPTER_ID: resolve_model_folder(batchqa_adapter, "adapter_path")}

    answers: dict[str, list[str]] = {}
    # both models in one generate task, run like training (assets/generation.py)
    completions = generate_models_in_task(
        context, compute, base_model_path=resolve_model_folder(base_model, "model_path"),
        adapters=adapters, chats=chats, decoding=decoding, batch_size=config.batch_size,
        label="batchqa_eval")
    for model_id, generations in completions.items():
        answers[model_id] = [g.text for g in generations]
        truncated = sum(g.truncated_prompt_tokens > 0 for g in generations)
        if truncated:
            context.log.warning(f"batchqa_eval: {model_id}: {truncated} prompt(s) cut to fit "
                                f"the context")

    matcher = SemanticMatcher(config.similarity_model_path)
    scores = {model_id: score_answers(rows, answers[model_id], matcher, config.threshold,
                                      end_token) for model_id in adapters}
    summaries = {model_id: summarise_scores(frame, n_boot=1000, seed=config.seed)
                 for model_id, frame in scores.items()}
    comparison = paired_comparison(scores[ADAPTER_ID], scores[BASE_ID], n_boot=1000,
                                   seed=config.seed)
    base_ids = {BASE_ID: None, ADAPTER_ID: BASE_ID}
    items = {model_id: item_rows(frame, model_id, base_ids[model_id], versions[model_id],
                                 config.threshold) for model_id, frame in scores.items()}

    dataset_hash = sha256_bytes(dumps_jsonl(batch_record_qa))
    common = {"similarity_model": matcher.description, "threshold": config.threshold,
              "questions": len(rows), "test_questions": len(test),
              "max_questions": config.max_questions, "system_prompt": system_prompt,
              "end_token": end_token, "decoding": raw_decoding, "stop_strings": stops,
              "questions_hash": sha256_bytes(dumps_jsonl(rows))}
    run_ids = {}
    for model_id in adapters:
        summary = {**common, "base_model_id": base_ids[model_id],
                   "rates": summaries[model_id].to_dict(orient="records")}
        if model_id == ADAPTER_ID:
            summary["comparison_with_base"] = comparison.to_dict(orient="records")
        run_ids[model_id] = record_evaluation(
            context, warehouse, asset_key="batchqa_eval", model_id=model_id,
            model_version=versions[model_id], split="test", dataset_hash=dataset_hash,
            prompt_version=prompt_version, items=items[model_id],
            scores=summaries[model_id].to_dict(orient="records"), summary=_jsonable(summary))

    out_dir = compute.output_dir("batchqa_eval", context.run.run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    answers_file = out_dir / "answers.jsonl"
    answers_file.write_bytes(dumps_jsonl(
        _jsonable({"model_id": model_id, **record}) for model_id, frame in scores.items()
        for record in frame.to_dict(orient="records")))
    Path(out_dir / "summary.json").write_text(json.dumps(_jsonable({
        **common, "rates": {m: s.to_dict(orient="records") for m, s in summaries.items()},
        "comparison": comparison.to_dict(orient="records"), "warehouse_runs": run_ids}),
        indent=2), encoding="utf-8")

    rates = pd.concat([summary.assign(model=model_id) for model_id, summary in summaries.items()])
    rates["95% CI"] = [f"[{low:.3f}, {high:.3f}]" for low, high in zip(
        rates["ci_low"], rates["ci_high"], strict=True)]
    image = base64.b64encode(rates_plot_png(summaries)).decode()
    context.add_output_metadata({
        "rates": dg.MetadataValue.md(rates[["model", "metric", "value", "95% CI", "n"]]
                                     .to_markdown(index=False, floatfmt=".3f")),
        "adapter_vs_base": dg.MetadataValue.md(comparison.to_markdown(index=False,
                                                                      floatfmt=".4f")),
        "examples": dg.MetadataValue.md(_examples(scores)),
        "rates_plot": dg.MetadataValue.md(f"![batch-record Q&A rates](data:image/png;base64,"
                                          f"{image})"),
        "similarity_model": matcher.description,
        "threshold": config.threshold,
        "questions": len(rows),
        "test_questions": len(test),
        "subset": ("all test questions" if len(rows) == len(test)
                   else f"first {len(rows)} of {len(test)} test questions"),
        "dataset_hash": dataset_hash,
        "prompt_version": prompt_version,
        "model_versions": dg.MetadataValue.json(versions),
        "decoding": dg.MetadataValue.json(_jsonable({**raw_decoding, "stop_strings": stops,
                                                     "seed": config.seed})),
        "warehouse_runs": dg.MetadataValue.json(run_ids),
        "answers_file": str(answers_file),
    })
    # typed (dg.Output): the generate tasks opened Pipes sessions in this step
    return dg.Output(pd.concat(list(items.values()), ignore_index=True))


def _examples(scores: dict[str, pd.DataFrame], count: int = 3) -> str:
    """Markdown: the first questions of `count` different question types, every model's answer
    (on one line, at most 200 characters)."""
    base = scores[BASE_ID]
    picked = base.drop_duplicates("question_type").head(count).index
    parts = []
    for index in picked:
        row = base.loc[index]
        lines = [f"**{row['qa_id']}** ({row['question_type']}): {row['question']}",
                 f"- reference: {row['reference']}"]
        for model_id, frame in scores.items():
            answer = frame.loc[index]
            facts = ", ".join(answer["unsupported_facts"]) or "none"
            text = " ".join(answer["prediction"].split())
            text = (text[:200] + "...") if len(text) > 200 else text
            lines.append(f"- {model_id}: {text or '(empty)'} "
                         f"(exact {bool(answer['exact_match'])}, similarity "
                         f"{answer['semantic_similarity']:.3f}, unsupported facts: {facts})")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
