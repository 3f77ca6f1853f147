"""New labelled data from the inbox: one dynamic partition per accepted batch pair.

A batch is a pair of JSON Lines files dropped in the inbox (env GXPLAB_INBOX_DIR, default
var/inbox): `<name>.records.jsonl` (batch-record steps, the contract of synthetic/contracts.py) and
`<name>.labels.jsonl` (its label manifest). `inbox_sensor` (sensors/inbox.py) validates a new pair
with `validate_inbox_batch`, moves it to `<inbox>/accepted/<name>/` and adds `<name>` as a partition
of `inbox_batch`; `inbox_batches` then reads, validates again and stores that partition.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from scoring.data_files import DataFileError, read_manifest, read_records
from synthetic.catalog import load_catalog
from synthetic.jsonl import read_jsonl, sha256_bytes
from synthetic.validation import manifest_problems, schema_problems

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECORDS_SUFFIX = ".records.jsonl"
LABELS_SUFFIX = ".labels.jsonl"
ACCEPTED_DIR = "accepted"
QUARANTINE_DIR = "quarantine"

inbox_partitions = dg.DynamicPartitionsDefinition(name="inbox_batch")


def inbox_dir() -> Path:
    """The inbox folder: $GXPLAB_INBOX_DIR, default var/inbox under the project."""
    return Path(os.environ.get("GXPLAB_INBOX_DIR") or PROJECT_ROOT / "var" / "inbox")


def accepted_paths(inbox: Path, name: str) -> tuple[Path, Path]:
    """Records and labels files of the accepted batch `name`."""
    folder = inbox / ACCEPTED_DIR / name
    return folder / f"{name}{RECORDS_SUFFIX}", folder / f"{name}{LABELS_SUFFIX}"


@dataclass
class InboxBatch:
    """A validated batch pair: its rows, or the problems that reject it (each names file, line,
    record_id and field where known)."""

    name: str
    records: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    line_errors: list[DataFileError] = field(default_factory=list)  # the readers' bad lines

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_inbox_batch(name: str, records_path: Path, labels_path: Path) -> InboxBatch:
    """Validate one pair with the project's readers (scoring/data_files.py: line and field of
    each bad row) and then its consistency (synthetic/validation.py: the record schema, labels that
    name records of this file and known deviation types)."""
    batch = InboxBatch(name)
    for path, reader in ((records_path, read_records), (labels_path, read_manifest)):
        try:
            _, errors = reader(path, errors="collect")
        except ValueError as exc:  # a whole-file problem: unreadable, missing column, ...
            batch.problems.append(str(exc))
            continue
        batch.problems += [str(e) for e in errors]
        batch.line_errors += errors
    if batch.problems:
        return batch
    records, labels = list(read_jsonl(records_path)), list(read_jsonl(labels_path))
    if not records:
        batch.problems.append(f"{records_path}: no records")
        return batch
    slugs = load_catalog().slugs
    batch.problems += [f"{records_path}: {p}" for p in schema_problems(records, labels)]
    batch.problems += [f"{labels_path}: {p}" for p in manifest_problems(records, labels, slugs)]
    if not batch.problems:
        batch.records, batch.labels = records, labels
    return batch


@dg.multi_asset(
    name="inbox_batches",
    outs={
        "inbox_records": dg.AssetOut(
            description="Batch-record steps of one accepted inbox batch (a partition per batch).",
            kinds={"python"},
        ),
        "inbox_labels": dg.AssetOut(
            description="The label manifest of one accepted inbox batch.", kinds={"python"},
        ),
    },
    partitions_def=inbox_partitions,
    group_name="data",
    code_version="1",
)
def inbox_batches(context: dg.AssetExecutionContext):
    """Read the accepted files of this partition's batch (`<inbox>/accepted/<name>/`), validate
    them again and store the records and labels, with counts and the files' sha256."""
    name = context.partition_key
    records_path, labels_path = accepted_paths(inbox_dir(), name)
    for path in (records_path, labels_path):
        if not path.is_file():
            raise ValueError(f"inbox batch {name}: {path} not found (accepted batches are kept "
                             "under <inbox>/accepted/<name>/)")
    batch = validate_inbox_batch(name, records_path, labels_path)
    if not batch.ok:
        raise ValueError(f"inbox batch {name}: {len(batch.problems)} problem(s): "
                         + "; ".join(batch.problems[:5]))
    common = {"inbox_batch": name, "source": dg.MetadataValue.path(str(records_path.parent))}
    context.log.info(f"inbox batch {name}: {len(batch.records)} records, {len(batch.labels)} "
                     "labels")
    yield dg.Output(batch.records, output_name="inbox_records", metadata={
        **common,
        "records": len(batch.records),
        "batches": len({r["batch_id"] for r in batch.records}),
        "source_sha256": sha256_bytes(records_path.read_bytes()),
    })
    yield dg.Output(batch.labels, output_name="inbox_labels", metadata={
        **common,
        "labelled_deviations": len(batch.labels),
        "source_sha256": sha256_bytes(labels_path.read_bytes()),
    })
