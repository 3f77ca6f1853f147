"""The GxP graph end to end, in process: data -> predictions -> scores -> leaderboard.

Candidates: the rule-based reference auditor, the `openai-compatible` registry entry pointed at a
local fake OpenAI server (a deliberately partial auditor), and gpt-4o without its key (skipped).
"""

from __future__ import annotations

import json

import dagster as dg
import pytest
from fake_openai_server import FakeReply, batch_records_from_request
from graph_resources import local_resources, openai_compatible_graph

from assets import all_assets
from assets.partitions import model_partitions, model_split_key

ASSETS = all_assets()
SPLITS = ("benchmark", "control_clean", "adversarial")
FAKE_TYPES = {"empty_notes_field", "negative_quantity"}


def partial_auditor(body: dict, _index: int) -> FakeReply:
    """Finds only empty comments and negative quantities, like a weak model would."""
    findings = []
    for record in batch_records_from_request(body):
        if "comments" in record and not str(record["comments"] or "").strip():
            findings.append(
                {
                    "record_id": record["record_id"],
                    "deviation_type": "empty_notes_field",
                    "field": "comments",
                    "evidence": "empty",
                }
            )
        quantity = record.get("qty_actual")
        if isinstance(quantity, int | float) and quantity < 0:
            findings.append(
                {
                    "record_id": record["record_id"],
                    "deviation_type": "negative_quantity",
                    "field": "qty_actual",
                    "evidence": str(quantity),
                }
            )
    return FakeReply(content=json.dumps({"summary": "checked", "findings": findings}))


@pytest.fixture
def graph(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with openai_compatible_graph(tmp_path, monkeypatch, partial_auditor,
                                 "partial-auditor") as (instance, server):
        yield instance, local_resources(tmp_path, max_retries=1), server


def _materialize(instance, resources, selection, **kwargs):
    result = dg.materialize(
        ASSETS, selection=selection, instance=instance, resources=resources, **kwargs
    )
    assert result.success
    return result


def test_graph_end_to_end(graph):
    instance, resources, server = graph
    models = ["reference_auditor", "openai-compatible", "gpt-4o"]
    instance.add_dynamic_partitions(model_partitions.name, models)
    _materialize(instance, resources, ["gxp_site_master"])
    labels = {}
    for split in SPLITS:
        result = _materialize(
            instance,
            resources,
            ["gxp_records", "gxp_labels"],
            partition_key=split,
            run_config={"ops": {"gxp_batch_records": {"config": {"n_batches": 8}}}},
        )
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 4 and all(c.passed for c in checks), [c.check_name for c in checks]
        labels[split] = result.output_for_node("gxp_batch_records", "gxp_labels")
    for model_id in models:
        for split in SPLITS:
            _materialize(
                instance,
                resources,
                ["gxp_predictions", "gxp_scores"],
                partition_key=model_split_key(model_id, split),
            )
    result = _materialize(instance, resources, ["gxp_leaderboard"])
    board = result.output_for_node("gxp_leaderboard").set_index("model_id")

    # The reference auditor is perfect by construction (it is also the data check).
    assert board.loc["reference_auditor", "gxp1_f1"] == 1.0
    assert board.loc["reference_auditor", "gxp2_micro_f1"] == 1.0
    assert board.loc["reference_auditor", "clean_fpr"] == 0.0
    # The partial auditor finds exactly the labelled deviations of its two types, no others.
    benchmark = labels["benchmark"]
    found = sum(row["deviation_type"] in FAKE_TYPES for row in benchmark)
    assert board.loc["openai-compatible", "gxp2_micro_f1"] == pytest.approx(
        2 * found / (found + len(benchmark))
    )
    assert server.n_requests == 3 * 8  # one call per batch and split, none for gpt-4o
    assert (
        board.loc["gpt-4o", "status"] == "skipped: environment variable OPENAI_API_KEY is not set"
    )
    assert board.index[0] == "reference_auditor"
    assert board.loc["reference_auditor", "status"] == "audited 3/5 splits"

    leaderboard_event = result.asset_materializations_for_node("gxp_leaderboard")[0]
    assert "reference_auditor" in leaderboard_event.metadata["leaderboard"].value
    assert leaderboard_event.metadata["plot"].value.startswith("![")

    warehouse = resources["warehouse"].client
    counts = warehouse.table_counts()
    assert counts["llm_calls"] == 3 * 8
    scores = warehouse.latest_scores(model_ids=["openai-compatible"], splits=["benchmark"])
    assert set(scores["prompt_version"]) == {"gxp-audit-v1"}
    reference = warehouse.latest_scores(model_ids=["reference_auditor"])
    assert set(reference["prompt_version"]) == {"none (rule-based)"}
    assert scores["dataset_hash"].str.len().eq(64).all()


def test_rerun_is_served_from_llm_cache(graph):
    instance, resources, server = graph
    instance.add_dynamic_partitions(model_partitions.name, ["openai-compatible"])
    _materialize(instance, resources, ["gxp_site_master"])
    _materialize(
        instance,
        resources,
        ["gxp_records", "gxp_labels"],
        partition_key="control_clean",
        run_config={"ops": {"gxp_batch_records": {"config": {"n_batches": 4}}}},
    )
    key = model_split_key("openai-compatible", "control_clean")
    first = _materialize(instance, resources, ["gxp_predictions"], partition_key=key)
    assert server.n_requests == 4
    second = _materialize(instance, resources, ["gxp_predictions"], partition_key=key)
    assert server.n_requests == 4
    metadata = second.asset_materializations_for_node("gxp_predictions")[0].metadata
    assert metadata["n_cached"].value == 4
    assert first.output_for_node("gxp_predictions").equals(
        second.output_for_node("gxp_predictions")
    )
