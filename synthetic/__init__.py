"""Seeded synthetic data generators (plain Python, no Dagster import)."""
