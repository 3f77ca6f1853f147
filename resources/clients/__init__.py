"""Plain clients for outside systems (LLM APIs, results warehouse); no Dagster import."""
