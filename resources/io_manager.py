"""IO manager that stores asset values as documented files, not pickles.

- list[dict]      -> JSON Lines (`.jsonl`, canonical bytes: the sha256 is the dataset hash)
- pandas.DataFrame -> Parquet (`.parquet`)
- dict            -> JSON (`.json`)
Backends (`backend`):
- `local` (default): `<root>/<asset key>/<partition path>.<ext>`, overwritten by each run.
- `s3`: `s3://<bucket>/<prefix>/<asset key>/<partition path>/<run id>.<ext>`, one immutable object
  per run (run-scoped), through dagster-aws's S3Resource. Inputs are read from the object named by
  the upstream's latest materialization in the event log, and its sha256 is checked.
A multi-partition key `model|split` becomes `model/split`. An input declared with
`dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata=ALL_STORED_PARTITIONS)` gets a
dict {partition key: value} of every upstream partition that has a stored value; the partitions
without one are left out and named in a warning (an inbox batch added but not yet stored).
URI, sha256 and row count go into the materialization metadata so every number can be traced to
the exact bytes it came from. Models and adapters never pass through here: their training process
writes them to a folder, and with S3 the model assets archive that folder
(resources.artifacts.ArtifactsResource.archive_model).
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any, Literal

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from pydantic import Field

from resources.artifacts import s3_backend_fields
from resources.clients.artifacts import ArtifactStore, S3ArtifactStore
from synthetic.jsonl import dumps_jsonl

_EXTENSIONS = (".jsonl", ".parquet", ".json")
# Input metadata: load every stored partition of the upstream as {partition key: value}.
_LOAD_KEY, _ALL_STORED = "gxplab/load", "all_stored_partitions"
ALL_STORED_PARTITIONS = {_LOAD_KEY: _ALL_STORED}


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
    """Stores datasets, predictions and scores as JSONL/Parquet/JSON in the artifact store."""

    backend: Literal["local", "s3"] = Field(
        default="local", description="Where artifacts live: local folder `root` or S3 `bucket`."
    )
    root: str = Field(default="", description="Directory that holds the artifacts (local).")
    bucket: str = Field(default="", description="S3 bucket of the artifacts (s3).")
    prefix: str = Field(default="", description="Key prefix inside the bucket (s3).")
    s3: S3Resource | None = Field(
        default=None,
        description="dagster-aws S3 resource (endpoint, region; credentials from the environment).",
    )

    def _store(self) -> ArtifactStore | S3ArtifactStore:
        if self.backend == "s3":
            if not self.bucket:
                raise ValueError("DatasetIOManager backend 's3' needs `bucket`")
            client = (self.s3 or S3Resource()).get_client()
            return S3ArtifactStore(self.bucket, self.prefix, client)
        if not self.root:
            raise ValueError("DatasetIOManager backend 'local' needs `root`")
        return ArtifactStore(self.root)

    def _base_key(self, asset_key: dg.AssetKey, partition_key: Any) -> str:
        return "/".join([*asset_key.path, _partition_path(partition_key)])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.asset_partition_key if context.has_asset_partitions else None
        extension, data, rows = _encode(obj)
        base = self._base_key(context.asset_key, partition)
        store = self._store()
        # S3: one object per run, so a re-materialization never overwrites what a past run read.
        key = f"{base}/{context.run_id}{extension}" if self.backend == "s3" else base + extension
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
        store = self._store()
        if (context.definition_metadata or {}).get(_LOAD_KEY) == _ALL_STORED:
            return self._load_stored_partitions(context, store, upstream.asset_key)
        partition = context.asset_partition_key if context.has_asset_partitions else None
        return self._load_one(context, store, upstream.asset_key, partition)

    def _load_stored_partitions(self, context: dg.InputContext,
                                store: ArtifactStore | S3ArtifactStore,
                                asset_key: dg.AssetKey) -> dict[str, Any]:
        """{partition key: value} of the upstream partitions that have a stored value."""
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        loaded: dict[str, Any] = {}
        not_stored: list[str] = []
        for key in keys:
            try:
                loaded[key] = self._load_one(context, store, asset_key, key)
            except FileNotFoundError:
                not_stored.append(key)
        if not_stored:
            context.log.warning(
                f"{asset_key.to_user_string()}: {len(not_stored)} partition(s) without a stored "
                f"value left out: {', '.join(not_stored[:10])}; materialize them to include them")
        return loaded

    def _load_one(self, context: dg.InputContext, store: ArtifactStore | S3ArtifactStore,
                  asset_key: dg.AssetKey, partition: Any) -> Any:
        base = self._base_key(asset_key, partition)
        if isinstance(store, S3ArtifactStore):
            return self._load_recorded(context, store, asset_key, partition, base)
        for extension in _EXTENSIONS:
            if store.exists(base + extension):
                return _decode(extension, store.read_bytes(base + extension))
        raise FileNotFoundError(
            f"no stored value for asset {asset_key.to_user_string()} "
            f"partition {partition!r} under {store.path_for(base)}.*; materialize it first"
        )

    def _load_recorded(
        self,
        context: dg.InputContext,
        store: S3ArtifactStore,
        asset_key: dg.AssetKey,
        partition: Any,
        base: str,
    ) -> Any:
        """Read the object the upstream's latest materialization recorded; verify its sha256."""
        name = asset_key.to_user_string()
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=asset_key,
                asset_partitions=None if partition is None else [str(partition)],
            ),
            limit=1,
        ).records
        materialization = records[0].asset_materialization if records else None
        metadata = materialization.metadata if materialization is not None else {}
        if "artifact_uri" not in metadata:
            raise FileNotFoundError(
                f"no stored value for asset {name} partition {partition!r} under "
                f"{store.uri_for(base)}/; materialize it first"
            )
        uri = str(metadata["artifact_uri"].value)
        try:
            key = store.key_for_uri(uri)
        except ValueError as error:
            raise FileNotFoundError(
                f"asset {name} partition {partition!r} was last stored at {uri}, outside "
                f"{store.uri_for(base)}/; materialize it again with this backend"
            ) from error
        data = store.read_bytes(key)
        expected = metadata.get("artifact_sha256")
        actual = hashlib.sha256(data).hexdigest()
        if expected is not None and expected.value != actual:
            raise ValueError(
                f"artifact {uri} of asset {name} partition {partition!r}: sha256 {actual} "
                f"differs from the recorded {expected.value}; the object was changed"
            )
        extension = next((e for e in _EXTENSIONS if key.endswith(e)), None)
        if extension is None:
            raise ValueError(f"artifact {uri} of asset {name}: unknown extension")
        return _decode(extension, data)


def dataset_io_manager(root: str) -> DatasetIOManager:
    """The IO manager selected by the environment: S3 when GXPLAB_ARTIFACTS_S3_BUCKET is set,
    otherwise the local folder `root` (exactly `DatasetIOManager(root=root)`).

    The S3 settings (bucket, prefix, endpoint, region; credentials from boto3's own chain) are
    read by resources.artifacts.s3_backend_fields, which the artifacts resource shares.
    """
    fields = s3_backend_fields()
    if fields is None:
        return DatasetIOManager(root=root)
    return DatasetIOManager(backend="s3", root=root, **fields)
