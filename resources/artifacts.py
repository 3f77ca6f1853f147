"""Artifact-store resource: the local artifact folder, and S3 when the environment selects it.

`ArtifactsResource` wraps resources.clients.artifacts.ArtifactStore for assets that write
documents beside their value (the synthesis report's Markdown, HTML and images) and, with a
bucket, archives model folders to S3 (`archive_model`) and restores them (`model_folder`).
`s3_backend_fields` is the one reader of the S3 environment; the dataset IO manager and this
resource are both built from it, so datasets and model archives always share a bucket.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from resources.clients.artifacts import ArtifactStore, S3ArtifactStore
from resources.clients.model_archives import (
    fetch_model_archive,
    model_archive_key,
    pack_model_dir,
)
from resources.compute import PROJECT_ROOT

S3_BUCKET_ENV = "GXPLAB_ARTIFACTS_S3_BUCKET"
S3_PREFIX_ENV = "GXPLAB_ARTIFACTS_S3_PREFIX"
S3_ENDPOINT_ENV = "GXPLAB_ARTIFACTS_S3_ENDPOINT_URL"
S3_REGION_ENV = "GXPLAB_ARTIFACTS_S3_REGION"

#: Top-level entries of a model folder left out of its archive: resume state, not the model.
MODEL_ARCHIVE_EXCLUDE = ("checkpoints",)


def s3_backend_fields() -> dict[str, Any] | None:
    """`bucket`, `prefix` and `s3` (a dagster-aws S3Resource) from the environment, or None when
    GXPLAB_ARTIFACTS_S3_BUCKET is unset (local artifacts).

    Bucket, endpoint (GXPLAB_ARTIFACTS_S3_ENDPOINT_URL: MinIO, moto, ...) and region
    (GXPLAB_ARTIFACTS_S3_REGION) are dg.EnvVars, resolved at run time and never in run config;
    GXPLAB_ARTIFACTS_S3_PREFIX is a plain value. Credentials: boto3's own chain
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, or the
    instance/pod role), never a config value.
    """
    if not os.environ.get(S3_BUCKET_ENV):
        return None
    s3_fields: dict[str, Any] = {}
    if os.environ.get(S3_ENDPOINT_ENV):
        s3_fields["endpoint_url"] = dg.EnvVar(S3_ENDPOINT_ENV)
    if os.environ.get(S3_REGION_ENV):
        s3_fields["region_name"] = dg.EnvVar(S3_REGION_ENV)
    return {"bucket": dg.EnvVar(S3_BUCKET_ENV), "prefix": os.environ.get(S3_PREFIX_ENV, ""),
            "s3": S3Resource(**s3_fields)}


def default_artifacts_dir() -> Path:
    """$GXPLAB_ARTIFACTS_DIR, or var/artifacts in the checkout (definitions.py's ARTIFACTS_DIR)."""
    return Path(os.environ.get("GXPLAB_ARTIFACTS_DIR", PROJECT_ROOT / "var" / "artifacts"))


class ArtifactsResource(dg.ConfigurableResource):
    """Files under `root` on local or shared disk, written atomically; with `bucket`, model
    archives on S3 under `models/<asset>/<run id>.tar.gz` (datasets go to S3 through
    DatasetIOManager's `s3` backend, built from the same environment)."""

    root: str = Field(description="Folder of the artifact store ($GXPLAB_ARTIFACTS_DIR); "
                      "restored model archives are cached under `model_cache/` in it.")
    bucket: str = Field(default="", description="S3 bucket of the model archives; empty: "
                        "models stay in the local folder only.")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    s3: S3Resource | None = Field(
        default=None,
        description="dagster-aws S3 resource (endpoint, region; credentials from the environment).",
    )

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)

    @property
    def model_cache_dir(self) -> Path:
        return Path(self.root) / "model_cache"

    def s3_store(self) -> S3ArtifactStore | None:
        """The S3 store of the model archives; None without a bucket."""
        if not self.bucket:
            return None
        return S3ArtifactStore(self.bucket, self.prefix, (self.s3 or S3Resource()).get_client())

    def archive_model(self, context: dg.AssetExecutionContext, name: str,
                      folder: str | os.PathLike[str],
                      exclude: Iterable[str] = MODEL_ARCHIVE_EXCLUDE) -> dict[str, Any]:
        """With a bucket: pack `folder` deterministically and upload it under
        `models/<name>/<run id>.tar.gz`; returns the materialization metadata (URI, sha256,
        bytes, the folder packed). Without a bucket: {} and nothing is done."""
        store = self.s3_store()
        if store is None:
            return {}
        source = Path(folder)
        key = model_archive_key(name, context.run_id)
        with tempfile.TemporaryDirectory(dir=source.parent, prefix=".archive-") as work:
            archive, digest = pack_model_dir(source, Path(work) / "model.tar.gz",
                                             exclude=exclude)
            size = archive.stat().st_size
            store.write_file(key, archive)
        uri = store.uri_for(key)
        context.log.info(f"{name}: model folder {source} archived to {uri} "
                         f"({size} bytes, sha256 {digest})")
        return {
            "model_archive_uri": dg.MetadataValue.url(uri),
            "model_archive_sha256": digest,
            "model_archive_bytes": size,
            "model_archive_root": dg.MetadataValue.path(str(source)),
        }

    def model_folder(self, reference: Mapping[str, Any], path_key: str) -> str:
        """`reference[path_key]` (a model or adapter folder) when it exists here; otherwise, when
        the reference names a model archive, that folder inside the archive, downloaded, checked
        against `model_archive_sha256` and unpacked under `model_cache/<sha256>/`. A path that
        is no folder and has no archive (a Hugging Face hub id) is returned as it is."""
        path = str(reference[path_key])
        uri = reference.get("model_archive_uri")
        if Path(path).exists() or not uri:
            return path
        root = reference.get("model_archive_root")
        try:
            relative = Path(path).relative_to(str(root)) if root else Path(".")
        except ValueError:  # the path lies outside the archived folder (an hf base model)
            return path
        sha256 = reference.get("model_archive_sha256")
        if not sha256:
            raise ValueError(f"model archive {uri} has no recorded model_archive_sha256; "
                             "it cannot be verified")
        store = S3ArtifactStore.for_uri(str(uri), (self.s3 or S3Resource()).get_client())
        folder = fetch_model_archive(store, str(uri), str(sha256), self.model_cache_dir)
        resolved = folder / relative
        if not resolved.exists():
            raise FileNotFoundError(f"model archive {uri} holds no {relative.as_posix()!r} "
                                    f"(the {path_key} {path})")
        return str(resolved)


def fetch_artifact_file(uri: str, destination: str | os.PathLike[str],
                        sha256: str | None = None) -> Path:
    """The local file behind an IO manager's artifact_uri: a file:// URI is its path (checked to
    exist); an s3:// one is downloaded to `destination` with the environment's S3 settings and
    checked against `sha256` when given. Errors name the URI."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    if uri.startswith("file://"):
        path = Path(url2pathname(urlparse(uri).path))
        if not path.is_file():
            raise FileNotFoundError(f"{uri}: the file {path} is gone")
        return path
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: not a file:// or s3:// artifact URI")
    with environment_artifacts() as artifacts:
        store = S3ArtifactStore.for_uri(uri, (artifacts.s3 or S3Resource()).get_client())
        digest = store.download_file(store.key_for_uri(uri), destination)
    if sha256 not in (None, digest):
        Path(destination).unlink(missing_ok=True)
        raise ValueError(f"{uri}: sha256 {digest} differs from the recorded {sha256}")
    return Path(destination)


def artifacts_resource(root: str) -> ArtifactsResource:
    """The artifacts resource selected by the environment: model archives on S3 when
    GXPLAB_ARTIFACTS_S3_BUCKET is set (see s3_backend_fields), else `ArtifactsResource(root)`."""
    return ArtifactsResource(root=root, **(s3_backend_fields() or {}))


@contextlib.contextmanager
def environment_artifacts(root: str | None = None) -> Iterator[ArtifactsResource]:
    """`artifacts_resource(root)` initialized here (its EnvVars resolved), for code that is not
    handed the `artifacts` resource (the model assets, the local-model consumers). `root`
    defaults to default_artifacts_dir()."""
    resource = artifacts_resource(root or str(default_artifacts_dir()))
    if not os.environ.get(S3_BUCKET_ENV):  # local: no EnvVar to resolve
        yield resource
        return
    with resource.process_config_and_initialize_cm() as initialized:
        yield initialized


def resolve_model_folder(reference: Mapping[str, Any], path_key: str) -> str:
    """ArtifactsResource.model_folder with the environment's resource; the local folder, when
    present, is returned without touching S3."""
    if Path(str(reference[path_key])).exists() or not reference.get("model_archive_uri"):
        return str(reference[path_key])
    with environment_artifacts() as artifacts:
        return artifacts.model_folder(reference, path_key)
