"""Evaluation results in the warehouse: record_evaluation from a materialized asset (one run per
model, per-item rows, provenance with the model version) and the model_version that gxp
predictions and scores carry for each kind of candidate model."""

from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest

import assets.evaluation_records as records_module
from assets.evaluation import _provenance
from assets.evaluation_records import base_model_version, base_version_of, record_evaluation
from resources.clients import warehouse as wmod
from resources.warehouse import WarehouseResource
from scoring.model_registry import load_model_registry, resolve_litellm_model

NAN = float("nan")
# Two models in the evaluation contract's long form: a tuned adapter and its base model.
CONTRACT = pd.DataFrame(
    [
        ("batchqa_adapter", "base_model", "1a2b3c4d-5e6f", "Q1", "exact_match", 1.0, "ok", None),
        ("batchqa_adapter", "base_model", "1a2b3c4d-5e6f", "Q2", "exact_match", 0.0, "ok", None),
        ("batchqa_adapter", "base_model", "1a2b3c4d-5e6f", "Q3", "exact_match", NAN, "failed",
         "no answer in the output"),
        ("base_model", None, "base:embedded-llama-tiny", "Q1", "exact_match", 0.0, "ok", None),
        ("base_model", None, "base:embedded-llama-tiny", "Q2", "exact_match", 0.0, "ok", None),
        ("base_model", None, "base:embedded-llama-tiny", "Q3", "exact_match", 1.0, "ok",
         "matched the reference"),
    ],
    columns=["model_id", "base_model_id", "model_version", "item_id", "metric", "value", "status",
             "detail"],
)  # fmt: skip


def scores_of(rows: pd.DataFrame) -> list[dict]:
    ok = rows[rows["status"] == "ok"]
    return [{"metric": "exact_match", "value": float(ok["value"].mean()), "ci_low": None,
             "ci_high": None, "n": len(ok)}]  # fmt: skip


@pytest.fixture
def warehouse(tmp_path, monkeypatch) -> WarehouseResource:
    monkeypatch.setattr(records_module, "code_version", lambda: "c0de+dirty")
    return WarehouseResource(url=f"sqlite:///{tmp_path}/warehouse.sqlite")


def materialize(asset, warehouse: WarehouseResource, instance: dg.DagsterInstance, **kwargs):
    return dg.materialize_to_memory(
        [asset], instance=instance, resources={"warehouse": warehouse}, **kwargs
    )


def test_record_evaluation_writes_one_run_per_model_with_its_items(warehouse) -> None:
    run_ids: list[int] = []

    @dg.asset(name="batchqa_eval")
    def batchqa_eval(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
        for model_id, rows in CONTRACT.groupby("model_id", sort=False):
            for _ in range(2):  # a retried call of the same step replaces, never duplicates
                run_ids.append(record_evaluation(
                    context, warehouse, asset_key="batchqa_eval", model_id=model_id,
                    model_version=rows["model_version"].iloc[0], split="test",
                    dataset_hash="d" * 64, prompt_version="batchqa-v1", items=rows,
                    scores=scores_of(rows), summary={"n_items": len(rows), "mean": NAN},
                ))  # fmt: skip

    instance = dg.DagsterInstance.ephemeral()
    result = materialize(batchqa_eval, warehouse, instance)
    assert result.success
    assert run_ids[0] == run_ids[1] != run_ids[2] == run_ids[3]
    client = warehouse.client
    assert client.table_counts()["benchmark_runs"] == 2
    assert client.table_counts()["item_scores"] == len(CONTRACT)

    runs = client.latest_run_summaries(asset_key="batchqa_eval").set_index("model_id")
    assert runs.loc["batchqa_adapter", "partition_key"] == "batchqa_adapter"
    assert set(runs["status"]) == {"succeeded"}
    assert set(runs["dagster_run_id"]) == {result.run_id}
    assert set(runs["code_version"]) == {"c0de+dirty"}
    assert runs.loc["base_model", "model_version"] == "base:embedded-llama-tiny"
    assert runs.loc["base_model", "summary"] == {"n_items": 3, "mean": None}

    items = client.item_scores(asset_key="batchqa_eval")
    columns = ["model_id", "model_version", "item_id", "metric", "status"]
    assert items[columns].to_dict("records") == CONTRACT[columns].to_dict("records")
    assert items["value"].isna().tolist() == CONTRACT["value"].isna().tolist()
    assert items["value"].fillna(-1).tolist() == CONTRACT["value"].fillna(-1).tolist()
    assert set(items["split"]) == {"test"} and set(items["dataset_hash"]) == {"d" * 64}
    assert set(items["prompt_version"]) == {"batchqa-v1"}
    assert items.loc[2, "detail"] == "no answer in the output"

    latest = client.latest_evaluation_scores("batchqa_eval")
    got = latest[["model_id", "model_version", "metric", "value", "n"]].to_dict("records")
    assert got == [  # the mean of the "ok" items: (1 + 0) / 2 and (0 + 0 + 1) / 3
        {"model_id": "base_model", "model_version": "base:embedded-llama-tiny",
         "metric": "exact_match", "value": pytest.approx(1 / 3), "n": 3},
        {"model_id": "batchqa_adapter", "model_version": "1a2b3c4d-5e6f",
         "metric": "exact_match", "value": 0.5, "n": 2},
    ]  # fmt: skip
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(
        f"batchqa_eval: warehouse run {run_ids[2]} for base_model (base:embedded-llama-tiny) on "
        "test: 3 item rows (0 failed), 1 scores" in m
        for m in messages
    )


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (CONTRACT.drop(columns="status"), r"items lack the contract column\(s\) \['status'\]"),
        # every model's rows passed for one model: caught by the lineage check
        (CONTRACT, r"item_scores row 3 \(item_id='Q1', metric='exact_match'\): field "
                   r"model_id='base_model' differs from provenance model_id='batchqa_adapter'"),
        (CONTRACT.head(3).assign(value=[1.0, NAN, NAN], status="ok"),
         r"item_scores row 1 \(item_id='Q2', .*field value is null"),
    ],
)  # fmt: skip
def test_bad_items_fail_the_step_naming_the_row_and_field(warehouse, items, message) -> None:
    @dg.asset(name="batchqa_eval")
    def batchqa_eval(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
        record_evaluation(
            context, warehouse, asset_key="batchqa_eval", model_id="batchqa_adapter",
            model_version="1a2b3c4d-5e6f", split="test", dataset_hash="d" * 64,
            prompt_version="batchqa-v1", items=items, scores=[],
        )  # fmt: skip

    with pytest.raises(ValueError, match=message):
        materialize(batchqa_eval, warehouse, dg.DagsterInstance.ephemeral())
    assert sum(warehouse.client.table_counts().values()) == 0


# --- model_version of the gxp_predictions / gxp_scores provenance --------------------------------
def provenance_of(model_id: str, instance: dg.DagsterInstance) -> wmod.Provenance:
    context = SimpleNamespace(
        partition_key=dg.MultiPartitionKey({"model": model_id, "split": "benchmark"}),
        instance=instance,
        run=SimpleNamespace(run_id="run-1", root_run_id=None),
    )
    return _provenance(context, "h" * 64, "gxp-audit-v1")


def first(kind: str, *, adapter: bool | None = None):
    for model in load_model_registry():
        if model.kind == kind and (adapter is None or bool(model.adapter) == adapter):
            return model
    pytest.skip(f"configs/models.yaml has no {kind} model (adapter={adapter})")


def test_model_version_per_kind(monkeypatch) -> None:
    monkeypatch.setattr(wmod, "code_version", lambda: "abc123")
    instance = dg.DagsterInstance.ephemeral()
    rule_based, api = first("rule_based"), first("litellm")
    assert provenance_of(rule_based.id, instance).model_version == "rule_based:abc123"
    assert provenance_of(api.id, instance).model_version == resolve_litellm_model(api)
    assert provenance_of("no-such-model", instance).model_version == "unversioned"

    tuned, base = first("local", adapter=True), first("local", adapter=False)
    # Not materialized yet (gxp_predictions then fails with its own message): placeholders.
    assert provenance_of(tuned.id, instance).model_version == "unversioned"
    assert provenance_of(base.id, instance).model_version == "unversioned"
    for asset, metadata in [
        ("base_model", {"model_path": "/models/base", "parameters": 1234}),
        (tuned.adapter, {"adapter_path": "/models/a", "model_version": "0f1e2d3c-4b5a69788796"}),
    ]:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=asset, metadata=metadata)
        )
    prov = provenance_of(tuned.id, instance)
    assert prov.model_version == "0f1e2d3c-4b5a69788796"
    assert prov.prompt_version != "gxp-audit-v1"  # local models use the record prompt
    run_id = instance.get_latest_materialization_event(dg.AssetKey("base_model")).run_id
    assert provenance_of(base.id, instance).model_version == base_model_version(None, run_id)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="base_model", metadata={"model_id": "org/tiny-llm",
                                                                  "model_path": "/hub/cache"})
    )  # fmt: skip
    assert provenance_of(base.id, instance).model_version.startswith("base:org/tiny-llm@")
    assert base_model_version("org/tiny-llm", "3a24c413-aa41") == "base:org/tiny-llm@3a24c413"
    assert base_version_of({"run_id": "99ebdff2-4d42", "model_path": "/m"}) == (
        "base:embedded@99ebdff2")
