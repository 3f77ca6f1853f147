"""The command line as a user runs it: `gxplab benchmark`, then a `dagster job backfill`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_processes import run_command as run
from dagster_processes import running_daemon

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPLITS = ("control_clean", "control_faulty")


@pytest.fixture
def cli_env(tmp_path):
    home = tmp_path / "dagster_home"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "GXPLAB_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "GXPLAB_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        "GXPLAB_LLM_CACHE_DIR": str(tmp_path / "llm_cache"),
    }
    env.pop("GXPLAB_DAGSTER_PG_URL", None)
    return env


STEP_LINE = re.compile(r"^  \S.*?\s(ok|FAILED|up to date, skipped)\b", re.MULTILINE)


def backfill_command(partitions: str) -> list[str]:
    """The README's backfill of gxp_evaluation_job over `partitions` (comma-separated)."""
    return [str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml",
            "-j", "gxp_evaluation_job", "--partitions", partitions, "--noprompt"]


def test_help_explains_the_commands():
    result = subprocess.run([str(BIN / "gxplab"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("init-instance", "sync-models", "benchmark", "leaderboard"):
        assert command in result.stdout


def test_benchmark_then_cli_backfill(cli_env):
    gxplab = str(BIN / "gxplab")
    run([gxplab, "init-instance"], cli_env)
    assert "DefaultRunCoordinator" in (Path(cli_env["DAGSTER_HOME"]) / "dagster.yaml").read_text()
    result = run(
        [gxplab, "benchmark", "--models", "reference_auditor", "gpt-4o", "--splits", *SPLITS,
         "--no-training"],
        cli_env,
    )
    row = next(line for line in result.stdout.splitlines() if "| reference_auditor |" in line)
    assert "1.000 [1.00, 1.00]" in row and "audited 2/5 splits" in row  # control_faulty recall
    assert "skipped: environment variable OPENAI_API_KEY is not set" in result.stdout
    assert "up to date, skipped" not in result.stdout

    # Nothing changed: the second run skips every step (gpt-4o's key is still not set).
    again = run(
        [gxplab, "benchmark", "--models", "reference_auditor", "gpt-4o", "--splits", *SPLITS,
         "--no-training"],
        cli_env,
    )
    steps = STEP_LINE.findall(again.stdout)
    assert len(steps) == 1 + len(SPLITS) + 2 * len(SPLITS) + 1, again.stdout  # + leaderboard
    assert set(steps) == {"up to date, skipped"}, again.stdout
    assert "| reference_auditor |" in again.stdout  # the leaderboard is still printed

    partitions = ",".join(f"reference_auditor|{split}" for split in SPLITS)
    run(backfill_command(partitions), cli_env)

    os.environ["DAGSTER_HOME"], previous = cli_env["DAGSTER_HOME"], os.environ.get("DAGSTER_HOME")
    try:
        with dg.DagsterInstance.get() as instance:
            backfills = instance.get_backfills()
            assert len(backfills) == 1
            runs = instance.get_runs(
                dg.RunsFilter(tags={"dagster/backfill": backfills[0].backfill_id})
            )
            assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(
                partitions.split(",")
            )
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous
    shutil.rmtree(cli_env["DAGSTER_HOME"], ignore_errors=True)


def test_cli_backfill_of_a_date_range_of_the_nightly_benchmark(cli_env):
    """`dagster job backfill --from --to` of the daily nightly_benchmark_job: one run per date,
    each scoring the API model (the fake server behind `openai-compatible`) into the warehouse."""
    import json

    from fake_openai_server import FakeOpenAIServer, FakeReply, fixed


    gxplab = str(BIN / "gxplab")
    run([gxplab, "init-instance"], cli_env)
    run([gxplab, "benchmark", "--models", "reference_auditor", "--splits", "benchmark",
         "--no-training"], cli_env)  # the benchmark split's records and labels
    clean = json.dumps({"summary": "no deviations", "findings": []})
    with FakeOpenAIServer(fixed(FakeReply(content=clean))) as server:
        env = {**cli_env, "GXPLAB_OPENAI_COMPAT_BASE": server.base_url,
               "GXPLAB_OPENAI_COMPAT_MODEL": "nightly-auditor",
               "GXPLAB_OPENAI_COMPAT_API_KEY": "sk-test-not-a-secret"}
        run([str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j",
             "nightly_benchmark_job", "--from", "2026-11-01", "--to", "2026-11-02", "--noprompt"],
            env, timeout=600)
        assert server.n_requests > 0
    os.environ["DAGSTER_HOME"], previous = cli_env["DAGSTER_HOME"], os.environ.get("DAGSTER_HOME")
    try:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="nightly_benchmark_job"))
            assert sorted(r.tags["dagster/partition"] for r in runs) == ["2026-11-01",
                                                                          "2026-11-02"]
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = previous
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(cli_env["GXPLAB_WAREHOUSE_URL"])
    stored = pd.read_sql("SELECT partition_key, status FROM benchmark_runs WHERE asset_key = "
                         "'nightly_api_benchmark' AND model_id = 'openai-compatible'", engine)
    engine.dispose()
    # one warehouse run per date (history), keyed "<date>|<model>"
    assert sorted(stored["partition_key"]) == ["2026-11-01|openai-compatible",
                                               "2026-11-02|openai-compatible"]
    assert (stored["status"] == "succeeded").all()


def test_cli_backfill_on_postgres_waits_in_the_queue_for_the_daemon(cli_env, pg_instance_url,
                                                                     tmp_path, monkeypatch):
    """The production profile: instance on PostgreSQL, QueuedRunCoordinator. The backfill's runs
    wait QUEUED until `dagster-daemon run` launches them (within the dagster/backfill limit of
    2), and then succeed; as README 'Backfills' says."""
    env = {**cli_env, "GXPLAB_DAGSTER_PG_URL": pg_instance_url}
    gxplab = str(BIN / "gxplab")
    assert "PostgreSQL" in run([gxplab, "init-instance"], env).stdout
    run([gxplab, "benchmark", "--models", "reference_auditor", "--splits", *SPLITS,
         "--no-training"], env)
    partitions = ",".join(f"reference_auditor|{split}" for split in SPLITS)
    run(backfill_command(partitions), env)

    monkeypatch.setenv("GXPLAB_DAGSTER_PG_URL", pg_instance_url)  # dagster.yaml reads it
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (backfill,) = instance.get_backfills()
        backfill_runs = dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id})
        queued = instance.get_runs(backfill_runs)
        assert sorted(r.tags["dagster/partition"] for r in queued) == sorted(partitions.split(","))
        assert {r.status for r in queued} == {dg.DagsterRunStatus.QUEUED}
        log = tmp_path / "daemon.log"
        with running_daemon(env, log) as daemon:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and daemon.poll() is None:
                runs = instance.get_runs(backfill_runs)
                if all(r.is_finished for r in runs):
                    break
                time.sleep(2)
        runs = instance.get_runs(backfill_runs)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), (
            [(r.tags["dagster/partition"], r.status) for r in runs],
            log.read_text(errors="replace")[-3000:])
        assert len(runs) == len(SPLITS)  # launched once each: no retry, no duplicate
