"""The `hf` profile of base_model: a hub id or local folder, resolved and described, not copied."""

import json
from pathlib import Path

import dagster as dg
import pytest
import torch
from test_base_model_pipes import TINY as TINY_CONFIG
from test_embedded_model import TINY

from assets import models
from resources.compute import ComputeResource
from resources.io_manager import DatasetIOManager
from training.embedded_model import BaseModelOfflineError, build_embedded_base_model
from training.tasks import base_model_task


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A saved Llama folder standing in for a downloaded hub model."""
    folder = tmp_path_factory.mktemp("hf") / "llama"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(folder, TINY)
    torch.set_num_threads(previous)
    return folder


def test_a_local_folder_is_described_not_copied(saved_model, tmp_path):
    from transformers import AutoModelForCausalLM

    reference = base_model_task({"profile": "hf", "model_id": str(saved_model)},
                                tmp_path / "out", lambda **_: None)
    real = AutoModelForCausalLM.from_pretrained(saved_model)
    assert reference["profile"] == "hf"
    assert reference["model_path"] == str(saved_model.resolve())
    assert reference["architecture"] == "LlamaForCausalLM"
    assert reference["parameter_count"] == sum(p.numel() for p in real.parameters())
    assert reference["chat_template"] == "with generation markers"
    assert reference["size_bytes"] > 0
    assert json.loads((tmp_path / "out" / "gxplab_model.json").read_text()) == reference
    assert not (tmp_path / "out" / "model.safetensors").exists()  # nothing copied


def test_a_hub_id_while_offline_fails_at_once_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelOfflineError, match="hub is offline.*profile: embedded"):
        base_model_task({"profile": "hf", "model_id": "no-such-org/no-such-model-x"},
                        tmp_path, lambda **_: None)


def test_bad_profile_config_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="field 'profile'"):
        base_model_task({"profile": "gguf"}, tmp_path, lambda **_: None)
    with pytest.raises(ValueError, match=r"\['pretrain_steps'\] do not apply to profile hf"):
        base_model_task({"profile": "hf", "model_id": "x", "pretrain_steps": 3}, tmp_path,
                        lambda **_: None)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        base_model_task({"profile": "hf", "model_id": str(tmp_path / "missing")}, tmp_path,
                        lambda **_: None)


def test_base_model_asset_with_the_hf_profile(saved_model, tmp_path):
    compute = ComputeResource(models_dir=str(tmp_path / "models"))
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [models.base_model], instance=instance,
            resources={"compute": compute, "io_manager": DatasetIOManager(root=str(tmp_path))},
            run_config={"ops": {"base_model": {"config": {"profile": "hf",
                                                          "model_id": str(saved_model)}}}},
        )
    assert result.success
    reference = result.output_for_node("base_model")
    assert reference["profile"] == "hf" and reference["model_path"] == str(saved_model.resolve())
    assert set(TINY_CONFIG) - set(models.BaseModelConfig.model_fields) == set()
