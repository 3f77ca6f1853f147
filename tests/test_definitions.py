"""Definitions load, stay torch-free, and match the asset-spec snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "snapshots" / "asset_specs.json"


def _asset_specs() -> dict:
    from definitions import defs

    graph = defs.resolve_asset_graph()
    specs = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        partitions = node.partitions_def
        specs[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": type(partitions).__name__ if partitions else None,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return specs


def test_definitions_load_and_validate():
    from definitions import defs

    dg.Definitions.validate_loadable(defs)
    jobs = ("gxp_site_master_job", "gxp_data_job", "gxp_evaluation_job", "gxp_models_job",
            "gxp_reports_job")
    for job in jobs:
        assert defs.resolve_job_def(job) is not None


def test_asset_specs_match_snapshot():
    """A change to the graph's shape must be deliberate: UPDATE_SNAPSHOTS=1 pytest rewrites it."""
    specs = _asset_specs()
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(specs, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), (
        "no snapshot yet: run UPDATE_SNAPSHOTS=1 pytest tests/test_definitions.py"
    )
    assert specs == json.loads(SNAPSHOT.read_text())
    assert specs["gxp_records"]["checks"] == [
        "deviation_rate_within_tolerance",
        "manifest_consistent_with_records",
        "records_schema_valid",
        "reference_auditor_recall",
    ]


def test_importing_definitions_does_not_import_torch():
    code = "import sys, definitions; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
