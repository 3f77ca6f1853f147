"""Artifact-store resource: wraps resources.clients.artifacts.ArtifactStore for assets that write
documents beside their value (the synthesis report's Markdown, HTML and images)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from resources.clients.artifacts import ArtifactStore


class ArtifactsResource(dg.ConfigurableResource):
    """Files under `root` (local disk; S3 with the production profile), written atomically."""

    root: str = Field(description="Folder of the artifact store ($GXPLAB_ARTIFACTS_DIR).")

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)
