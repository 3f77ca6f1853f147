"""`gxplab serve` stops its server (`python -m serving`, in its own process group) on SIGINT and on
SIGTERM: the child is gone and the port is free again, nothing is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import psutil  # a dependency of accelerate and peft, which the project installs
import pytest
import torch
from test_embedded_model import TINY

from resources.clients.local_server import _free_port
from training.embedded_model import build_embedded_base_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dagster_home(tmp_path_factory):
    """A Dagster home whose base_model is materialized: a tiny model `gxplab serve` can serve."""
    root = tmp_path_factory.mktemp("serve")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(root / "base", TINY)
    torch.set_num_threads(previous)
    home = root / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "base_model", metadata={"model_path": str(root / "base")}))
    return home


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server binds it
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _start_serve(home: Path, port: int) -> tuple[subprocess.Popen, psutil.Process]:
    """`gxplab serve` on `port`, once its server answers /health; and the server process."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT),
           "GXPLAB_ARTIFACTS_DIR": str(home.parent / "artifacts")}
    cli = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--host", "127.0.0.1",
                            "--port", str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert cli.poll() is None, cli.stdout.read().decode(errors="replace")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        cli.kill()
        pytest.fail("gxplab serve did not answer /health in 180 s")
    [server] = [child for child in psutil.Process(cli.pid).children(recursive=True)
                if "serving" in child.cmdline()]
    return cli, server


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_its_server_on_a_signal(dagster_home, signum):
    port = _free_port()
    cli, server = _start_serve(dagster_home, port)
    try:
        cli.send_signal(signum)
        output, _ = cli.communicate(timeout=60)
        assert cli.returncode == 128 + signum, output.decode(errors="replace")
        assert _gone(server), f"the server {server.pid} outlived gxplab serve"
        assert _port_is_free(port)
    finally:  # never leave a server behind, even when the test fails
        if not _gone(server):
            server.kill()
        cli.kill()
        cli.wait()
