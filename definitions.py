"""GxPLab Dagster definitions. Loaded by the webserver and daemon: nothing here imports torch."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import all_assets
from jobs import all_jobs, all_schedules
from resources.artifacts import artifacts_resource, default_artifacts_dir
from resources.compute import ComputeResource
from resources.io_manager import dataset_io_manager
from resources.llm import llm_resource
from resources.warehouse import warehouse_resource
from sensors.inbox import inbox_job, inbox_sensor
from sensors.model_registry import model_registry_sensor
from sensors.run_failures import run_failure_sensor
from sensors.score_regression import score_regression_sensor

PROJECT_ROOT = Path(__file__).resolve().parent
ARTIFACTS_DIR = default_artifacts_dir()

defs = dg.Definitions(
    assets=all_assets(),
    jobs=[*all_jobs, inbox_job],
    schedules=all_schedules,
    sensors=[model_registry_sensor, run_failure_sensor, score_regression_sensor, inbox_sensor],
    resources={
        "io_manager": dataset_io_manager(str(ARTIFACTS_DIR)),
        "artifacts": artifacts_resource(str(ARTIFACTS_DIR)),
        "compute": ComputeResource(models_dir=str(ARTIFACTS_DIR / "models")),
        "llm": llm_resource(PROJECT_ROOT),
        "warehouse": warehouse_resource(PROJECT_ROOT),
    },
)
