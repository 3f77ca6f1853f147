"""S3 artifact store and DatasetIOManager's S3 backend against moto's server on loopback (HTTP)."""

import hashlib
import io
import socket

import boto3
import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from resources.clients.artifacts import S3ArtifactStore
from resources.io_manager import DatasetIOManager, dataset_io_manager
from synthetic.jsonl import dumps_jsonl

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")

BUCKET = "gxplab-artifacts"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_endpoint, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=BUCKET)
    return client


def test_round_trip_bytes_with_sha256_metadata(s3_client):
    store = S3ArtifactStore(BUCKET, "rt", s3_client)
    data = b"adapter archive bytes\x00\x01"
    digest = store.write_bytes("models/m1/run-1/adapter.tar.gz", data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.uri_for("models/m1/run-1/adapter.tar.gz") == (
        f"s3://{BUCKET}/rt/models/m1/run-1/adapter.tar.gz"
    )
    assert store.read_bytes("models/m1/run-1/adapter.tar.gz") == data
    assert store.exists("models/m1/run-1/adapter.tar.gz")
    assert not store.exists("models/m1/run-2/adapter.tar.gz")
    head = s3_client.head_object(Bucket=BUCKET, Key="rt/models/m1/run-1/adapter.tar.gz")
    assert head["Metadata"]["sha256"] == digest
    assert store.sha256_of("models/m1/run-1/adapter.tar.gz") == digest


def test_write_file_uploads_archive(s3_client, tmp_path):
    archive = tmp_path / "adapter.tar.gz"
    archive.write_bytes(b"x" * 3000)
    store = S3ArtifactStore(BUCKET, "", s3_client)
    digest = store.write_file("models/m2/run-9/adapter.tar.gz", archive)
    assert digest == hashlib.sha256(b"x" * 3000).hexdigest()
    assert store.read_bytes("models/m2/run-9/adapter.tar.gz") == b"x" * 3000
    assert store.sha256_of("models/m2/run-9/adapter.tar.gz") == digest


def test_missing_key_and_bad_key_errors(s3_client):
    store = S3ArtifactStore(BUCKET, "rt", s3_client)
    with pytest.raises(FileNotFoundError) as error:
        store.read_bytes("datasets/absent.jsonl")
    message = str(error.value)
    assert f"s3://{BUCKET}/rt/datasets/absent.jsonl" in message
    assert "materialize its asset first" in message
    with pytest.raises(ValueError, match="inside the store"):
        store.write_bytes("../escape.bin", b"x")


def test_unreachable_endpoint_is_a_clear_connection_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    client = S3Resource(endpoint_url=endpoint, region_name="us-east-1", max_attempts=1).get_client()
    store = S3ArtifactStore(BUCKET, "rt", client)
    with pytest.raises(ConnectionError) as error:
        store.write_bytes("a.bin", b"x")
    message = str(error.value)
    assert endpoint in message and f"s3://{BUCKET}/rt/a.bin" in message
    assert "testing-secret-key" not in message


split_partitions = dg.StaticPartitionsDefinition(["benchmark", "train"])


@dg.asset(partitions_def=split_partitions)
def batch_frame(context: dg.AssetExecutionContext) -> pd.DataFrame:
    return pd.DataFrame(
        {"record_id": [f"R-{context.partition_key}-1", f"R-{context.partition_key}-2"],
         "qty": [1.5, 2.0]}
    )


@dg.asset(partitions_def=split_partitions)
def batch_records(batch_frame: pd.DataFrame) -> list[dict]:
    return [{"record_id": r, "qty_g": q * 1000} for r, q in zip(
        batch_frame["record_id"], batch_frame["qty"], strict=True)]


def _s3_io_manager(endpoint: str, prefix: str) -> DatasetIOManager:
    return DatasetIOManager(
        backend="s3",
        bucket=BUCKET,
        prefix=prefix,
        s3=S3Resource(endpoint_url=endpoint, region_name="us-east-1", max_attempts=1),
    )


def test_materialize_parquet_and_jsonl_under_run_scoped_keys(s3_client, s3_endpoint):
    io_manager = _s3_io_manager(s3_endpoint, "dagster")
    with dg.instance_for_test() as instance:
        first = dg.materialize([batch_frame, batch_records], partition_key="train",
                               resources={"io_manager": io_manager}, instance=instance)
        assert first.success
        expected_records = [{"record_id": "R-train-1", "qty_g": 1500.0},
                            {"record_id": "R-train-2", "qty_g": 2000.0}]
        assert first.output_for_node("batch_records") == expected_records
        run_id = first.run_id

        frame_key = f"dagster/batch_frame/train/{run_id}.parquet"
        records_key = f"dagster/batch_records/train/{run_id}.jsonl"
        frame_bytes = s3_client.get_object(Bucket=BUCKET, Key=frame_key)["Body"].read()
        records_bytes = s3_client.get_object(Bucket=BUCKET, Key=records_key)["Body"].read()
        assert records_bytes == dumps_jsonl(expected_records)
        assert list(pd.read_parquet(io.BytesIO(frame_bytes))["record_id"]) == [
            "R-train-1", "R-train-2"]
        for node, key, body in [("batch_frame", frame_key, frame_bytes),
                                ("batch_records", records_key, records_bytes)]:
            metadata = first.asset_materializations_for_node(node)[0].metadata
            assert metadata["artifact_uri"].value == f"s3://{BUCKET}/{key}"
            digest = hashlib.sha256(body).hexdigest()
            assert metadata["artifact_sha256"].value == digest
            head = s3_client.head_object(Bucket=BUCKET, Key=key)
            assert head["Metadata"]["sha256"] == digest
            assert "testing-secret-key" not in repr(dict(metadata))

        # A later run of the downstream alone reads the upstream object its materialization
        # recorded (the first run's key), and writes its own run-scoped object.
        second = dg.materialize([batch_frame, batch_records], selection=[batch_records],
                                partition_key="train", resources={"io_manager": io_manager},
                                instance=instance)
        assert second.success and second.run_id != run_id
        assert second.output_for_node("batch_records") == expected_records
        s3_client.head_object(Bucket=BUCKET, Key=records_key)  # the first run's object stays
        second_key = f"dagster/batch_records/train/{second.run_id}.jsonl"
        s3_client.head_object(Bucket=BUCKET, Key=second_key)

        # Tampering with the recorded object is detected by its sha256.
        s3_client.put_object(Bucket=BUCKET, Key=frame_key, Body=b"not parquet")
        third = dg.materialize([batch_frame, batch_records], selection=[batch_records],
                               partition_key="train", resources={"io_manager": io_manager},
                               instance=instance, raise_on_error=False)
        assert not third.success
        assert any("sha256" in m and frame_key in m for m in _failure_messages(third))


def test_missing_upstream_on_s3_names_asset_partition_and_uri(s3_client, s3_endpoint):
    with dg.instance_for_test() as instance:
        result = dg.materialize([batch_frame, batch_records], selection=[batch_records],
                                partition_key="benchmark",
                                resources={"io_manager": _s3_io_manager(s3_endpoint, "empty")},
                                instance=instance, raise_on_error=False)
    assert not result.success
    assert any(
        "batch_frame" in m and "'benchmark'" in m and "materialize it first" in m
        and f"s3://{BUCKET}/empty/batch_frame/benchmark/" in m
        for m in _failure_messages(result)
    ), _failure_messages(result)


def test_factory_selects_backend_from_env(s3_client, s3_endpoint, monkeypatch, tmp_path):
    monkeypatch.delenv("GXPLAB_ARTIFACTS_S3_BUCKET", raising=False)
    local = dataset_io_manager(str(tmp_path))
    assert local.backend == "local" and local.root == str(tmp_path)

    monkeypatch.setenv("GXPLAB_ARTIFACTS_S3_BUCKET", BUCKET)
    monkeypatch.setenv("GXPLAB_ARTIFACTS_S3_PREFIX", "from-env")
    monkeypatch.setenv("GXPLAB_ARTIFACTS_S3_ENDPOINT_URL", s3_endpoint)
    io_manager = dataset_io_manager(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = dg.materialize([batch_frame], partition_key="benchmark",
                                resources={"io_manager": io_manager}, instance=instance)
    assert result.success
    uri = result.asset_materializations_for_node("batch_frame")[0].metadata["artifact_uri"].value
    assert uri == f"s3://{BUCKET}/from-env/batch_frame/benchmark/{result.run_id}.parquet"
    assert not any(tmp_path.iterdir())  # nothing went to the local folder


def _failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:  # Dagster wraps the IO manager's exception
            messages.append(error.message)
            error = error.cause
    return messages
