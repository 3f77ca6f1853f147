"""Hub datasets with an offline fallback: `datasets.load_dataset`, else a local path, else a sample
the project builds. The source taken is returned so that metadata and logs can say it.

Plain Python (no Dagster import). With HF_HUB_OFFLINE=1 the hub look-up fails at once instead of
retrying for half a minute.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedDataset:
    rows: list[dict]
    source: str  # "hub:<id>", "local:<path>" or "offline-sample"
    detail: str  # why this source was taken


def load_rows(
    hub_id: str,
    *,
    split: str = "train",
    local_path: str | None = None,
    sample: Callable[[], list[dict]],
    max_rows: int | None = None,
) -> LoadedDataset:
    """Rows of `hub_id` (or of `local_path`, a JSON/JSONL/CSV/Parquet file), or `sample()`."""
    import datasets

    if local_path:
        path = Path(local_path)
        kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(
            path.suffix.lower()
        )
        if kind is None:
            raise ValueError(f"{path}: unsupported dataset file type (use .jsonl, .csv, .parquet)")
        table = datasets.load_dataset(kind, data_files=str(path), split="train")
        return LoadedDataset(_rows(table, max_rows), f"local:{path}", "configured local path")
    try:
        table = datasets.load_dataset(hub_id, split=split)
    except (ConnectionError, OSError, ValueError) as exc:  # offline, unreachable or gated
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        log.warning("dataset %s not reachable (%s); using the offline sample", hub_id, reason)
        rows = sample()
        return LoadedDataset(rows[:max_rows] if max_rows else rows, "offline-sample",
                             f"{hub_id} not reachable ({reason})")
    return LoadedDataset(_rows(table, max_rows), f"hub:{hub_id}", "downloaded from the hub")


def _rows(table, max_rows: int | None) -> list[dict]:
    if max_rows is not None:
        table = table.select(range(min(max_rows, len(table))))
    return [dict(row) for row in table]
