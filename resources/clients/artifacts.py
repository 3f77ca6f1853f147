"""Artifact store client: datasets and reports as files under one root (local disk by default).

Plain Python so that training processes and scripts can use it without Dagster. Keys are relative,
slash-separated paths; the store refuses keys that would escape its root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath


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
