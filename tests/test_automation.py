"""Declarative automation: scores refresh when their predictions change, nothing runs when
nothing changed, and training assets are never requested automatically."""

import dagster as dg
from graph_resources import local_resources

from assets import all_assets
from assets.automation import REFRESH
from assets.partitions import model_partitions, model_split_key

ASSETS = all_assets()
KEY = model_split_key("reference_auditor", "benchmark")
DOWNSTREAM = ("gxp_scores", "aqi_scores", "judge_evaluations", "behavioral_metrics",
              "batchqa_eval", "gxp_leaderboard", "training_comparison", "synthesis_report")


def test_downstream_assets_refresh_and_training_assets_do_not():
    by_key = {key.to_user_string(): spec for a in ASSETS if isinstance(a, dg.AssetsDefinition)
              for key, spec in ((s.key, s) for s in a.specs)}
    for name in DOWNSTREAM:
        assert by_key[name].automation_condition == REFRESH, name
    for name in ("base_model", "qlora_adapter", "grpo_adapter", "gxp_audit_adapter"):
        assert by_key[name].automation_condition is None, name


def test_scores_refresh_after_new_predictions_and_nothing_runs_when_nothing_changed(
        instance, tmp_path):
    resources = local_resources(tmp_path)
    defs = dg.Definitions(assets=ASSETS, resources=resources)
    scores = dg.AssetKey("gxp_scores")
    instance.add_dynamic_partitions(model_partitions.name, ["reference_auditor"])

    def materialize(selection, **kwargs):
        assert dg.materialize(ASSETS, selection=selection, instance=instance,
                              resources=resources, **kwargs).success

    materialize(["gxp_site_master"])
    materialize(["gxp_records", "gxp_labels"], partition_key="benchmark",
                run_config={"ops": {"gxp_batch_records": {"config": {"n_batches": 3}}}})
    selection = dg.AssetSelection.assets(scores)
    # the daemon's first tick sets the baseline: predictions are missing, nothing to score
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 asset_selection=selection)
    assert baseline.total_requested == 0
    materialize(["gxp_predictions"], partition_key=KEY)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                              asset_selection=selection,
                                              cursor=baseline.cursor)
    assert first.get_requested_partitions(scores) == {KEY}  # new predictions -> rescore
    materialize(["gxp_scores"], partition_key=KEY)
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                               asset_selection=selection,
                                               cursor=first.cursor)
    assert second.total_requested == 0  # scored since: nothing to do
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                              asset_selection=selection,
                                              cursor=second.cursor)
    assert third.total_requested == 0  # still nothing changed
    materialize(["gxp_predictions"], partition_key=KEY)  # a re-audit
    fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                               asset_selection=selection,
                                               cursor=third.cursor)
    assert fourth.get_requested_partitions(scores) == {KEY}
