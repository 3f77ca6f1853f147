"""run_failures (warehouse revision 0004) and run_failure_sensor, which records failed runs there.

Warehouse tests run on SQLite and on a real PostgreSQL (tests/pg.py; marked `postgres`); the
sensor is driven with dg.build_run_status_sensor_context on runs that really failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, select

from resources.clients import warehouse as wmod
from resources.clients.warehouse import (
    METADATA,
    RUN_FAILURE_COLUMNS,
    Warehouse,
    WarehouseError,
    environment_secrets,
    scrub_secrets,
)
from resources.warehouse import WarehouseResource
from sensors.run_failures import record_failed_runs, run_failure_sensor

SECRET = "sk-live-Zq81-do-not-leak"
DB_PASSWORD = "p@ss-W0rd/42"  # percent-encoded in the URL below
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


# --- migration 0004 -----------------------------------------------------------------------------
def test_upgrade_from_0003_keeps_rows_matches_the_models_and_downgrades(url: str) -> None:
    Warehouse(url).close()  # creates the SQLite file's folder
    command.upgrade(wmod.alembic_config(url=url), "0003")
    engine = create_engine(url)
    prov = {
        "dagster_run_id": "run-old", "model_id": "reference", "split": "benchmark",
        "dataset_hash": "h" * 64, "prompt_version": "audit-v1", "code_version": "c0de",
        "model_version": "rule_based:c0de",
    }  # fmt: skip
    try:
        with engine.begin() as conn:  # rows as 0003 wrote them
            run_id = conn.execute(
                insert(wmod.BENCHMARK_RUNS).values(
                    **prov, asset_key="gxp_scores", partition_key="reference|benchmark",
                    status="succeeded", started_at=T0, finished_at=T0,
                )  # fmt: skip
            ).inserted_primary_key[0]
            conn.execute(insert(wmod.SCORES).values(run_id=run_id, metric="gxp1_f1", value=0.75,
                                                    **prov))  # fmt: skip
        assert "run_failures" not in inspect(engine).get_table_names()

        wh = Warehouse(url)
        try:
            assert wh.upgrade() == "0005"
            assert wh.upgrade() == "0005"  # at head: nothing to do
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                # The migrations and the models in warehouse.py describe the same tables.
                assert compare_metadata(context, METADATA) == []
            assert wh.latest_scores()["value"].tolist() == [0.75]  # the old rows are kept
            wh.record_run_failure("run-x", job_name="gxp_models_job", error="boom")
            assert wh.table_counts()["run_failures"] == 1
        finally:
            wh.close()

        command.downgrade(wmod.alembic_config(url=url), "0003")  # removes only its table
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0003"
            assert "run_failures" not in inspect(conn).get_table_names()
            assert conn.execute(select(wmod.SCORES.c.value)).scalars().all() == [0.75]
        command.upgrade(wmod.alembic_config(url=url), "head")  # and up again
        with engine.connect() as conn:
            assert conn.execute(select(wmod.RUN_FAILURES)).all() == []
    finally:
        engine.dispose()


def test_a_database_at_0003_must_be_upgraded_first(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/old.sqlite"
    command.upgrade(wmod.alembic_config(url=url), "0003")
    wh = Warehouse(url)
    with pytest.raises(WarehouseError, match=r"revision 0003, this code needs 0005: run .*upgr"):
        wh.record_run_failure("run-x", job_name="j", error="boom")
    wh.close()


# --- record_run_failure / run_failures ----------------------------------------------------------
def test_record_run_failure_round_trip_and_idempotent_per_run(wh: Warehouse) -> None:
    first = wh.record_run_failure(
        "run-1", job_name="gxp_models_job", error="step qlora_adapter: ValueError: no rows",
        partition_key=None, asset_keys=["qlora_adapter", "base_model"],
        failed_steps=["qlora_adapter"], failed_at=T0,
    )  # fmt: skip
    assert first["asset_keys"] == ["base_model", "qlora_adapter"]  # sorted
    assert (first["job_name"], first["partition_key"], first["failed_at"]) == (
        "gxp_models_job", None, T0,
    )  # fmt: skip
    again = wh.record_run_failure(
        "run-1", job_name="gxp_models_job", error="step qlora_adapter: ValueError: still no rows",
        asset_keys=["qlora_adapter"], failed_steps=["qlora_adapter"], failed_at=T0,
    )  # fmt: skip
    # Same run: one row, same id and first recorded_at, content updated.
    assert (again["id"], again["recorded_at"]) == (first["id"], first["recorded_at"])
    assert again["error"].endswith("still no rows") and again["asset_keys"] == ["qlora_adapter"]
    wh.record_run_failure("run-2", job_name="gxp_evaluation_job", error="boom",
                          partition_key="reference|benchmark", failed_at=T0 + timedelta(hours=1))
    assert wh.table_counts()["run_failures"] == 2

    failures = wh.run_failures()
    assert list(failures.columns) == list(RUN_FAILURE_COLUMNS)
    assert failures["dagster_run_id"].tolist() == ["run-1", "run-2"]  # oldest first
    assert failures["partition_key"].tolist()[1] == "reference|benchmark"
    assert failures["failed_steps"].tolist() == [["qlora_adapter"], []]
    assert failures["failed_at"].tolist() == [pd_ts(T0), pd_ts(T0 + timedelta(hours=1))]
    since = wh.run_failures(since=T0 + timedelta(minutes=30))
    assert since["dagster_run_id"].tolist() == ["run-2"]
    assert wh.run_failures(job_name="gxp_models_job")["dagster_run_id"].tolist() == ["run-1"]
    assert wh.run_failures(since=T0 + timedelta(days=1)).empty


def pd_ts(value: datetime):
    import pandas as pd

    return pd.Timestamp(value)


def test_bad_input_names_the_run_and_field(wh: Warehouse) -> None:
    with pytest.raises(ValueError, match="run failure: field dagster_run_id"):
        wh.record_run_failure("", job_name="j", error="boom")
    with pytest.raises(ValueError, match="run failure 'r': field error must be a non-empty"):
        wh.record_run_failure("r", job_name="j", error=" ")
    with pytest.raises(ValueError, match="run failure 'r': field asset_keys must be a list"):
        wh.record_run_failure("r", job_name="j", error="boom", asset_keys="gxp_scores")
    with pytest.raises(ValueError, match="failed_at must be timezone-aware"):
        wh.record_run_failure("r", job_name="j", error="boom", failed_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        wh.run_failures(since=datetime(2026, 1, 1))
    assert wh.table_counts()["run_failures"] == 0


def test_error_text_never_holds_an_environment_secret(wh: Warehouse, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("GXPLAB_DAGSTER_PG_URL",
                       "postgresql://dagster:p%40ss-W0rd%2F42@db.internal:5432/dagster")
    monkeypatch.setenv("GXPLAB_RETRIES", "1234")  # not a secret: kept
    error = (f"litellm.AuthenticationError: Incorrect API key provided: {SECRET}\n"
             f"could not connect as dagster:{DB_PASSWORD}@db.internal; also p%40ss-W0rd%2F42; "
             "retried 1234 times")
    row = wh.record_run_failure("run-s", job_name="j", error=error)
    for text in (row["error"], wh.run_failures()["error"].iloc[0]):
        assert SECRET not in text and DB_PASSWORD not in text and "p%40ss" not in text
        assert "Incorrect API key provided: ***" in text and "retried 1234 times" in text
    assert SECRET in environment_secrets() and DB_PASSWORD in environment_secrets()
    assert "1234" not in environment_secrets()


def test_scrub_secrets_replaces_the_longest_secret_first() -> None:
    environ = {"A_TOKEN": "abcd", "B_SECRET": "abcdefgh", "PATH": "/usr/bin", "X_KEY": "true"}
    assert environment_secrets(environ) == ["abcdefgh", "abcd"]  # booleans are no secret
    # extra values (the warehouse's own URL password) are scrubbed too; 3 chars is too short
    assert scrub_secrets("pw=hunter22 and x=abc", extra=["hunter22", "abc"]) == "pw=*** and x=abc"


def test_a_long_error_is_cut(wh: Warehouse) -> None:
    row = wh.record_run_failure("run-long", job_name="j", error="x" * 50_000)
    assert len(row["error"]) < 20_100 and row["error"].endswith("(cut at 20000 characters)")


# --- the sensor ---------------------------------------------------------------------------------
@dg.asset
def clean_records() -> list[str]:
    return ["R1", "R2"]


@dg.asset
def audit_records(clean_records: list[str]) -> None:
    import os

    # An error message that (wrongly) echoes a key from the environment: must not be stored.
    raise ValueError(f"record {clean_records[0]} field qty_actual: provider rejected key "
                     f"{os.environ['OPENAI_API_KEY']}")


splits = dg.StaticPartitionsDefinition(["benchmark", "control_clean"])


@dg.asset(partitions_def=splits)
def split_scores(context) -> None:
    raise RuntimeError(f"no labels for split {context.partition_key}")


def _sensor_context(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, url: str):
    return dg.build_run_status_sensor_context(
        sensor_name=run_failure_sensor.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"warehouse": WarehouseResource(url=url)},
        partition_key=result.dagster_run.tags.get("dagster/partition"),
    ).for_run_failure()


def test_a_failed_run_is_recorded_once_with_its_scrubbed_error(
        instance, url: str, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result = dg.materialize([clean_records, audit_records], instance=instance,
                            raise_on_error=False)
    assert not result.success
    run = result.dagster_run
    context = _sensor_context(instance, result, url)
    run_failure_sensor(context)
    run_failure_sensor(_sensor_context(instance, result, url))  # the same run again
    end = instance.get_run_record_by_id(run.run_id).end_time

    wh = Warehouse(url)
    try:
        failures = wh.run_failures()
        assert len(failures) == 1  # idempotent per dagster_run_id
        row = failures.iloc[0]
        assert row["dagster_run_id"] == run.run_id
        assert row["job_name"] == run.job_name
        assert row["partition_key"] is None
        assert row["asset_keys"] == ["audit_records", "clean_records"]
        assert row["failed_steps"] == ["audit_records"]  # clean_records succeeded
        error = row["error"]
        assert error.splitlines()[0].startswith(f'Execution of run for "{run.job_name}" failed')
        assert "step audit_records: " in error
        assert "caused by: ValueError: record R1 field qty_actual: provider rejected key ***" in (
            error
        )
        assert SECRET not in error
        assert row["failed_at"].timestamp() == pytest.approx(end, abs=1e-3)
    finally:
        wh.close()


def test_the_partition_of_a_failed_run_is_recorded(instance, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/w.sqlite"
    result = dg.materialize([split_scores], partition_key="control_clean", instance=instance,
                            raise_on_error=False)
    run_failure_sensor(_sensor_context(instance, result, url))
    wh = Warehouse(url)
    (row,) = wh.run_failures().to_dict("records")
    wh.close()
    assert (row["partition_key"], row["asset_keys"], row["failed_steps"]) == (
        "control_clean", ["split_scores"], ["split_scores"],
    )  # fmt: skip
    assert "caused by: RuntimeError: no labels for split control_clean" in row["error"]


def test_failures_missed_by_the_sensor_are_recorded_after_the_fact(instance, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/w.sqlite"
    seen = dg.materialize([split_scores], partition_key="benchmark", instance=instance,
                          raise_on_error=False)
    run_failure_sensor(_sensor_context(instance, seen, url))  # the sensor saw this one
    missed = dg.materialize([split_scores], partition_key="control_clean",
                            instance=instance, raise_on_error=False)
    ok = dg.materialize([clean_records], instance=instance)
    assert ok.success
    wh = Warehouse(url)
    try:
        assert record_failed_runs(instance, wh) == [missed.run_id]
        assert record_failed_runs(instance, wh) == []  # nothing left to record
        failures = wh.run_failures()
    finally:
        wh.close()
    assert failures["dagster_run_id"].tolist() == [seen.run_id, missed.run_id]
    assert failures["partition_key"].tolist() == ["benchmark", "control_clean"]
    assert "no labels for split control_clean" in failures["error"].iloc[1]


def test_the_sensor_monitors_every_job_and_runs_by_default() -> None:
    assert run_failure_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert run_failure_sensor.required_resource_keys == {"warehouse"}
    # No monitored_jobs: a run failure sensor then watches every job of its code location.
    defs = dg.Definitions(assets=[clean_records, audit_records], sensors=[run_failure_sensor],
                          resources={"warehouse": WarehouseResource(url="sqlite://")})
    dg.Definitions.validate_loadable(defs)
