"""The RAG training and evaluation stage in Dagster: curriculum SFT, DPO continuing it, and
rag_eval answering through the GxPLab server (a real subprocess) and litellm."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from graph_resources import local_resources, no_models_in_this_process
from test_base_model_pipes import TINY

from assets import all_assets
from assets.rag import load_hybrid_index
from retrieval.settings import load_rag_settings
from scoring.rag_metrics import METRICS
from synthetic.rag_questions import retrieval_query
from synthetic.rag_training import STAGES

FEW_STEPS = {"max_steps": 2, "per_device_train_batch_size": 2}
MODELS = ["embedded-base", "embedded-rag-sft", "embedded-rag-sft-dpo"]
EVAL = {"max_questions": 6, "n_boot": 100, "max_new_tokens": 24}


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("rag_models")
    resources = local_resources(tmp_path)
    assets = all_assets()
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("HF_HUB_OFFLINE", "1")
        no_models_in_this_process(patch)  # served, or generate tasks: never in the run worker
        result = dg.materialize(
            assets, instance=instance, resources=resources,
            selection=["rag_corpus", "rag_questions", "rag_index", "base_model",
                       "rag_sft_adapter", "rag_dpo_adapter", "rag_eval"],
            run_config={"ops": {
                "base_model": {"config": TINY},
                "rag_sft_adapter": {"config": {**FEW_STEPS, "max_rows_per_stage": 2}},
                "rag_dpo_adapter": {"config": {**FEW_STEPS, "max_pairs_per_kind": 1}},
                "rag_eval": {"config": EVAL},
            }})
        assert result.success
        in_process = dg.materialize(
            assets, instance=instance, resources=resources, selection=["rag_eval"],
            run_config={"ops": {"rag_eval": {"config": {**EVAL, "through_server": False}}}})
        assert in_process.success
        defs = dg.Definitions(assets=assets, resources=resources)
        index_frame = defs.load_asset_value("rag_index", instance=instance)
        questions = defs.load_asset_value("rag_questions", instance=instance)
        yield result, in_process, resources, index_frame, questions


def _metadata(result, node):
    return {k: getattr(v, "value", v)
            for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_curriculum_sft_trains_every_stage_in_order(materialized):
    result = materialized[0]
    reference = result.output_for_node("rag_sft_adapter")
    metadata = _metadata(result, "rag_sft_adapter")
    assert metadata["rows_by_stage"]["trained"] == {stage: 2 for stage in STAGES}
    assert set(metadata["rows_by_stage"]["available"]) == set(STAGES)
    assert metadata["embedded_overrides"]["max_rows_per_stage"] == 20  # the preset's, overridden
    rows = [json.loads(line) for line in
            (Path(reference["adapter_path"]).parent / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(set(row) == {"messages"} for row in rows)
    # the sources are in the question's user turn (after any history)
    assert all(any("<<<SOURCES" in m["content"] for m in row["messages"] if m["role"] == "user")
               for row in rows)
    # stage order: the tool-call rows (a tool call or a tool result) sit between the answers
    # and the hard negatives (abstentions and refusals)
    last = [json.loads(row["messages"][-1]["content"]) for row in rows]
    assert ["tool_call" in reply or "tool:" in json.dumps(reply) for reply in last] == \
        [False] * 4 + [True] * 2 + [False] * 2
    assert reference["model_version"] and Path(reference["adapter_path"]).is_dir()


def test_dpo_continues_the_sft_adapter(materialized):
    result = materialized[0]
    sft = result.output_for_node("rag_sft_adapter")
    dpo = result.output_for_node("rag_dpo_adapter")
    metadata = _metadata(result, "rag_dpo_adapter")
    assert metadata["sft_adapter_version"] == sft["model_version"]
    assert dpo["init_adapter_path"] == sft["adapter_path"]
    trained = metadata["pairs_by_kind"]["trained"]
    assert trained and set(trained.values()) == {1}
    assert set(trained) == set(metadata["pairs_by_kind"]["available"])


def test_rag_eval_scores_each_model_through_the_server_and_stores_runs(materialized):
    result, _, resources, index_frame, questions = materialized
    items = result.output_for_node("rag_eval")
    metadata = _metadata(result, "rag_eval")
    assert list(dict.fromkeys(items["model_id"])) == MODELS
    assert len(items) == 3 * EVAL["max_questions"]
    assert "GxPLab server" in metadata["answered_through"]
    for metric in METRICS:
        values = items[metric].dropna()
        assert ((values >= 0) & (values <= 1)).all(), metric
    # the sources each model saw are what the hybrid index retrieves for the question
    settings = load_rag_settings()
    index = load_hybrid_index(index_frame)
    test = [q for q in questions if q["split"] == "test"][: EVAL["max_questions"]]
    for question in test:
        expected = [hit.chunk.chunk_id for hit in index.search(
            retrieval_query(question), k=settings.k, mode="hybrid", depth=settings.depth,
            rrf_k=settings.rrf_k)]
        for row in items[items["question_id"] == question["question_id"]].itertuples():
            assert json.loads(row.retrieved_ids) == expected
    # one warehouse run per model, its json_valid score the mean of the items
    scores = resources["warehouse"].client.latest_scores(model_ids=MODELS, asset_key="rag_eval")
    assert set(scores["model_id"]) == set(MODELS)
    for model_id in MODELS:
        stored = scores[(scores["model_id"] == model_id) & (scores["metric"] == "json_valid")]
        expected_mean = items.loc[items["model_id"] == model_id, "json_valid"].mean()
        assert float(stored["value"].iloc[0]) == pytest.approx(expected_mean)
    assert set(metadata["latency"]) == set(MODELS)
    assert "embedded-rag-sft-dpo" in metadata["scores"]  # and the paired comparison rows


def test_served_answers_equal_the_in_process_answers(materialized):
    served = materialized[0].output_for_node("rag_eval")
    local = materialized[1].output_for_node("rag_eval")
    assert "generate tasks" in _metadata(materialized[1], "rag_eval")["answered_through"]
    key = ["model_id", "question_id"]
    merged = served.merge(local, on=key, suffixes=("_served", "_local"))
    assert len(merged) == len(served)
    assert (merged["replies_served"] == merged["replies_local"]).all()
    assert np.allclose(merged["groundedness_served"], merged["groundedness_local"],
                       equal_nan=True)
