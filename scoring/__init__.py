"""Plain-Python scoring: GxP metrics, reference auditor, statistics, prompts (no Dagster import)."""
