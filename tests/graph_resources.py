"""The embedded default's resources rooted in one test folder (what `dg.materialize` gets in the
graph tests): local files, a SQLite warehouse, the LLM cache, models built on the CPU."""

from pathlib import Path
from typing import Any

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
