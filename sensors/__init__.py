"""Sensors: model registry, run failures, score regression (see docs/sensors.md)."""
