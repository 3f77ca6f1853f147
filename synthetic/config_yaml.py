"""Reading the versioned YAML files of configs/ with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_versioned_mapping(path: Path, expected: str) -> tuple[dict[str, Any], str, str]:
    """(the file's mapping, `where` for error messages, its non-empty `version`).

    `expected` lists the top-level keys for the error when the file is not a mapping."""
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    where = str(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with {expected}")
    version = raw.get("version")
    if not isinstance(version, str) or not version.strip():
        raise ValueError(f"{where}: field 'version' must be a non-empty string")
    return raw, where, version
