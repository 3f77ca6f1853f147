"""Schedules: the nightly benchmark of the API models (daily partitions) and a weekly retraining.

Both are STOPPED by default (the embedded profile runs nothing on its own): start them with
`dagster schedule start -w workspace.yaml <name>` while the daemon runs, or in the UI. A
deployment that wants them on from the first load sets GXPLAB_SCHEDULES_RUNNING=1 in the code
location's environment. See docs/schedules.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from assets.nightly import nightly_partitions

SCHEDULES_RUNNING_ENV = "GXPLAB_SCHEDULES_RUNNING"
TRIGGER_TAG = "gxplab/trigger"
NIGHTLY_BENCHMARK_TAG = "scheduled-nightly-benchmark"
SCHEDULED_RETRAINING_TAG = "scheduled-retraining"
NIGHTLY_HOUR_UTC = 2  # the previous day's partition runs at 02:00 UTC
WEEKLY_RETRAINING_CRON = "0 3 * * 0"  # Sunday 03:00


def schedule_default_status(environ: Mapping[str, str] = os.environ) -> dg.DefaultScheduleStatus:
    """STOPPED unless GXPLAB_SCHEDULES_RUNNING is 1/true/yes (ValueError on any other value)."""
    value = environ.get(SCHEDULES_RUNNING_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return dg.DefaultScheduleStatus.STOPPED
    if value in ("1", "true", "yes"):
        return dg.DefaultScheduleStatus.RUNNING
    raise ValueError(f"environment variable {SCHEDULES_RUNNING_ENV}: {value!r} is not one of "
                     "1, true, yes, 0, false, no")


nightly_benchmark_job = dg.define_asset_job(
    "nightly_benchmark_job",
    selection=dg.AssetSelection.assets("nightly_api_benchmark"),
    partitions_def=nightly_partitions,
    description="The API models of configs/models.yaml on the benchmark split for one date. "
    "Backfill a date range: dagster job backfill -w workspace.yaml -j nightly_benchmark_job "
    "--from 2026-11-01 --to 2026-11-03 --noprompt",
)

nightly_benchmark_schedule = dg.build_schedule_from_partitioned_job(
    nightly_benchmark_job,
    name="nightly_benchmark_schedule",
    hour_of_day=NIGHTLY_HOUR_UTC,
    minute_of_hour=0,
    default_status=schedule_default_status(),
    tags={TRIGGER_TAG: NIGHTLY_BENCHMARK_TAG},
    description="Every day at 02:00 UTC: nightly_benchmark_job for the previous day's partition. "
    "Off by default: start it with `dagster schedule start -w workspace.yaml "
    "nightly_benchmark_schedule` (the daemon must run, e.g. `make ui`).",
)

weekly_retraining_schedule = dg.ScheduleDefinition(
    name="weekly_retraining_schedule",
    cron_schedule=WEEKLY_RETRAINING_CRON,
    execution_timezone="UTC",
    job_name="gxp_models_job",
    tags={TRIGGER_TAG: SCHEDULED_RETRAINING_TAG},
    default_status=schedule_default_status(),
    description="Sundays at 03:00 UTC: gxp_models_job retrains the base model and the adapters "
    "on the current data. Off by default: start it with `dagster schedule start -w "
    "workspace.yaml weekly_retraining_schedule` (the daemon must run, e.g. `make ui`).",
)

all_schedules = [nightly_benchmark_schedule, weekly_retraining_schedule]
schedule_jobs = [nightly_benchmark_job]
