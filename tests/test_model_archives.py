"""Model archives: deterministic packing, safe unpacking, and the S3 round trip of a model asset
(base_model on the tiny embedded config) against moto's server on loopback."""

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import dagster as dg
import pytest
import test_s3_artifacts
from test_base_model_pipes import TINY

from assets import models
from assets.evaluation import _local_model_files
from resources.artifacts import (
    ArtifactsResource,
    environment_artifacts,
    fetch_artifact_file,
    resolve_model_folder,
)
from resources.clients.artifacts import S3ArtifactStore
from resources.clients.model_archives import (
    fetch_model_archive,
    pack_model_dir,
    unpack_model_archive,
)
from resources.compute import ComputeResource
from resources.io_manager import dataset_io_manager
from scoring.model_registry import CandidateModel

BUCKET = test_s3_artifacts.BUCKET
s3_endpoint = test_s3_artifacts.s3_endpoint  # moto server on a free loopback port (module)
s3_client = test_s3_artifacts.s3_client  # boto3 client with test credentials, bucket created


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _model_folder(root: Path) -> Path:
    folder = root / "model"
    (folder / "adapter").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 32}\n')
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 8)
    (folder / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(b"resume state")
    return folder


def test_pack_is_deterministic_and_round_trips(tmp_path):
    folder = _model_folder(tmp_path)
    first, first_sha = pack_model_dir(folder, tmp_path / "a.tar.gz", exclude=["checkpoints"])
    os.utime(folder / "config.json", (1_000_000, 1_000_000))  # a new mtime, same bytes
    second, second_sha = pack_model_dir(folder, tmp_path / "b.tar.gz", exclude=["checkpoints"])
    assert first_sha == second_sha == hashlib.sha256(first.read_bytes()).hexdigest()
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "adapter", "adapter/adapter_model.safetensors", "config.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    unpacked = unpack_model_archive(first, tmp_path / "out")
    expected = {k: v for k, v in _files(folder).items() if not k.startswith("checkpoints/")}
    assert _files(unpacked) == expected

    (folder / "config.json").write_text('{"hidden_size": 64}\n')  # other bytes: other sha
    assert pack_model_dir(folder, tmp_path / "c.tar.gz")[1] != first_sha


def test_pack_default_archive_sits_beside_the_folder(tmp_path):
    folder = _model_folder(tmp_path)
    archive, _ = pack_model_dir(folder)
    assert archive == tmp_path / "model.tar.gz" and archive.exists()
    assert not list(tmp_path.glob("*.partial"))


def test_pack_refuses_links_and_missing_folders(tmp_path):
    folder = _model_folder(tmp_path)
    (folder / "weights.bin").symlink_to(folder / "config.json")
    with pytest.raises(ValueError, match="weights.bin is a symbolic link"):
        pack_model_dir(folder, tmp_path / "x.tar.gz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pack_model_dir(tmp_path / "absent")


def _archive_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("config.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return archive


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(("member", "message"), [
    (tarfile.TarInfo("../escape.txt"), "outside the destination"),
    (tarfile.TarInfo("adapter/../../escape.txt"), "outside the destination"),
    (tarfile.TarInfo("/etc/escape.txt"), "outside the destination"),
    (_link("adapter/link", "/etc/passwd", tarfile.SYMTYPE), "is a link"),
    (_link("adapter/hard", "config.json", tarfile.LNKTYPE), "is a link"),
])
def test_unpack_rejects_unsafe_members(tmp_path, member, message):
    archive = _archive_with(tmp_path, member, b"pwned")
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=message) as error:
        unpack_model_archive(archive, dest)
    assert str(archive) in str(error.value) and repr(member.name) in str(error.value)
    assert not dest.exists()  # checked before anything is written
    assert not (tmp_path / "escape.txt").exists()


@pytest.fixture
def s3_env(s3_client, s3_endpoint, monkeypatch, tmp_path):
    """The S3 backend selected through the environment, as in production."""
    monkeypatch.setenv("GXPLAB_ARTIFACTS_S3_BUCKET", BUCKET)
    monkeypatch.setenv("GXPLAB_ARTIFACTS_S3_PREFIX", "archives-test")
    monkeypatch.setenv("GXPLAB_ARTIFACTS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("GXPLAB_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    return s3_client


def test_fetch_checks_the_sha256_and_names_the_uri(s3_client, tmp_path):
    store = S3ArtifactStore(BUCKET, "fetch", s3_client)
    archive, digest = pack_model_dir(_model_folder(tmp_path), exclude=["checkpoints"])
    store.write_file("models/m/run-1.tar.gz", archive)
    uri = store.uri_for("models/m/run-1.tar.gz")
    reader = S3ArtifactStore.for_uri(uri, s3_client)
    folder = fetch_model_archive(reader, uri, digest, tmp_path / "cache")
    assert folder == tmp_path / "cache" / digest
    assert (folder / "config.json").read_text() == '{"hidden_size": 32}\n'
    wrong = "0" * 64
    with pytest.raises(ValueError, match="sha256") as error:
        fetch_model_archive(reader, uri, wrong, tmp_path / "cache")
    assert uri in str(error.value)
    assert not (tmp_path / "cache" / wrong).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [digest]  # no temp left


def test_local_default_archives_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("GXPLAB_ARTIFACTS_S3_BUCKET", raising=False)
    with environment_artifacts(str(tmp_path)) as artifacts:
        assert artifacts.s3_store() is None
        # no bucket: returns before touching the context or the folder
        assert artifacts.archive_model(None, "base_model", tmp_path / "absent") == {}
    reference = {"model_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # an hf hub id
    assert resolve_model_folder(reference, "model_path") == reference["model_path"]


def test_base_model_archive_on_s3_and_restored_when_the_folder_is_gone(s3_env, tmp_path):
    compute = ComputeResource(models_dir=str(tmp_path / "models"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [models.base_model], instance=instance,
            resources={"compute": compute, "io_manager": dataset_io_manager(str(tmp_path))},
            run_config={"ops": {"base_model": {"config": {**TINY, "pretrain_steps": 3}}}},
        )
        assert result.success
        metadata = result.asset_materializations_for_node("base_model")[0].metadata
        key = f"archives-test/models/base_model/{result.run_id}.tar.gz"
        uri = f"s3://{BUCKET}/{key}"
        assert metadata["model_archive_uri"].value == uri
        body = s3_env.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        digest = hashlib.sha256(body).hexdigest()
        assert metadata["model_archive_sha256"].value == digest
        assert metadata["model_archive_bytes"].value == len(body)
        assert s3_env.head_object(Bucket=BUCKET, Key=key)["Metadata"]["sha256"] == digest
        assert "testing-secret-key" not in repr(dict(metadata))

        reference = result.output_for_node("base_model")
        assert reference["model_archive_uri"] == uri
        assert reference["model_archive_sha256"] == digest
        model_path = Path(reference["model_path"])
        (tmp_path / "archive.tar.gz").write_bytes(body)
        unpacked = unpack_model_archive(tmp_path / "archive.tar.gz", tmp_path / "unpacked")
        local_files = _files(model_path)
        assert "config.json" in local_files and _files(unpacked) == local_files

        shutil.rmtree(model_path)  # another host, or a cleaned models folder
        restored = Path(resolve_model_folder(reference, "model_path"))
        assert restored == tmp_path / "artifacts" / "model_cache" / digest
        assert _files(restored) == local_files

        # gxp_predictions' resolution: from the latest materialization's metadata
        context = dg.build_asset_context(instance=instance)
        files = _local_model_files(context, CandidateModel(id="embedded-base", kind="local"))
        assert files["base_model"]["path"] == str(restored)

    # A changed object fails the check, naming the URI (a fresh cache, so it downloads again).
    s3_env.put_object(Bucket=BUCKET, Key=key, Body=body + b"appended")
    with (environment_artifacts(str(tmp_path / "other")) as artifacts,
          pytest.raises(ValueError, match="sha256") as error):
        artifacts.model_folder(reference, "model_path")
    assert uri in str(error.value)


def test_archive_model_keeps_checkpoints_out(s3_env, tmp_path):
    folder = _model_folder(tmp_path)
    context = dg.build_asset_context()
    with environment_artifacts() as artifacts:
        assert isinstance(artifacts, ArtifactsResource) and artifacts.bucket == BUCKET
        metadata = artifacts.archive_model(context, "qlora_adapter", folder)
    assert metadata["model_archive_root"].value == str(folder)
    reference = {"adapter_path": str(folder / "adapter"),
                 **{k: getattr(v, "value", v) for k, v in metadata.items()}}
    shutil.rmtree(folder)
    adapter = Path(resolve_model_folder(reference, "adapter_path"))
    assert adapter.name == "adapter" and (adapter / "adapter_model.safetensors").exists()
    assert not (adapter.parent / "checkpoints").exists()
    assert not list(tmp_path.glob(".archive-*"))  # the packed file was temporary


def test_an_artifact_file_is_fetched_by_its_uri_and_checked(s3_env, tmp_path):
    """fetch_artifact_file (what `gxplab serve` uses for the rag_index Parquet file): s3://
    downloaded and checked against the recorded sha256, file:// used in place."""
    store = S3ArtifactStore(BUCKET, "archives-test", s3_env)
    data = b"PAR1 rag index bytes"
    digest = store.write_bytes("rag_index/run-1.parquet", data)
    uri = store.uri_for("rag_index/run-1.parquet")
    fetched = fetch_artifact_file(uri, tmp_path / "index.parquet", digest)
    assert fetched.read_bytes() == data
    with pytest.raises(ValueError, match=f"{uri}: sha256 .* differs from the recorded 0+"):
        fetch_artifact_file(uri, tmp_path / "other.parquet", "0" * 64)
    assert not (tmp_path / "other.parquet").exists()  # a file that fails the check is removed
    with pytest.raises(FileNotFoundError, match="not found at s3://"):
        fetch_artifact_file(uri.replace("run-1", "run-2"), tmp_path / "missing.parquet")
    local = tmp_path / "local.parquet"
    local.write_bytes(data)
    assert fetch_artifact_file(local.as_uri(), tmp_path / "unused") == local
    local.unlink()
    with pytest.raises(FileNotFoundError, match="is gone"):
        fetch_artifact_file(local.as_uri(), tmp_path / "unused")
