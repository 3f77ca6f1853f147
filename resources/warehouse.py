"""Results-warehouse resource: wraps resources.clients.warehouse.Warehouse for assets."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.clients.warehouse import Warehouse

WAREHOUSE_URL_ENV = "GXPLAB_WAREHOUSE_URL"


def default_warehouse_url(root: Path) -> str:
    return f"sqlite:///{root / 'var' / 'warehouse.sqlite'}"


class WarehouseResource(dg.ConfigurableResource):
    """SQLAlchemy results warehouse: SQLite file by default, any SQLAlchemy URL (PostgreSQL) in
    production. The schema is created or upgraded (Alembic) when a run first uses it."""

    url: str = Field(description=f"SQLAlchemy URL; set {WAREHOUSE_URL_ENV} to keep it secret.")
    _client: Warehouse | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._client = Warehouse(self.url)
        self._client.upgrade()

    @property
    def client(self) -> Warehouse:
        if self._client is None:  # used outside a run (CLI, scripts): EnvVar not resolved yet
            url = self.url.get_value() if isinstance(self.url, dg.EnvVar) else self.url
            self._client = Warehouse(url)
            self._client.upgrade()
        return self._client


def warehouse_resource(root: Path) -> WarehouseResource:
    """The URL from the environment (an EnvVar: the UI never shows it), else the SQLite default."""
    if os.environ.get(WAREHOUSE_URL_ENV):
        return WarehouseResource(url=dg.EnvVar(WAREHOUSE_URL_ENV))
    return WarehouseResource(url=default_warehouse_url(root))
