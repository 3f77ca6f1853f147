"""model_registry_sensor keeps candidate_model partitions equal to configs/models.yaml."""

import dagster as dg

from assets.partitions import model_partitions
from definitions import defs
from scoring.model_registry import load_model_registry
from sensors.model_registry import model_registry_sensor, partition_changes, sync_model_partitions


def test_partition_changes():
    assert partition_changes(["a", "gone"], ["a", "new"]) == (["new"], ["gone"])


def test_first_tick_adds_every_model_and_evaluates_only_available_ones(instance, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    registered = [m.id for m in load_model_registry(benchmark="gxp_audit") if m.enabled]
    instance.add_dynamic_partitions(model_partitions.name, ["retired-model"])
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    result = model_registry_sensor(context)
    assert isinstance(result, dg.SensorResult)
    add, delete = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == sorted(registered)
    assert list(delete.partition_keys) == ["retired-model"]
    # Only models whose credentials are present are evaluated: here the reference auditor
    # (the local models wait for their base model and adapter to be materialized).
    requested = sorted(str(r.partition_key) for r in result.run_requests)
    assert requested == sorted(f"reference_auditor|{s}" for s in
                               ("adversarial", "benchmark", "control_clean",
                                "control_faulty", "train"))
    # Once the partitions match and the file is unchanged, the sensor skips.
    sync_model_partitions(instance)
    again = model_registry_sensor(
        dg.build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs)
    )
    assert isinstance(again, dg.SkipReason)
    assert sorted(instance.get_dynamic_partitions(model_partitions.name)) == sorted(registered)


def test_local_models_are_evaluated_once_their_model_assets_exist(instance, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    local = {m.id: m for m in load_model_registry(benchmark="gxp_audit")
             if m.enabled and m.kind == "local"}
    assert local, "configs/models.yaml registers local models"
    instance.report_runless_asset_event(dg.AssetMaterialization("base_model"))
    result = model_registry_sensor(dg.build_sensor_context(instance=instance,
                                                           definitions=defs))
    requested = {str(r.partition_key).split("|")[0] for r in result.run_requests}
    # the base model alone is ready; models with an adapter still wait for it
    assert requested & set(local) == {m for m, spec in local.items() if not spec.adapter}
