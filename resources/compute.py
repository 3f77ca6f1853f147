"""Compute resource: where training and local-inference processes run, reached through Dagster
Pipes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ComputeResource(dg.ConfigurableResource):
    """Runs `training.tasks` (training, and local generation and hidden states for the
    evaluations) in a separate process: `python -m resources.pipes_entry TASK ...`.

    `local` starts it under PipesSubprocessClient (CPU, or the local GPU when there is one);
    `k8s` starts it in a GPU pod under PipesK8sClient (image with this project installed, models
    folder on a persistent volume). The command is the same, so a task never changes with the
    backend."""

    backend: Literal["local", "k8s"] = Field("local", description="Where the training runs.")
    models_dir: str = Field(description="Root folder for trained models and adapters (in the "
                            "pod too: the persistent volume is mounted there).")
    image: str = Field("gxplab-training:latest", description="k8s: container image.")
    namespace: str = Field("gxplab", description="k8s: namespace of the training pods.")
    gpu_resource: str = Field("nvidia.com/gpu", description="k8s: extended resource name.")
    gpus: int = Field(1, description="k8s: GPUs per training pod.")
    memory: str = Field("48Gi", description="k8s: memory request and limit.")
    cpu: str = Field("8", description="k8s: CPU request.")
    models_volume_claim: str | None = Field(
        "gxplab-models", description="k8s: PersistentVolumeClaim mounted at models_dir."
    )
    launcher: Literal["python", "accelerate"] = Field(
        "python", description="python: one process; accelerate: `accelerate launch` with "
        "num_processes processes (one per GPU, data parallel); rank 0 reports through Pipes.")
    num_processes: int = Field(1, ge=1, description="accelerate: processes (GPUs) per task.")
    report_to: Literal["tensorboard", "mlflow", "none"] = Field(
        "tensorboard", description="Training step metrics besides the Pipes metadata: "
        "TensorBoard event files kept with the model (<output dir>/tensorboard), the MLflow "
        "tracking server of MLFLOW_TRACKING_URI, or none.")

    def output_dir(self, name: str, run_id: str) -> Path:
        """Run-scoped artifact folder: a new run never overwrites an earlier model."""
        return Path(self.models_dir) / name / run_id

    def training_dir(self, name: str, run_id: str, training_key: str) -> tuple[Path, bool]:
        """(folder, resumed) for a training task. An earlier run with the same `training_key`
        (a hash of its inputs and settings) that left checkpoints but no finished model card was
        interrupted: its folder is continued, so the task resumes from its last checkpoint.
        Otherwise a new run-scoped folder, marked with the key."""
        root = Path(self.models_dir) / name
        marks = sorted(root.glob("*/training_key"), key=lambda p: p.stat().st_mtime, reverse=True)
        for mark in marks:
            folder = mark.parent
            if (mark.read_text(encoding="utf-8").strip() == training_key
                    and not (folder / "model_card.md").exists()
                    and any((folder / "checkpoints").glob("checkpoint-*"))):
                return folder, True
        folder = self.output_dir(name, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "training_key").write_text(training_key + "\n", encoding="utf-8")
        return folder, False

    def command(self, task: str, config: dict, output_dir: Path) -> list[str]:
        python = sys.executable if self.backend == "local" else "python"
        entry = ["resources.pipes_entry", task, "--output-dir", str(output_dir),
                 "--config", json.dumps(config, sort_keys=True), "--report-to", self.report_to]
        if self.launcher == "accelerate":
            return [python, "-m", "accelerate.commands.launch",
                    "--num_processes", str(self.num_processes), "--module", *entry]
        return [python, "-m", *entry]

    def k8s_pod_spec(self) -> dict[str, Any]:
        """Base pod spec for PipesK8sClient: GPU limit, GPU toleration, models volume."""
        container: dict[str, Any] = {
            "resources": {
                "requests": {"cpu": self.cpu, "memory": self.memory},
                "limits": {self.gpu_resource: str(max(self.gpus, self.num_processes)),
                       "memory": self.memory},
            },
        }
        spec: dict[str, Any] = {
            "restart_policy": "Never",
            "containers": [container],
            "tolerations": [{"key": self.gpu_resource, "operator": "Exists",
                             "effect": "NoSchedule"}],
        }
        if self.models_volume_claim:
            container["volume_mounts"] = [{"name": "models", "mount_path": self.models_dir}]
            spec["volumes"] = [{"name": "models", "persistent_volume_claim": {
                "claim_name": self.models_volume_claim}}]
        return spec

    def _invoke(self, context: dg.AssetExecutionContext, task: str, config: dict,
                output_dir: Path) -> dg.PipesClientCompletedInvocation:
        """Start the task on the backend and wait for it; its log lines stream in meanwhile."""
        context.log.info(f"task {task} -> {output_dir} (backend {self.backend})")
        command = self.command(task, config, output_dir)
        if self.backend == "k8s":
            from dagster_k8s import PipesK8sClient

            return PipesK8sClient().run(
                context=context, image=self.image, command=command, namespace=self.namespace,
                env={"HF_HUB_OFFLINE": "0"}, base_pod_spec=self.k8s_pod_spec(),
            )
        client = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT))
        return client.run(context=context, command=command)

    def run_task(self, context: dg.AssetExecutionContext, task: str, config: dict,
                 output_dir: Path) -> dg.MaterializeResult:
        """Run the task; its streamed log lines and final metadata arrive through Pipes, the
        metadata as the asset's materialization (training: the task's result is the asset)."""
        return self._invoke(context, task, config, output_dir).get_materialize_result()

    def run_step(self, context: dg.AssetExecutionContext, task: str, config: dict,
                 output_dir: Path) -> dict[str, Any]:
        """Run the task as one step of an asset that makes its own value (generation for an
        evaluation): the task's final metadata as plain values, not the materialization."""
        invocation = self._invoke(context, task, config, output_dir)
        metadata: dict[str, Any] = {}
        for result in invocation.get_results(implicit_materializations=False):
            for key, value in (getattr(result, "metadata", None) or {}).items():
                metadata[key] = value.value if isinstance(value, dg.MetadataValue) else value
        return metadata
