"""Which steps of `gxplab benchmark` have nothing to do: the second run with nothing changed skips
every step instead of re-materializing the graph.

A step (a job run for some asset keys, maybe one partition) is up to date when, for each key:
- Dagster's stale-status resolver says FRESH: materialized, with the same code version and the
  same upstream data versions as now (an upstream re-materialized since makes it STALE);
- its latest materialization was made by a run tagged with the current step fingerprint: the
  sha256 of the project's Python sources, configs/*.yaml and the step's run config, so an edited
  config or module, or another option (`--max-batches`), re-runs the step (Dagster's code versions
  are hand-set and see neither config files nor run config);
- that materialization did not record a `status` beginning "skipped", unless it was skipped for
  the reason that still holds (`skipped_as`: a model whose API key is still not set); once the
  key is set, the step runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import dagster as dg

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("assets", "jobs", "resources", "scoring", "sensors", "synthetic", "training")
FINGERPRINT_TAG = "gxplab/source_fingerprint"


def source_fingerprint(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the project's .py sources, definitions.py and configs/*.yaml (path and bytes)."""
    files = [root / "definitions.py", *sorted((root / "configs").glob("*.yaml"))]
    for folder in SOURCE_DIRS:
        files += sorted((root / folder).rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


class UpToDate:
    """Answers "can this step be skipped?" against one instance and asset graph."""

    def __init__(self, instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
        self.instance = instance
        self.defs = defs
        self.fingerprint = source_fingerprint()

    @cached_property
    def _resolver(self):
        # Dagster's own staleness logic (the UI's "stale" badges); not re-implemented here.
        from dagster._core.definitions.data_version import CachingStaleStatusResolver
        from dagster._core.loader import LoadingContextForTest

        return CachingStaleStatusResolver(
            self.instance, self.defs.resolve_asset_graph(), LoadingContextForTest(self.instance)
        )

    def reset(self) -> None:
        """Forget cached statuses (after a step ran, its downstream may be stale now)."""
        self.__dict__.pop("_resolver", None)

    def step_fingerprint(self, run_config: dict | None) -> str:
        """The tag value of a step's run: the sources' fingerprint and its run config."""
        config = json.dumps(run_config or {}, sort_keys=True, default=str)
        return hashlib.sha256(f"{self.fingerprint}\0{config}".encode()).hexdigest()

    def reason_to_run(self, keys: Iterable[dg.AssetKey], partition_key: str | None,
                      run_config: dict | None = None, skipped_as: str | None = None) -> str | None:
        """None when every key is up to date, else why the step must run (for the log line).
        `skipped_as`: the reason the step would be skipped now, if it would."""
        from dagster._core.definitions.data_version import StaleStatus

        fingerprint = self.step_fingerprint(run_config)
        for key in keys:
            name = key.to_user_string()
            status = self._resolver.get_status(key, partition_key)
            if status != StaleStatus.FRESH:
                return f"{name} is {status.value.lower()}"
            records = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=key,
                    asset_partitions=None if partition_key is None else [partition_key],
                ),
                limit=1,
            ).records
            if not records:
                return f"{name} was never materialized"
            run = self.instance.get_run_by_id(records[0].run_id)
            if run is None or run.tags.get(FINGERPRINT_TAG) != fingerprint:
                return f"{name} was made by other sources, configs or options"
            metadata = records[0].asset_materialization.metadata
            status_value = metadata.get("status")
            if status_value is not None and str(status_value.value).startswith("skipped"):
                last_reason = metadata.get("reason")
                # no reason recorded (gxp_scores of a skipped audit): its predictions decide
                if skipped_as is None or (last_reason is not None
                                          and last_reason.value != skipped_as):
                    return f"{name} was skipped last time, for another reason"
        return None
