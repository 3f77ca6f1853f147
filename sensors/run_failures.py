"""Record every failed Dagster run, with its error, in the results warehouse (run_failures).

`run_failure_sensor` records each failed run as it fails; `record_failed_runs` records the failed
runs of an instance after the fact (a failure that happened while the sensor was stopped or the
warehouse unreachable). Both write the same row, once per run.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from resources.clients.warehouse import Warehouse
from resources.warehouse import WarehouseResource


def _error_chain(error: SerializableErrorInfo | None) -> list[str]:
    """The messages of an error and of its causes/contexts, outermost first (no stack traces:
    the event log keeps those)."""
    messages: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        messages.append(error.message.strip())
        error = error.cause or error.context
    return [m for m in messages if m]


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> list[dg.DagsterEvent]:
    records = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event]


def failure_text(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failure_event: dg.DagsterEvent | None
) -> tuple[str, list[str]]:
    """(error text, failed step keys) of a failed run: the run failure event's message, then
    each failed step's error chain ("step X: ...", "  caused by: ..."); for a failure outside
    any step (a resource that would not start, a crashed run worker) the run-level error chain.
    Not yet scrubbed: Warehouse.record_run_failure does that."""
    message = failure_event.message if failure_event is not None else None
    lines = [message or f"run {run.run_id} of {run.job_name} failed"]
    steps: list[str] = []
    for event in _step_failures(instance, run.run_id):
        step = event.step_key or "?"
        steps.append(step)
        chain = _error_chain(getattr(event.event_specific_data, "error", None))
        if chain:
            lines.append(f"step {step}: {chain[0]}")
            lines.extend(f"  caused by: {m}" for m in chain[1:])
        else:
            lines.append(f"step {step}: {event.message or 'failed (no error recorded)'}")
    if not steps and failure_event is not None:
        chain = _error_chain(getattr(failure_event.event_specific_data, "error", None))
        lines.extend(f"{'error' if i == 0 else '  caused by'}: {m}" for i, m in enumerate(chain))
    return "\n".join(lines), sorted(set(steps))


def planned_asset_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The assets the run set out to materialize ("a/b" strings), from its
    ASSET_MATERIALIZATION_PLANNED events and its asset selection."""
    records = instance.get_records_for_run(
        run_id=run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    keys = {
        record.event_log_entry.dagster_event.asset_key
        for record in records
        if record.event_log_entry.dagster_event is not None
    }
    keys |= set(run.asset_selection or ())
    return sorted(key.to_user_string() for key in keys if key is not None)


def failed_at(instance: dg.DagsterInstance, run: dg.DagsterRun) -> datetime:
    """When the run ended (its run record's end time); now when the record has none."""
    record = instance.get_run_record_by_id(run.run_id)
    if record is not None and record.end_time is not None:
        return datetime.fromtimestamp(record.end_time, tz=UTC)
    return datetime.now(UTC)


def record_failure(
    client: Warehouse,
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None,
) -> dict:
    """Write the run_failures row of one failed run (idempotent per run id); returns it."""
    error, steps = failure_text(instance, run, failure_event)
    return client.record_run_failure(
        run.run_id,
        job_name=run.job_name,
        error=error,
        partition_key=run.tags.get("dagster/partition"),
        asset_keys=planned_asset_keys(instance, run),
        failed_steps=steps,
        failed_at=failed_at(instance, run),
    )


def record_failed_runs(
    instance: dg.DagsterInstance, client: Warehouse, since: datetime | None = None
) -> list[str]:
    """Record every failed run of `instance` (updated at or after `since`, timezone-aware)
    that run_failures lacks; returns their run ids, oldest first. Safe to repeat."""
    known = set(client.run_failures(since=since)["dagster_run_id"])
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since)
    recorded = []
    for record in reversed(instance.get_run_records(filters=filters)):
        run = record.dagster_run
        if run.run_id in known:
            continue
        events = instance.get_records_for_run(
            run_id=run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        event = events[-1].event_log_entry.dagster_event if events else None
        record_failure(client, instance, run, event)
        recorded.append(run.run_id)
    return recorded


@dg.run_failure_sensor(
    name="run_failure_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run of this code location's jobs (asset materializations "
    "from the UI included) in the results warehouse table run_failures: job, partition, the "
    "run's assets, the failed steps and the error chain, with every secret of the environment "
    "replaced by ***. Requests nothing.",
)
def run_failure_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    run = context.dagster_run
    row = record_failure(warehouse.client, context.instance, run, context.failure_event)
    context.log.info(
        f"run {run.run_id} of {run.job_name} failed (steps: "
        f"{', '.join(row['failed_steps']) or 'none'}); recorded as run_failures row {row['id']}"
    )
