"""New labelled data from the inbox: one dynamic partition per accepted batch pair.

A batch is a pair of JSON Lines files dropped in the inbox (env GXPLAB_INBOX_DIR, default
var/inbox): `<name>.records.jsonl` (batch-record steps, the contract of synthetic/contracts.py) and
`<name>.labels.jsonl` (its label manifest). `inbox_sensor` (sensors/inbox.py) validates a new pair
with `validate_inbox_batch`, moves it to `<inbox>/accepted/<name>/` and adds `<name>` as a partition
of `inbox_batch`; `inbox_batches` then reads, validates again and stores that partition.

Validation includes the labels themselves: the reference auditor audits the records and every
disagreement with the labels (scoring/label_check.py) rejects the batch, or, with
$GXPLAB_INBOX_ON_LABEL_DISAGREEMENT=flag, accepts it flagged with the disagreements listed.
"""

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from scoring.data_files import DataFileError, read_manifest, read_records
from scoring.label_check import Disagreement, label_disagreements, printable
from synthetic.catalog import load_catalog
from synthetic.injection_screen import prepare as prepare_injection_screen
from synthetic.jsonl import read_jsonl, sha256_bytes
from synthetic.master_data import build_site_master
from synthetic.splits import load_dataset_config
from synthetic.validation import manifest_problems, schema_problems

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECORDS_SUFFIX = ".records.jsonl"
LABELS_SUFFIX = ".labels.jsonl"
ACCEPTED_DIR = "accepted"
QUARANTINE_DIR = "quarantine"
LABEL_POLICY_ENV = "GXPLAB_INBOX_ON_LABEL_DISAGREEMENT"
LABEL_POLICIES = ("quarantine", "flag")
_MAX_ERROR_CHARS = 300

inbox_partitions = dg.DynamicPartitionsDefinition(name="inbox_batch")


def inbox_dir() -> Path:
    """The inbox folder: $GXPLAB_INBOX_DIR, default var/inbox under the project."""
    return Path(os.environ.get("GXPLAB_INBOX_DIR") or PROJECT_ROOT / "var" / "inbox")


def accepted_paths(inbox: Path, name: str) -> tuple[Path, Path]:
    """Records and labels files of the accepted batch `name`."""
    folder = inbox / ACCEPTED_DIR / name
    return folder / f"{name}{RECORDS_SUFFIX}", folder / f"{name}{LABELS_SUFFIX}"


def label_policy() -> str:
    """What a disagreement between a batch's labels and the reference auditor does:
    $GXPLAB_INBOX_ON_LABEL_DISAGREEMENT, `quarantine` (default) or `flag` (accept, flagged)."""
    policy = (os.environ.get(LABEL_POLICY_ENV) or "quarantine").strip().lower()
    if policy not in LABEL_POLICIES:
        raise ValueError(f"${LABEL_POLICY_ENV}={policy!r}: expected one of {LABEL_POLICIES}")
    return policy


def prepare_label_check() -> str:
    """The label policy, with what checking labels needs built once per process (the site master
    data, the injection screen's classifier). Raises when this environment cannot check labels
    (a bad policy value, an unreadable config, a missing package): the caller leaves the pairs
    waiting instead of rejecting good batches for a fault of the machine."""
    policy = label_policy()
    site_master()
    prepare_injection_screen()
    return policy


@functools.cache
def site_master() -> dict:
    """The site master data of configs/datasets.yaml (what gxp_site_master builds by default):
    the reference auditor checks operators, equipment, materials and recipes against it."""
    config = load_dataset_config()
    return build_site_master(config.site_master, config.seed)


@dataclass
class InboxBatch:
    """A validated batch pair: its rows, or the problems that reject it (each names file, line,
    record_id and field where known). `disagreements`: where the labels and the reference auditor
    differ; they are problems under the `quarantine` policy, a flag under `flag`."""

    name: str
    records: list[dict] = field(default_factory=list)
    labels: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    line_errors: list[DataFileError] = field(default_factory=list)  # the readers' bad lines
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def flagged(self) -> bool:
        """Accepted although its labels disagree with the reference auditor (`flag` policy)."""
        return self.ok and bool(self.disagreements)


def validate_inbox_batch(name: str, records_path: Path, labels_path: Path, *,
                         policy: str | None = None) -> InboxBatch:
    """Validate one pair: the project's readers (scoring/data_files.py: line and field of each bad
    row), its consistency (synthetic/validation.py: the record schema, labels that name records of
    this file and known deviation types), then its labels against the reference auditor
    (scoring/label_check.py). Never raises on the pair's content: any exception while validating
    it becomes a problem naming the files and the exception, so that one pair cannot stop the
    others (a pair is rejected, never half-checked)."""
    batch = InboxBatch(name)
    policy = policy or label_policy()
    try:
        _validate(batch, records_path, labels_path, policy)
    except Exception as exc:  # noqa: BLE001 - any failure rejects this pair, with its reason
        message = printable(" ".join(str(exc).split()))[:_MAX_ERROR_CHARS]
        batch.problems.append(f"{records_path} + {labels_path.name}: validation failed with "
                              f"{type(exc).__name__}: {message}")
        batch.records, batch.labels = [], []
    return batch


def _validate(batch: InboxBatch, records_path: Path, labels_path: Path, policy: str) -> None:
    for path, reader in ((records_path, read_records), (labels_path, read_manifest)):
        try:
            _, errors = reader(path, errors="collect")
        except ValueError as exc:  # a whole-file problem: unreadable, missing column, ...
            batch.problems.append(str(exc))
            continue
        batch.problems += [str(e) for e in errors]
        batch.line_errors += errors
    if batch.problems:
        return
    records, labels = list(read_jsonl(records_path)), list(read_jsonl(labels_path))
    if not records:
        batch.problems.append(f"{records_path}: no records")
        return
    slugs = load_catalog().slugs
    batch.problems += [f"{records_path}: {p}" for p in schema_problems(records, labels)]
    batch.problems += [f"{labels_path}: {p}" for p in manifest_problems(records, labels, slugs)]
    if batch.problems:
        return
    batch.disagreements = label_disagreements(records, labels, site_master())
    if policy == "quarantine":
        batch.problems += [f"{labels_path}: labels disagree with the reference auditor: {d}"
                           for d in batch.disagreements]
    if not batch.problems:
        batch.records, batch.labels = records, labels


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
    common = {"inbox_batch": name, "source": dg.MetadataValue.path(str(records_path.parent)),
              **_label_check_metadata(batch)}
    context.log.info(f"inbox batch {name}: {len(batch.records)} records, {len(batch.labels)} "
                     "labels" + (f"; FLAGGED: {len(batch.disagreements)} label disagreement(s) "
                                 "with the reference auditor" if batch.flagged else ""))
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


def _label_check_metadata(batch: InboxBatch) -> dict:
    """`label_check`: passed or flagged; with flagged, the disagreements as a table."""
    if not batch.flagged:
        return {"label_check": "passed"}
    rows = [d.as_row() for d in batch.disagreements]
    table = "\n".join(f"| {r['kind']} | {printable(str(r['record_id']))} | {r['field']} | "
                      f"{r['deviation_type']} |" for r in rows[:50])
    return {
        "label_check": "flagged",
        "label_disagreements": len(rows),
        "label_disagreement_list": dg.MetadataValue.md(
            "| kind | record_id | field | deviation_type |\n|---|---|---|---|\n" + table),
    }
