"""The two Dagster instance profiles, loaded as real instances, and `gxplab init-instance`.

dagster.yaml (embedded, SQLite in a temporary DAGSTER_HOME) and dagster.postgres.yaml (production,
on the real PostgreSQL server of tests/pg.py, a fresh schema per test): the settings read back
through the instance API, the `gpu` pool that init-instance sets (and keeps, and cleans), and
that neither file holds a secret.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import DefaultRunCoordinator

from jobs.cli import main

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "dagster.yaml"
PRODUCTION = ROOT / "dagster.postgres.yaml"
PG_URL_ENV = "GXPLAB_DAGSTER_PG_URL"


def _instance(profile: Path, home: Path) -> dg.DagsterInstance:
    """The instance a deployment gets from `profile` as $DAGSTER_HOME/dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(profile, home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


@pytest.fixture
def sqlite_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv(PG_URL_ENV, raising=False)
    return home


@pytest.fixture
def pg_home(tmp_path, monkeypatch, pg_url) -> Path:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv(PG_URL_ENV, pg_url)
    return home


def _gpu(instance: dg.DagsterInstance):
    return instance.event_log_storage.get_concurrency_info("gpu")


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="gxp_models_job", run_id=run_id, status=status))
    return run_id


# --- the embedded profile --------------------------------------------------------------------


def test_embedded_profile_launches_at_once_and_retries_only_crashed_runs(sqlite_home):
    with _instance(EMBEDDED, sqlite_home) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        # No queue: `dagster job backfill` and execute_in_process need no daemon.
        # (DefaultRunCoordinator is Dagster's old name of SyncInMemoryRunCoordinator.)
        assert isinstance(instance.run_coordinator, DefaultRunCoordinator)
        assert not isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.get_concurrency_config().run_queue_config is None
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 4
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 0  # no run time limit locally
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 120


# --- the production profile ------------------------------------------------------------------


@pytest.mark.postgres
def test_production_profile_reads_back_from_a_real_postgres(pg_home):
    with _instance(PRODUCTION, pg_home) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"

        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        queue = concurrency.run_queue_config
        assert queue.max_concurrent_runs == 4
        limits = {limit["key"]: limit for limit in queue.tag_concurrency_limits}
        assert limits["gxplab/gpu-training"] == {"key": "gxplab/gpu-training", "limit": 1}
        assert limits["dagster/backfill"]["limit"] == 2
        assert queue.max_user_code_failure_retries == 3
        assert queue.should_block_op_concurrency_limited_runs
        assert concurrency.pool_config.default_pool_limit == 4
        assert concurrency.pool_config.pool_granularity.value == "op"
        assert concurrency.pool_config.op_granularity_run_buffer == 0

        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 300
        assert instance.run_monitoring_cancel_timeout_seconds == 300
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 120

        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False


def test_production_profile_takes_the_url_from_the_environment_only(tmp_path, monkeypatch):
    monkeypatch.delenv(PG_URL_ENV, raising=False)
    with pytest.raises(Exception, match=PG_URL_ENV):
        _instance(PRODUCTION, tmp_path / "dagster_home")


# --- no secret in either file ----------------------------------------------------------------

SECRET_KEYS = re.compile(r"url|password|passwd|secret|token|credential|username|hostname",
                         re.IGNORECASE)


def _leaves(node, path=()):
    if isinstance(node, dict):
        if set(node) == {"env"}:  # an `env:` reference: the value lives in the environment
            yield path, node
            return
        for key, value in node.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, str(i)))
    else:
        yield path, node


@pytest.mark.parametrize("profile", [EMBEDDED, PRODUCTION], ids=lambda p: p.name)
def test_profiles_hold_no_secret(profile):
    text = profile.read_text()
    for path, value in _leaves(yaml.safe_load(text)):
        if isinstance(value, dict):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", value["env"]), (path, value)
            continue
        assert not SECRET_KEYS.search(path[-1]), f"{'.'.join(path)} is a literal, not env:"
        assert "://" not in str(value), f"{'.'.join(path)} holds a URL: {value}"
    # Comments may show the URL's shape, with a placeholder for the password only.
    for user, password in re.findall(r"://([^:/@\s]+):([^@\s]+)@", text):
        assert password == "PASSWORD", f"a password ({user}:...) is written in {profile.name}"
    if profile == PRODUCTION:
        assert yaml.safe_load(text)["storage"]["postgres"] == {"postgres_url": {"env": PG_URL_ENV}}


# --- gxplab init-instance: the gpu pool -----------------------------------------------------


def _check_init_instance_sets_gpu_pool_once(home: Path, capsys) -> None:
    assert main(["init-instance"]) == 0
    assert "concurrency pool gpu: limit 1, set" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        gpu = _gpu(instance)
        assert (gpu.limit, gpu.slot_count, gpu.using_default_limit) == (1, 1, False)
        # The limit holds: a second training step (another run) waits for the first.
        storage = instance.event_log_storage
        first, second = (_run(instance, dg.DagsterRunStatus.STARTED) for _ in range(2))
        assert storage.claim_concurrency_slot("gpu", first, "qlora_adapter").is_claimed
        assert not storage.claim_concurrency_slot("gpu", second, "dpo_adapter").is_claimed
        storage.free_concurrency_slot_for_step(first, "qlora_adapter")
        storage.free_concurrency_slot_for_step(second, "dpo_adapter")  # leave its pending claim

    assert main(["init-instance"]) == 0  # again: nothing changes
    assert "concurrency pool gpu: limit 1, kept" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        gpu = _gpu(instance)
        assert (gpu.limit, gpu.slot_count, gpu.using_default_limit) == (1, 1, False)
        # An operator's explicit limit survives `make ui`/`make run` (which run init-instance).
        instance.event_log_storage.set_concurrency_slots("gpu", 2)
    assert main(["init-instance"]) == 0
    assert "concurrency pool gpu: limit 2, kept" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert (_gpu(instance).limit, _gpu(instance).slot_count) == (2, 2)


def test_init_instance_sets_gpu_pool_on_sqlite(sqlite_home, capsys):
    _check_init_instance_sets_gpu_pool_once(sqlite_home, capsys)
    assert "DefaultRunCoordinator" in (sqlite_home / "dagster.yaml").read_text()


@pytest.mark.postgres
def test_init_instance_sets_gpu_pool_on_postgres(pg_home, pg_url, capsys):
    _check_init_instance_sets_gpu_pool_once(pg_home, capsys)
    written = (pg_home / "dagster.yaml").read_text()
    assert "QueuedRunCoordinator" in written and pg_url not in written
    with dg.DagsterInstance.from_config(str(pg_home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"


def test_init_instance_frees_gpu_slots_of_finished_runs_only(sqlite_home, capsys):
    assert main(["init-instance"]) == 0
    with dg.DagsterInstance.from_config(str(sqlite_home)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("gpu", 2)
        killed = _run(instance, dg.DagsterRunStatus.STARTED)
        running = _run(instance, dg.DagsterRunStatus.STARTED)
        assert storage.claim_concurrency_slot("gpu", killed, "qlora_adapter").is_claimed
        assert storage.claim_concurrency_slot("gpu", running, "dpo_adapter").is_claimed
        # The run worker of `killed` died mid-step; the run was marked failed, the slot stayed.
        instance.report_run_failed(instance.get_run_by_id(killed), "run worker killed")
    capsys.readouterr()
    assert main(["init-instance"]) == 0
    out = capsys.readouterr().out
    assert f"freed the slots of 1 finished run(s) that never released them: {killed}" in out
    with dg.DagsterInstance.from_config(str(sqlite_home)) as instance:
        claimed = {slot.run_id for slot in _gpu(instance).claimed_slots}
        assert claimed == {running}  # a run still in progress keeps its slot


def test_init_instance_reports_an_unreachable_server_without_the_password(
    tmp_path, monkeypatch, capsys
):
    password = "not-a-real-pw-4f1c"
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    url = f"postgresql+psycopg2://gxplab:{password}@127.0.0.1:1/dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv(PG_URL_ENV, url)
    import dagster_postgres.utils

    # dagster-postgres retries the connection with back-off (about 10 s): skip the waits.
    monkeypatch.setattr(dagster_postgres.utils, "time", SimpleNamespace(sleep=lambda _: None))
    assert main(["init-instance"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot open the Dagster instance" in err
    assert "Connection refused" in err  # the cause, not only dagster-postgres' "too many retries"
    assert password not in err and url not in err
