"""Artifact-store resource: wraps resources.clients.artifacts.ArtifactStore for assets that write
documents beside their value (the synthesis report's Markdown, HTML and images)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from resources.clients.artifacts import ArtifactStore


class ArtifactsResource(dg.ConfigurableResource):
    """Files under `root` on local or shared disk, written atomically.

    Local only: its callers write folders through `store.path_for` (the synthesis report).
    Datasets go to S3 through DatasetIOManager's `s3` backend (S3ArtifactStore).
    """

    root: str = Field(description="Folder of the artifact store ($GXPLAB_ARTIFACTS_DIR).")

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)
