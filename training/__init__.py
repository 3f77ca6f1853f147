"""Plain-Python training code (issue 3); no Dagster import."""
