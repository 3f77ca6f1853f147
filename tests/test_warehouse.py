"""Results warehouse: migrations, idempotent writes, item scores, latest-result queries, secrets,
CLI.

Backend-independent tests run on SQLite and on a real PostgreSQL (tests/pg.py; marked `postgres`).
"""

from __future__ import annotations

import shutil
import threading
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, delete, event, func, insert, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from resources.clients import warehouse as wmod
from resources.clients.warehouse import (
    METADATA,
    PROVENANCE_FIELDS,
    Provenance,
    Warehouse,
    WarehouseError,
    redact_url,
)

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
HEAD = "0005"  # the newest migration in resources/warehouse_migrations/versions/
NO_MODELS = {
    "item_scores": 0, "model_versions": 0, "model_aliases": 0, "model_alias_events": 0,
    "run_failures": 0,
}
PROV = Provenance("run-a", "reference", "benchmark", "a" * 64, "audit-v1", "1234abcd")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """tests/pg.py's `url`, with the SQLite file in a folder that does not exist yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/nested/warehouse.sqlite"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def sqlite_wh(tmp_path) -> Iterator[Warehouse]:
    warehouse = Warehouse(f"sqlite:///{tmp_path}/w.sqlite")
    warehouse.upgrade()
    yield warehouse
    warehouse.close()


def read(url: str, table: str, order_by: str = "id") -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            t = METADATA.tables[table]
            return [dict(r) for r in conn.execute(select(t).order_by(t.c[order_by])).mappings()]
    finally:
        engine.dispose()


def predictions(model_id: str = "reference", n_clean: int = 1) -> pd.DataFrame:
    """Two findings in batch B1 and one 'no finding' row per clean batch (contract columns)."""
    rows = [
        ("B1", "B1-S01", "missing_quantity", "qty_actual", "qty_actual is empty", True),
        ("B1", "B1-S07", "future_timestamp", "end_ts", "end_ts after extraction", True),
    ] + [(f"C{i}", None, None, None, None, i % 2 == 0) for i in range(n_clean)]
    df = pd.DataFrame(
        rows,
        columns=["batch_id", "record_id", "deviation_type", "field", "evidence", "valid_output"],
    )
    return df.assign(model_id=model_id, split="benchmark")


SCORES = [
    {"metric": "gxp1_f1", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 120},
    {"metric": "gxp2_macro_f1", "value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 120},
]
PER_TYPE = pd.DataFrame(
    {
        "deviation_type": ["missing_quantity", "future_timestamp"],
        "support": [4, 2],
        "tp": [3, 0],
        "fp": [1, 2],
        "fn": [1, 2],
        "precision": [0.75, 0.0],
        "recall": [0.75, 0.0],
        "f1": [0.75, 0.0],
        "detection_accuracy": [0.75, 0.0],  # extra scorer column: ignored
    }
)
CALLS = [
    {
        "request_id": "B1",
        "model_id": "reference",
        "litellm_model": "openai/gpt-x",
        "text": "{}",
        "status": "ok",
        "error": None,
        "attempts": 2,
        "latency_s": 1.5,
        "prompt_tokens": 900,
        "completion_tokens": 40,
        "cost_usd": 0.0021,
        "cost_source": "litellm",
        "cached": False,
        "cache_key": "k1",
    },
    {"request_id": "C0", "status": "error", "error": "RateLimitError", "attempts": 5},
]


def items(**lineage) -> pd.DataFrame:
    """Per-item rows in the evaluation contract's long form; a failed item has a NaN value."""
    frame = pd.DataFrame(
        {
            "item_id": ["q1", "q1", "q2", "q3"],
            "metric": ["accuracy", "rubric", "accuracy", "accuracy"],
            "value": [1.0, 0.625, float("nan"), 0.0],
            "status": ["ok", "ok", "failed", "ok"],
            "detail": [None, "cites 21 CFR 211.192", "TimeoutError after 3 attempts", None],
            "extra_column": "ignored",
        }
    )
    return frame.assign(**lineage)


def record(wh: Warehouse, prov: Provenance = PROV, **kwargs) -> int:
    args = {"asset_key": "gxp_scores", "partition_key": f"{prov.model_id}|{prov.split}"}
    args |= {"status": "succeeded", "scores": SCORES}
    return wh.record_run(prov, **(args | kwargs))


# --- migrations ---------------------------------------------------------------------------------
def test_upgrade_is_idempotent_and_creates_the_model_schema(url: str) -> None:
    wh = Warehouse(url)
    try:
        assert wh.upgrade() == HEAD
        assert wh.upgrade() == HEAD  # second start: nothing to do, no error
        assert wh.table_counts() == {
            **dict.fromkeys(["benchmark_runs", "predictions", "scores", "score_details"], 0),
            **dict.fromkeys(["llm_calls", *NO_MODELS], 0),
        }
        assert read(url, "benchmark_runs") == []
        engine = create_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            # The migration and the models in warehouse.py describe the same tables and indexes.
            assert compare_metadata(context, METADATA) == []
            assert context.get_current_revision() == HEAD
        engine.dispose()
    finally:
        wh.close()


def test_using_a_database_that_was_never_upgraded_says_what_to_run(tmp_path) -> None:
    wh = Warehouse(f"sqlite:///{tmp_path}/empty.sqlite")
    needs = rf"revision None, this code needs {HEAD}: run .*upgrade"
    with pytest.raises(WarehouseError, match=needs):
        wh.table_counts()
    with pytest.raises(WarehouseError, match="upgrade"):
        record(wh)


def test_the_migration_template_renders_a_new_revision(tmp_path, monkeypatch) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(wmod._MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(wmod, "_MIGRATIONS_DIR", migrations)
    command.revision(wmod.alembic_config(), message="add a column", rev_id="0099")
    new = next((migrations / "versions").glob("0099_*.py")).read_text()
    assert (
        f'down_revision: str | None = "{HEAD}"' in new
        or f"down_revision: str | None = '{HEAD}'" in new
    )
    assert Warehouse(f"sqlite:///{tmp_path}/w.sqlite").upgrade() == "0099"


@pytest.mark.postgres
def test_concurrent_upgrades_on_postgres_wait_for_each_other(pg_url: str) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        wh = Warehouse(pg_url)
        try:
            results.append(wh.upgrade())
        except BaseException as exc:  # collected and asserted below: a thread cannot raise to us
            errors.append(exc)
        finally:
            wh.close()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [HEAD] * 3


# --- writing ------------------------------------------------------------------------------------
def test_record_run_round_trip(wh: Warehouse, url: str) -> None:
    summary = {"n_batches": 3, "invalid_output_rate": float("nan"), "per_split": {"p50_s": 1.5}}
    run_id = record(
        wh,
        detail="3 batches audited",
        summary=summary,
        predictions=predictions(n_clean=2),
        per_type=PER_TYPE,
        llm_calls=CALLS,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=5),
    )
    assert wh.table_counts() == {
        "benchmark_runs": 1,
        "predictions": 4,
        "scores": 2,
        "score_details": 2,
        "llm_calls": 2,
        **NO_MODELS,
    }

    (run,) = read(url, "benchmark_runs")
    assert run["id"] == run_id
    assert (run["asset_key"], run["partition_key"], run["status"]) == (
        "gxp_scores",
        "reference|benchmark",
        "succeeded",
    )
    assert run["detail"] == "3 batches audited"
    # NaN is not valid JSON (PostgreSQL rejects it): it is stored as null.
    assert run["summary"] == {
        "n_batches": 3,
        "invalid_output_rate": None,
        "per_split": {"p50_s": 1.5},
    }

    got = [
        (r["batch_id"], r["record_id"], r["deviation_type"], r["field"], r["valid_output"])
        for r in read(url, "predictions")
    ]
    assert got == [
        ("B1", "B1-S01", "missing_quantity", "qty_actual", True),
        ("B1", "B1-S07", "future_timestamp", "end_ts", True),
        ("C0", None, None, None, True),
        ("C1", None, None, None, False),
    ]
    details = {r["deviation_type"]: r for r in read(url, "score_details")}
    assert [details["missing_quantity"][k] for k in ("support", "tp", "fp", "fn", "f1")] == [
        4,
        3,
        1,
        1,
        0.75,
    ]
    calls = read(url, "llm_calls")
    assert [(c["request_id"], c["status"], c["attempts"]) for c in calls] == [
        ("B1", "ok", 2),
        ("C0", "error", 5),
    ]
    assert calls[0]["response_text"] == "{}"  # the client's `text` key
    assert (calls[0]["prompt_tokens"], calls[0]["cost_usd"], calls[0]["cached"]) == (
        900,
        0.0021,
        False,
    )
    assert calls[1]["cost_usd"] is None

    latest = wh.latest_scores()
    assert list(latest.columns) == list(wmod.LATEST_SCORE_COLUMNS)
    assert latest[["metric", "value", "ci_low", "ci_high", "n"]].to_dict("records") == [
        {"metric": "gxp1_f1", "value": 0.8, "ci_low": 0.7, "ci_high": 0.9, "n": 120},
        {"metric": "gxp2_macro_f1", "value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 120},
    ]
    assert set(latest["dataset_hash"]) == {"a" * 64}
    assert latest["finished_at"].iloc[0] == pd.Timestamp("2026-11-20 08:05", tz="UTC")


def test_every_row_carries_the_provenance(wh: Warehouse, url: str) -> None:
    other = Provenance(
        "run-b", "gpt-x", "control_clean", "b" * 64, "audit-v2", "5678+dirty", "openai/gpt-x"
    )
    record(
        wh, predictions=predictions(), per_type=PER_TYPE, llm_calls=CALLS[1:], item_scores=items()
    )
    record(
        wh,
        other,
        predictions=predictions("gpt-x").assign(split="control_clean"),
        per_type=PER_TYPE,
        llm_calls=CALLS[1:],
        item_scores=items(model_id="gpt-x", model_version="openai/gpt-x"),
    )
    runs = {r["id"]: tuple(r[f] for f in PROVENANCE_FIELDS) for r in read(url, "benchmark_runs")}
    assert sorted(runs.values()) == sorted(
        [tuple(getattr(p, f) for f in PROVENANCE_FIELDS) for p in (PROV, other)]
    )
    assert {r[-1] for r in runs.values()} == {"unversioned", "openai/gpt-x"}  # model_version
    for table in ("predictions", "scores", "score_details", "llm_calls", "item_scores"):
        rows = read(url, table)
        assert len(rows) > 0, table
        for row in rows:  # each row repeats its run's provenance exactly
            assert tuple(row[f] for f in PROVENANCE_FIELDS) == runs[row["run_id"]], table


def test_re_recording_a_step_replaces_its_rows_and_keeps_other_runs(
    wh: Warehouse, url: str
) -> None:
    first = record(wh, status="running", started_at=T0, predictions=predictions(n_clean=3))
    history = record(
        wh,
        Provenance("run-old", *[getattr(PROV, f) for f in PROVENANCE_FIELDS[1:]]),
        predictions=predictions(n_clean=1),
    )
    again = record(wh, predictions=predictions(n_clean=0), llm_calls=CALLS)
    assert again == first != history
    counts = wh.table_counts()
    # run-a: 2 predictions now (not 5 + 2); run-old keeps its 3; each run has 2 scores.
    assert counts == {
        "benchmark_runs": 2,
        "predictions": 5,
        "scores": 4,
        "score_details": 0,
        "llm_calls": 2,
        **NO_MODELS,
    }
    run = next(r for r in read(url, "benchmark_runs") if r["id"] == first)
    assert run["status"] == "succeeded"
    # started_at of the first recording is kept; finished_at is set on completion.
    assert pd.Timestamp(run["started_at"]).tz_localize(None) == pd.Timestamp(T0).tz_localize(None)
    assert run["finished_at"] is not None
    # A different partition of the same Dagster run is its own row.
    record(wh, partition_key="reference|control_clean")
    assert wh.table_counts()["benchmark_runs"] == 3


def test_a_failed_re_record_keeps_the_previous_rows(wh: Warehouse) -> None:
    record(wh, predictions=predictions(n_clean=2))
    before = wh.table_counts()
    duplicate = [
        SCORES[0],
        SCORES[0],
    ]  # violates uq_scores_run_metric after the deletes and inserts
    with pytest.raises(IntegrityError):
        record(wh, predictions=predictions(n_clean=7), scores=duplicate)
    assert wh.table_counts() == before  # one transaction: nothing of the failed write remains


def test_bulk_predictions_are_written_in_chunks(wh: Warehouse, url: str, monkeypatch) -> None:
    # Small chunks so that 12,345 rows cross chunk boundaries (executemany on SQLite, COPY on
    # PostgreSQL); evidence holds what COPY's text format must escape.
    monkeypatch.setattr(wmod, "_CHUNK_ROWS", 1_000)
    monkeypatch.setattr(wmod, "_COPY_CHUNK_ROWS", 5_000)
    awkward = ["tab\there", "line\nbreak\r\n", "back\\slash", "\\N", "", None, "ünïcode ✓"]
    n = 12_345
    big = pd.DataFrame(
        {
            "batch_id": [f"B{i // 20:05d}" for i in range(n)],
            "record_id": [f"R{i:06d}" for i in range(n)],
            "deviation_type": "missing_quantity",
            "evidence": [awkward[i % len(awkward)] for i in range(n)],
            "valid_output": [i % 3 != 0 for i in range(n)],
        }
    )
    record(wh, predictions=big)
    assert wh.table_counts()["predictions"] == n
    rows = read(url, "predictions")
    assert sum(r["valid_output"] for r in rows) == n - (n + 2) // 3  # i % 3 == 0 for 4115 of them
    assert [r["record_id"] for r in rows] == list(big["record_id"])
    assert [r["evidence"] for r in rows[: len(awkward)]] == awkward
    assert [r["evidence"] for r in rows[-3:]] == [
        awkward[i % len(awkward)] for i in range(n - 3, n)
    ]


# --- reading ------------------------------------------------------------------------------------
def _prov(model_id: str, split: str = "benchmark", run: str = "r") -> Provenance:
    return Provenance(f"{run}-{model_id}-{split}", model_id, split, "h" * 64, "audit-v1", "c0de")


def test_latest_scores_returns_the_most_recent_succeeded_run(wh: Warehouse) -> None:
    def score(value: float) -> list[dict]:
        return [{"metric": "gxp1_f1", "value": value, "ci_low": None, "ci_high": None, "n": 10}]

    newer, older = T0 + timedelta(days=1), T0
    # Recorded first but finished later: time decides, not insertion order.
    record(wh, _prov("m1", run="new"), scores=score(0.9), finished_at=newer)
    record(wh, _prov("m1", run="old"), scores=score(0.1), finished_at=older)
    # Newer still, but failed, or succeeded without scores: neither replaces the scores.
    record(
        wh,
        _prov("m1", run="failed"),
        status="failed",
        scores=None,
        finished_at=newer + timedelta(1),
    )
    record(wh, _prov("m1", run="empty"), scores=None, finished_at=newer + timedelta(2))
    record(wh, _prov("m2", "control_clean"), scores=score(0.4), finished_at=older)

    latest = wh.latest_scores()
    got = latest[["model_id", "split", "value", "dagster_run_id"]].to_dict("records")
    assert got == [
        {
            "model_id": "m1",
            "split": "benchmark",
            "value": 0.9,
            "dagster_run_id": "new-m1-benchmark",
        },
        {
            "model_id": "m2",
            "split": "control_clean",
            "value": 0.4,
            "dagster_run_id": "r-m2-control_clean",
        },
    ]
    assert list(wh.latest_scores(model_ids="m2")["model_id"]) == ["m2"]
    assert list(wh.latest_scores(splits=["benchmark"])["model_id"]) == ["m1"]
    assert wh.latest_scores(model_ids=["nobody"]).empty
    assert list(wh.latest_scores(model_ids=[]).columns) == list(wmod.LATEST_SCORE_COLUMNS)


def test_latest_run_summaries_show_skipped_models(wh: Warehouse) -> None:
    record(wh, _prov("api-model", run="old"), finished_at=T0)
    record(
        wh,
        _prov("api-model", run="new"),
        status="skipped",
        scores=None,
        detail="OPENAI_API_KEY not set",
        summary={"reason": "missing_env"},
        finished_at=T0 + timedelta(hours=1),
    )
    record(wh, _prov("reference"), finished_at=T0, summary={"n_batches": 100})
    summaries = wh.latest_run_summaries()
    assert list(summaries.columns) == list(wmod.RUN_SUMMARY_COLUMNS)
    got = summaries[["model_id", "status", "summary"]].to_dict("records")
    assert got == [
        {"model_id": "api-model", "status": "skipped", "summary": {"reason": "missing_env"}},
        {"model_id": "reference", "status": "succeeded", "summary": {"n_batches": 100}},
    ]
    assert summaries["detail"].iloc[0] == "OPENAI_API_KEY not set"
    assert pd.isna(summaries["detail"].iloc[1])
    assert wh.latest_run_summaries(asset_key="other").empty
    # The skipped model still has its last scores on the leaderboard's query.
    assert set(wh.latest_scores()["dagster_run_id"]) == {
        "old-api-model-benchmark",
        "r-reference-benchmark",
    }


# --- bad input ----------------------------------------------------------------------------------
BAD_INPUTS = [
    ({"status": "done"}, r"status must be one of .*'done'"),
    (
        {"predictions": predictions().drop(columns="valid_output")},
        r"predictions: missing column.*valid_output",
    ),
    (
        {"predictions": predictions().assign(batch_id=["B1", None, "C0"])},
        r"predictions row 1 \(record_id='B1-S07'\): field batch_id is empty",
    ),
    (
        {"predictions": predictions().assign(model_id=["reference", "reference", "gpt-x"])},
        r"predictions row 2 \(batch_id='C0'\): field model_id='gpt-x' differs from provenance",
    ),
    (
        {"predictions": predictions().assign(valid_output=[True, "yes", False])},
        r"predictions row 1 .*valid_output must be true or false, got 'yes'",
    ),
    (
        {"scores": [{"metric": "gxp1_f1", "value": 1.0, "ci_lo": 0.9}]},
        r"scores\[0\] \('gxp1_f1'\).*unknown key\(s\) \['ci_lo'\]",
    ),
    (
        {"per_type": PER_TYPE.assign(tp=[3, None])},
        r"per_type row 1 \('future_timestamp'\): field tp",
    ),
    ({"llm_calls": [{"request_id": "B1"}]}, r"llm_calls\[0\]: field status is missing"),
    ({"finished_at": datetime(2026, 1, 1)}, r"finished_at must be timezone-aware"),
    ({"started_at": datetime(2026, 1, 1)}, r"started_at must be timezone-aware"),
    ({"summary": {"model": object()}}, r"summary.model: object is not JSON-serialisable"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_INPUTS)
def test_bad_input_is_rejected_before_writing(sqlite_wh: Warehouse, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        record(sqlite_wh, **kwargs)
    assert sum(sqlite_wh.table_counts().values()) == 0


def test_provenance_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="Provenance.dataset_hash must be a non-empty string"):
        Provenance("r", "m", "benchmark", "", "v1", "sha")
    with pytest.raises(ValueError, match="Provenance.model_id is longer than 255"):
        Provenance("r", "m" * 256, "benchmark", "h", "v1", "sha")


# --- revision 0003: model_version on every row, item_scores ------------------------------------
LINEAGE_TABLES = ("benchmark_runs", "predictions", "scores", "score_details", "llm_calls")
EVAL = Provenance(
    "run-e", "batchqa_adapter", "test", "e" * 64, "batchqa-v1", "c0de", "1a2b3c4d-5e6f"
)


def engine_with_foreign_keys(url: str) -> Engine:
    """An engine that enforces foreign keys on SQLite too (as the Warehouse's connections do)."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _on(dbapi_connection, _record) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=ON")

    return engine


def columns_by_table(url: str) -> dict[str, set[str]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names()}
    finally:
        engine.dispose()


def test_upgrade_from_0002_stamps_old_rows_unversioned_and_downgrades(url: str) -> None:
    Warehouse(url).close()  # creates the SQLite file's folder
    command.upgrade(wmod.alembic_config(url=url), "0002")
    old = {f: getattr(PROV, f) for f in PROVENANCE_FIELDS if f != "model_version"}
    engine = engine_with_foreign_keys(url)
    try:
        with engine.begin() as conn:  # rows as 0002 wrote them: no model_version column yet
            run = {"asset_key": "gxp_scores", "partition_key": "reference|benchmark"}
            run |= {"status": "succeeded", "started_at": T0, "finished_at": T0}
            run_id = conn.execute(
                insert(wmod.BENCHMARK_RUNS).values(**old, **run)
            ).inserted_primary_key[0]
            child = {"run_id": run_id, **old}
            conn.execute(insert(wmod.PREDICTIONS).values(**child, batch_id="B1", valid_output=True))
            conn.execute(insert(wmod.SCORES).values(**child, metric="gxp1_f1", value=0.75))
            conn.execute(
                insert(wmod.SCORE_DETAILS).values(
                    {**child, "deviation_type": "missing_quantity", "support": 1, "tp": 1,
                     "fp": 0, "fn": 0}
                )  # fmt: skip
            )
            conn.execute(insert(wmod.LLM_CALLS).values(**child, request_id="B1", status="ok"))
        before = columns_by_table(url)
        assert "item_scores" not in before
        assert not any("model_version" in before[t] for t in LINEAGE_TABLES)

        wh = Warehouse(url)
        assert wh.upgrade() == HEAD
        for table in LINEAGE_TABLES:
            (row,) = read(url, table)
            assert row["model_version"] == "unversioned", table
            assert row["dataset_hash"] == PROV.dataset_hash, table
        latest = wh.latest_scores()
        assert latest[["metric", "value", "model_version"]].to_dict("records") == [
            {"metric": "gxp1_f1", "value": 0.75, "model_version": "unversioned"}
        ]
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, METADATA) == []  # migrated == models
        record(wh, EVAL, item_scores=items())
        assert wh.table_counts()["item_scores"] == 4
        wh.close()

        # Down again on a connection that enforces foreign keys: dropping the column must not
        # copy benchmark_runs (dropping the old copy would cascade into its child tables).
        with engine.begin() as conn:
            command.downgrade(wmod.alembic_config(conn), "0002")
        after = columns_by_table(url)
        assert "item_scores" not in after
        assert after == before
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0002"
            count = {
                t: conn.execute(select(func.count()).select_from(text(t))).scalar_one()
                for t in LINEAGE_TABLES
            }
        assert count == {
            "benchmark_runs": 2, "predictions": 1, "scores": 3, "score_details": 1, "llm_calls": 1,
        }  # fmt: skip
        assert Warehouse(url).upgrade() == HEAD  # and up again
    finally:
        engine.dispose()


def test_item_scores_round_trip(wh: Warehouse, url: str) -> None:
    lineage = {"model_id": EVAL.model_id, "base_model_id": "embedded-base"}
    run_id = wh.record_run(
        EVAL,
        asset_key="batchqa_eval",
        partition_key=EVAL.model_id,
        status="succeeded",
        scores=[{"metric": "accuracy", "value": 0.5, "ci_low": 0.1, "ci_high": 0.9, "n": 3}],
        item_scores=items(**lineage, model_version=EVAL.model_version),
    )
    rows = read(url, "item_scores")
    assert [(r["item_id"], r["metric"], r["value"], r["status"], r["detail"]) for r in rows] == [
        ("q1", "accuracy", 1.0, "ok", None),
        ("q1", "rubric", 0.625, "ok", "cites 21 CFR 211.192"),
        ("q2", "accuracy", None, "failed", "TimeoutError after 3 attempts"),  # NaN -> NULL
        ("q3", "accuracy", 0.0, "ok", None),
    ]
    for row in rows:
        assert row["run_id"] == run_id
        assert [row[f] for f in PROVENANCE_FIELDS] == [getattr(EVAL, f) for f in PROVENANCE_FIELDS]

    # A list of dicts works too; a second Dagster run of the same model is its own run.
    second = Provenance("run-f", *[getattr(EVAL, f) for f in PROVENANCE_FIELDS[1:]])
    failed = {"item_id": "q9", "metric": "accuracy", "value": None, "status": "failed"}
    wh.record_run(
        second, asset_key="batchqa_eval", partition_key=EVAL.model_id, status="succeeded",
        item_scores=[failed],
    )  # fmt: skip
    got = wh.item_scores(asset_key="batchqa_eval")
    assert list(got.columns) == list(wmod.ITEM_SCORE_COLUMNS)
    assert got["item_id"].tolist() == ["q1", "q1", "q2", "q3", "q9"]
    assert got["value"].isna().tolist() == [False, False, True, False, True]
    assert got["dagster_run_id"].tolist() == ["run-e"] * 4 + ["run-f"]
    assert set(got["asset_key"]) == {"batchqa_eval"}
    assert set(got["model_version"]) == {"1a2b3c4d-5e6f"}
    assert pd.isna(got["detail"].iloc[4])
    assert len(wh.item_scores(dagster_run_id="run-f")) == 1
    assert len(wh.item_scores(model_ids=[EVAL.model_id])) == 5
    assert wh.item_scores(model_ids="base_model").empty
    assert list(wh.item_scores(asset_key="judge_evaluations").columns) == list(
        wmod.ITEM_SCORE_COLUMNS
    )
    assert wh.item_scores(asset_key="judge_evaluations").empty


def test_re_recording_a_step_replaces_its_item_rows(wh: Warehouse, url: str) -> None:
    first = record(wh, item_scores=items())
    other = record(wh, _prov("m2"), item_scores=items())
    again = record(wh, item_scores=items().iloc[:2])
    assert again == first != other
    assert wh.table_counts()["item_scores"] == 2 + 4
    mine = [(r["item_id"], r["metric"]) for r in read(url, "item_scores") if r["run_id"] == first]
    assert mine == [("q1", "accuracy"), ("q1", "rubric")]
    record(wh)  # re-recorded without item rows: none are left for the step
    assert wh.table_counts()["item_scores"] == 4


def test_item_scores_constraints_in_the_database(wh: Warehouse, url: str) -> None:
    run_id = record(wh, item_scores=items())
    engine = engine_with_foreign_keys(url)
    row = {"run_id": run_id, **{f: getattr(PROV, f) for f in PROVENANCE_FIELDS}}
    row |= {"item_id": "q7", "metric": "accuracy", "value": 1.0}
    try:
        for values, message in [
            ({**row, "status": "maybe"}, "ck_item_scores_status|CHECK"),
            ({**row, "item_id": "q1", "status": "ok"}, "uq_item_scores_run_item_metric|UNIQUE"),
        ]:
            conn = engine.connect()
            with pytest.raises(IntegrityError, match=message):
                conn.execute(insert(wmod.ITEM_SCORES).values(values))
            conn.close()
        with engine.begin() as conn:  # a run's item rows go with it (ON DELETE CASCADE)
            conn.execute(delete(wmod.BENCHMARK_RUNS).where(wmod.BENCHMARK_RUNS.c.id == run_id))
        assert wh.table_counts()["item_scores"] == 0
    finally:
        engine.dispose()


def test_bulk_item_scores_use_copy_on_postgres(wh: Warehouse, url: str, monkeypatch) -> None:
    copied: list[int] = []
    copy_rows = wmod._copy_rows

    def counting_copy(conn, table, rows) -> None:
        copied.append(len(rows))
        copy_rows(conn, table, rows)

    monkeypatch.setattr(wmod, "_copy_rows", counting_copy)
    awkward = ["tab\there", "line\nbreak\r\n", "back\\slash", "\\N", "", None, "ünïcode ✓"]
    n = 1_500  # above _COPY_MIN_ROWS
    frame = pd.DataFrame(
        {
            "item_id": [f"case-{i:05d}" for i in range(n)],
            "metric": "rubric",
            "value": [float("nan") if i % 10 == 0 else i / 7 for i in range(n)],
            "status": ["failed" if i % 10 == 0 else "ok" for i in range(n)],
            "detail": [awkward[i % len(awkward)] for i in range(n)],
        }
    )
    record(wh, item_scores=frame)
    rows = read(url, "item_scores")
    assert [r["item_id"] for r in rows] == list(frame["item_id"])
    assert [r["value"] for r in rows] == [None if i % 10 == 0 else i / 7 for i in range(n)]
    assert [r["detail"] for r in rows] == [awkward[i % len(awkward)] for i in range(n)]
    assert copied == ([n] if wh._engine.dialect.name == "postgresql" else [])


def test_latest_evaluation_scores_are_the_latest_succeeded_run_per_model(wh: Warehouse) -> None:
    def evaluation(model, run, value, finished, *, status="succeeded", asset="judge_evaluations",
                   version="base:embedded-llama-tiny") -> int:  # fmt: skip
        prov = Provenance(run, model, "test", "h" * 64, "judge-v1", "c0de", version)
        score = {"metric": "mean_reward", "value": value, "ci_low": value - 0.1,
                 "ci_high": value + 0.1, "n": 20}  # fmt: skip
        return wh.record_run(
            prov, asset_key=asset, partition_key=model, status=status, scores=[score],
            finished_at=finished,
        )  # fmt: skip

    # Recorded first but finished later: time decides. A later failed run does not replace it.
    newest = evaluation("base_model", "new", 0.5, T0 + timedelta(days=1))
    evaluation("base_model", "old", 0.4, T0)
    evaluation("base_model", "failed", 0.0, T0 + timedelta(days=2), status="failed")
    evaluation("batchqa_adapter", "new", 0.7, T0, version="1a2b3c4d-5e6f")
    evaluation("base_model", "other-asset", 0.9, T0 + timedelta(days=3), asset="batchqa_eval")

    latest = wh.latest_evaluation_scores("judge_evaluations")
    assert list(latest.columns) == list(wmod.EVALUATION_SCORE_COLUMNS)
    got = latest[["model_id", "model_version", "dagster_run_id", "metric", "value", "n"]]
    assert got.to_dict("records") == [
        {"model_id": "base_model", "model_version": "base:embedded-llama-tiny",
         "dagster_run_id": "new", "metric": "mean_reward", "value": 0.5, "n": 20},
        {"model_id": "batchqa_adapter", "model_version": "1a2b3c4d-5e6f",
         "dagster_run_id": "new", "metric": "mean_reward", "value": 0.7, "n": 20},
    ]  # fmt: skip
    assert latest["run_id"].iloc[0] == newest
    assert set(latest["asset_key"]) == {"judge_evaluations"}
    assert latest["finished_at"].iloc[0] == pd.Timestamp(T0 + timedelta(days=1))
    assert latest["ci_low"].iloc[0] == pytest.approx(0.4)
    assert wh.latest_evaluation_scores("nothing").empty
    # latest_scores can be held to one asset as well.
    assert wh.latest_scores(asset_key="batchqa_eval")["value"].tolist() == [0.9]


ITEM_BAD_INPUTS = [
    (items().drop(columns="item_id"), r"item_scores: missing column\(s\) \['item_id'\]"),
    (
        items().assign(item_id=["q1", None, "q2", "q3"]),
        r"item_scores row 1: field item_id must be a non-empty string, got None",
    ),
    (
        items().assign(metric=["accuracy", "", "accuracy", "accuracy"]),
        r"item_scores row 1: field metric must be a non-empty string",
    ),
    (
        items().assign(status=["ok", "ok", "failed", "error"]),
        r"item_scores row 3 \(item_id='q3', metric='accuracy'\): field status must be one of "
        r"\('ok', 'failed'\), got 'error'",
    ),
    (
        items().assign(value=[1.0, float("nan"), None, 0.0]),
        r"item_scores row 1 \(item_id='q1', metric='rubric'\): field value is null .* status is "
        r"'ok'",
    ),
    (
        items().assign(value=[1.0, float("inf"), None, 0.0]),
        r"item_scores row 1 .*: field value must be finite, got inf",
    ),
    (
        items().assign(value=[1.0, "0.6", None, 0.0]),
        r"item_scores row 1 .*: field value must be a number, got '0.6'",
    ),
    (
        items(model_id=["reference", "reference", "gpt-x", "reference"]),
        r"item_scores row 2 \(item_id='q2', .*\): field model_id='gpt-x' differs from provenance "
        r"model_id='reference'",
    ),
    (
        items(model_version="v2"),
        r"item_scores row 0 .*: field model_version='v2' differs from provenance "
        r"model_version='unversioned'",
    ),
    (
        items().assign(item_id=["q1", "q2", "q1", "q3"]),
        r"item_scores row 2 \(item_id='q1', metric='accuracy'\): the same item and metric as row 0",
    ),
    (
        [{"item_id": "q1", "metric": "accuracy", "value": None, "status": "ok"}],
        r"item_scores row 0 \(item_id='q1', metric='accuracy'\): field value is null",
    ),
    ([{"item_id": "q1", "metric": "accuracy", "value": 1.0}], r"row 0: field\(s\) \['status'\]"),
    ([{"item_id": "q1", "metric": "m", "value": 1, "status": "ok", "detail": 3}], r"detail must"),
    ("q1,accuracy,1.0", r"item_scores must be a DataFrame or a list of dicts, got str"),
]


@pytest.mark.parametrize(("item_scores", "message"), ITEM_BAD_INPUTS)
def test_bad_item_scores_are_rejected_before_writing(
    sqlite_wh: Warehouse, item_scores, message
) -> None:
    with pytest.raises(ValueError, match=message):
        record(sqlite_wh, item_scores=item_scores)
    assert sum(sqlite_wh.table_counts().values()) == 0


def test_provenance_model_version() -> None:
    assert PROV.model_version == "unversioned"  # callers that predate it keep working
    assert PROVENANCE_FIELDS[-1] == "model_version"
    assert Provenance("r", "m", "test", "h", "v1", "sha", model_version="v7").model_version == "v7"
    with pytest.raises(ValueError, match="Provenance.model_version must be a non-empty string"):
        Provenance("r", "m", "test", "h", "v1", "sha", model_version=" ")
    with pytest.raises(ValueError, match="Provenance.model_version is longer than 255"):
        Provenance("r", "m", "test", "h", "v1", "sha", model_version="v" * 256)


# --- secrets, URLs, code version ----------------------------------------------------------------
SECRET = "s3cr3t-Pa55"


def test_the_password_never_appears_in_errors_reprs_or_logs(caplog) -> None:
    caplog.set_level("DEBUG")
    url = f"postgresql://gxp:{SECRET}@127.0.0.1:1/results"  # port 1: connection refused at once
    wh = Warehouse(url)
    assert wh.url == "postgresql+psycopg2://gxp:***@127.0.0.1:1/results"
    assert SECRET not in repr(wh)
    with pytest.raises(
        WarehouseError, match=r"cannot connect to the warehouse at .*gxp:\*\*\*@"
    ) as info:
        wh.upgrade()
    assert SECRET not in "".join(traceback.format_exception(info.value))
    assert info.value.__cause__ is None
    with pytest.raises(WarehouseError) as bad:
        Warehouse(f"postgresql://gxp:{SECRET}@host:notaport/db")
    assert SECRET not in str(bad.value)
    assert SECRET not in caplog.text


def test_redact_url_and_driver_normalisation() -> None:
    assert (
        redact_url(f"postgresql://u:{SECRET}@db:5432/x") == "postgresql+psycopg2://u:***@db:5432/x"
    )
    assert redact_url("sqlite:///var/warehouse.sqlite") == "sqlite:///var/warehouse.sqlite"
    assert Warehouse("postgres://u@db/x").url == "postgresql+psycopg2://u@db/x"


def test_in_memory_sqlite_keeps_its_tables_across_connections() -> None:
    wh = Warehouse("sqlite://")
    assert wh.upgrade() == HEAD
    record(wh)
    assert wh.table_counts()["scores"] == 2


def test_code_version(monkeypatch) -> None:
    answers = {("rev-parse", "HEAD"): "abc123", ("status", "--porcelain"): " M x.py"}
    monkeypatch.setattr(wmod, "_git", lambda repo, *args: answers[args])
    assert wmod.code_version() == "abc123+dirty"
    answers[("status", "--porcelain")] = ""
    assert wmod.code_version() == "abc123"

    def no_git(repo, *args):
        raise FileNotFoundError("git")

    monkeypatch.setattr(wmod, "_git", no_git)
    monkeypatch.setenv("GXPLAB_CODE_VERSION", "v0.1.0-image")
    assert wmod.code_version() == "v0.1.0-image"
    monkeypatch.delenv("GXPLAB_CODE_VERSION")
    assert wmod.code_version() == "unknown"


# --- CLI ----------------------------------------------------------------------------------------
def test_cli_upgrade_and_counts(tmp_path, monkeypatch, capsys) -> None:
    url = f"sqlite:///{tmp_path}/cli.sqlite"
    assert wmod.main(["upgrade", "--url", url]) == 0
    assert capsys.readouterr().out.strip() == f"{url}: schema revision {HEAD}"
    monkeypatch.setenv("GXPLAB_WAREHOUSE_URL", url)  # the default when --url is left out
    assert wmod.main(["counts", "--json"]) == 0
    assert capsys.readouterr().out.strip() == (
        '{"benchmark_runs": 0, "predictions": 0, "scores": 0, "score_details": 0, "llm_calls": 0, '
        '"item_scores": 0, "model_versions": 0, "model_aliases": 0, "model_alias_events": 0, '
        '"run_failures": 0}'
    )
    assert wmod.main(["counts"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["benchmark_runs", "0"]


def test_cli_reports_errors_without_traceback_or_password(capsys) -> None:
    assert wmod.main(["upgrade", "--url", f"postgresql://u:{SECRET}@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot connect to the warehouse at postgresql+psycopg2://u:***@")
    assert SECRET not in err and "Traceback" not in err
    with pytest.raises(SystemExit) as help_exit:
        wmod.main(["--help"])
    assert help_exit.value.code == 0
    assert "GXPLAB_WAREHOUSE_URL" in capsys.readouterr().out
