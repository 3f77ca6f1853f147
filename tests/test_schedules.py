"""Schedules (jobs/schedules.py) and the nightly API benchmark (assets/nightly.py).

The benchmark runs the `openai-compatible` registry entry against a local fake OpenAI server that
reports every other labelled deviation plus one false positive per batch; its scores are checked
against scikit-learn and a hand count. Every other API model is skipped for its missing key.
"""

import datetime as dt
import json
from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, FakeReply, batch_records_from_request
from graph_resources import local_resources
from sklearn.metrics import f1_score

from assets import all_assets
from assets.nightly import (
    ASSET_KEY,
    DateScopedClient,
    benchmark_api_models,
    nightly_models,
)
from jobs import all_jobs
from jobs.schedules import (
    SCHEDULES_RUNNING_ENV,
    all_schedules,
    nightly_benchmark_job,
    nightly_benchmark_schedule,
    schedule_default_status,
    schedule_jobs,
    weekly_retraining_schedule,
)
from scoring.model_registry import GXP_AUDIT, load_model_registry, model_availability

ASSETS = all_assets()
API_MODELS = nightly_models(load_model_registry(benchmark=GXP_AUDIT))
N_BATCHES, MAX_BATCHES = 4, 3


def _resources(root) -> dict:
    return local_resources(root, max_retries=0)


def _defs(root) -> dg.Definitions:
    return dg.Definitions(assets=ASSETS, jobs=all_jobs,
                          schedules=all_schedules, resources=_resources(root))


# --- schedules ----------------------------------------------------------------------------------
def test_schedules_are_off_by_default():
    assert {s.name for s in all_schedules} == {"nightly_benchmark_schedule",
                                               "weekly_retraining_schedule"}
    for schedule in all_schedules:
        assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
        assert "dagster schedule start" in schedule.description
        assert "Off by default" in schedule.description
    assert schedule_default_status({}) == dg.DefaultScheduleStatus.STOPPED
    assert schedule_default_status({SCHEDULES_RUNNING_ENV: "0"}) == dg.DefaultScheduleStatus.STOPPED
    assert schedule_default_status({SCHEDULES_RUNNING_ENV: "1"}) == dg.DefaultScheduleStatus.RUNNING
    with pytest.raises(ValueError, match=SCHEDULES_RUNNING_ENV):
        schedule_default_status({SCHEDULES_RUNNING_ENV: "sometimes"})
    assert schedule_jobs == [nightly_benchmark_job]


def test_nightly_schedule_requests_the_previous_day(instance, tmp_path):
    # Definitions resolve inside the instance block: Dagster reads the current instance's
    # definitions-state storage while resolving.
    schedule = _defs(tmp_path).resolve_schedule_def(nightly_benchmark_schedule.name)
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "nightly_benchmark_job"
    for tick, expected in ((dt.datetime(2026, 11, 3, 2, 0, tzinfo=dt.UTC), "2026-11-02"),
                           (dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC), "2026-11-30")):
        with dg.build_schedule_context(instance=instance,
                                       scheduled_execution_time=tick) as context:
            [request] = schedule.evaluate_tick(context).run_requests
        assert request.partition_key == expected
        assert request.tags["gxplab/trigger"] == "scheduled-nightly-benchmark"


def test_weekly_retraining_targets_the_models_job(instance, tmp_path):
    sunday = dt.datetime(2026, 11, 8, 3, 0, tzinfo=dt.UTC)
    assert sunday.weekday() == 6
    defs = _defs(tmp_path)
    schedule = defs.resolve_schedule_def(weekly_retraining_schedule.name)
    assert schedule.job_name == "gxp_models_job"
    assert schedule.cron_schedule == "0 3 * * 0"  # Sundays 03:00
    assert schedule.execution_timezone == "UTC"
    with dg.build_schedule_context(instance=instance,
                                   scheduled_execution_time=sunday) as context:
        [request] = schedule.evaluate_tick(context).run_requests
    assert request.tags["gxplab/trigger"] == "scheduled-retraining"
    assert request.partition_key is None
    dg.validate_run_config(defs.resolve_job_def("gxp_models_job"), request.run_config)


# --- nightly benchmark --------------------------------------------------------------------------
def test_nightly_models_and_bad_selection():
    ids = [m.id for m in API_MODELS]
    assert "openai-compatible" in ids and "reference_auditor" not in ids
    assert all(m.kind == "litellm" and m.enabled for m in API_MODELS)
    assert [m.id for m in nightly_models(API_MODELS, ["openai-compatible"])] == [
        "openai-compatible"]
    with pytest.raises(ValueError, match=r"field 'models'.*reference_auditor"):
        nightly_models(load_model_registry(benchmark=GXP_AUDIT), ["reference_auditor"])


def test_date_scoped_client_prefixes_cache_keys():
    class Recorder:
        def complete_many(self, model, requests, progress=None):
            self.requests, self.closed = list(requests), False
            return ["ok"] * len(requests)

        def close(self):
            self.closed = True

    inner = Recorder()
    client = DateScopedClient(inner, "2026-11-02")
    assert client.complete_many(None, [("b1", [], "k1"), ("b2", [], "k2")]) == ["ok", "ok"]
    assert [key for _, _, key in inner.requests] == ["nightly:2026-11-02|k1",
                                                     "nightly:2026-11-02|k2"]
    client.close()
    assert inner.closed


@pytest.fixture
def nightly(instance, tmp_path, monkeypatch):
    """Site master and a small benchmark split, the fake server behind `openai-compatible`, no
    key for any other API model."""
    for model in API_MODELS:
        if model.id != "openai-compatible":
            for name in (*model.required_env, model.api_base_env):
                if name:
                    monkeypatch.delenv(name, raising=False)
    reported: dict[str, list[dict]] = {}  # record_id -> findings the fake model reports

    def responder(body: dict, _index: int) -> FakeReply:
        records = batch_records_from_request(body)
        findings = [f for r in records for f in reported.get(r["record_id"], [])]
        unlabelled = [r for r in records if r["record_id"] not in labelled]
        if unlabelled:  # one false positive per batch
            findings.append({"record_id": unlabelled[0]["record_id"],
                             "deviation_type": "empty_notes_field", "field": "comments",
                             "evidence": "invented"})
        return FakeReply(content=json.dumps({"summary": "checked", "findings": findings}))

    labelled: set[str] = set()
    with FakeOpenAIServer(responder) as server:
        monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_BASE", server.base_url)
        monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_MODEL", "nightly-auditor")
        monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_API_KEY", "sk-test-not-a-secret")
        resources = _resources(tmp_path)
        master = dg.materialize(ASSETS, selection=["gxp_site_master"], instance=instance,
                                resources=resources).output_for_node("gxp_site_master")
        data = dg.materialize(
            ASSETS, selection=["gxp_records", "gxp_labels"], partition_key="benchmark",
            instance=instance, resources=resources,
            run_config={"ops": {"gxp_batch_records": {"config": {
                "n_batches": N_BATCHES, "deviation_rate": 0.1}}}},
        )
        records = data.output_for_node("gxp_batch_records", "gxp_records")
        labels = data.output_for_node("gxp_batch_records", "gxp_labels")
        labelled.update(row["record_id"] for row in labels)
        pairs = sorted({(row["record_id"], row["deviation_type"]) for row in labels})
        for record_id, deviation_type in pairs[::2]:  # every other labelled deviation
            reported.setdefault(record_id, []).append(
                {"record_id": record_id, "deviation_type": deviation_type, "field": None,
                 "evidence": "found"})
        yield SimpleNamespace(instance=instance, resources=resources, server=server,
                              records=records, labels=labels, reported=reported,
                              master=master)


def _expected_scores(records, labels, reported) -> dict[str, float]:
    """GxP1 F1 (scikit-learn, unit record) and GxP2 micro F1 (hand count, unit record x type)
    of the fake model on the first MAX_BATCHES batches."""
    batches = list(dict.fromkeys(r["batch_id"] for r in records))[:MAX_BATCHES]
    audited = [r for r in records if r["batch_id"] in batches]
    labelled_ids = {row["record_id"] for row in labels}
    truth = {(row["record_id"], row["deviation_type"]) for row in labels
             if row["batch_id"] in batches}
    found = {(f["record_id"], f["deviation_type"])
             for r in audited for f in reported.get(r["record_id"], [])}
    false_positive_ids = set()
    for batch_id in batches:
        clean = [r["record_id"] for r in audited
                 if r["batch_id"] == batch_id and r["record_id"] not in labelled_ids]
        false_positive_ids.add(clean[0])
    flagged = {record_id for record_id, _ in found} | false_positive_ids
    y_true = [r["record_id"] in {rid for rid, _ in truth} for r in audited]
    y_pred = [r["record_id"] in flagged for r in audited]
    tp = len(found & truth)
    fp = len(found - truth) + len(false_positive_ids)
    fn = len(truth - found)
    return {"gxp1_f1": f1_score(y_true, y_pred), "gxp2_micro_f1": 2 * tp / (2 * tp + fp + fn)}


def _run(instance, resources, date: str):
    result = dg.materialize(
        ASSETS, selection=[ASSET_KEY], partition_key=date, instance=instance, resources=resources,
        run_config={"ops": {ASSET_KEY: {"config": {"max_batches": MAX_BATCHES}}}},
    )
    assert result.success
    return result


def test_nightly_benchmark_writes_history_per_date(nightly):
    instance, resources, server = nightly.instance, nightly.resources, nightly.server
    records, labels, reported = nightly.records, nightly.labels, nightly.reported
    expected = _expected_scores(records, labels, reported)
    assert 0 < expected["gxp2_micro_f1"] < 1  # the fake model is neither perfect nor useless

    first = _run(instance, resources, "2026-11-02")
    table = first.output_for_node(ASSET_KEY).set_index("model_id")
    assert server.n_requests == MAX_BATCHES
    assert set(table.index) == {m.id for m in API_MODELS}
    row = table.loc["openai-compatible"]
    assert row["status"] == "succeeded"
    assert row["model_version"] == "openai/nightly-auditor"
    assert row["gxp1_f1"] == pytest.approx(expected["gxp1_f1"])
    assert row["gxp2_micro_f1"] == pytest.approx(expected["gxp2_micro_f1"])
    assert row["n_calls"] == MAX_BATCHES and row["n_failed_calls"] == 0
    for model in API_MODELS:
        if model.id != "openai-compatible":
            assert table.loc[model.id, "status"] == "skipped"
            assert table.loc[model.id, "detail"] == model_availability(model)[1]
            assert table.loc[model.id, "detail"].endswith("not set")
    metadata = first.asset_materializations_for_node(ASSET_KEY)[0].metadata
    assert metadata["benchmark_date"].value == "2026-11-02"
    assert metadata["models_run"].value == ["openai-compatible"]
    assert set(metadata["models_skipped"].value) == {m.id for m in API_MODELS} - {
        "openai-compatible"}
    assert "openai-compatible" in metadata["table"].value

    # A second date calls the API again (date-scoped cache) and adds a second run: history.
    second = _run(instance, resources, "2026-11-03")
    assert server.n_requests == 2 * MAX_BATCHES
    again = second.output_for_node(ASSET_KEY).set_index("model_id").loc["openai-compatible"]
    assert again["gxp2_micro_f1"] == pytest.approx(expected["gxp2_micro_f1"])
    # Re-running a date is served from that date's answers: no new calls, a new run row.
    rerun = _run(instance, resources, "2026-11-02")
    assert server.n_requests == 2 * MAX_BATCHES
    assert rerun.output_for_node(ASSET_KEY).set_index("model_id").loc[
        "openai-compatible", "n_cached"] == MAX_BATCHES

    warehouse = resources["warehouse"].client
    from sqlalchemy import select

    from resources.clients.warehouse import BENCHMARK_RUNS, SCORES

    with warehouse._connect() as conn:
        runs = conn.execute(select(BENCHMARK_RUNS).where(
            BENCHMARK_RUNS.c.asset_key == ASSET_KEY)).mappings().all()
        scored = conn.execute(select(SCORES.c.run_id, SCORES.c.value).where(
            SCORES.c.metric == "gxp2_micro_f1")).all()
    compat = [r for r in runs if r["model_id"] == "openai-compatible"]
    assert sorted(r["partition_key"] for r in compat) == [
        "2026-11-02|openai-compatible", "2026-11-02|openai-compatible",
        "2026-11-03|openai-compatible"]
    assert {r["summary"]["benchmark_date"] for r in compat} == {"2026-11-02", "2026-11-03"}
    assert len({r["dagster_run_id"] for r in compat}) == 3
    assert all(r["status"] == "succeeded" and r["split"] == "benchmark" for r in compat)
    assert {r["model_version"] for r in compat} == {"openai/nightly-auditor"}
    assert sorted(value for run_id, value in scored if run_id in {r["id"] for r in compat}) == (
        pytest.approx([expected["gxp2_micro_f1"]] * 3))
    skipped = [r for r in runs if r["model_id"] != "openai-compatible"]
    assert len(skipped) == 3 * (len(API_MODELS) - 1)
    assert all(r["status"] == "skipped" and r["detail"].endswith("not set") for r in skipped)
    assert warehouse.table_counts()["llm_calls"] == 3 * MAX_BATCHES


def test_a_failing_model_is_recorded_and_the_others_still_run(nightly):
    """Called as the asset calls it (the asset then raises dg.Failure for its RetryPolicy, which
    waits a minute between attempts: too slow for a test)."""

    class Unreachable:
        def complete_many(self, model, requests, progress=None):
            raise ConnectionError(f"provider of {model.id} unreachable")

        def close(self):
            pass

    models = [m for m in API_MODELS if m.id in ("gpt-4o", "openai-compatible")]
    warehouse = nightly.resources["warehouse"].client
    table, failed = benchmark_api_models(
        models, nightly.records, nightly.labels, nightly.master, date="2026-11-04",
        dagster_run_id="test-run", client_factory=Unreachable, warehouse=warehouse,
        max_batches=MAX_BATCHES)
    error = "ConnectionError: provider of openai-compatible unreachable"
    assert failed == {"openai-compatible": error}
    table = table.set_index("model_id")
    assert table.loc["openai-compatible", "status"] == "failed"
    assert table.loc["openai-compatible", "detail"] == error
    assert table.loc["gpt-4o", "status"] == "skipped"
    runs = warehouse.latest_run_summaries(asset_key=ASSET_KEY).set_index("model_id")
    assert runs.loc["openai-compatible", "status"] == "failed"
    assert runs.loc["openai-compatible", "detail"] == error
    assert runs.loc["openai-compatible", "partition_key"] == "2026-11-04|openai-compatible"
    assert runs.loc["gpt-4o", "status"] == "skipped"
    assert nightly.server.n_requests == 0


def test_a_model_whose_every_call_fails_is_a_failed_run_not_a_score(nightly):
    from resources.clients.llm import LLMClient

    nightly.server.responder = lambda _body, _index: FakeReply(status=500)
    models = [m for m in API_MODELS if m.id == "openai-compatible"]
    warehouse = nightly.resources["warehouse"].client
    table, failed = benchmark_api_models(
        models, nightly.records, nightly.labels, nightly.master, date="2026-11-05",
        dagster_run_id="test-outage", client_factory=lambda: LLMClient(max_retries=0, pricing={}),
        warehouse=warehouse, max_batches=MAX_BATCHES)
    assert failed["openai-compatible"].startswith(
        f"RuntimeError: outage: {MAX_BATCHES} of {MAX_BATCHES} calls failed (first error: ")
    row = table.set_index("model_id").loc["openai-compatible"]
    assert row["status"] == "failed" and pd.isna(row["gxp1_f1"])
    assert warehouse.latest_scores(asset_key=ASSET_KEY).empty
