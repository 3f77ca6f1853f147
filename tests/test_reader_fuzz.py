"""Property-based: hostile files (arbitrary bytes, arbitrary and deeply nested JSON, null lines,
huge numbers, duplicate keys, control characters, invalid UTF-8, BOM, NUL bytes) given to every
reader and to the scoring CLI end in a result or a clean error naming the file and the line:
never a signal, a traceback or a hang, and no line is lost."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scoring.data_files import DataFileError, read_manifest, read_predictions, read_records
from synthetic.jsonl import JsonLineError, read_jsonl

# No example database: a test run leaves nothing behind in the working tree.
FAST = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI = settings(FAST, max_examples=6)  # each example starts a process (~2 s)

RECORD = {"record_id": "R1", "batch_id": "B1", "deviation_type": "missing_quantity",
          "valid_output": True, "qty_actual": 1.5, "comments": "ok"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _nest(depth: int) -> bytes:
    return b'{"record_id":"R2","batch_id":"B1","x":' + b"[" * depth + b"]" * depth + b"}"


hostile = st.sampled_from([
    b"null", b"[]", b"1e999", b'{"record_id":"R1","batch_id":"B1","q":1e999}',
    b'{"record_id":"R1","batch_id":"B1","q":-1e400}', b'{"record_id":"R1","q":NaN}',
    b'{"record_id":"R1","batch_id":"B1","q":' + b"9" * 400 + b"}",
    b'{"record_id":"R1","batch_id":"B1","record_id":"R9"}', b'{"a":{"b":1,"b":2}}',
    b'\xef\xbb\xbf{"record_id":"R1","batch_id":"B1"}', b'{"record_id":"R1\x00"}', b"\x00",
    b'{"record_id":"\xff\xfe","batch_id":"B1"}', b'{"record_id":"\\ud800","batch_id":"B1"}',
    b'{"record_id":"\\u0000\\u202e","batch_id":"\x1b[31m"}', b'{"record_id":"R1",', b"\r",
    b'{"record_id": 5, "batch_id": ["B1"]}', b'{"record_id":"","batch_id":"B1"}',
]) | st.integers(0, 1500).map(_nest)
json_lines = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity included
    st.dictionaries(st.sampled_from(list(RECORD)), json_values, max_size=6).map(
        lambda d: json.dumps({**RECORD, **d}).encode()),
    st.just(json.dumps(RECORD).encode()),
)
lines = st.one_of(st.binary(max_size=40), hostile, json_lines)
contents = st.lists(lines, max_size=6).flatmap(
    lambda parts: st.sampled_from([b"\n", b"\r\n"]).map(lambda sep: sep.join(parts) + sep))
any_bytes = st.one_of(st.binary(max_size=200), contents)


def _non_blank(data: bytes) -> set[int]:
    """Line numbers as the readers count them: a newline byte ends a line."""
    return {i for i, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_clean(error: Exception, path: Path) -> None:
    assert isinstance(error, DataFileError | JsonLineError), repr(error)
    assert str(error).startswith(str(path)), str(error)


READERS = {"records": read_records, "manifest": read_manifest, "predictions": read_predictions}


@pytest.mark.parametrize("reader", READERS)
@FAST
@given(data=contents)
def test_json_lines_readers_account_for_every_line(tmp_path_factory, reader, data):
    path = _write(tmp_path_factory.mktemp("fuzz"), "input.jsonl", data)
    try:
        frame, errors = READERS[reader](path, errors="collect")
    except DataFileError as error:  # a whole-file problem, e.g. a required column absent
        _assert_clean(error, path)
        assert error.line is None
        return
    for error in errors:
        _assert_clean(error, path)
        assert error.line is None or re.match(rf"{re.escape(str(path))} line {error.line}\b",
                                              str(error))
    bad = {e.line for e in errors}
    if None not in bad:  # nothing lost: each non-blank line is a row or an error
        assert len(frame) + len(bad) == len(_non_blank(data))
    with pytest.raises(DataFileError) if errors else contextlib.nullcontext():
        READERS[reader](path)


@FAST
@given(data=contents)
def test_read_jsonl_gives_objects_or_the_first_bad_line(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("fuzz"), "input.jsonl", data)
    try:
        rows = list(read_jsonl(path))
    except JsonLineError as error:
        assert error.line in _non_blank(data)
        assert str(error).startswith(f"{path} line {error.line}: ")
        return
    assert len(rows) == len(_non_blank(data)) and all(isinstance(r, dict) for r in rows)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
@FAST
@given(data=any_bytes)
def test_every_format_reader_takes_arbitrary_bytes(tmp_path_factory, suffix, data):
    path = _write(tmp_path_factory.mktemp("fuzz"), f"input{suffix}", data)
    for read in READERS.values():
        try:
            _, errors = read(path, errors="collect")
        except DataFileError as error:
            _assert_clean(error, path)
            continue
        for error in errors:
            _assert_clean(error, path)


def _valid_inputs(tmp_path: Path) -> dict[str, Path]:
    return {
        "records": _write(tmp_path, "records.jsonl", json.dumps(RECORD).encode() + b"\n"),
        "labels": _write(tmp_path, "labels.jsonl", json.dumps(
            {"record_id": "R1", "batch_id": "B1", "deviation_type": "missing_quantity"}).encode()
            + b"\n"),
        "predictions": _write(tmp_path, "predictions.jsonl", json.dumps(
            {"batch_id": "B1", "record_id": "R1", "deviation_type": "missing_quantity",
             "valid_output": True}).encode() + b"\n"),
    }


@CLI
@example(hostile_files={"records": b"null\n" + json.dumps(RECORD).encode(), "labels": None,
                        "predictions": None}, quarantine=False)  # pyarrow's JSON reader segfaulted
@given(hostile_files=st.fixed_dictionaries(
    {role: st.none() | contents for role in ("records", "labels", "predictions")}),
    quarantine=st.booleans())
def test_the_scoring_cli_never_crashes(tmp_path_factory, hostile_files, quarantine):
    """`python -m scoring.gxp` with each of its three files valid or hostile (None: valid)."""
    tmp_path = tmp_path_factory.mktemp("cli")
    inputs = _valid_inputs(tmp_path)
    for role, data in hostile_files.items():
        if data is not None:
            inputs[role] = _write(tmp_path, f"bad.{role}.jsonl", data)
    argv = [sys.executable, "-m", "scoring.gxp", "--n-boot", "0"]
    for name, path in inputs.items():
        argv += [f"--{name}", str(path)]
    if quarantine:
        argv += ["--quarantine", str(tmp_path / "q")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1, 2), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 2:
        named = "|".join(re.escape(str(inputs[r])) for r, d in hostile_files.items()
                         if d is not None)
        assert named and re.search(rf"error: ({named})( line \d+)?", proc.stderr), proc.stderr
