"""Training metrics to TensorBoard event files (or MLflow), beside the Pipes metadata.

Every task reports its training steps through one `report(step=..., total=..., loss=..., ...)`
callback (training/tasks.py), whichever loop it runs: TRL's trainers, GRIT, the embedded model's
pretraining or the record-audit fine-tuning. `MetricsLog` is fed those same reports by
`resources/pipes_entry.py`, so one place writes every task's curves: numeric fields of a report
that has a `step`, each as a scalar at that step. Reports without a step (generation progress,
notes, final evaluations) are not curves and are left out.

    report_to: tensorboard   event files in <output_dir>/tensorboard (`tensorboard --logdir`)
    report_to: mlflow        the active MLflow tracking URI (MLFLOW_TRACKING_URI), one run per task
    report_to: none          nothing beyond the Pipes metadata

Written here rather than with transformers' `report_to`: that covers only TRL's trainers, while
the custom loops (pretraining, GRIT's reprojection, record-audit SFT) report the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPORT_TO = ("tensorboard", "mlflow", "none")
EVENTS_DIR = "tensorboard"


class MetricsLog:
    """Scalars of step reports to the chosen tracker; opened at the first step report, so a task
    that reports no steps leaves no empty event folder."""

    def __init__(self, report_to: str, output_dir: Path, run_name: str) -> None:
        if report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, "
                             f"got {report_to!r}")
        self.report_to, self.output_dir, self.run_name = report_to, Path(output_dir), run_name
        self._writer: Any = None
        self._mlflow: Any = None
        self.scalars_written = 0

    @property
    def location(self) -> str | None:
        """Where the curves went (the event folder or the MLflow run id), once written."""
        if self._writer is not None:
            return str(self.output_dir / EVENTS_DIR)
        if self._mlflow is not None:
            return f"mlflow run {self._mlflow.active_run().info.run_id}"
        return None

    def __call__(self, metrics: Mapping[str, Any]) -> None:
        if self.report_to == "none" or "step" not in metrics:
            return
        step = int(metrics["step"])
        scalars = {key: float(value) for key, value in metrics.items()
                   if key not in ("step", "total") and isinstance(value, int | float)
                   and not isinstance(value, bool)}
        if not scalars:
            return
        if self.report_to == "tensorboard":
            self._tensorboard(scalars, step)
        else:
            self._mlflow_log(scalars, step)
        self.scalars_written += len(scalars)

    def _tensorboard(self, scalars: dict[str, float], step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.output_dir / EVENTS_DIR))
        for key, value in scalars.items():
            self._writer.add_scalar(f"train/{key}", value, step)

    def _mlflow_log(self, scalars: dict[str, float], step: int) -> None:
        if self._mlflow is None:
            try:
                import mlflow
            except ImportError:
                raise ValueError("report_to mlflow needs the mlflow package in the training "
                                 "environment (pip install mlflow-skinny), or report_to "
                                 "tensorboard") from None
            mlflow.start_run(run_name=self.run_name)
            self._mlflow = mlflow
        self._mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._mlflow is not None:
            self._mlflow.end_run()
