"""`make setup`'s checks before it creates .venv, and the hash-pinned lock it installs from.

The checks run with fake interpreters (tiny shell scripts) so that no real Python 3.13 or
missing python3-venv is needed; `make setup` stops before creating anything.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_python.sh"


def fake_python(tmp_path: Path, version: str, *, venv_ok: bool = True) -> Path:
    """A script that answers the version probe with `version` and fails `import ensurepip`
    unless venv_ok, like a Debian python without python3.X-venv."""
    script = tmp_path / f"fakepython{version}"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *version_info*) echo "{version}" ;;\n'
        f'  *ensurepip*) exit {0 if venv_ok else 1} ;;\n'
        "  *) echo unexpected call: \"$*\" >&2; exit 3 ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def run_check(python: Path | str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python)}
    return subprocess.run(["bash", str(CHECK)], env=env, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("version", ["3.13", "3.10", "2.7"])
def test_unsupported_python_version_is_named_with_what_to_install(tmp_path, version) -> None:
    result = run_check(fake_python(tmp_path, version))
    assert result.returncode == 1
    assert f"is Python {version}; this project supports 3.11 to 3.12 only" in result.stderr
    assert "apt-get install python3.12 python3.12-venv" in result.stderr
    assert "PYTHON=python3.12 make run" in result.stderr


def test_missing_venv_module_names_the_package(tmp_path) -> None:
    result = run_check(fake_python(tmp_path, "3.12", venv_ok=False))
    assert result.returncode == 1
    assert "lacks the venv/ensurepip modules: install python3.12-venv" in result.stderr


def test_missing_interpreter_and_supported_ones(tmp_path) -> None:
    missing = run_check(tmp_path / "no-such-python")
    assert missing.returncode == 1 and "cannot be run" in missing.stderr
    for version in ("3.11", "3.12"):
        ok = run_check(fake_python(tmp_path, version))
        assert (ok.returncode, ok.stderr) == (0, "")


def test_supported_range_is_read_from_pyproject(tmp_path) -> None:
    """The check has no versions of its own: pyproject's requires-python drives it."""
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert spec == ">=3.11,<3.13"  # if this changes, the messages above name other versions
    copy = tmp_path / "repo"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy(CHECK, copy / "scripts" / "check_python.sh")
    (copy / "pyproject.toml").write_text('[project]\nrequires-python = ">=3.12,<3.14"\n')

    def check(version: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(copy / "scripts" / "check_python.sh")], timeout=30,
                              env={"PATH": "/usr/bin:/bin",
                                   "PYTHON": str(fake_python(tmp_path, version))},
                              capture_output=True, text=True)

    assert check("3.13").returncode == 0
    old = check("3.11")
    assert old.returncode == 1 and "supports 3.12 to 3.13 only" in old.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_make_setup_stops_before_creating_the_venv(tmp_path) -> None:
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "--no-print-directory", "setup", f"VENV={venv}",
         f"PYTHON={fake_python(tmp_path, '3.13')}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "this project supports 3.11 to 3.12 only" in result.stderr
    assert not venv.exists()


def test_lock_pins_every_package_with_hashes_and_leaves_torch_out() -> None:
    """Every requirement of requirements.lock is `name==version` with at least one sha256
    (pip --require-hashes refuses anything else); torch is installed apart (CPU or CUDA)."""
    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._\-\[\],]*)==(\S+)((?:\s*\\\n\s+--hash=\S+)+)",
                         text, flags=re.M)
    lines = [line for line in text.splitlines() if re.match(r"[A-Za-z0-9]", line)]
    assert len(entries) == len(lines) > 100
    names = {re.sub(r"\[.*\]", "", name).lower().replace("_", "-") for name, _, _ in entries}
    assert "torch" not in names and not any(n.startswith(("nvidia-", "triton")) for n in names)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    for requirement in wanted:
        name = re.match(r"[A-Za-z0-9._\-]+", requirement).group(0).lower().replace("_", "-")
        assert name == "torch" or name in names, f"{name} (pyproject.toml) is not in the lock"
