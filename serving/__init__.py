"""An OpenAI-compatible server for the base model and its adapters (issue 6): dynamic batching,
streaming, a response cache, guardrails, auth, limits and metrics. Plain Python: no Dagster."""

from serving.app import create_app
from serving.catalog import ServedModel, load_catalog, parse_model_spec
from serving.settings import ServingSettings, load_serving_settings

__all__ = ["ServedModel", "ServingSettings", "create_app", "load_catalog",
           "load_serving_settings", "parse_model_spec"]
