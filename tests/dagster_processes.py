"""Long-running Dagster processes for tests (`dagster dev`, `dagster-daemon run`): started in a
session of their own with SIGINT at its default, stopped as a whole process group. Also the
loopback port and the missing-requirement policy those tests share.

Why the SIGINT reset: a process started from one that ignores SIGINT (a background shell job, some
CI runners) inherits that, and Dagster's processes then ignore SIGTERM too
(/work/shared/ENVIRONMENT.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXEC_WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                    "os.execvp(sys.argv[1], sys.argv[1:])")
STOP_GRACE_S = 30.0


def run_command(args: list[str], env: dict[str, str], timeout: int = 300,
                ) -> subprocess.CompletedProcess:
    """Run a command from the project root; assert it succeeded, showing its output if not."""
    result = subprocess.run(args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, (f"{' '.join(map(str, args))}: rc {result.returncode}\n"
                                    + result.stdout[-3000:] + result.stderr[-3000:])
    return result


def missing_requirement(message: str) -> NoReturn:
    """Skip the test for a missing system requirement (a browser, a PostgreSQL server), or FAIL
    when $CI is set: CI must not silently lose that coverage."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group `pgid` that are not zombies (from /proc; Linux)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group of `proc` (its session leader), SIGKILL what outlives the grace."""
    pgid = proc.pid
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    deadline = time.monotonic() + 5
    while live_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)  # code servers end shortly after their parent
    if live_group_members(pgid):
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=grace_s)


@contextmanager
def dagster_process(args: list[str], env: dict[str, str], log_path: Path,
                    ) -> Iterator[subprocess.Popen]:
    """Run `BIN/args[0] args[1:]` from the project root, output to `log_path`; stop its group."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", EXEC_WITH_SIGINT, str(BIN / args[0]), *args[1:]],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_group(proc)


def running_daemon(env: dict[str, str], log_path: Path):
    """`dagster-daemon run -w workspace.yaml` (sensors, schedules, run queue) while in the block."""
    return dagster_process(["dagster-daemon", "run", "-w", "workspace.yaml"], env, log_path)
