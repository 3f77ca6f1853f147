"""Turn labelled batch pairs dropped in the inbox into `inbox_batch` partitions, then retrain.

Each tick lists the inbox and accepted/ (one os.scandir each; no file is opened unless it is a new
settled pair), validates every complete pair `<name>.records.jsonl` + `<name>.labels.jsonl` with
`assets.inbox.validate_inbox_batch` (readers, record schema, labels against the reference
auditor; any exception rejects that pair only), and
- moves a good pair to `<inbox>/accepted/<name>/` (through a staging folder renamed in one step),
  adds the `inbox_batch` partition `<name>` and requests a `gxp_inbox_job` run of it;
- moves a bad pair to `<inbox>/quarantine/` with `<name>.reason.txt` (every problem, naming file,
  line, record_id and field), `<file>.rejects.jsonl` (the rejected lines) and one warning log line;
  a pair whose name is already there gets a free suffix on all of its files, never overwriting;
- registers a folder of accepted/ that is not a partition (a tick that died after the move), and
  moves a staging folder left by a crash back into the inbox.
Once the partitions of accepted batches are materialized (a later tick), it requests the
retraining of the dependent adapters (`gxp_models_job`, `RETRAIN_ADAPTERS` selected).
Files modified less than SETTLE_SECONDS ago, or whose size changes during the tick, are left for
the next tick, as is a pair missing its partner. Nothing is deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.inbox import (
    ACCEPTED_DIR,
    LABELS_SUFFIX,
    QUARANTINE_DIR,
    RECORDS_SUFFIX,
    InboxBatch,
    inbox_dir,
    inbox_partitions,
    prepare_label_check,
    validate_inbox_batch,
)
from jobs import models_job
from scoring.data_files import quarantine
from scoring.label_check import printable

SETTLE_SECONDS = 2.0
RETRAIN_ADAPTERS = ("gxp_audit_adapter",)  # trained on labelled records: they learn from new data
INBOX_RECORDS = dg.AssetKey("inbox_records")
_BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_KINDS = {RECORDS_SUFFIX: "records", LABELS_SUFFIX: "labels"}
_MAX_TAG_CHARS = 200
_STAGING_SUFFIX = ".staging"

inbox_job = dg.define_asset_job(
    "gxp_inbox_job",
    selection=dg.AssetSelection.assets("inbox_records", "inbox_labels"),
    partitions_def=inbox_partitions,
    description="Store one accepted inbox batch (records and labels) as an inbox_batch partition.",
)


@dataclass(frozen=True)
class InboxCursor:
    """`seen_mtime_ns`: newest modification time reported so far (files at or before it are not
    reported again: stray files, pairs waiting for a partner); `pending`: accepted batches whose
    partition is not materialized yet, so their retraining is still to request. Processing never
    depends on it: a pair in the inbox is unprocessed by construction (processed pairs move)."""

    seen_mtime_ns: int = 0
    pending: tuple[str, ...] = ()

    def encode(self) -> str:
        return json.dumps({"seen_mtime_ns": self.seen_mtime_ns, "pending": list(self.pending)})

    @classmethod
    def parse(cls, cursor: str | None) -> InboxCursor:
        if not cursor:
            return cls()
        try:
            raw = json.loads(cursor)
            return cls(int(raw["seen_mtime_ns"]), tuple(str(n) for n in raw["pending"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"inbox_sensor: cursor {cursor[:80]!r} is not the JSON it writes; "
                             "reset it: dagster sensor cursor inbox_sensor --delete") from None


@dataclass
class InboxTick:
    """What one pass over the inbox did."""

    accepted: list[str] = field(default_factory=list)
    quarantined: dict[str, list[str]] = field(default_factory=dict)  # name -> problems
    reasons: dict[str, Path] = field(default_factory=dict)  # quarantined name -> its reason.txt
    flagged: dict[str, list[str]] = field(default_factory=dict)  # accepted, labels disagree
    recovered: list[str] = field(default_factory=list)  # in accepted/ but not a partition
    waiting: dict[str, str] = field(default_factory=dict)  # name -> why it was left
    ignored: list[str] = field(default_factory=list)  # files that are not part of a pair
    newest_mtime_ns: int = 0


def _unit(file_name: str) -> tuple[str, str] | None:
    for suffix, kind in _KINDS.items():
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)], kind
    return None


def _free(path: Path) -> Path:
    """`path`, or `path.1`, `path.2`, ...: the first that does not exist (nothing overwritten)."""
    return path.with_name(path.name + _free_suffix(path.parent, [path.name]))


def _free_suffix(folder: Path, names: list[str]) -> str:
    """'' or '.1', '.2', ...: the first suffix under which none of `names` exists in `folder`, so
    that the files of one quarantined pair share it and overwrite nothing."""
    n = 0
    while any((folder / (name + (f".{n}" if n else ""))).exists() for name in names):
        n += 1
    return f".{n}" if n else ""


def _staging(accepted: Path, name: str) -> Path:
    """Where a pair is assembled before its folder is renamed into place (never a batch name:
    those start with a letter or digit)."""
    return accepted / f".{name}{_STAGING_SUFFIX}"


def _scan_accepted(inbox: Path, known_batches: set[str], tick: InboxTick) -> None:
    """Undo interrupted acceptances and list the accepted batches that are not partitions in
    `tick.recovered`.

    A pair is accepted by moving both files into a staging folder and then renaming that folder
    to accepted/<name> (one atomic step). A staging folder left by a crash goes back to the inbox
    file by file, to be validated again; an accepted/<name> folder whose partition was never
    added (the tick died before the daemon saw its result) is listed, to be registered now."""
    accepted = inbox / ACCEPTED_DIR
    if not accepted.is_dir():
        return
    with os.scandir(accepted) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith(".") and entry.name.endswith(_STAGING_SUFFIX):
                try:
                    _restore(inbox, Path(entry.path))
                except OSError as exc:  # left in place, retried by the next tick
                    tick.waiting[entry.name] = (f"could not be moved back to the inbox "
                                                f"({type(exc).__name__}: {exc}); retried")
            elif _BATCH_NAME.match(entry.name) and entry.name not in known_batches:
                tick.recovered.append(entry.name)
    tick.recovered.sort()


def _restore(inbox: Path, staging: Path) -> None:
    for path in staging.iterdir():
        os.replace(path, _free(inbox / path.name))
    staging.rmdir()  # empty now


def _accept(inbox: Path, name: str, paths: dict[str, Path]) -> None:
    staging = _staging(inbox / ACCEPTED_DIR, name)
    staging.mkdir(parents=True)
    for path in paths.values():
        os.replace(path, staging / path.name)
    os.rename(staging, inbox / ACCEPTED_DIR / name)  # atomic; fails rather than replace a batch


def _settled_units(inbox: Path, tick: InboxTick) -> dict[str, dict[str, os.stat_result]]:
    units: dict[str, dict[str, os.stat_result]] = {}
    with os.scandir(inbox) as entries:
        for entry in entries:
            if not entry.is_file(follow_symlinks=False):
                continue  # accepted/, quarantine/ and other folders
            stat = entry.stat(follow_symlinks=False)
            tick.newest_mtime_ns = max(tick.newest_mtime_ns, stat.st_mtime_ns)
            unit = _unit(entry.name)
            if unit is None:
                tick.ignored.append(entry.name)
            else:
                units.setdefault(unit[0], {})[unit[1]] = stat
    return units


def process_inbox(inbox: Path, *, known_batches: set[str], now: float | None = None,
                  settle_seconds: float = SETTLE_SECONDS) -> InboxTick:
    """One pass over `inbox` (plain Python: the sensor and the benchmark call it). `known_batches`:
    partitions that already exist; a pair with one of those names is quarantined, and a folder in
    accepted/ without one is reported in `recovered`."""
    now = time.time() if now is None else now
    tick = InboxTick()
    _scan_accepted(inbox, known_batches, tick)
    units = _settled_units(inbox, tick)
    settled_before_ns = int((now - settle_seconds) * 1e9)
    ready = []
    for name in sorted(units):
        stats = units[name]
        missing = [k for k in ("records", "labels") if k not in stats]
        if missing:
            tick.waiting[name] = f"waiting for {name}{'.' + missing[0]}.jsonl"
        elif any(s.st_mtime_ns > settled_before_ns for s in stats.values()):
            tick.waiting[name] = f"modified less than {settle_seconds:g} s ago: still being written"
        else:
            ready.append(name)
    policy = _label_policy(ready, tick)
    for name in ready if policy else ():
        try:
            _process_pair(inbox, name, units[name], known_batches, tick, policy)
        except OSError as exc:  # the file system, not the pair: leave it, go on with the next
            tick.waiting[name] = f"could not be moved ({type(exc).__name__}: {exc}); retried"
    return tick


def _label_policy(ready: list[str], tick: InboxTick) -> str | None:
    """The label policy once the label check is set up, or None (with every ready pair left
    waiting and why) when this environment cannot check labels: a machine's fault must not
    reject good batches."""
    if not ready:
        return None
    try:
        return prepare_label_check()
    except Exception as exc:  # noqa: BLE001 - any set-up failure leaves every pair for later
        why = printable(" ".join(str(exc).split()))[:300]
        for name in ready:
            tick.waiting[name] = (f"labels cannot be checked here ({type(exc).__name__}: {why});"
                                  " retried next tick")
        return None


def _process_pair(inbox: Path, name: str, stats: dict[str, os.stat_result],
                  known_batches: set[str], tick: InboxTick, policy: str) -> None:
    paths = {k: inbox / f"{name}.{k}.jsonl" for k in stats}
    batch = validate_inbox_batch(name, paths["records"], paths["labels"], policy=policy)
    try:
        changed = any((p.stat().st_size, p.stat().st_mtime_ns)
                      != (stats[k].st_size, stats[k].st_mtime_ns) for k, p in paths.items())
    except FileNotFoundError:  # taken away while we read it
        changed = True
    if changed:  # written to while we read it
        tick.waiting[name] = "changed while being validated: still being written"
        return
    problems = list(batch.problems)
    if not _BATCH_NAME.match(name):
        problems.insert(0, f"{paths['records']}: the batch name {name!r} must be letters, "
                        "digits, '_', '-' or '.', starting with a letter or digit, at most 100")
    elif name in known_batches or (inbox / ACCEPTED_DIR / name).exists():
        problems.insert(0, f"{paths['records']}: a batch named {name!r} was already "
                        "accepted; rename the pair to add it as a new batch")
    if problems:
        tick.reasons[name] = _quarantine(inbox, name, paths, batch, problems)
        tick.quarantined[name] = problems
        return
    _accept(inbox, name, paths)
    tick.accepted.append(name)
    if batch.flagged:
        tick.flagged[name] = [str(d) for d in batch.disagreements]


def _quarantine(inbox: Path, name: str, paths: dict[str, Path], batch: InboxBatch,
                problems: list[str]) -> Path:
    """Move the pair to quarantine/ with its reason and rejects; every file of this pair gets the
    same free suffix ('', '.1', ...), so an earlier pair of the same name keeps all of its files."""
    folder = inbox / QUARANTINE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".rejects-") as scratch:
        # <file>.rejects.jsonl: each rejected line with its error, written aside, then moved
        rejects = [Path(r) for r in quarantine(batch.line_errors, scratch)] if batch.line_errors \
            else []
        reason_name = f"{name}.reason.txt"
        suffix = _free_suffix(folder, [reason_name, *(p.name for p in paths.values()),
                                       *(r.name for r in rejects)])
        sources = (*paths.values(), *rejects)  # the pair first: a failed move leaves nothing else
        moved = [folder / (p.name + suffix) for p in sources]
        for source, target in zip(sources, moved, strict=True):
            os.replace(source, target)
        reason = folder / (reason_name + suffix)
        with reason.open("x", encoding="utf-8") as handle:  # "x": never overwrite
            handle.write(f"inbox batch {name!r} rejected: {len(problems)} problem(s)\n"
                         + "".join(f"- {p}\n" for p in problems)
                         + f"files: {', '.join(m.name for m in moved)}\n")
    return reason


def _inbox_run(name: str, disagreements: list[str] | None) -> dg.RunRequest:
    tags = {}
    if disagreements:  # accepted under the `flag` policy: the run says so
        tags = {"gxplab/inbox_label_check": "flagged",
                "gxplab/inbox_label_disagreements": "; ".join(disagreements)[:_MAX_TAG_CHARS]}
    return dg.RunRequest(partition_key=name, job_name=inbox_job.name, run_key=f"inbox:{name}",
                         tags=tags)


def _log_tick(context: dg.SensorEvaluationContext, inbox: Path, tick: InboxTick, *,
              report_waiting: bool) -> None:
    for name in tick.recovered:
        context.log.warning(f"inbox: batch {name} is in {inbox / ACCEPTED_DIR} but was never "
                            "registered (an interrupted tick); adding its partition and run now")
    for name in tick.accepted:
        context.log.info(f"inbox: accepted batch {name} -> {inbox / ACCEPTED_DIR / name}")
    for name, disagreements in tick.flagged.items():
        context.log.warning(f"inbox: batch {name} accepted FLAGGED: {len(disagreements)} label "
                            f"disagreement(s) with the reference auditor, first: "
                            f"{disagreements[0]}")
    for name, problems in tick.quarantined.items():
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        context.log.warning(f"inbox: quarantined batch {name}: {problems[0]}{more}; see "
                            f"{tick.reasons[name]}")
    if report_waiting:  # new strays or waiting pairs: report once
        for name, why in tick.waiting.items():
            context.log.info(f"inbox: left batch {name} for the next tick: {why}")
        if tick.ignored:
            context.log.info(f"inbox: ignored {len(tick.ignored)} file(s) that are not "
                             f"<name>{RECORDS_SUFFIX} or <name>{LABELS_SUFFIX}: "
                             f"{', '.join(sorted(tick.ignored)[:5])}")


def _retraining_request(ready: list[str]) -> dg.RunRequest:
    names = "+".join(sorted(ready))
    key = names if len(names) <= 120 else hashlib.sha256(names.encode()).hexdigest()[:16]
    return dg.RunRequest(
        run_key=f"inbox_retrain:{key}",
        job_name=models_job.name,
        asset_selection=[dg.AssetKey(a) for a in RETRAIN_ADAPTERS],
        tags={"gxplab/inbox_batches": names[:_MAX_TAG_CHARS]},
    )


@dg.sensor(
    name="inbox_sensor",
    jobs=[inbox_job, models_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Validates labelled batch pairs (<name>.records.jsonl + <name>.labels.jsonl) "
    "dropped in $GXPLAB_INBOX_DIR (default var/inbox): good pairs move to accepted/<name>/ and "
    "become inbox_batch partitions (a gxp_inbox_job run each), bad pairs move to quarantine/ with "
    "<name>.reason.txt; once the new partitions are materialized, gxp_audit_adapter is retrained. "
    "Off by default: start it with `dagster sensor start inbox_sensor`.",
)
def inbox_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor = InboxCursor.parse(context.cursor)
    inbox = inbox_dir()
    if not inbox.is_dir():
        return dg.SensorResult(skip_reason=f"inbox {inbox} does not exist", cursor=cursor.encode())
    known = set(context.instance.get_dynamic_partitions(inbox_partitions.name))
    tick = process_inbox(inbox, known_batches=known)
    _log_tick(context, inbox, tick, report_waiting=tick.newest_mtime_ns > cursor.seen_mtime_ns)
    register = [*tick.recovered, *tick.accepted]
    pending = list(dict.fromkeys([*cursor.pending, *register]))
    run_requests = [_inbox_run(name, tick.flagged.get(name)) for name in register]
    ready: list[str] = []
    if cursor.pending:  # partitions of earlier ticks: retrain once they are stored
        stored = context.instance.get_materialized_partitions(INBOX_RECORDS)
        ready = [n for n in cursor.pending if n in stored]
    if ready:
        context.log.info(f"inbox: batches {', '.join(ready)} stored; requesting the retraining "
                         f"of {', '.join(RETRAIN_ADAPTERS)}")
        run_requests.append(_retraining_request(ready))
    new_cursor = InboxCursor(max(cursor.seen_mtime_ns, tick.newest_mtime_ns),
                             tuple(n for n in pending if n not in ready))
    partitions = [inbox_partitions.build_add_request(register)] if register else []
    if run_requests or partitions:
        return dg.SensorResult(run_requests=run_requests, dynamic_partitions_requests=partitions,
                               cursor=new_cursor.encode())
    notes = [f"{len(tick.quarantined)} quarantined"] if tick.quarantined else []
    notes += [f"{n}: {why}" for n, why in tick.waiting.items()][:5]
    if new_cursor.pending:
        notes.append(f"waiting for inbox_records partitions {', '.join(new_cursor.pending[:5])} "
                     "to be materialized before retraining")
    return dg.SensorResult(skip_reason="; ".join(notes) or f"no new batches in {inbox}",
                           cursor=new_cursor.encode())
