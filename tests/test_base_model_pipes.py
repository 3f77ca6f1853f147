"""The base_model asset trains in its own process; metrics arrive through Dagster Pipes."""

import dataclasses
import json
import re
from pathlib import Path

import dagster as dg
from test_embedded_model import TINY as TINY_MODEL

from assets import models
from resources.compute import ComputeResource
from resources.io_manager import DatasetIOManager

# The tiny model of tests/test_embedded_model.py, as the asset's config overrides.
TINY = {
    key: value for key, value in dataclasses.asdict(TINY_MODEL).items()
    if key in models.BaseModelConfig.model_fields
}


def test_base_model_metrics_arrive_through_pipes(tmp_path):
    compute = ComputeResource(models_dir=str(tmp_path / "models"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [models.base_model],
            instance=instance,
            resources={"compute": compute, "io_manager": DatasetIOManager(root=str(tmp_path))},
            run_config={"ops": {"base_model": {"config": TINY}}},
        )
        # progress lines of training/progress.py, written by the training process
        logs = [
            e.message
            for e in instance.all_logs(result.run_id)
            if e.message and re.match(r"base_model: \d+/30 steps \(\d+%\), loss=", e.message)
        ]
    assert result.success
    metadata = result.asset_materializations_for_node("base_model")[0].metadata
    # Numbers computed in the training process, reported through Pipes.
    assert metadata["final_perplexity"].value < metadata["initial_perplexity"].value
    assert metadata["parameter_count"].value > 10_000
    assert len(metadata["losses"].value) == 30
    assert metadata["loss_curve"].value.startswith("![loss](data:image/png;base64,")
    model_path = Path(metadata["model_path"].value)
    assert model_path.parent == tmp_path / "models" / "base_model"  # run-scoped folder
    assert (model_path / "config.json").exists() and (model_path / "tokenizer.json").exists()
    card = json.loads((model_path / "gxplab_model.json").read_text())
    assert card["parameter_count"] == metadata["parameter_count"].value
    assert logs, "progress lines from the training process should reach the run's event log"
    # the last step's line always comes, with the rate and the time left
    assert re.fullmatch(r"base_model: 30/30 steps \(100%\), loss=[\d.e+-]+, "
                        r"[\d.]+ steps/s, ETA 0s", logs[-1]), logs
    # The asset's value is a JSON reference that downstream assets receive, not the model itself.
    reference = result.output_for_node("base_model")
    assert reference["model_path"] == str(model_path)
    assert json.loads((tmp_path / "base_model" / "all.json").read_text()) == reference


def test_standalone_entry_prints_json_lines(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "resources.pipes_entry",
            "base_model",
            "--output-dir",
            str(tmp_path / "m"),
            "--config",
            json.dumps({**TINY, "pretrain_steps": 5}),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["step"] for line in lines if "step" in line] == [1, 2, 3, 4, 5]
    assert lines[-1]["model_path"] == str(tmp_path / "m")
    # progress lines go to stderr (the terminal), stdout stays JSON
    assert re.search(r"^base_model: 5/5 steps \(100%\), loss=\S+, .* steps/s, ETA 0s$",
                     result.stderr, flags=re.M), result.stderr


def test_accelerate_launch_runs_the_task_and_reports_through_pipes(tmp_path):
    """launcher: accelerate wraps the same entry point in `accelerate launch` (one CPU process
    here; one per GPU in production) and the metrics still arrive through Pipes."""
    compute = ComputeResource(models_dir=str(tmp_path / "models"), launcher="accelerate",
                              num_processes=1)
    command = compute.command("base_model", {}, tmp_path / "x")
    assert command[1:6] == ["-m", "accelerate.commands.launch", "--num_processes", "1",
                            "--module"]
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [models.base_model], instance=instance,
            resources={"compute": compute, "io_manager": DatasetIOManager(root=str(tmp_path))},
            run_config={"ops": {"base_model": {"config": {**TINY, "pretrain_steps": 5}}}},
        )
    assert result.success
    metadata = result.asset_materializations_for_node("base_model")[0].metadata
    assert len(metadata["losses"].value) == 5


def test_only_rank_zero_reports(tmp_path):
    """Under `accelerate launch` every process runs the entry point; ranks above 0 train but
    neither print nor report, so nothing arrives twice."""
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "resources.pipes_entry", "base_model", "--output-dir",
         str(tmp_path / "m"), "--config", json.dumps({**TINY, "pretrain_steps": 2})],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "RANK": "1"}, check=True,
    )
    assert [line for line in result.stdout.splitlines() if line.startswith("{")] == []
    assert (tmp_path / "m" / "config.json").exists()  # it did train
