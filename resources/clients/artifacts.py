"""Artifact store clients: datasets, reports and archives under one root.

`ArtifactStore` keeps files on local (or shared) disk; `S3ArtifactStore` keeps objects in an S3
bucket under a prefix, through a boto3 client. Both offer write_bytes / read_bytes / exists /
uri_for; S3ArtifactStore also uploads and downloads files (model archives, multipart when large).
Plain Python so that training processes and scripts can use them without Dagster. Keys are
relative, slash-separated paths; the stores refuse keys that would escape their root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import botocore.exceptions


class ArtifactStore:
    """Files under `root`, written atomically (temp file + rename): no reader sees half a file."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def path_for(self, key: str) -> Path:
        relative = PurePosixPath(key)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"artifact key {key!r} must be a relative path inside the store")
        return self.root.joinpath(*relative.parts)

    def uri_for(self, key: str) -> str:
        return self.path_for(key).as_uri()

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write `data` under `key`; returns its sha256 hex digest."""
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)
        return hashlib.sha256(data).hexdigest()

    def read_bytes(self, key: str) -> bytes:
        path = self.path_for(key)
        if not path.exists():
            raise FileNotFoundError(
                f"artifact {key!r} not found at {path}; materialize its asset first"
            )
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_for(key).exists()


def _checked_key(key: str) -> PurePosixPath:
    relative = PurePosixPath(key)
    if not key or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"artifact key {key!r} must be a relative path inside the store")
    return relative


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


class S3ArtifactStore:
    """Objects under `s3://bucket/prefix/`; the sha256 of each object is also its metadata.

    A PUT is atomic on S3 (readers see the old object or the whole new one), so no temp key is
    needed. `client` is a boto3 S3 client (dagster-aws's `S3Resource.get_client()` in Dagster,
    `boto3.client("s3", ...)` elsewhere); credentials come from its environment, never from here.
    """

    #: Object metadata field (x-amz-meta-sha256) holding the hex sha256 of the body.
    SHA256_METADATA = "sha256"

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        if not bucket:
            raise ValueError("S3ArtifactStore needs a bucket name")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client

    @classmethod
    def for_uri(cls, uri: str, client: Any) -> S3ArtifactStore:
        """A store over the whole bucket named in `uri` (`s3://bucket/key`), for reading an
        object recorded by a run whatever prefix it was written under."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if not uri.startswith("s3://") or not bucket or not key:
            raise ValueError(f"artifact URI {uri!r} is not of the form s3://bucket/key")
        return cls(bucket, "", client)

    def object_key(self, key: str) -> str:
        relative = _checked_key(key).as_posix()
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def key_for_uri(self, uri: str) -> str:
        """The store key of `uri`; ValueError when the URI is not inside this store."""
        root = f"s3://{self.bucket}/" + (f"{self.prefix}/" if self.prefix else "")
        if not uri.startswith(root):
            raise ValueError(f"artifact URI {uri!r} is not inside this store ({root})")
        key = uri[len(root):]
        _checked_key(key)
        return key

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write `data` under `key`; returns its sha256 hex digest (also stored as metadata)."""
        digest = hashlib.sha256(data).hexdigest()
        with self._errors(key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.object_key(key),
                Body=data,
                Metadata={self.SHA256_METADATA: digest},
            )
        return digest

    def write_file(self, key: str, path: str | os.PathLike[str]) -> str:
        """Upload a local file (e.g. an adapter's .tar.gz) under `key`, multipart when large;
        returns its sha256 hex digest (also stored as metadata)."""
        digest = file_sha256(path)
        with self._errors(key):
            self.client.upload_file(
                str(path),
                self.bucket,
                self.object_key(key),
                ExtraArgs={"Metadata": {self.SHA256_METADATA: digest}},
            )
        return digest

    def read_bytes(self, key: str) -> bytes:
        with self._errors(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return response["Body"].read()

    def download_file(self, key: str, path: str | os.PathLike[str]) -> str:
        """Download `key` to the local file `path` (multipart when large); returns the sha256 of
        the bytes written, for the caller to compare with the recorded one."""
        with self._errors(key):
            self.client.download_file(self.bucket, self.object_key(key), str(path))
        return file_sha256(path)

    def sha256_of(self, key: str) -> str | None:
        """The sha256 recorded in the object's metadata (None when it has none)."""
        with self._errors(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        return head.get("Metadata", {}).get(self.SHA256_METADATA)

    def exists(self, key: str) -> bool:
        try:
            self.sha256_of(key)
        except FileNotFoundError:
            return False
        return True

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn boto errors into FileNotFoundError / ConnectionError naming the s3:// URI."""
        uri = self.uri_for(key)
        try:
            yield
        except botocore.exceptions.ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise FileNotFoundError(
                    f"artifact {key!r} not found at {uri}; materialize its asset first"
                ) from error
            if code == "NoSuchBucket":
                raise FileNotFoundError(
                    f"bucket {self.bucket!r} does not exist (artifact {uri}); create it first"
                ) from error
            raise
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
        ) as error:
            endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", "?")
            raise ConnectionError(
                f"cannot reach the S3 endpoint {endpoint} for {uri}: {error}; check the "
                "endpoint URL (GXPLAB_ARTIFACTS_S3_ENDPOINT_URL) and that the server is up"
            ) from error
