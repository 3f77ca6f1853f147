"""Test-wide settings: no network look-ups, no telemetry."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

# PostgreSQL fixtures (pg_database, pg_url) for every test module.
pytest_plugins = ["pg"]
