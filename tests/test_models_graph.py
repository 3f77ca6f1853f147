"""Models stage end to end: training data -> base model -> every adapter, all through Pipes."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch
from graph_resources import local_resources, no_models_in_this_process
from test_base_model_pipes import TINY

from assets import all_assets
from training.sft import NO_CUDA

ADAPTERS = ("qlora_adapter", "grit_adapter", "dpo_adapter", "orpo_adapter", "batchqa_adapter",
            "gxp_audit_adapter", "grpo_adapter")
FEW_STEPS = {"max_steps": 3, "per_device_train_batch_size": 2}
EVALUATIONS = ("judge_evaluations", "behavioral_metrics", "batchqa_eval")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run of the whole models stage with 3 optimizer steps per adapter."""
    tmp_path = tmp_path_factory.mktemp("models_graph")
    resources = local_resources(tmp_path)
    assets = all_assets()
    with pytest.MonkeyPatch.context() as patch, dg.instance_for_test() as instance:
        patch.setenv("HF_HUB_OFFLINE", "1")
        no_models_in_this_process(patch)  # the evaluations generate in tasks
        dg.materialize(assets, selection=["gxp_site_master"], instance=instance,
                       resources=resources)
        dg.materialize(assets, selection=["gxp_records", "gxp_labels"], partition_key="train",
                       instance=instance, resources=resources,
                       run_config={"ops": {"gxp_batch_records": {"config": {"n_batches": 3}}}})
        result = dg.materialize(
            assets, instance=instance, resources=resources,
            selection=["alignment_instructions", "batch_record_qa", "amr_cases", "base_model",
                       *ADAPTERS, "training_comparison", "accd_prompts", "aqi_scores",
                       *EVALUATIONS, "gxp_leaderboard", "synthesis_report"],
            run_config={"ops": {
                "base_model": {"config": TINY},
                **{name: {"config": FEW_STEPS} for name in ADAPTERS},
                "grit_adapter": {"config": {**FEW_STEPS, "grit_preset": "default"}},
                "gxp_audit_adapter": {"config": {**FEW_STEPS, "max_records": 8,
                                                 "generated_batches": 2, "heldout_batches": 1}},
                "grpo_adapter": {"config": {**FEW_STEPS, "num_generations": 2,
                                            "max_completion_length": 16}},
                "aqi_scores": {"config": {"n_boot": 200}},
                "judge_evaluations": {"config": {"max_cases": 6, "n_boot": 200}},
                "behavioral_metrics": {"config": {"max_prompts": 8, "n_boot": 200,
                                                  "max_new_tokens": 24}},
                "batchqa_eval": {"config": {"max_questions": 6}},
            }},
        )
    assert result.success
    return result, resources


def test_qlora_adapter_trains_on_the_base_model_it_receives(trained):
    result, _ = trained
    base = result.output_for_node("base_model")
    adapter = result.output_for_node("qlora_adapter")
    metadata = result.asset_materializations_for_node("qlora_adapter")[0].metadata
    # NF4 on a CUDA machine; on CPU the fallback, said in the metadata
    expected = "nf4" if torch.cuda.is_available() else NO_CUDA
    assert metadata["quantization"].value == adapter["quantization"] == expected
    assert 0 < metadata["trainable_params"].value < metadata["total_params"].value
    assert len(metadata["losses"].value) == 3
    assert Path(adapter["adapter_path"]).is_dir() and Path(adapter["archive_path"]).is_file()
    card = (Path(adapter["adapter_path"]).parent / "model_card.md").read_text()
    assert base["model_path"] in card  # trained on the base model it received as input
    assert "# GxPLab LoRA adapter (qlora_adapter)" in card
    # the base model's and the tuned model's loss on the same held-out rows
    assert adapter["eval_rows"] >= 1 and adapter["base_eval_loss"] > 0 and adapter["eval_loss"] > 0
    assert adapter["preset"] == "configs/training.yaml [qlora_adapter]"

    grit = result.output_for_node("grit_adapter")
    assert grit["optimizer"] == "grit" and grit["grit_n_layers"] == 14
    assert grit["grit_preconditioned_steps"] >= 1  # factors every step: preconditioning ran
    assert grit["losses"] != adapter["losses"]  # same data and seed, a different optimizer


def test_every_adapter_is_a_registered_version(trained):
    result, resources = trained
    warehouse = resources["warehouse"].client
    for task in ADAPTERS:
        output = result.output_for_node(task)
        assert output["steps"] == 3, task
        (version,) = warehouse.list_model_versions(task)
        assert version["version"] == output["model_version"]
        assert version["archive_sha256"] == output["archive_sha256"]
        # the first version of a task becomes production
        assert warehouse.get_alias(task)["version"] == output["model_version"]


def test_preference_adapters_use_their_method_and_report_its_metrics(trained):
    result, _ = trained
    dpo, orpo = result.output_for_node("dpo_adapter"), result.output_for_node("orpo_adapter")
    assert (dpo["method"], orpo["method"]) == ("dpo", "orpo")
    assert "log_odds_ratio" in orpo and "log_odds_ratio" not in dpo
    assert dpo["preset"] == "configs/training.yaml [dpo_adapter]"
    for output in (dpo, orpo):  # a quarter of the pairs held out and scored after training
        assert output["heldout_preference_pairs"] >= 2
        assert 0 <= output["heldout_preference_accuracy_ci_low"] \
            <= output["heldout_preference_accuracy"] <= 1
    card = (Path(orpo["adapter_path"]).parent / "model_card.md").read_text()
    assert "(orpo_adapter)" in card


def test_batchqa_adapter_uses_seed_002_settings_and_keeps_its_decoding(trained):
    result, _ = trained
    batchqa = result.output_for_node("batchqa_adapter")
    metadata = result.asset_materializations_for_node("batchqa_adapter")[0].metadata
    assert batchqa["end_token"] == "<|end|>"
    # greedy, no n-gram ban (it counted the prompt, which every answer repeats)
    assert batchqa["decoding"] == {"temperature": 0.0, "max_new_tokens": 96}
    assert batchqa["trainable_params"] > result.output_for_node("qlora_adapter")[
        "trainable_params"]  # r 32 against r 16
    assert metadata["run_config_overrides"].value == FEW_STEPS


def test_grpo_adapter_is_judged_by_the_offline_rubric_and_says_so(trained):
    result, _ = trained
    grpo = result.output_for_node("grpo_adapter")
    assert grpo["judge"] == "reference-rubric (not an LLM)"
    assert grpo["judged_steps"] == [1, 2, 3] and grpo["judge_calls"] > 0  # k = 1: every step
    assert grpo["cases"] == grpo["train_rows"] > 100  # the amr_cases train split
    assert Path(grpo["adapter_path"]).is_dir()


def test_training_comparison_lists_every_adapter(trained):
    result, _ = trained
    comparison = result.output_for_node("training_comparison").set_index("adapter")
    assert sorted(comparison.index) == sorted(ADAPTERS)
    assert (comparison["steps"] == 3).all()
    assert pd.isna(comparison.loc["qlora_adapter", "grit_effective_params"])  # not GRIT
    assert comparison.loc["dpo_adapter", "objective"] != comparison.loc["qlora_adapter",
                                                                         "objective"]
    board = result.asset_materializations_for_node("training_comparison")[0].metadata
    assert board["loss_curves"].value.startswith("![loss curves](data:image/png;base64,")


def test_aqi_scores_compare_each_adapter_with_its_base(trained):
    import numpy as np

    from training.hidden_states import load_hidden_states

    result, resources = trained
    table = result.output_for_node("aqi_scores")
    metadata = result.asset_materializations_for_node("aqi_scores")[0].metadata
    models = ["base_model", "qlora_adapter", "grit_adapter", "dpo_adapter", "orpo_adapter"]
    assert list(table["model"].unique()) == models
    assert table["aqi"].between(0, 1).all()
    n_layers = table[table["model"] == "base_model"]["layer"].nunique()
    assert n_layers >= 2 and len(table) == len(models) * n_layers
    tuned = table[table["model"] != "base_model"]
    assert (tuned["ci_low"] <= tuned["delta_aqi"]).all()
    assert (tuned["delta_aqi"] <= tuned["ci_high"]).all()
    assert table[table["model"] == "base_model"]["delta_aqi"].isna().all()
    assert "| qlora_adapter |" in metadata["delta_aqi"].value
    assert metadata["per_layer_plot"].value.startswith("![AQI per layer](data:image/png;base64,")
    prompts = result.output_for_node("accd_prompts")
    states, sidecar = load_hidden_states(metadata["hidden_states"].value["qlora_adapter"])
    assert states.shape[:2] == (n_layers, len(prompts))
    assert sidecar["adapter_path"] == result.output_for_node("qlora_adapter")["adapter_path"]
    base, _ = load_hidden_states(metadata["hidden_states"].value["base_model"])
    assert not np.allclose(base, states)  # the adapter changed the hidden states
    # every per-layer index and each delta lands in the warehouse with the model's version
    client = resources["warehouse"].client
    items = client.item_scores(asset_key="aqi_scores")
    assert len(items) == len(table) * 5  # aqi, xbi, chi, chi_norm, xb_norm per (model, layer)
    stored = items[(items["model_id"] == "qlora_adapter") & (items["metric"] == "aqi")]
    assert sorted(stored["value"]) == pytest.approx(
        sorted(table[table["model"] == "qlora_adapter"]["aqi"]))
    assert (stored["model_version"]
            == result.output_for_node("qlora_adapter")["model_version"]).all()
    deltas = client.latest_evaluation_scores("aqi_scores")
    deltas = deltas[deltas["metric"] == "delta_aqi"].set_index("model_id")
    assert sorted(deltas.index) == sorted(models[1:])
    qlora = tuned[tuned["model"] == "qlora_adapter"].iloc[0]
    assert deltas.loc["qlora_adapter", "ci_low"] == pytest.approx(qlora["ci_low"])


def test_judge_evaluations_score_each_amr_candidate_and_store_the_rows(trained):
    from scoring.item_scores import ITEM_COLUMNS
    from scoring.judge import REFERENCE_JUDGE_NAME

    result, resources = trained
    items = result.output_for_node("judge_evaluations")
    metadata = result.asset_materializations_for_node("judge_evaluations")[0].metadata
    assert tuple(items.columns[:len(ITEM_COLUMNS)]) == ITEM_COLUMNS
    assert sorted(items["model_id"].unique()) == ["embedded-base", "embedded-grpo"]
    assert items["item_id"].nunique() == 6 and metadata["test_cases"].value == 6
    grpo = items[items["model_id"] == "embedded-grpo"]
    assert (grpo["base_model_id"] == "embedded-base").all()
    assert (grpo["model_version"] == result.output_for_node("grpo_adapter")["model_version"]).all()
    rewards = items[items["metric"] == "weighted_reward"]
    assert rewards["value"].between(0, 1).all() and (rewards["status"] == "ok").all()
    assert metadata["judge"].value == REFERENCE_JUDGE_NAME and not metadata["judge_is_llm"].value
    assert "OPENAI_API_KEY" in metadata["skipped"].value["gpt-4o"]  # API models say why
    stored = resources["warehouse"].client.item_scores(asset_key="judge_evaluations")
    assert len(stored) == len(items)
    assert set(stored["model_version"]) == set(items["model_version"])
    merged = stored.merge(items, on=["model_id", "item_id", "metric"], suffixes=("_db", ""))
    assert (merged["value_db"].fillna(-1) == merged["value"].fillna(-1)).all()


def test_behavioral_and_batchqa_evaluations_compare_adapters_with_their_base(trained):
    result, resources = trained
    behaviour = result.output_for_node("behavioral_metrics")
    assert sorted(behaviour["model_id"].unique()) == sorted(
        ["base_model", "qlora_adapter", "grit_adapter", "dpo_adapter", "orpo_adapter"])
    assert set(behaviour["metric"]) == {"refusal", "helpfulness", "instruction_following"}
    tuned = behaviour[behaviour["model_id"] != "base_model"]
    assert (tuned["base_model_id"] == "base_model").all()
    qa = result.output_for_node("batchqa_eval")
    assert sorted(qa["model_id"].unique()) == ["base_model", "batchqa_adapter"]
    assert set(qa["metric"]) == {"exact_match", "semantic_similarity", "semantic_match",
                                 "hallucinated"}
    assert qa[qa["metric"] == "semantic_similarity"]["value"].between(-1, 1).all()
    client = resources["warehouse"].client
    for asset_key, frame in (("behavioral_metrics", behaviour), ("batchqa_eval", qa)):
        assert len(client.item_scores(asset_key=asset_key)) == len(frame)


def test_synthesis_report_compares_every_tuned_model_and_saves_markdown_and_html(trained):
    from pathlib import Path

    result, _ = trained
    comparisons = result.output_for_node("synthesis_report")
    metadata = result.asset_materializations_for_node("synthesis_report")[0].metadata
    assert {"judge_evaluations", "behavioral_metrics", "batchqa_eval", "aqi_scores"} <= set(
        comparisons["source"])
    paired = comparisons[comparisons["source"] != "aqi_scores"]
    assert ((paired["p_holm"] >= paired["p_value"]) | paired["p_value"].isna()).all()
    html = Path(metadata["html"].value).read_text(encoding="utf-8")
    assert "<table>" in html and "data:image/png;base64," in html
    markdown = Path(metadata["markdown_file"].value).read_text(encoding="utf-8")
    assert "## Significance of base-vs-tuned differences" in markdown
    assert "embedded-grpo" in markdown and "batchqa_adapter" in markdown
    assert "data:image/png;base64," in metadata["report"].value  # the UI shows the plots
