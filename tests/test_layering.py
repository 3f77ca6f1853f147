"""The layering of DESIGN.md: the plain-Python packages never import Dagster (assets, resources,
jobs and sensors wrap them), and definitions.py never imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLAIN = ("synthetic", "scoring", "training", "retrieval", "serving", "resources/clients")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PLAIN)
def test_plain_packages_do_not_import_dagster(package):
    offenders = sorted(str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")
                       if {"dagster", "dagster_aws", "dagster_postgres", "dagster_k8s"}
                       & imported_modules(p))
    assert offenders == [], f"{package} must stay free of Dagster: {offenders}"


def test_definitions_do_not_import_torch():
    assert "torch" not in imported_modules(ROOT / "definitions.py")
