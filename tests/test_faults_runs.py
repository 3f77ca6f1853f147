"""Faults of GxPLab issue 5, item 8, with the Dagster instance on PostgreSQL:

(a) a run killed with SIGKILL mid-materialization is re-executed from failure and finishes with
    nothing duplicated in the warehouse (warehouse revision 0005: `record_run` keys a step on the
    re-execution lineage, `dagster_root_run_id`);
(b) PostgreSQL restarted during a run: a quick restart is absorbed by dagster-postgres'
    connection retries (the run succeeds); an outage longer than those retries fails the run
    cleanly (FAILURE, the error in its event log) and its re-execution from failure succeeds.

The runs are launched out of process (`python tests/fault_jobs.py JOB`, `execute_job` with the
multiprocess executor), as a run worker is. (b) runs on a private throw-away PostgreSQL cluster
(initdb + pg_ctl, as the `postgres` OS user when root), never on the shared test server. What
Dagster did in each case is written up in docs/deploy.md ("Recovering from a killed run or a
PostgreSQL restart").
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import dagster as dg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from dagster._core.events import DagsterEventType, RunFailureReason
from dagster._core.execution.plan.state import KnownExecutionState
from dagster_processes import free_port, missing_requirement
from sqlalchemy import create_engine, insert, inspect, select, text

from resources.clients import warehouse as wmod
from resources.clients.warehouse import METADATA, Provenance, Warehouse

ROOT = Path(__file__).resolve().parent.parent
FAULT_JOBS = ROOT / "tests" / "fault_jobs.py"
HEAD = "0005"
T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
_RUN_TIMEOUT_S = 150  # a run (or a wait for one) that takes longer has hung: the test fails


# --- warehouse: one row per step of a re-execution lineage (revision 0005) --------------------
def prov(run: str, root: str | None = None) -> Provenance:
    return Provenance(run, "m1", "test", "d" * 64, "p-v1", "c0de", "v1", dagster_root_run_id=root)


def items(value: float) -> list[dict]:
    return [{"item_id": f"q{i}", "metric": "accuracy", "value": value, "status": "ok"}
            for i in range(3)]  # fmt: skip


def record(wh: Warehouse, p: Provenance, value: float, asset_key: str = "batchqa_eval") -> int:
    return wh.record_run(
        p, asset_key=asset_key, partition_key="m1", status="succeeded",
        scores=[{"metric": "accuracy", "value": value}], item_scores=items(value),
    )  # fmt: skip


def runs_of(wh: Warehouse) -> list[dict]:
    runs = wmod.BENCHMARK_RUNS.c
    stmt = select(runs.id, runs.dagster_run_id, runs.dagster_root_run_id, runs.asset_key,
                  runs.started_at).order_by(runs.id)  # fmt: skip
    with wh._engine.connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def test_a_re_execution_replaces_its_root_runs_rows_and_keeps_other_lineages(
    wh: Warehouse,
) -> None:
    first = record(wh, prov("run-1"), 0.5)  # an original run: root_run_id is None
    assert record(wh, prov("run-1", "run-1"), 0.5) == first  # root == itself: the same lineage
    started = runs_of(wh)[0]["started_at"]
    # A re-execution of run-1 (a new run id whose root is run-1) re-runs the step: replaced.
    assert record(wh, prov("run-2", "run-1"), 0.75) == first
    # A re-execution of the re-execution: Dagster's root_run_id is still the original run.
    assert record(wh, prov("run-3", "run-1"), 1.0) == first
    other = record(wh, prov("run-9"), 0.25)  # another lineage: its own row, history kept
    record(wh, prov("run-3", "run-1"), 1.0, asset_key="judge_evaluations")  # another step

    rows = runs_of(wh)
    assert [(r["dagster_run_id"], r["dagster_root_run_id"], r["asset_key"]) for r in rows] == [
        ("run-3", "run-1", "batchqa_eval"),  # the run that wrote it last, for traceability
        ("run-9", "run-9", "batchqa_eval"),
        ("run-3", "run-1", "judge_evaluations"),
    ]
    assert rows[0]["started_at"] != started  # started_at is the re-execution's, not run-1's
    counts = wh.table_counts()
    assert (counts["benchmark_runs"], counts["scores"], counts["item_scores"]) == (3, 3, 9)
    latest = wh.item_scores(asset_key="batchqa_eval")
    assert latest.groupby("run_id")["value"].unique().map(list).to_dict() == {
        first: [1.0],
        other: [0.25],
    }
    assert set(latest[latest["run_id"] == first]["dagster_run_id"]) == {"run-3"}


def test_provenance_root_run_id_is_optional_and_checked() -> None:
    assert prov("run-1").lineage_run_id == "run-1"
    assert prov("run-2", "run-1").lineage_run_id == "run-1"
    assert "dagster_root_run_id" not in prov("run-2", "run-1").columns()  # not on child rows
    with pytest.raises(ValueError, match="dagster_root_run_id must be a non-empty string"):
        prov("run-2", " ")


def test_upgrade_from_0004_backfills_the_lineage_matches_the_models_and_downgrades(
    url: str,
) -> None:
    Warehouse(url).close()  # creates the SQLite file's folder
    command.upgrade(wmod.alembic_config(url=url), "0004")
    engine = create_engine(url)
    old = prov("run-old").columns()
    try:
        with engine.begin() as conn:  # a row as 0004 wrote it (no dagster_root_run_id column)
            conn.execute(text(
                "INSERT INTO benchmark_runs (dagster_run_id, model_id, split, dataset_hash, "
                "prompt_version, code_version, model_version, asset_key, partition_key, status, "
                "started_at) VALUES (:dagster_run_id, :model_id, :split, :dataset_hash, "
                ":prompt_version, :code_version, :model_version, 'batchqa_eval', 'm1', "
                "'succeeded', :t0)"
            ), {**old, "t0": T0})  # fmt: skip
            run_id = conn.execute(select(wmod.BENCHMARK_RUNS.c.id)).scalar_one()
            conn.execute(insert(wmod.SCORES).values(run_id=run_id, metric="accuracy",
                                                    value=0.5, **old))  # fmt: skip
        wh = Warehouse(url)
        try:
            assert wh.upgrade() == HEAD
            assert wh.upgrade() == HEAD  # at head: nothing to do
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                assert compare_metadata(context, METADATA) == []  # migrated == models
            assert [r["dagster_root_run_id"] for r in runs_of(wh)] == ["run-old"]  # backfilled
            # A re-execution of the pre-0005 run replaces its row instead of adding one.
            assert record(wh, prov("run-new", "run-old"), 1.0) == run_id
            assert wh.table_counts()["benchmark_runs"] == 1
        finally:
            wh.close()

        command.downgrade(wmod.alembic_config(url=url), "0004")  # drops only the column
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("benchmark_runs")}
            assert "dagster_root_run_id" not in columns
            assert conn.execute(select(wmod.SCORES.c.value)).scalars().all() == [1.0]
        command.upgrade(wmod.alembic_config(url=url), "head")  # and up again
    finally:
        engine.dispose()


# --- out-of-process runs -------------------------------------------------------------------------
@dataclass
class RunSetup:
    """A DAGSTER_HOME on PostgreSQL, a warehouse URL and the marker folder of the fault jobs."""

    home: Path
    warehouse_url: str
    markers: Path
    env: dict[str, str]

    @classmethod
    def create(cls, tmp_path: Path, instance_url: str, warehouse_url: str) -> RunSetup:
        home, markers = tmp_path / "dagster_home", tmp_path / "markers"
        home.mkdir()
        markers.mkdir()
        (home / "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\nstorage:\n  postgres:\n"
            f"    postgres_url: {instance_url}\n"
        )
        env = {**os.environ, "DAGSTER_HOME": str(home), "GXPLAB_FAULT_DIR": str(markers),
               "GXPLAB_WAREHOUSE_URL": warehouse_url}  # fmt: skip
        return cls(home, warehouse_url, markers, env)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def launch(self, job: str, *extra: str) -> Worker:
        """A run worker in its own process group (so that SIGKILL reaches its step processes);
        stdout and stderr (the steps' too) go to a log file."""
        log = self.home / f"worker-{len(list(self.home.glob('worker-*.log')))}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, str(FAULT_JOBS), job, *extra], cwd=ROOT, env=self.env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        return Worker(process, log)

    def reexecute_from_failure(self, job: str, run_id: str) -> str:
        """Re-execute `run_id` from its failure in a new run worker; returns the new run id."""
        worker = self.launch(job, "--from-failure", run_id)
        try:
            assert worker.wait() == 0, worker.output()[-5000:]
        finally:
            worker.stop()
        _, new_run_id, status = worker.output().splitlines()[-1].split()
        assert status == "SUCCESS"
        return new_run_id

    def lineage_rows(self, root_run_id: str) -> list[dict]:
        wh = Warehouse(self.warehouse_url)
        try:
            rows = [r for r in runs_of(wh) if r["dagster_root_run_id"] == root_run_id]
            items = wh.item_scores()
        finally:
            wh.close()
        for row in rows:
            row["items"] = int((items["run_id"] == row["id"]).sum())
        return rows


@dataclass
class Worker:
    """A run worker process (`python tests/fault_jobs.py ...`) and its log file."""

    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def wait(self) -> int:
        return self.process.wait(timeout=_RUN_TIMEOUT_S)

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll `condition` while the worker runs; fail if it exits first or takes too long."""
        deadline = time.monotonic() + _RUN_TIMEOUT_S
        while not condition():
            rc = self.process.poll()
            assert rc is None, f"run worker exited ({rc}) before {what}:\n{self.output()[-5000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def kill(self) -> int:
        """SIGKILL the worker's process group (its step processes too); returns its status."""
        os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        """Kill what is left of the worker (after a failed assertion)."""
        if self.process.poll() is None:
            self.kill()


def only_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    (run,) = instance.get_runs()
    return run


def step_statuses(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    return {s.step_key: s.status.value for s in instance.get_run_step_stats(run_id)}


# --- (a) SIGKILL mid-materialization -------------------------------------------------------------
@pytest.mark.postgres
def test_a_run_killed_mid_materialization_is_reexecuted_without_duplicates(
    pg_instance_url: str, pg_url: str, tmp_path: Path
) -> None:
    setup = RunSetup.create(tmp_path, pg_instance_url, pg_url)
    worker = setup.launch("fault_kill_job")
    try:
        # fault_audit succeeded; fault_scores wrote its warehouse rows and is still running.
        worker.wait_until((setup.markers / "scores_written").exists, "fault_scores' rows")
        assert worker.kill() == -signal.SIGKILL
    finally:
        worker.stop()

    with setup.instance() as instance:
        run = only_run(instance)
        # Nothing in the killed process could say so: the run is left STARTED, its step in
        # progress. The code server's orphan check (DefaultRunLauncher) marks it failed, so do.
        assert run.status == dg.DagsterRunStatus.STARTED
        statuses = step_statuses(instance, run.run_id)
        assert statuses == {"fault_audit": "SUCCESS", "fault_scores": "IN_PROGRESS"}
        with pytest.raises(dg.DagsterInvariantViolationError, match="not failed or canceled"):
            # What execute_job(reexecution_options=from_failure(...)) checks first.
            KnownExecutionState.build_resume_retry_reexecution(instance, run)
        instance.report_engine_event(
            f"Run execution process for {run.run_id} was terminated by signal 9 (SIGKILL).", run
        )
        instance.report_run_failed(run)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    before = setup.lineage_rows(run.run_id)
    assert [(r["asset_key"], r["dagster_run_id"]) for r in before] == [
        ("fault_audit", run.run_id), ("fault_scores", run.run_id)
    ]  # fmt: skip

    new_run_id = setup.reexecute_from_failure("fault_kill_job", run.run_id)
    with setup.instance() as instance:
        new_run = instance.get_run_by_id(new_run_id)
        assert (new_run.root_run_id, new_run.parent_run_id) == (run.run_id, run.run_id)
        assert step_statuses(instance, new_run_id) == {"fault_scores": "SUCCESS"}  # not audit
    after = setup.lineage_rows(run.run_id)
    # One row per step of the lineage (not three), the re-run step's carrying the new run id.
    assert [(r["asset_key"], r["dagster_run_id"], r["items"]) for r in after] == [
        ("fault_audit", run.run_id, 2), ("fault_scores", new_run_id, 2)
    ]  # fmt: skip
    assert [r["id"] for r in after] == [r["id"] for r in before]


# --- (b) PostgreSQL restarted during a run -------------------------------------------------------
def _no_private_cluster(reason: str) -> NoReturn:
    missing_requirement(f"the PostgreSQL restart tests need a private cluster: {reason}")



@dataclass
class PrivateCluster:
    """A throw-away PostgreSQL cluster on a free port (trust authentication on 127.0.0.1)."""

    bin_dir: Path
    folder: Path
    port: int
    as_postgres: bool

    @property
    def options(self) -> str:
        return (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off")  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        cmd = [str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"),
               "-l", str(self.folder / "server.log"), "-w", "-t", "60", *args]  # fmt: skip
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=90)

    def start(self) -> None:
        self.pg_ctl("-o", self.options, "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self.pg_ctl("-m", "fast", "-o", self.options, "restart")

    def started_at(self) -> float:
        """pg_postmaster_start_time() as a POSIX timestamp."""
        engine = create_engine(self.url("postgres"))
        try:
            with engine.connect() as conn:
                sql = "SELECT extract(epoch FROM pg_postmaster_start_time())"
                return float(conn.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()

    def create_database(self, name: str) -> None:
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    """A private cluster with databases `dagster` (the instance) and `warehouse` (apart: both
    keep an alembic_version table); stopped and removed afterwards."""
    initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    initdb = initdbs[-1] if initdbs else Path(shutil.which("initdb") or "/nonexistent")
    if not initdb.exists():
        _no_private_cluster("no initdb (install postgresql)")
    as_postgres = os.geteuid() == 0  # initdb refuses to run as root
    if as_postgres:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _no_private_cluster("running as root and there is no `postgres` OS user for initdb")
        if shutil.which("runuser") is None:
            _no_private_cluster("running as root without runuser to become `postgres`")
    folder = Path(tempfile.mkdtemp(prefix="gxplab-pg-"))  # not under pytest's root-only tmp
    cluster = PrivateCluster(initdb.parent, folder, free_port(), as_postgres)
    if as_postgres:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    try:
        cmd = [str(initdb), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres",
               "-E", "UTF8", "--no-sync"]  # fmt: skip
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if as_postgres else cmd,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        cluster.start()
        cluster.create_database("dagster")
        cluster.create_database("warehouse")
        yield cluster
    finally:
        if (folder / "data" / "postmaster.pid").exists():
            cluster.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _private_setup(private_pg: PrivateCluster, tmp_path: Path) -> RunSetup:
    return RunSetup.create(tmp_path, private_pg.url("dagster"), private_pg.url("warehouse"))


def _failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    return "\n".join(
        f"{e.dagster_event.message} {e.dagster_event.event_specific_data!r}"
        for e in instance.all_logs(run_id, of_type=kinds)
    )


@pytest.mark.postgres
def test_a_quick_postgres_restart_mid_run_is_absorbed_by_dagsters_retries(
    private_pg: PrivateCluster, tmp_path: Path
) -> None:
    setup = _private_setup(private_pg, tmp_path)
    worker = setup.launch("fault_restart_job")
    try:
        worker.wait_until((setup.markers / "in_window").exists, "the step's heartbeat")
        before = private_pg.started_at()
        private_pg.restart()  # pg_ctl restart -m fast: ends every connection; about 0.3 s down
        restarted_at = private_pg.started_at()
        assert restarted_at > before
        (setup.markers / "restarted").touch()
        assert worker.wait() == 0, worker.output()[-5000:]
    finally:
        worker.stop()

    with setup.instance() as instance:
        run = only_run(instance)
        # dagster-postgres retried its connections (5 retries, exponential from 0.2 s: about
        # 11 s in all), so the restart did not fail the run.
        assert run.status == dg.DagsterRunStatus.SUCCESS
        events = instance.all_logs(run.run_id)
        heartbeats = [e.timestamp for e in events if "waiting for the PostgreSQL" in e.message]
        assert min(heartbeats) < restarted_at  # the run was writing events when PG went down
        success = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_SUCCESS)
        assert [e.timestamp > restarted_at for e in success] == [True]
    (row,) = setup.lineage_rows(run.run_id)  # written before and after the restart: one row
    assert (row["dagster_run_id"], row["items"]) == (run.run_id, 2)


# How the step's storage write fails depends on where the server's shutdown catches it: a new
# connection whose retries are spent, or a statement in flight on an open one (seen under load).
STORAGE_ERRORS = ("too many retries for DB connection",
                  "server closed the connection unexpectedly",
                  "terminating connection due to administrator command")


def _storage_error(text: str) -> bool:
    return any(error in text for error in STORAGE_ERRORS)


@pytest.mark.postgres
def test_a_postgres_outage_past_the_retries_fails_the_run_cleanly_and_reexecution_succeeds(
    private_pg: PrivateCluster, tmp_path: Path
) -> None:
    setup = _private_setup(private_pg, tmp_path)
    worker = setup.launch("fault_outage_job")
    try:
        worker.wait_until((setup.markers / "in_window").exists, "the step's heartbeat")
        private_pg.stop()
        # Down until Dagster's event log gives up inside the step (its retries spent), then up:
        # a restart that took longer than the retries cover.
        worker.wait_until((setup.markers / "storage_gave_up").exists, "the event log to give up")
        private_pg.start()
        assert worker.wait() == 1, worker.output()[-5000:]
    finally:
        worker.stop()
    assert _storage_error(worker.output()), worker.output()[-5000:]

    with setup.instance() as instance:
        run = only_run(instance)
        assert run.status == dg.DagsterRunStatus.FAILURE  # terminal, not left STARTED
        assert step_statuses(instance, run.run_id) == {"outage_scores": "FAILURE"}
        assert _storage_error(_failure_text(instance, run.run_id))
        # A step failure: run retries (retry_on_asset_or_op_failure: false) leave it alone, so
        # an operator re-executes it from failure.
        (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
        reason = failure.dagster_event.event_specific_data.failure_reason
        assert reason == RunFailureReason.STEP_FAILURE
    assert [r["dagster_run_id"] for r in setup.lineage_rows(run.run_id)] == [run.run_id]

    (setup.markers / "restarted").touch()
    new_run_id = setup.reexecute_from_failure("fault_outage_job", run.run_id)
    (row,) = setup.lineage_rows(run.run_id)  # the failed run's row replaced, not duplicated
    assert (row["dagster_run_id"], row["items"]) == (new_run_id, 2)
