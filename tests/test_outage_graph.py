"""An API outage through the Dagster graph: failed calls are not scored as answers, and the
leaderboard says how many calls failed instead of ranking an outage."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest
from fake_openai_server import FakeReply, batch_records_from_request
from graph_resources import local_resources, openai_compatible_graph

from assets import all_assets
from assets.partitions import model_partitions, model_split_key
from synthetic.contracts import CALL_FAILED

ASSETS = all_assets()
MODEL = "openai-compatible"


def down(_body: dict, _index: int) -> FakeReply:
    return FakeReply(status=500)


def clean_answer(body: dict) -> FakeReply:
    batch = batch_records_from_request(body)[0]["batch_id"]
    return FakeReply(content=json.dumps({"summary": f"{batch}: clean", "findings": []}))


@pytest.fixture
def graph(tmp_path, monkeypatch):
    with openai_compatible_graph(tmp_path, monkeypatch, down, "flaky-model") as (instance, server):
        instance.add_dynamic_partitions(model_partitions.name, [MODEL])
        materialize = _materializer(instance, local_resources(tmp_path, max_retries=0))
        materialize(["gxp_site_master"])
        materialize(["gxp_records", "gxp_labels"], partition_key="benchmark",
                    run_config={"ops": {"gxp_batch_records": {"config": {"n_batches": 8}}}})
        yield materialize, server


def _materializer(instance, resources):
    def materialize(selection, **kwargs):
        result = dg.materialize(ASSETS, selection=selection, instance=instance,
                                resources=resources, **kwargs)
        assert result.success
        return result

    return materialize


def _audit_and_board(materialize):
    audit = materialize(["gxp_predictions", "gxp_scores"],
                        partition_key=model_split_key(MODEL, "benchmark"))
    board = materialize(["gxp_leaderboard"]).output_for_node("gxp_leaderboard")
    return audit, board.set_index("model_id").loc[MODEL]


def test_a_model_whose_every_call_fails_is_an_outage_not_a_score(graph):
    materialize, server = graph
    audit, row = _audit_and_board(materialize)
    predictions = audit.output_for_node("gxp_predictions")
    assert predictions[CALL_FAILED].all() and server.n_requests == 8
    scores_event = audit.asset_materializations_for_node("gxp_scores")[0]
    assert scores_event.metadata["status"].value.startswith("not scored: every call failed")
    assert row["status"] == "outage: 8 of 8 calls failed"
    assert pd.isna(row["rank"]) and pd.isna(row.get("gxp1_f1"))  # no score, no rank


def test_a_partial_outage_is_scored_over_the_answered_batches(graph):
    materialize, server = graph
    _, row = _audit_and_board(materialize)
    assert row["status"] == "outage: 8 of 8 calls failed"
    # Now the provider answers seven batches ("clean") and fails one.
    server.responder = lambda body, index: (FakeReply(status=429) if "BM-0003" in json.dumps(body)
                                            else clean_answer(body))
    audit, row = _audit_and_board(materialize)
    metadata = audit.asset_materializations_for_node("gxp_scores")[0].metadata
    assert metadata["batches_call_failed"].value == 1
    assert metadata["coverage"].value == pytest.approx(7 / 8)
    assert row["status"] == "audited 1/5 splits; 1 of 8 calls failed"
    assert row["rank"] == 1 and row["coverage"] == pytest.approx(7 / 8)
    assert row["invalid_output_rate"] == 0.0  # a failed call is not an invalid output
