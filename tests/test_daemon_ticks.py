"""The four sensors ticking in a real `dagster-daemon run`, on a Dagster instance on PostgreSQL.

The unit tests (tests/test_*sensor*.py) call each sensor through dg.build_sensor_context; this one
writes $DAGSTER_HOME with `gxplab init-instance` (the production profile: PostgreSQL storage,
QueuedRunCoordinator), prepares an input for every sensor, starts them with `dagster sensor start
--start-all`, runs the daemon as a subprocess (its own session, SIGINT reset to default) and reads
the ticks back from the instance:
- inbox_sensor: a good pair becomes an `inbox_batch` partition and a queued gxp_inbox_job run; a
  bad pair goes to quarantine/ with its reason file;
- model_registry_sensor: the candidate_model partitions equal configs/models.yaml, and the
  evaluation of the one model that needs nothing (reference_auditor) is requested per split;
- score_regression_sensor: a production adapter scored below its threshold gets one retraining run;
- run_failure_sensor: its first tick only sets its cursor to the present; a run that fails after it
  is written to the warehouse's run_failures table by a later tick, with the secret masked.
The run queue is held (max_concurrent_runs: 0 in the copied dagster.yaml) so that the requested
runs stay QUEUED: the test is about the ticks, and launching run workers would only load the CPUs.
Teardown SIGTERMs the daemon's process group (the daemon and its code server), SIGKILL after a
grace period, and checks that no process of the group is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import InstigatorState, InstigatorTick, TickStatus
from dagster_processes import live_group_members, run_command, running_daemon

from assets.partitions import model_split_key
from resources.clients.warehouse import Provenance, Warehouse
from scoring.model_registry import GXP_AUDIT, load_model_registry, model_availability
from synthetic.catalog import load_catalog
from synthetic.contracts import SPLITS
from synthetic.jsonl import dumps_jsonl
from synthetic.splits import SplitSpec, generate_split

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(sys.platform != "linux", reason="checks the daemon's processes in /proc"),
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SENSORS = ("inbox_sensor", "model_registry_sensor", "run_failure_sensor",
           "score_regression_sensor")
TICK_TIMEOUT_S = 120.0  # the run-failure sensor's second tick comes 30 s after its first
GOOD, BAD = "site-a_2026-01", "bad-records"
SECRET = "daemon-tick-Zq81-do-not-leak"  # GXPLAB_DAEMON_TEST_TOKEN: a secret by its name
T = TypeVar("T")


# --- the environment, the instance and the inputs -----------------------------------------------
def _model_env_names() -> set[str]:
    """Every variable configs/models.yaml reads: unset, only reference_auditor can run."""
    names: set[str] = set()
    for model in load_model_registry():
        names.update(model.required_env)
        names.update(n for n in (model.api_base_env, model.api_key_env, model.model_name_env) if n)
    return names


def daemon_env(tmp_path: Path, pg_url: str) -> dict[str, str]:
    """The environment of the CLI calls and the daemon: everything under tmp_path."""
    drop = _model_env_names()
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("GXPLAB_", "DAGSTER_HOME"))}
    env.update(
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        GXPLAB_DAGSTER_PG_URL=pg_url,
        GXPLAB_ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        GXPLAB_WAREHOUSE_URL=f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        GXPLAB_LLM_CACHE_DIR=str(tmp_path / "llm_cache"),
        GXPLAB_INBOX_DIR=str(tmp_path / "inbox"),
        GXPLAB_DAEMON_TEST_TOKEN=SECRET,
        DAGSTER_DISABLE_TELEMETRY="1",
    )
    return env


def run_cli(env: dict[str, str], *args: str) -> str:
    return run_command([str(BIN / args[0]), *args[1:]], env, timeout=180).stdout


def hold_run_queue(home: Path) -> None:
    """Keep every submitted run QUEUED (the coordinator launches none)."""
    path = home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    config["concurrency"]["runs"]["max_concurrent_runs"] = 0
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def pair(master) -> tuple[list[dict], list[dict]]:
    """A small valid batch (records, label manifest), as in tests/test_inbox_sensor.py."""
    generated = generate_split(SplitSpec("train", 3, 4, 6, 0.3), master, 7, load_catalog())
    return generated.records, generated.manifest


def drop_pair(inbox: Path, name: str, records: list[dict], labels: list[dict]) -> None:
    """Write a pair as if it had been finished a minute ago (settled for the sensor)."""
    then = time.time() - 60
    for kind, rows in (("records", records), ("labels", labels)):
        path = inbox / f"{name}.{kind}.jsonl"
        path.write_bytes(dumps_jsonl(rows))
        os.utime(path, (then, then))


def seed_regressed_adapter(url: str) -> None:
    """grpo_adapter v1 in production, weighted_reward 0.12 (threshold 0.2 in retraining.yaml)."""
    wh = Warehouse(url)
    try:
        wh.upgrade()
        wh.register_model_version("grpo_adapter", "v1", artifact_uri="/models/grpo_adapter/v1")
        wh.promote("grpo_adapter", "v1")
        prov = Provenance("run-grpo-v1", "embedded-grpo", "test", "d" * 64, "p-v1", "c0de",
                          model_version="v1")
        wh.record_run(prov, asset_key="judge_evaluations", partition_key="embedded-grpo|test",
                      status="succeeded", scores=[{"metric": "weighted_reward", "value": 0.12}])
    finally:
        wh.close()


# --- the daemon ---------------------------------------------------------------------------------
def wait_for(check: Callable[[], T | None], what: str, daemon: subprocess.Popen,
             log_path: Path) -> T:
    """Poll `check` until it returns something; fail with the daemon's log tail otherwise."""
    deadline = time.monotonic() + TICK_TIMEOUT_S
    while True:
        value = check()
        if value:
            return value
        exited = daemon.poll()
        if exited is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-4000:]
            why = f"the daemon exited with {exited}" if exited is not None else "timed out"
            pytest.fail(f"waiting for {what}: {why}; daemon log tail:\n{tail}")
        time.sleep(1.0)


def sensor_states(instance: dg.DagsterInstance) -> dict[str, InstigatorState]:
    states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    return {s.name: s for s in states if s.name in SENSORS}


def completed_ticks(instance: dg.DagsterInstance, state: InstigatorState) -> list[InstigatorTick]:
    """The sensor's finished ticks, oldest first."""
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return [t for t in reversed(ticks) if t.is_completed]


def first_ticks(instance: dg.DagsterInstance) -> dict[str, InstigatorTick] | None:
    """Each sensor's first finished tick, once every sensor has one."""
    states = sensor_states(instance)
    firsts = {}
    for name in SENSORS:
        ticks = completed_ticks(instance, states[name]) if name in states else []
        if not ticks:
            return None
        firsts[name] = ticks[0]
    return firsts


def recorded_failures(wh: Warehouse, run_id: str) -> list[dict]:
    """The run_failures rows of `run_id`."""
    failures = wh.run_failures()
    return failures[failures["dagster_run_id"] == run_id].to_dict("records")


# --- the test -----------------------------------------------------------------------------------
def test_each_sensor_ticks_in_the_daemon_on_a_postgres_instance(
        pg_instance_url, tmp_path, monkeypatch, pair):
    env = daemon_env(tmp_path, pg_instance_url)
    home = Path(env["DAGSTER_HOME"])
    assert "PostgreSQL" in run_cli(env, "gxplab", "init-instance")
    hold_run_queue(home)
    inbox = Path(env["GXPLAB_INBOX_DIR"])
    inbox.mkdir()
    records, labels = pair
    no_batch = [dict(r) for r in records]
    del no_batch[2]["batch_id"]
    drop_pair(inbox, GOOD, records, labels)
    drop_pair(inbox, BAD, no_batch, labels)
    warehouse_url = env["GXPLAB_WAREHOUSE_URL"]
    seed_regressed_adapter(warehouse_url)
    run_cli(env, "dagster", "sensor", "start", "--start-all", "-w", "workspace.yaml")

    monkeypatch.setenv("GXPLAB_DAGSTER_PG_URL", pg_instance_url)  # dagster.yaml reads it
    log_path = tmp_path / "daemon.log"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        with running_daemon(env, log_path) as daemon:
            pgid = daemon.pid
            firsts = wait_for(lambda: first_ticks(instance), "a tick of every sensor",
                              daemon, log_path)
            # run_failure_sensor's first tick set its cursor to the present: a run failing now
            # is one its next tick must record. Fail one of the runs the registry requested.
            failed = instance.get_run_by_id(firsts["model_registry_sensor"].run_ids[0])
            instance.report_run_failed(failed, message=f"run worker lost (token {SECRET})")
            wh = Warehouse(warehouse_url)
            try:
                rows = wait_for(lambda: recorded_failures(wh, failed.run_id),
                                f"run_failures to record run {failed.run_id}", daemon, log_path)
            finally:
                wh.close()
            failure_ticks = completed_ticks(instance, sensor_states(instance)
                                            ["run_failure_sensor"])
            runs = {r.run_id: r for r in instance.get_runs()}
            candidate_partitions = instance.get_dynamic_partitions("candidate_model")
            inbox_partitions = instance.get_dynamic_partitions("inbox_batch")
    assert live_group_members(pgid) == [], "the daemon's processes outlived the teardown"

    # inbox_sensor: the good pair is a partition and a queued run, the bad one is quarantined
    tick = firsts["inbox_sensor"]
    assert tick.status == TickStatus.SUCCESS, tick.tick_data.error
    assert list(tick.run_keys) == [f"inbox:{GOOD}"]
    (inbox_run,) = (runs[i] for i in tick.run_ids)
    assert (inbox_run.job_name, inbox_run.tags["dagster/partition"]) == ("gxp_inbox_job", GOOD)
    assert inbox_run.status == dg.DagsterRunStatus.QUEUED
    assert inbox_partitions == [GOOD]
    assert json.loads(tick.cursor)["pending"] == [GOOD]
    assert sorted(p.name for p in (inbox / "accepted" / GOOD).iterdir()) == [
        f"{GOOD}.labels.jsonl", f"{GOOD}.records.jsonl"]
    reason = (inbox / "quarantine" / f"{BAD}.reason.txt").read_text()
    assert f"{BAD}.records.jsonl line 3" in reason and "field 'batch_id' is missing" in reason
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []  # nothing left behind

    # model_registry_sensor: partitions = the enabled models; reference_auditor evaluated per split
    tick = firsts["model_registry_sensor"]
    assert tick.status == TickStatus.SUCCESS, tick.tick_data.error
    digest = hashlib.sha256((PROJECT_ROOT / "configs" / "models.yaml").read_bytes()).hexdigest()
    assert tick.cursor == digest
    enabled = [m for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]
    assert sorted(candidate_partitions) == sorted(m.id for m in enabled)
    runnable = [m for m in enabled if model_availability(m, env)[0] and not m.model_assets]
    assert [m.id for m in runnable] == ["reference_auditor"]
    assert sorted(tick.run_keys) == sorted(f"{digest}:reference_auditor:{s}" for s in SPLITS)
    evaluations = [runs[i] for i in tick.run_ids]  # the tick stores the runs it created
    assert {r.job_name for r in evaluations} == {"gxp_evaluation_job"}
    assert sorted(r.tags["dagster/partition"] for r in evaluations) == sorted(
        str(model_split_key("reference_auditor", s)) for s in SPLITS)

    # score_regression_sensor: one retraining run of the regressed production version
    tick = firsts["score_regression_sensor"]
    assert tick.status == TickStatus.SUCCESS, tick.tick_data.error
    assert list(tick.run_keys) == ["score_regression:grpo_adapter:v1"]
    (retrain,) = (runs[i] for i in tick.run_ids)
    assert retrain.job_name == "gxp_models_job"
    assert retrain.asset_selection == {dg.AssetKey("grpo_adapter")}
    assert retrain.tags["gxplab/regressed_version"] == "v1"
    assert "0.1200 < threshold 0.2" in retrain.tags["gxplab/regression"]
    assert json.loads(tick.cursor)["grpo_adapter"]["model_version"] == "v1"

    # run_failure_sensor: first tick initiates the cursor, a later one records the failed run
    first, *later = failure_ticks
    assert first.status == TickStatus.SKIPPED
    assert first.skip_reason.startswith("Initiating run_failure_sensor")
    assert later and all(t.status != TickStatus.FAILURE for t in later), \
        [t.tick_data.error for t in later]
    assert [t.status for t in later if failed.run_id in t.origin_run_ids] == [TickStatus.SUCCESS]
    (row,) = rows
    assert row["job_name"] == "gxp_evaluation_job"
    assert row["partition_key"] == failed.tags["dagster/partition"]
    assert "run worker lost (token ***)" in row["error"] and SECRET not in row["error"]
    assert runs[failed.run_id].status == dg.DagsterRunStatus.FAILURE
