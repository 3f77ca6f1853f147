#!/usr/bin/env bash
# Check that $PYTHON (default python3) can build the project's virtual environment: a Python
# version inside pyproject.toml's requires-python, with the venv and ensurepip modules (Debian and
# Ubuntu ship them apart, in python3.X-venv). Run by `make setup` before it creates .venv.
# Exit 0 when fine; else print what to install on stderr and exit 1.
# Usage: PYTHON=python3.11 bash scripts/check_python.sh [existing-venv-dir]
set -uo pipefail

PYTHON="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv_dir="${1:-}"

# requires-python = ">=3.11,<3.13" -> lowest 3.11, first unsupported 3.13 (one source of truth)
spec="$(sed -nE 's/^requires-python *= *"([^"]*)".*/\1/p' "$here/pyproject.toml")"
lowest="$(sed -nE 's/.*>= *([0-9]+\.[0-9]+).*/\1/p' <<<"$spec")"
above="$(sed -nE 's/.*< *([0-9]+\.[0-9]+).*/\1/p' <<<"$spec")"
if [[ -z "$lowest" || -z "$above" ]]; then
    echo "check_python.sh: cannot read requires-python (>=X.Y,<X.Z) from pyproject.toml" >&2
    exit 1
fi
newest="${above%.*}.$(( ${above#*.} - 1 ))"

fail() {
    echo "error: $1" >&2
    echo "  GxPLab needs Python $lowest to $newest (pyproject.toml: requires-python $spec) with" \
         "its venv module. For example:" >&2
    echo "    sudo apt-get install python$newest python$newest-venv   # Debian/Ubuntu" >&2
    echo "    PYTHON=python$newest make run                           # or any python$lowest..$newest" >&2
    echo "  See docs/install.md." >&2
    exit 1
}

version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
    || fail "PYTHON=$PYTHON cannot be run (not installed, or not on PATH)."
major="${version%%.*}"
minor="${version#*.}"
if [[ ! "$major.$minor" =~ ^[0-9]+\.[0-9]+$ ]]; then
    fail "PYTHON=$PYTHON did not report its version (got '$version')."
fi
if (( major != ${lowest%%.*} || minor < ${lowest#*.} || minor > ${newest#*.} )); then
    fail "PYTHON=$PYTHON is Python $version; this project supports $lowest to $newest only."
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    fail "PYTHON=$PYTHON (Python $version) lacks the venv/ensurepip modules: install python$version-venv."
fi
if [[ -n "$venv_dir" && -x "$venv_dir/bin/python" ]]; then
    have="$("$venv_dir/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
    if [[ "$have" != "$version" ]]; then
        echo "error: $venv_dir was made with Python ${have:-unknown}, not $version ($PYTHON):" \
             "remove it (rm -rf $venv_dir) and run make again." >&2
        exit 1
    fi
fi
exit 0
