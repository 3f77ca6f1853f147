"""Training curves besides the Pipes metadata (training/metrics_log.py): TensorBoard event files
kept with the model, MLflow, or none."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from test_base_model_pipes import TINY

from training.metrics_log import MetricsLog

ROOT = Path(__file__).resolve().parent.parent


def _scalars(events_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_a_training_task_writes_its_loss_curve_to_tensorboard(tmp_path):
    """The base model's pretraining, run by the Pipes entry point standalone: one loss scalar
    per reported step in <output>/tensorboard, equal to the losses it reported."""
    result = subprocess.run(
        [sys.executable, "-m", "resources.pipes_entry", "base_model", "--output-dir",
         str(tmp_path / "m"), "--config", json.dumps({**TINY, "pretrain_steps": 4})],
        capture_output=True, text=True, cwd=ROOT, check=True)
    metadata = json.loads(result.stdout.splitlines()[-1])
    assert metadata["training_curves"] == str(tmp_path / "m" / "tensorboard")
    curve = _scalars(tmp_path / "m" / "tensorboard", "train/loss")
    reported = [json.loads(line) for line in result.stdout.splitlines()
                if line.startswith('{"step"')]
    assert [step for step, _ in curve] == [r["step"] for r in reported] == [1, 2, 3, 4]
    assert [value for _, value in curve] == pytest.approx([r["loss"] for r in reported])


def test_report_to_none_and_reports_without_steps_write_nothing(tmp_path):
    log = MetricsLog("none", tmp_path, "t")
    log({"step": 1, "total": 2, "loss": 1.0})
    assert log.location is None and not (tmp_path / "tensorboard").exists()
    log = MetricsLog("tensorboard", tmp_path, "t")
    log({"items": 3, "total": 10, "label": "generate"})  # generation progress: not a curve
    log({"note": "loaded"})
    assert log.location is None and not (tmp_path / "tensorboard").exists()
    log({"step": 2, "total": 2, "loss": 0.5, "learning_rate": 1e-3, "resumed": True})
    log.close()
    assert _scalars(tmp_path / "tensorboard", "train/learning_rate") == [(2, pytest.approx(1e-3))]
    assert log.scalars_written == 2  # loss and learning_rate; the bool is not a scalar


def test_mlflow_gets_one_run_with_the_step_metrics(tmp_path, monkeypatch):
    calls: list[tuple] = []
    fake = types.SimpleNamespace(
        start_run=lambda run_name: calls.append(("start", run_name)),
        log_metrics=lambda metrics, step: calls.append(("log", metrics, step)),
        end_run=lambda: calls.append(("end",)),
        active_run=lambda: types.SimpleNamespace(info=types.SimpleNamespace(run_id="r1")))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    log = MetricsLog("mlflow", tmp_path, "dpo_adapter")
    log({"step": 1, "total": 3, "loss": 0.7})
    log({"step": 2, "total": 3, "loss": 0.6})
    assert log.location == "mlflow run r1"
    log.close()
    assert calls == [("start", "dpo_adapter"), ("log", {"loss": 0.7}, 1),
                     ("log", {"loss": 0.6}, 2), ("end",)]


def test_mlflow_missing_and_typos_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    with pytest.raises(ValueError, match="mlflow package"):
        MetricsLog("mlflow", tmp_path, "t")({"step": 1, "loss": 1.0})
    with pytest.raises(ValueError, match="report_to must be one of tensorboard, mlflow, none"):
        MetricsLog("tensorbord", tmp_path, "t")
