"""Test-only Dagster jobs for tests/test_faults_runs.py: runs that are killed or that see their
instance's PostgreSQL restart, launched out of process as a run worker is.

Each step writes its results through `record_evaluation` (assets/evaluation_records.py), the
writer the evaluation assets use, to the warehouse at $GXPLAB_WAREHOUSE_URL. $GXPLAB_FAULT_DIR is
the folder where a step leaves marker files for the test.

    python tests/fault_jobs.py JOB [--from-failure RUN_ID]

runs JOB (or re-executes RUN_ID from its failure) with `execute_job` on the instance of
$DAGSTER_HOME (the default multiprocess executor: each step in its own process) and prints
`run <run_id> <status>`.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_postgres.utils import DagsterPostgresException
from sqlalchemy.exc import DBAPIError

from assets.evaluation_records import record_evaluation
from resources.warehouse import WAREHOUSE_URL_ENV, WarehouseResource

FAULT_DIR_ENV = "GXPLAB_FAULT_DIR"
MODEL_ID = "fault_model"
_WAIT_LIMIT_S = 90  # a step that is never killed (or never released) fails instead of hanging


def _marker(name: str) -> Path:
    return Path(os.environ[FAULT_DIR_ENV]) / name


def _record(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> int:
    """One evaluation run of this step's asset: two item rows and a score."""
    items = pd.DataFrame(
        {
            "item_id": ["q1", "q2"],
            "metric": ["accuracy", "accuracy"],
            "value": [1.0, 0.0],
            "status": ["ok", "ok"],
            "detail": [None, None],
        }
    )
    return record_evaluation(
        context, warehouse, asset_key=context.asset_key.to_user_string(), model_id=MODEL_ID,
        model_version="v1", split="test", dataset_hash="d" * 64, prompt_version="fault-v1",
        items=items, scores=[{"metric": "accuracy", "value": 0.5, "n": 2}],
    )  # fmt: skip


def _wait_for(condition, what: str, context: dg.AssetExecutionContext, log_every_s: float) -> None:
    """Log a line every `log_every_s` (each one an event-log write) until `condition()`."""
    deadline = time.monotonic() + _WAIT_LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise dg.Failure(f"gave up after {_WAIT_LIMIT_S} s waiting for {what}")
        context.log.info(f"waiting for {what}")
        time.sleep(log_every_s)


@dg.asset
def fault_audit(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
    """Step 1: writes its warehouse run and succeeds."""
    _record(context, warehouse)


@dg.asset(deps=[fault_audit])
def fault_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
    """Step 2: writes its warehouse run; in an original run it then blocks until the test kills
    the run (killed mid-materialization: rows written, no STEP_SUCCESS); a re-execution ends."""
    _record(context, warehouse)
    if context.run.parent_run_id is None:
        _marker("scores_written").touch()
        _wait_for(lambda: False, "SIGKILL", context, log_every_s=1.0)


@dg.asset
def restart_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
    """Writes its warehouse run, then a log line (an event-log write) every 0.1 s from when it
    says so (marker `in_window`) until the test has restarted PostgreSQL (marker `restarted`),
    then writes its warehouse run again (the same run: replaced)."""
    _record(context, warehouse)
    _marker("in_window").touch()
    _wait_for(_marker("restarted").exists, "the PostgreSQL restart", context, log_every_s=0.1)
    _record(context, warehouse)


@dg.asset
def outage_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
    """As restart_scores, but its heartbeat is an AssetObservation (a system event: a failed
    write raises into the step, where a failed log line is only reported). When the event log
    raises, it leaves the marker `storage_gave_up` for the test and re-raises."""
    _record(context, warehouse)
    _marker("in_window").touch()
    deadline = time.monotonic() + _WAIT_LIMIT_S
    while not _marker("restarted").exists():
        if time.monotonic() > deadline:
            raise dg.Failure(f"gave up after {_WAIT_LIMIT_S} s waiting for the restart")
        try:
            context.log_event(dg.AssetObservation(asset_key=context.asset_key))
        except (DagsterPostgresException, DBAPIError):
            _marker("storage_gave_up").touch()
            raise
        time.sleep(0.1)
    _record(context, warehouse)


_defs = dg.Definitions(
    assets=[fault_audit, fault_scores, restart_scores, outage_scores],
    jobs=[
        dg.define_asset_job("fault_kill_job", selection=[fault_audit, fault_scores]),
        dg.define_asset_job("fault_restart_job", selection=[restart_scores]),
        dg.define_asset_job("fault_outage_job", selection=[outage_scores]),
    ],
    resources={"warehouse": WarehouseResource(url=dg.EnvVar(WAREHOUSE_URL_ENV))},
)


# Module-level functions that return the jobs: `reconstructable` finds them again by name in the
# step processes.
def fault_kill_job() -> dg.JobDefinition:
    return _defs.resolve_job_def("fault_kill_job")


def fault_restart_job() -> dg.JobDefinition:
    return _defs.resolve_job_def("fault_restart_job")


def fault_outage_job() -> dg.JobDefinition:
    return _defs.resolve_job_def("fault_outage_job")


JOBS = {job.__name__: job for job in (fault_kill_job, fault_restart_job, fault_outage_job)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("--from-failure", metavar="RUN_ID", help="re-execute this failed run")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        options = None
        if args.from_failure:
            options = dg.ReexecutionOptions.from_failure(args.from_failure, instance)
        result = dg.execute_job(
            dg.reconstructable(JOBS[args.job]), instance, reexecution_options=options
        )
        run = instance.get_run_by_id(result.run_id)
        print(f"run {result.run_id} {run.status.value}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
