"""IO manager that stores asset values as documented files, not pickles.

- list[dict]      -> JSON Lines (`.jsonl`, canonical bytes: the sha256 is the dataset hash)
- pandas.DataFrame -> Parquet (`.parquet`)
- dict            -> JSON (`.json`)
Paths: `<root>/<asset key>/<partition path>.<ext>`; a multi-partition key `model|split` becomes
`model/split`. URI, sha256 and row count go into the materialization metadata so every number can
be traced to the exact bytes it came from. Models and adapters never pass through here (they are
written by their training process as archives).
"""

from __future__ import annotations

import io
import json
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.clients.artifacts import ArtifactStore
from synthetic.jsonl import dumps_jsonl

_EXTENSIONS = (".jsonl", ".parquet", ".json")


def _partition_path(partition_key: str | None) -> str:
    # A multi-partition key is "model|split" (dimensions in alphabetical order): stable paths.
    return "all" if partition_key is None else str(partition_key).replace("|", "/")


def _encode(value: Any) -> tuple[str, bytes, int]:
    if isinstance(value, pd.DataFrame):
        buffer = io.BytesIO()
        value.to_parquet(buffer, index=False)
        return ".parquet", buffer.getvalue(), len(value)
    if isinstance(value, list):
        return ".jsonl", dumps_jsonl(value), len(value)
    if isinstance(value, dict):
        return (
            ".json",
            json.dumps(value, sort_keys=True, indent=1, default=str).encode(),
            len(value),
        )
    raise TypeError(
        f"DatasetIOManager stores list[dict], DataFrame or dict values, not {type(value).__name__}"
    )


def _decode(extension: str, data: bytes) -> Any:
    if extension == ".parquet":
        return pd.read_parquet(io.BytesIO(data))
    if extension == ".jsonl":
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]
    return json.loads(data)


class DatasetIOManager(dg.ConfigurableIOManager):
    """Stores datasets, predictions and scores as JSONL/Parquet/JSON files in the artifact store."""

    root: str = Field(description="Directory that holds the artifacts.")

    def _store(self) -> ArtifactStore:
        return ArtifactStore(self.root)

    def _base_key(self, asset_key: dg.AssetKey, partition_key: Any) -> str:
        return "/".join([*asset_key.path, _partition_path(partition_key)])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        extension, data, rows = _encode(obj)
        key = self._base_key(context.asset_key, partition) + extension
        store = self._store()
        digest = store.write_bytes(key, data)
        context.add_output_metadata(
            {
                "artifact_uri": dg.MetadataValue.url(store.uri_for(key)),
                "artifact_sha256": digest,
                "artifact_bytes": len(data),
                "rows": rows,
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream is None or upstream.asset_key is None:
            raise ValueError("DatasetIOManager only loads asset inputs")
        partition = context.asset_partition_key if context.has_asset_partitions else None
        store = self._store()
        base = self._base_key(upstream.asset_key, partition)
        for extension in _EXTENSIONS:
            if store.exists(base + extension):
                return _decode(extension, store.read_bytes(base + extension))
        raise FileNotFoundError(
            f"no stored value for asset {upstream.asset_key.to_user_string()} "
            f"partition {partition!r} under {store.path_for(base)}.*; materialize it first"
        )
