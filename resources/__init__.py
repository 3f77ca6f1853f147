"""Dagster resources wrapping the plain clients in resources/clients/."""
