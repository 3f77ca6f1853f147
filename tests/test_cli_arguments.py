"""`gxplab` arguments and setup, fast: unknown ids are errors before any work, every command runs
without $DAGSTER_HOME, and the leaderboard prints as Markdown, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import build_parser
from scoring.model_registry import GXP_AUDIT, load_model_registry
from synthetic.contracts import SPLITS

ROOT = Path(__file__).resolve().parent.parent
GXPLAB = str(Path(sys.executable).parent / "gxplab")
MODEL_IDS = [m.id for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]


@pytest.fixture
def env(tmp_path):
    """The caller's environment with this test's warehouse and instance, no PostgreSQL."""
    environment = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"),
                   "GXPLAB_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
                   "GXPLAB_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    environment.pop("GXPLAB_DAGSTER_PG_URL", None)
    return environment


def gxplab(args: list[str], env: dict[str, str], timeout: int = 120):
    return subprocess.run([GXPLAB, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(("option", "value", "kind", "valid"), [
    ("--models", "gpt4o", "model id", MODEL_IDS),
    ("--splits", "bench", "split", list(SPLITS)),
])
def test_unknown_benchmark_ids_are_argument_errors(capsys, option, value, kind, valid):
    good = valid[0]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["benchmark", option, good, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: unknown {kind} {value!r}; valid: {', '.join(valid)}" in err
    assert build_parser().parse_args(["benchmark", option, good]).__dict__[option[2:]] == [good]


def test_benchmark_with_a_typo_exits_2_before_any_work(env):
    result = gxplab(["benchmark", "--models", "gpt4o", "--no-training"], env, timeout=60)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "unknown model id 'gpt4o'; valid: " in result.stderr and "gpt-4o" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert not Path(env["DAGSTER_HOME"]).exists()  # nothing was set up, let alone run


def test_models_commands_name_the_registered_tasks_for_an_unknown_task(env):
    for args in (["models", "history", "qlora_adaptr"],
                 ["models", "list", "--task", "qlora_adaptr"]):
        result = gxplab(args, env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert ("unknown task 'qlora_adaptr': no model version is registered for it "
                "(registered tasks: none)") in result.stderr, args
        assert "Traceback" not in result.stderr


def test_sync_models_works_without_dagster_home(env, tmp_path):
    """The README's order: `gxplab sync-models` before any `export DAGSTER_HOME`. The default
    instance folder is redirected into tmp_path so that the test leaves var/ alone."""
    del env["DAGSTER_HOME"]
    home = tmp_path / "default_home"
    code = ("import sys; from pathlib import Path; import jobs.cli as cli; "
            "cli.DEFAULT_DAGSTER_HOME = Path(sys.argv[1]); "
            "raise SystemExit(cli.main(sys.argv[2:]))")
    result = subprocess.run([sys.executable, "-c", code, str(home), "sync-models"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"note: DAGSTER_HOME is not set: using {home}" in result.stderr
    assert "model partitions: added" in result.stdout
    assert (home / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()


def test_leaderboard_prints_json_and_csv(env):
    as_json = gxplab(["leaderboard", "--format", "json"], env)
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    rows = json.loads(as_json.stdout)
    assert [row["model_id"] for row in rows] == MODEL_IDS  # none scored yet: registry order
    assert all(row["status"] == "not run" and row["rank"] is None for row in rows)
    as_csv = gxplab(["leaderboard", "--format", "csv"], env)
    assert as_csv.returncode == 0, as_csv.stderr[-3000:]
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [row["model_id"] for row in parsed] == MODEL_IDS
    assert set(parsed[0]) == set(rows[0])



def test_leaderboard_format_is_checked(capsys):
    assert build_parser().parse_args(["leaderboard"]).format == "markdown"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["leaderboard", "--format", "xml"])
    assert exit_info.value.code == 2 and "invalid choice: 'xml'" in capsys.readouterr().err


def test_a_failed_automatic_instance_set_up_is_retried_by_the_next_command(tmp_path, monkeypatch):
    """When preparing the default instance fails (say PostgreSQL is down), no dagster.yaml is
    left behind, so the next command prepares it again instead of skipping the set-up."""
    from jobs import cli

    home = tmp_path / "dagster_home"
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(cli, "DEFAULT_DAGSTER_HOME", home)

    def failing_init(_args) -> int:
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("storage: {}\n")
        return 2

    monkeypatch.setattr(cli, "init_instance", failing_init)
    with pytest.raises(SystemExit) as exited:
        cli._ensure_instance("sync-models")
    assert exited.value.code == 2 and not (home / "dagster.yaml").exists()
