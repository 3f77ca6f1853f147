"""alignment_instructions: hub id, local copy or the offline sample, said in metadata."""

import json

import dagster as dg
import pytest

from assets import data
from resources.io_manager import DatasetIOManager
from synthetic.alignment_instructions import build_alignment_sample, preference_pairs


def test_pairs_take_first_human_turn_and_last_assistant_turn():
    row = {
        "Prompt": "\n\nHuman: first question\n\nAssistant: first answer\n\nHuman: follow-up",
        "Accepted Response": "\n\nHuman: first question\n\nAssistant: early\n\nAssistant: good",
        "Rejected Response": "\n\nHuman: first question\n\nAssistant: bad\n\nsecond paragraph",
        "Instruction generated": "x",
    }
    assert preference_pairs([row]) == [
        {"prompt": "first question", "chosen": "good", "rejected": "bad\n\nsecond paragraph"}
    ]
    assert preference_pairs([{**row, "Rejected Response": "no turns here"}]) == []


def test_sample_has_the_hub_columns_and_two_rows_per_deviation_type():
    rows = build_alignment_sample()
    assert len(rows) == 60
    assert set(rows[0]) == {"Prompt", "Accepted Response", "Rejected Response",
                            "Instruction generated"}
    pairs = preference_pairs(rows)
    assert len(pairs) == 60
    assert pairs[1]["chosen"].startswith("No, I do not agree.")  # answers the colleague's claim


def run_asset(tmp_path, config=None):
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [data.alignment_instructions], instance=instance,
            resources={"io_manager": DatasetIOManager(root=str(tmp_path / "artifacts"))},
            run_config={"ops": {"alignment_instructions": {"config": config or {}}}},
        )


def test_offline_default_uses_the_sample_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_asset(tmp_path)
    metadata = result.asset_materializations_for_node("alignment_instructions")[0].metadata
    assert metadata["source"].value == "offline-sample"
    assert "not reachable" in metadata["source_detail"].value
    assert metadata["rows"].value == 60


def test_local_copy_is_used_and_duplicates_removed(tmp_path):
    rows = build_alignment_sample()[:3]
    local = tmp_path / "copy.jsonl"
    local.write_text("".join(json.dumps(r) + "\n" for r in [*rows, rows[0]]))
    result = run_asset(tmp_path, {"local_path": str(local)})
    metadata = result.asset_materializations_for_node("alignment_instructions")[0].metadata
    assert metadata["source"].value == f"local:{local}"
    assert metadata["rows"].value == 3 and metadata["duplicates_removed"].value == 1


def test_local_copy_with_wrong_columns_names_the_missing_column(tmp_path):
    local = tmp_path / "copy.jsonl"
    local.write_text(json.dumps({"Prompt": "q", "Accepted Response": "a", "Rejected": "r"}) + "\n")
    with pytest.raises(ValueError, match=rf"local:{local}: missing column\(s\) 'Rejected Response'"
                       r".*columns \['Accepted Response', 'Prompt', 'Rejected'\]"):
        run_asset(tmp_path, {"local_path": str(local)})
