"""Test-wide settings: no network look-ups, no telemetry."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

# PostgreSQL fixtures (pg_database, pg_url) for every test module.
pytest_plugins = ["pg"]


@pytest.fixture(scope="session")
def cfg():
    """configs/datasets.yaml, parsed."""
    from synthetic.splits import load_dataset_config

    return load_dataset_config()


@pytest.fixture(scope="session")
def master(cfg):
    """The site master data built from the configured seed."""
    from synthetic.master_data import build_site_master

    return build_site_master(cfg.site_master, cfg.seed)
