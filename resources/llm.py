"""LLM resource: wraps resources.clients.llm.LLMClient (litellm with cache, retries and cost)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.clients.llm import LLMClient


class LLMResource(dg.ConfigurableResource):
    """Every LLM API call of an asset goes through this client. API keys are never configured
    here: each model's entry in configs/models.yaml names the environment variable to read."""

    cache_dir: str = Field(
        description="Disk cache of completions (key: model, prompt version, input hash)."
    )
    max_concurrency: int = Field(
        16,
        description="Concurrent calls per model (a model's own "
        "max_concurrency in configs/models.yaml can lower it).",
    )
    max_retries: int = Field(4, description="Retries on 429, 5xx, timeouts and connection errors.")
    timeout_s: float = Field(60.0, description="Per-call timeout unless the model sets timeout_s.")

    def get_client(self) -> LLMClient:
        return LLMClient(
            cache_dir=self.cache_dir,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
        )


def llm_resource(root: Path) -> LLMResource:
    """Cache under var/llm_cache, or $GXPLAB_LLM_CACHE_DIR."""
    return LLMResource(
        cache_dir=os.environ.get("GXPLAB_LLM_CACHE_DIR", str(root / "var" / "llm_cache"))
    )
