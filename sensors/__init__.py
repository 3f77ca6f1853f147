"""Sensors: model registry (more arrive with the orchestration issue)."""
