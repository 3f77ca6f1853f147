"""The embedded default's resources rooted in one test folder (what `dg.materialize` gets in the
graph tests): local files, a SQLite warehouse, the LLM cache, models built on the CPU."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from fake_openai_server import FakeOpenAIServer, Responder

from resources.artifacts import ArtifactsResource
from resources.compute import ComputeResource
from resources.io_manager import DatasetIOManager
from resources.llm import LLMResource
from resources.warehouse import WarehouseResource


def local_resources(root: Path, **llm_settings: Any) -> dict[str, Any]:
    """io_manager, compute, artifacts, llm (with `llm_settings`, e.g. max_retries) and warehouse
    under `root`."""
    return {
        "io_manager": DatasetIOManager(root=str(root / "artifacts")),
        "compute": ComputeResource(models_dir=str(root / "models")),
        "artifacts": ArtifactsResource(root=str(root / "artifacts")),
        "llm": LLMResource(cache_dir=str(root / "llm_cache"), **llm_settings),
        "warehouse": WarehouseResource(url=f"sqlite:///{root / 'warehouse.sqlite'}"),
    }


@contextmanager
def openai_compatible_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, responder: Responder,
                            model: str) -> Iterator[tuple[dg.DagsterInstance, FakeOpenAIServer]]:
    """A test Dagster instance under `tmp_path` with the registry's `openai-compatible` candidate
    pointed at a local fake server answering with `responder` as `model`."""
    with FakeOpenAIServer(responder) as server:
        monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_BASE", server.base_url)
        monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_MODEL", model)
        monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_API_KEY", "sk-test-not-a-secret")
        (tmp_path / "dagster_home").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
            yield instance, server


def no_models_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model in the test process (the Dagster run worker of `dg.materialize`) fails:
    local generation must run in a generate or hidden_states task (assets/generation.py)."""
    from training import inference

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("a model was loaded in the Dagster run worker, not in a task")

    monkeypatch.setattr(inference.LocalGenerator, "__init__", refuse)
