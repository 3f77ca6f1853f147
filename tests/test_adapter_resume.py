"""A killed training run resumes from its last checkpoint when the asset is re-materialized."""

import shutil
from pathlib import Path

import dagster as dg
from test_base_model_pipes import TINY

from assets import data, models
from resources.compute import ComputeResource
from resources.io_manager import DatasetIOManager
from resources.warehouse import WarehouseResource

QLORA = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 2}


def test_rematerializing_continues_an_interrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resources = {
        "compute": ComputeResource(models_dir=str(tmp_path / "models")),
        "io_manager": DatasetIOManager(root=str(tmp_path / "artifacts")),
        "warehouse": WarehouseResource(url=f"sqlite:///{tmp_path / 'warehouse.sqlite'}"),
    }
    assets = [data.alignment_instructions, models.base_model, models.qlora_adapter]

    def train_qlora():
        result = dg.materialize(assets, selection=["qlora_adapter"], instance=instance,
                                resources=resources,
                                run_config={"ops": {"qlora_adapter": {"config": QLORA}}})
        assert result.success
        return result.output_for_node("qlora_adapter")

    with dg.instance_for_test() as instance:
        dg.materialize(assets, selection=["alignment_instructions", "base_model"],
                       instance=instance, resources=resources,
                       run_config={"ops": {"base_model": {"config": TINY}}})
        first = train_qlora()
        folder = Path(first["adapter_path"]).parent
        # What a SIGKILL after the step-2 checkpoint leaves: checkpoint-2, nothing finished.
        for leftover in ("adapter", "checkpoints/checkpoint-4"):
            shutil.rmtree(folder / leftover)
        (folder / "model_card.md").unlink()
        resumed = train_qlora()
        again = train_qlora()  # the folder is finished now: a fresh run, from step 0

    assert not first["continued_interrupted_run"] and first["resumed_from"] is None
    assert resumed["continued_interrupted_run"]
    assert Path(resumed["adapter_path"]).parent == folder  # the interrupted run's folder
    assert resumed["resumed_from"] == str(folder / "checkpoints" / "checkpoint-2")
    assert resumed["steps"] == 4 and resumed["losses"][:2] == first["losses"][:2]
    assert resumed["model_version"] != first["model_version"]  # a new archive, a new version
    assert not again["continued_interrupted_run"] and again["resumed_from"] is None
    assert Path(again["adapter_path"]).parent != folder
