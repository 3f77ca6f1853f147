"""Model registry in the results warehouse: versions, the production alias, promote and rollback,
the 0001 -> 0002 upgrade and the `gxplab models` commands.

Backend-independent tests run on SQLite and on a real PostgreSQL (tests/pg.py; marked `postgres`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, select

from jobs import cli
from resources.clients import warehouse as wmod
from resources.clients.warehouse import (
    BENCHMARK_RUNS,
    METADATA,
    SCORES,
    ModelRegistryError,
    Warehouse,
    WarehouseError,
)

TASK = "qlora_adapter"
SHA = {v: c * 64 for v, c in (("v1", "a"), ("v2", "b"), ("v3", "c"))}
MODEL_TABLES = ("model_versions", "model_aliases", "model_alias_events")


def register(wh: Warehouse, version: str, task: str = TASK, **kwargs) -> dict:
    args = {
        "artifact_uri": f"/artifacts/models/{task}/{version}",
        "archive_uri": f"/artifacts/models/{task}/{version}.tar.gz",
        "archive_sha256": SHA[version],
        "base_model": "embedded-llama-tiny",
        "dataset_hash": "d" * 64,
        "config": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]},
        "metrics": {"eval_loss": 0.5, "tokens_per_s": 1234.5},
        "dagster_run_id": f"run-{version}",
        "code_version": "c0de",
    }
    return wh.register_model_version(task, version, **(args | kwargs))


def counts(wh: Warehouse) -> tuple[int, ...]:
    table = wh.table_counts()
    return tuple(table[name] for name in MODEL_TABLES)


# --- versions -----------------------------------------------------------------------------------
def test_register_and_list_newest_first(wh: Warehouse) -> None:
    first = register(wh, "v1")
    assert first["task"] == TASK and first["version"] == "v1"
    assert first["config"] == {"r": 16, "alpha": 32, "target_modules": ["q_proj", "v_proj"]}
    assert first["metrics"] == {"eval_loss": 0.5, "tokens_per_s": 1234.5}
    assert (first["archive_sha256"], first["dagster_run_id"]) == (SHA["v1"], "run-v1")
    assert first["created_at"].tzinfo is not None and first["aliases"] == []
    register(wh, "v2", metrics={"eval_loss": float("nan")})  # NaN is stored as JSON null
    register(wh, "v1", task="gxp_audit_adapter")

    assert [(v["task"], v["version"]) for v in wh.list_model_versions()] == [
        ("gxp_audit_adapter", "v1"),
        (TASK, "v2"),
        (TASK, "v1"),
    ]
    listed = wh.list_model_versions(TASK)
    assert [v["version"] for v in listed] == ["v2", "v1"]
    assert listed[0]["metrics"] == {"eval_loss": None}
    assert listed[1]["created_at"] == first["created_at"]
    assert wh.list_model_versions("nobody") == []


def test_registering_the_same_version_again_is_a_no_op(wh: Warehouse) -> None:
    first = register(wh, "v1")
    # Same content; a Path for the folder, and a different run and checkout: still the same.
    again = register(
        wh,
        "v1",
        artifact_uri=Path(f"/artifacts/models/{TASK}/v1"),
        dagster_run_id="run-retry",
        code_version="other",
    )
    assert again == first  # the first registration's provenance is kept
    assert counts(wh) == (1, 0, 0)


def test_a_different_artifact_under_an_existing_version_is_refused(wh: Warehouse) -> None:
    register(wh, "v1")
    with pytest.raises(
        ModelRegistryError,
        match=rf"model version 'v1' of task '{TASK}' is already registered with archive_sha256 "
        rf"{SHA['v1']}, not {SHA['v2']}",
    ):
        register(wh, "v1", archive_sha256=SHA["v2"])
    with pytest.raises(ModelRegistryError, match=r"'v1' of task .* different metrics: versions"):
        register(wh, "v1", metrics={"eval_loss": 0.4, "tokens_per_s": 1234.5})
    assert counts(wh) == (1, 0, 0)
    assert wh.list_model_versions()[0]["metrics"]["eval_loss"] == 0.5


def test_a_concurrent_registration_of_the_same_version_is_recognised(
    wh: Warehouse, monkeypatch
) -> None:
    register(wh, "v1")
    real, calls = wmod._version_row, []

    def missed_by_the_first_read(conn, task, version):
        calls.append(version)  # the first read misses the row, as if inserted just after it
        return None if len(calls) == 1 else real(conn, task, version)

    monkeypatch.setattr(wmod, "_version_row", missed_by_the_first_read)
    assert register(wh, "v1")["archive_sha256"] == SHA["v1"]  # IntegrityError, then re-read
    with pytest.raises(ModelRegistryError, match="already registered with archive_sha256"):
        calls.clear()
        register(wh, "v1", archive_sha256=SHA["v3"])
    assert counts(wh) == (1, 0, 0)


BAD_VERSIONS = [
    ({"archive_sha256": "ABC"}, r"'v1' of task 'qlora_adapter': field archive_sha256 must be 64"),
    ({"archive_sha256": "A" * 64}, r"field archive_sha256 must be 64 lowercase hex"),
    ({"artifact_uri": None}, r"'v1' of task 'qlora_adapter': field artifact_uri is required"),
    ({"config": [1, 2]}, r"field config must be a dict, got list"),
    ({"metrics": {"when": object()}}, r"metrics.when: object is not JSON-serialisable"),
    ({"dataset_hash": ""}, r"field dataset_hash must be a non-empty string"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_VERSIONS)
def test_bad_registrations_are_rejected_before_writing(tmp_path, kwargs, message) -> None:
    wh = Warehouse(f"sqlite:///{tmp_path}/w.sqlite")
    wh.upgrade()
    with pytest.raises(ValueError, match=message):
        register(wh, "v1", **kwargs)
    with pytest.raises(ValueError, match=r"model version of task 'qlora_adapter': field version"):
        wh.register_model_version(TASK, " ", artifact_uri="/x")
    assert counts(wh) == (0, 0, 0)
    wh.close()


# --- aliases ------------------------------------------------------------------------------------
def test_promote_and_rollback_walk_the_alias_history(wh: Warehouse) -> None:
    for version in ("v1", "v2", "v3"):
        register(wh, version)
    assert wh.get_alias(TASK) is None

    first = wh.promote(TASK, "v1", actor="qa-lead")
    assert (first["from_version"], first["to_version"], first["previous_version"]) == (
        None,
        "v1",
        None,
    )
    wh.promote(TASK, "v2", reason="GxP F1 0.82 > 0.78", actor="qa-lead")
    wh.promote(TASK, "v3", actor="qa-lead")
    current = wh.get_alias(TASK)
    assert (current["version"], current["previous_version"], current["alias"]) == (
        "v3",
        "v2",
        "production",
    )
    assert current["archive_sha256"] == SHA["v3"] and current["metrics"]["eval_loss"] == 0.5
    assert {v["version"]: v["aliases"] for v in wh.list_model_versions(TASK)} == {
        "v3": ["production"],
        "v2": [],
        "v1": [],
    }

    back = wh.rollback(TASK, reason="false positives on control_clean", actor="qa-lead")
    assert (back["action"], back["from_version"], back["to_version"]) == ("rollback", "v3", "v2")
    assert back["previous_version"] == "v1"
    assert wh.rollback(TASK)["to_version"] == "v1"
    assert wh.get_alias(TASK)["previous_version"] is None
    with pytest.raises(
        ModelRegistryError,
        match=r"cannot roll back alias 'production' of task 'qlora_adapter': no version before "
        r"'v1' is left",
    ):
        wh.rollback(TASK)

    # A promotion after rollbacks starts a new branch from the current version.
    wh.promote(TASK, "v3")
    assert wh.rollback(TASK)["to_version"] == "v1"

    history = wh.alias_history(TASK)
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [
        ("rollback", "v3", "v1"),
        ("promote", "v1", "v3"),
        ("rollback", "v2", "v1"),
        ("rollback", "v3", "v2"),
        ("promote", "v2", "v3"),
        ("promote", "v1", "v2"),
        ("promote", None, "v1"),
    ]
    assert history[3]["reason"] == "false positives on control_clean"
    assert history[-1]["actor"] == "qa-lead" and history[-1]["at"].tzinfo is not None
    assert counts(wh) == (3, 1, 7)


def test_aliases_are_per_task_and_per_name(wh: Warehouse) -> None:
    register(wh, "v1")
    register(wh, "v2")
    register(wh, "v1", task="gxp_audit_adapter")
    wh.promote(TASK, "v1")
    wh.promote(TASK, "v2", alias="staging")
    wh.promote("gxp_audit_adapter", "v1")
    assert wh.get_alias(TASK)["version"] == "v1"
    assert wh.get_alias(TASK, "staging")["version"] == "v2"
    assert wh.get_alias("gxp_audit_adapter")["aliases"] == ["production"]
    assert wh.get_alias("gxp_audit_adapter", "staging") is None
    assert [v["aliases"] for v in wh.list_model_versions(TASK)] == [["staging"], ["production"]]


def test_promoting_the_current_version_changes_nothing(wh: Warehouse) -> None:
    register(wh, "v1")
    wh.promote(TASK, "v1")
    again = wh.promote(TASK, "v1", reason="again")
    assert again["changed"] is False and again["to_version"] == "v1"
    assert len(wh.alias_history(TASK)) == 1


def test_promote_and_rollback_errors_name_the_task_and_version(wh: Warehouse) -> None:
    register(wh, "v1")
    register(wh, "v2")
    with pytest.raises(
        ModelRegistryError,
        match=r"unknown task 'grit_adapter': no model version .*registered tasks: qlora_adapter",
    ):
        wh.promote("grit_adapter", "v1")
    with pytest.raises(
        ModelRegistryError,
        match=r"task 'qlora_adapter' has no version 'v9' \(newest registered: v2, v1\)",
    ):
        wh.promote(TASK, "v9")
    with pytest.raises(ModelRegistryError, match=r"unknown task 'grit_adapter'"):
        wh.rollback("grit_adapter")
    with pytest.raises(ModelRegistryError, match=r"alias 'production' of task .* was never set"):
        wh.rollback(TASK)
    with pytest.raises(ValueError, match=r"promote of task 'qlora_adapter': field alias"):
        wh.promote(TASK, "v1", alias="")
    assert counts(wh) == (2, 0, 0)


def test_a_failed_promotion_leaves_alias_and_history_unchanged(wh: Warehouse, monkeypatch) -> None:
    register(wh, "v1")
    register(wh, "v2")
    wh.promote(TASK, "v1")

    def fail(*args, **kwargs):
        raise RuntimeError("crash after both writes, before commit")

    monkeypatch.setattr(wmod.log, "info", fail)
    with pytest.raises(RuntimeError, match="crash after both writes"):
        wh.promote(TASK, "v2")
    monkeypatch.undo()
    assert wh.get_alias(TASK)["version"] == "v1"
    assert len(wh.alias_history(TASK)) == 1


@pytest.mark.postgres
def test_concurrent_promotions_on_postgres_keep_one_consistent_history(pg_url: str) -> None:
    setup = Warehouse(pg_url)
    setup.upgrade()
    versions = [f"v{i}" for i in range(6)]
    for version in versions:
        setup.register_model_version(TASK, version, artifact_uri=f"/m/{version}")
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(versions))

    def promote(version: str) -> None:
        wh = Warehouse(pg_url)
        try:
            barrier.wait()
            wh.promote(TASK, version)  # all first promotions at once: the alias row is new
        except BaseException as exc:  # collected and asserted below: a thread cannot raise to us
            errors.append(exc)
        finally:
            wh.close()

    threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = setup.alias_history(TASK)
    assert len(history) == 6 and history[-1]["from_version"] is None
    # Each move starts where the one before it ended.
    chain = [e["to_version"] for e in reversed(history)]
    assert [e["from_version"] for e in reversed(history)][1:] == chain[:-1]
    assert sorted(chain) == versions
    for expected in reversed(chain[:-1]):
        assert setup.rollback(TASK)["to_version"] == expected
    with pytest.raises(ModelRegistryError, match="no version before"):
        setup.rollback(TASK)
    setup.close()


# --- schema -------------------------------------------------------------------------------------
def test_upgrade_from_0001_keeps_existing_rows(url: str) -> None:
    command.upgrade(wmod.alembic_config(url=url), "0001")
    engine = create_engine(url)
    run = {
        "dagster_run_id": "run-old", "model_id": "reference", "split": "benchmark",
        "dataset_hash": "h" * 64, "prompt_version": "audit-v1", "code_version": "c0de",
        "asset_key": "gxp_scores", "partition_key": "reference|benchmark", "status": "succeeded",
        "started_at": datetime(2026, 11, 20, 8, tzinfo=UTC),
        "finished_at": datetime(2026, 11, 20, 9, tzinfo=UTC),
    }  # fmt: skip
    provenance = {k: run[k] for k in wmod.PROVENANCE_FIELDS if k in run}
    with engine.begin() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "0001"
        run_id = conn.execute(insert(BENCHMARK_RUNS).values(run)).inserted_primary_key[0]
        conn.execute(
            insert(SCORES).values(run_id=run_id, metric="gxp1_f1", value=0.75, **provenance)
        )

    wh = Warehouse(url)
    try:
        assert wh.upgrade() == "0005"
        assert wh.upgrade() == "0005"  # at head: nothing to do
        latest = wh.latest_scores()
        assert latest[["model_id", "metric", "value"]].to_dict("records") == [
            {"model_id": "reference", "metric": "gxp1_f1", "value": 0.75}
        ]
        register(wh, "v1")
        assert counts(wh) == (1, 0, 0)
        with engine.connect() as conn:
            assert conn.execute(select(BENCHMARK_RUNS.c.dagster_run_id)).scalars().all() == [
                "run-old"
            ]
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            # The migrations and the models in warehouse.py describe the same tables and indexes.
            assert compare_metadata(context, METADATA) == []
            assert context.get_current_revision() == "0005"
        command.downgrade(wmod.alembic_config(url=url), "0001")  # 0002 removes only its tables
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0001"
            assert conn.execute(select(SCORES.c.value)).scalars().all() == [0.75]
    finally:
        wh.close()
        engine.dispose()


def test_a_database_at_0001_must_be_upgraded_first(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/old.sqlite"
    command.upgrade(wmod.alembic_config(url=url), "0001")
    wh = Warehouse(url)
    with pytest.raises(WarehouseError, match=r"revision 0001, this code needs 0005: run .*upgrade"):
        wh.list_model_versions()
    wh.close()


# --- CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def cli_wh(tmp_path, monkeypatch) -> Iterator[Warehouse]:
    url = f"sqlite:///{tmp_path}/cli.sqlite"
    monkeypatch.setenv("GXPLAB_WAREHOUSE_URL", url)
    warehouse = Warehouse(url)
    warehouse.upgrade()
    yield warehouse
    warehouse.close()


def lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_cli_models_list_promote_rollback(cli_wh: Warehouse, capsys) -> None:
    assert cli.main(["models", "list"]) == 0
    assert capsys.readouterr().out.startswith("no model versions registered in sqlite:///")
    register(cli_wh, "v1")
    register(cli_wh, "v2", metrics={"eval_loss": 0.4321987}, base_model=None)
    register(cli_wh, "v1", task="gxp_audit_adapter")

    assert cli.main(["models", "promote", TASK, "v1"]) == 0
    assert capsys.readouterr().out == "qlora_adapter: production -> v1 (was unset)\n"
    assert cli.main(["models", "promote", TASK, "v2", "--reason", "better GxP F1"]) == 0
    assert capsys.readouterr().out == "qlora_adapter: production -> v2 (was v1)\n"
    assert cli.main(["models", "promote", TASK, "v2"]) == 0
    assert "already points at v2; nothing changed" in capsys.readouterr().out

    assert cli.main(["models", "list", "--task", TASK]) == 0
    out = capsys.readouterr().out
    assert out.startswith("TASK           VERSION  ALIASES     CREATED (UTC)        BASE MODEL")
    table = lines(out)
    assert set("".join(table[1])) == {"-"}
    # task, version, aliases, date, time, base model, sha256 (12 characters), metrics
    assert [row[:3] + row[5:] for row in table[2:]] == [
        [TASK, "v2", "production", "-", "b" * 12, "eval_loss=0.4322"],
        [TASK, "v1", "-", "embedded-llama-tiny", "a" * 12, "eval_loss=0.5,", "tokens_per_s=1234.5"],
    ]
    assert cli.main(["models", "list"]) == 0
    assert [row[0] for row in lines(capsys.readouterr().out)[2:]] == [
        "gxp_audit_adapter",
        TASK,
        TASK,
    ]

    assert cli.main(["models", "rollback", TASK, "--reason", "regression"]) == 0
    assert capsys.readouterr().out == (
        "qlora_adapter: production rolled back to v1 (was v2); a further rollback goes to "
        "nothing (no earlier version)\n"
    )
    assert cli_wh.get_alias(TASK)["version"] == "v1"
    assert cli.main(["models", "history", TASK]) == 0
    history = lines(capsys.readouterr().out)
    assert [row[2:6] for row in history[2:]] == [
        ["rollback", "v2", "v1", history[2][5]],
        ["promote", "v1", "v2", history[3][5]],
        ["promote", "-", "v1", history[4][5]],
    ]
    assert history[2][-1] == "regression" and history[4][-1] == "-"


USER_ERRORS = [
    (["promote", TASK, "v9"], "error: task 'qlora_adapter' has no version 'v9'"),
    (["promote", "grit_adapter", "v1"], "error: unknown task 'grit_adapter'"),
    (["rollback", TASK], "error: cannot roll back alias 'production' of task 'qlora_adapter'"),
    (["rollback", TASK, "--alias", "staging"], "error: cannot roll back alias 'staging'"),
]


@pytest.mark.parametrize(("args", "message"), USER_ERRORS)
def test_cli_user_errors_exit_2_with_one_line(cli_wh: Warehouse, capsys, args, message) -> None:
    register(cli_wh, "v1")
    cli_wh.promote(TASK, "v1")
    assert cli.main(["models", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1


def test_cli_default_warehouse_is_the_definitions_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("GXPLAB_WAREHOUSE_URL", raising=False)
    monkeypatch.setattr(cli, "PROJECT_ROOT", tmp_path)
    assert cli.main(["models", "list"]) == 0
    assert f"sqlite:///{tmp_path}/var/warehouse.sqlite" in capsys.readouterr().out
    assert (tmp_path / "var" / "warehouse.sqlite").is_file()


def test_cli_never_shows_the_password(monkeypatch, capsys) -> None:
    secret = "s3cr3t-Pa55"
    monkeypatch.setenv("GXPLAB_WAREHOUSE_URL", f"postgresql://gxp:{secret}@127.0.0.1:1/results")
    assert cli.main(["models", "rollback", TASK]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: cannot connect to the warehouse at postgresql+psycopg2://gxp:***@"
    )
    assert secret not in err and "Traceback" not in err


def test_cli_help_shows_examples(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["models", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for action in ("list", "promote", "rollback", "history"):
        assert f"gxplab models {action} qlora_adapter" in out or action == "list"
    assert "gxplab models list --task qlora_adapter" in out and "GXPLAB_WAREHOUSE_URL" in out
    with pytest.raises(SystemExit):
        cli.main(["models", "promote", "--help"])
    assert "example:\n  gxplab models promote qlora_adapter" in capsys.readouterr().out
