"""Keep the candidate-model partitions in step with configs/models.yaml."""

from __future__ import annotations

import hashlib

import dagster as dg

from assets.partitions import model_partitions, model_split_key
from scoring.model_registry import (
    GXP_AUDIT,
    CandidateModel,
    load_model_registry,
    model_availability,
)
from synthetic.catalog import CONFIG_DIR
from synthetic.contracts import SPLITS

REGISTRY_PATH = CONFIG_DIR / "models.yaml"


def partition_changes(current: list[str], registered: list[str]) -> tuple[list[str], list[str]]:
    """Model ids to add and to remove so that the partitions equal the registry."""
    return (
        [m for m in registered if m not in current],
        [m for m in current if m not in registered],
    )


def sync_model_partitions(instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """Add and delete candidate_model partitions; used by `gxplab` outside the daemon."""
    registered = [m.id for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]
    current = instance.get_dynamic_partitions(model_partitions.name)
    added, removed = partition_changes(current, registered)
    if added:
        instance.add_dynamic_partitions(model_partitions.name, added)
    for model_id in removed:
        instance.delete_dynamic_partition(model_partitions.name, model_id)
    return added, removed


def _unmaterialized_model_assets(instance: dg.DagsterInstance, model: CandidateModel) -> list[str]:
    """The model assets a local model runs (base_model, its adapter) not materialized yet."""
    return [asset for asset in model.model_assets
            if instance.get_latest_materialization_event(dg.AssetKey(asset)) is None]


@dg.sensor(
    job_name="gxp_evaluation_job",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds/removes candidate_model partitions when configs/models.yaml changes and "
    "requests the evaluation of newly added models whose credentials are present (local models: "
    "once their base model and adapter are materialized).",
)
def model_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    digest = hashlib.sha256(REGISTRY_PATH.read_bytes()).hexdigest()
    current = context.instance.get_dynamic_partitions(model_partitions.name)
    models = [m for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]
    added, removed = partition_changes(current, [m.id for m in models])
    if digest == context.cursor and not added and not removed:
        return dg.SkipReason("configs/models.yaml unchanged")
    run_requests = []
    for model in models:
        available, reason = model_availability(model)
        if model.id not in added:
            continue
        if not available:
            context.log.info(f"model {model.id} added; not evaluated ({reason})")
            continue
        unbuilt = _unmaterialized_model_assets(context.instance, model)
        if unbuilt:
            context.log.info(f"model {model.id} added; not evaluated until {', '.join(unbuilt)} "
                             "is materialized")
            continue
        run_requests.extend(
            dg.RunRequest(
                partition_key=model_split_key(model.id, split),
                run_key=f"{digest}:{model.id}:{split}",
            )
            for split in (model.splits or SPLITS)
        )
    requests = []
    if added:
        requests.append(model_partitions.build_add_request(added))
    if removed:
        requests.append(model_partitions.build_delete_request(removed))
    return dg.SensorResult(
        run_requests=run_requests, dynamic_partitions_requests=requests, cursor=digest
    )
