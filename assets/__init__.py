"""Dagster assets and asset checks, grouped by stage: data, evaluation, reports."""
