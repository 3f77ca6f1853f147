"""Models stage end to end: alignment data -> base model -> LoRA adapter, all through Pipes."""

from pathlib import Path

import dagster as dg
import pandas as pd
from test_base_model_pipes import TINY

from assets import data, models, reports
from resources.compute import ComputeResource
from resources.io_manager import DatasetIOManager
from resources.warehouse import WarehouseResource


def test_qlora_adapter_trains_on_the_base_model_it_receives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resources = {
        "compute": ComputeResource(models_dir=str(tmp_path / "models")),
        "io_manager": DatasetIOManager(root=str(tmp_path / "artifacts")),
        "warehouse": WarehouseResource(url=f"sqlite:///{tmp_path / 'warehouse.sqlite'}"),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [data.alignment_instructions, models.base_model, models.qlora_adapter,
             models.grit_adapter, reports.training_comparison],
            instance=instance, resources=resources,
            run_config={"ops": {
                "base_model": {"config": TINY},
                "qlora_adapter": {"config": {"max_steps": 3, "per_device_train_batch_size": 2}},
                "grit_adapter": {"config": {"max_steps": 3, "per_device_train_batch_size": 2,
                                            "grit_preset": "default"}},
            }},
        )
    assert result.success
    base = result.output_for_node("base_model")
    adapter = result.output_for_node("qlora_adapter")
    metadata = result.asset_materializations_for_node("qlora_adapter")[0].metadata
    assert metadata["quantization"].value == "none (no CUDA)"  # CPU fallback, said in metadata
    assert adapter["quantization"] == "none (no CUDA)"
    assert 0 < metadata["trainable_params"].value < metadata["total_params"].value
    assert len(metadata["losses"].value) == 3
    assert Path(adapter["adapter_path"]).is_dir() and Path(adapter["archive_path"]).is_file()
    card = (Path(adapter["adapter_path"]).parent / "model_card.md").read_text()
    assert base["model_path"] in card  # trained on the base model it received as input

    grit = result.output_for_node("grit_adapter")
    assert grit["optimizer"] == "grit" and grit["grit_n_layers"] == 14
    assert grit["grit_preconditioned_steps"] >= 1  # factors every step: preconditioning ran
    assert grit["losses"] != adapter["losses"]  # same data and seed, a different optimizer
    comparison = result.output_for_node("training_comparison").set_index("adapter")
    assert comparison.loc["grit_adapter", "steps"] == 3
    assert pd.isna(comparison.loc["qlora_adapter", "grit_effective_params"])  # not GRIT
    # each adapter is a registered version; the first version of a task becomes production
    warehouse = resources["warehouse"].client
    for task in ("qlora_adapter", "grit_adapter"):
        output = result.output_for_node(task)
        (version,) = warehouse.list_model_versions(task)
        assert version["version"] == output["model_version"]
        assert version["archive_sha256"] == output["archive_sha256"]
        assert warehouse.get_alias(task)["version"] == output["model_version"]
    board = result.asset_materializations_for_node("training_comparison")[0].metadata
    assert board["loss_curves"].value.startswith("![loss curves](data:image/png;base64,")
