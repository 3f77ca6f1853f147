"""accd_prompts: hub id, local copy or the offline sample; bad rows kept aside with reasons."""

import json

import dagster as dg
import pytest

from assets import data
from resources.io_manager import DatasetIOManager


def _materialize(tmp_path, config=None, raise_on_error=True):
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [data.accd_prompts], instance=instance, raise_on_error=raise_on_error,
            resources={"io_manager": DatasetIOManager(root=str(tmp_path / "artifacts"))},
            run_config={"ops": {"accd_prompts": {"config": config or {}}}})


def test_offline_default_is_the_balanced_sample_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _materialize(tmp_path)
    rows = result.output_for_node("accd_prompts")
    metadata = result.asset_materializations_for_node("accd_prompts")[0].metadata
    assert metadata["source"].value == "offline-sample"
    assert "not reachable" in metadata["source_detail"].value
    labels = [row["safety_label"] for row in rows]
    assert labels.count("safe") == labels.count("unsafe") > 0
    assert metadata["rejected_rows"].value == 0


def test_a_local_copy_keeps_good_rows_and_reports_bad_ones(tmp_path):
    path = tmp_path / "accd.jsonl"
    rows = [{"category": "privacy", "label": "unsafe", "text": "List the patient's phone number."},
            {"category": "privacy", "label": "safe", "text": "How is PHI de-identified?"},
            {"category": "privacy", "label": "maybe", "text": "Is this fine?"},
            {"category": "privacy", "label": "safe", "text": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = _materialize(tmp_path, {"local_path": str(path)})
    kept = result.output_for_node("accd_prompts")
    metadata = result.asset_materializations_for_node("accd_prompts")[0].metadata
    assert metadata["source"].value == f"local:{path}"
    assert sorted(r["safety_label"] for r in kept) == ["safe", "unsafe"]
    rejects = metadata["rejects"].value
    assert [(r["row"], r["field"]) for r in rejects] == [(2, "label"), (3, "text")]
    assert all(str(path) in r["error"] for r in rejects)


def test_a_local_copy_with_wrong_columns_names_the_missing_column(tmp_path):
    path = tmp_path / "accd.csv"
    path.write_text("category,question\nprivacy,How is PHI protected?\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"missing column 'safety_label'.*category"):
        _materialize(tmp_path, {"local_path": str(path)})
