"""DatasetIOManager round trips and the artifact store's path safety."""

import hashlib

import dagster as dg
import pandas as pd
import pytest

from resources.clients.artifacts import ArtifactStore
from resources.io_manager import ALL_STORED_PARTITIONS, DatasetIOManager
from synthetic.jsonl import dumps_jsonl

split_partitions = dg.StaticPartitionsDefinition(["benchmark", "train"])


@dg.asset(partitions_def=split_partitions)
def records_asset(context: dg.AssetExecutionContext) -> list[dict]:
    return [{"record_id": f"R-{context.partition_key}-1", "batch_id": "B1", "qty": 1.5}]


@dg.asset(partitions_def=split_partitions)
def frame_asset(records_asset: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records_asset)


@dg.asset(partitions_def=split_partitions)
def summary_asset(frame_asset: pd.DataFrame) -> dict:
    return {"rows": len(frame_asset), "ids": list(frame_asset["record_id"])}


def test_round_trip_and_metadata(tmp_path):
    io_manager = DatasetIOManager(root=str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [records_asset, frame_asset, summary_asset],
            partition_key="train",
            resources={"io_manager": io_manager},
            instance=instance,
        )
    assert result.success
    assert result.output_for_node("summary_asset") == {"rows": 1, "ids": ["R-train-1"]}
    stored = tmp_path / "records_asset" / "train.jsonl"
    expected = dumps_jsonl([{"record_id": "R-train-1", "batch_id": "B1", "qty": 1.5}])
    assert stored.read_bytes() == expected
    event = result.asset_materializations_for_node("records_asset")[0]
    assert event.metadata["artifact_sha256"].value == hashlib.sha256(expected).hexdigest()
    assert event.metadata["rows"].value == 1
    assert (tmp_path / "frame_asset" / "train.parquet").exists()
    assert (tmp_path / "summary_asset" / "train.json").exists()


def test_missing_upstream_names_asset_and_partition(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [records_asset, frame_asset],
            selection=[frame_asset],
            partition_key="benchmark",
            resources={"io_manager": DatasetIOManager(root=str(tmp_path))},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error, messages = failure.step_failure_data.error, []
    while error is not None:  # Dagster wraps the IO manager's exception
        messages.append(error.message)
        error = error.cause
    assert any(
        "records_asset" in m and "'benchmark'" in m and "materialize it first" in m
        for m in messages
    ), messages


def test_artifact_keys_cannot_escape_root(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ValueError, match="inside the store"):
        store.path_for("../outside.txt")
    digest = store.write_bytes("a/b.bin", b"abc")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert store.read_bytes("a/b.bin") == b"abc"


batch_partitions = dg.DynamicPartitionsDefinition(name="test_batches")


@dg.asset(partitions_def=batch_partitions)
def batch_asset(context: dg.AssetExecutionContext) -> list[dict]:
    return [{"record_id": f"R-{context.partition_key}", "batch_id": context.partition_key}]


@dg.asset(ins={"batch_asset": dg.AssetIn(partition_mapping=dg.AllPartitionMapping(),
                                         metadata=ALL_STORED_PARTITIONS)})
def all_batches(batch_asset: dict[str, list[dict]]) -> dict:
    return {name: [r["record_id"] for r in rows] for name, rows in batch_asset.items()}


def test_all_stored_partitions_load_as_a_dict_and_unstored_ones_are_named(tmp_path):
    resources = {"io_manager": DatasetIOManager(root=str(tmp_path))}
    with dg.instance_for_test() as instance:
        none_yet = dg.materialize([batch_asset, all_batches], selection=[all_batches],
                                  instance=instance, resources=resources)
        assert none_yet.output_for_node("all_batches") == {}  # no partition: an empty dict
        instance.add_dynamic_partitions(batch_partitions.name, ["b1", "b2", "b3"])
        for key in ("b1", "b3"):
            dg.materialize([batch_asset], partition_key=key, instance=instance,
                           resources=resources)
        result = dg.materialize([batch_asset, all_batches], selection=[all_batches],
                                instance=instance, resources=resources)
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.output_for_node("all_batches") == {"b1": ["R-b1"], "b3": ["R-b3"]}
    assert any("1 partition(s) without a stored value left out: b2" in m for m in messages)
