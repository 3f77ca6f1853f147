"""Compute resource: where training processes run, reached through Dagster Pipes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ComputeResource(dg.ConfigurableResource):
    """Runs `training.tasks` in a separate process: `python -m resources.pipes_entry TASK ...`.

    `local` starts it under PipesSubprocessClient (CPU, or the local GPU when there is one). The
    Kubernetes GPU-pod backend (PipesK8sClient) arrives with the orchestration work; its command
    is the same, so a task never changes with the backend."""

    backend: Literal["local"] = Field("local", description="Where the training process runs.")
    models_dir: str = Field(description="Root folder for trained models and adapters.")

    def output_dir(self, name: str, run_id: str) -> Path:
        """Run-scoped artifact folder: a new run never overwrites an earlier model."""
        return Path(self.models_dir) / name / run_id

    def command(self, task: str, config: dict, output_dir: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "resources.pipes_entry",
            task,
            "--output-dir",
            str(output_dir),
            "--config",
            json.dumps(config, sort_keys=True),
        ]

    def run_task(
        self, context: dg.AssetExecutionContext, task: str, config: dict, output_dir: Path
    ) -> dg.MaterializeResult:
        """Run the task; its streamed log lines and final metadata arrive through Pipes."""
        client = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT))
        context.log.info(f"training task {task} -> {output_dir} (backend {self.backend})")
        invocation = client.run(context=context, command=self.command(task, config, output_dir))
        return invocation.get_materialize_result()
