"""scoring.data_files: every error names the file, the line/record and the field; collect mode."""

import json
import re
import subprocess
import sys

import pandas as pd
import pandera.errors
import pytest

from scoring.data_files import (
    PREDICTIONS_SCHEMA,
    DataFileError,
    manifest_schema,
    quarantine,
    read_manifest,
    read_predictions,
    read_records,
)
from synthetic.contracts import CALL_FAILED, MANIFEST_COLUMNS, PREDICTION_COLUMNS
from synthetic.jsonl import read_jsonl


def manifest_row(record_id="R1", batch_id="B1", deviation_type="missing_quantity", **extra):
    return {"record_id": record_id, "batch_id": batch_id, "deviation_type": deviation_type,
            "field": "qty_actual", "alcoa_principles": ["Complete", "Accurate"], "why": "w",
            "injected_value": None, "original_value": 12.5, "prompt_injection": False, **extra}


def record(i, **changes):
    row = {"record_id": f"R-BM-{i:06d}", "batch_id": f"B{i // 5}", "step_seq": i,
           "qty_actual": 1.0, "parameters": {"temperature_c": {"value": 20.0}}}
    return {**row, **changes}


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


# ---- manifest ---------------------------------------------------------------------------------
def test_manifest_reads_and_types_columns(tmp_path):
    path = write_jsonl(tmp_path / "manifest.jsonl", [
        manifest_row(), manifest_row("R2", prompt_injection=True),
        {"record_id": "R3", "batch_id": "B1", "deviation_type": "zero_duration"},  # minimal row
    ])
    frame = read_manifest(path)
    assert list(frame.columns) == list(MANIFEST_COLUMNS)
    assert frame["record_id"].tolist() == ["R1", "R2", "R3"]
    assert frame["prompt_injection"].tolist() == [False, True, False]
    assert frame["prompt_injection"].dtype == bool
    assert frame.loc[0, "alcoa_principles"] == ["Complete", "Accurate"]


def test_manifest_truncated_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "manifest.jsonl", [
        manifest_row(), manifest_row("R2"), '{"record_id": "R3", "batch_id": "B1", "deviat'])
    with pytest.raises(DataFileError) as info:
        read_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path} line 3: truncated or malformed JSON (")
    assert "[1 of 3 lines bad;" in message
    assert info.value.line == 3


def test_manifest_unknown_deviation_type_names_line_record_and_field(tmp_path):
    path = write_jsonl(tmp_path / "manifest.jsonl", [
        manifest_row(), manifest_row("R2"), manifest_row("R3"),
        manifest_row("X", deviation_type="foo"),
    ])
    with pytest.raises(DataFileError, match=r"manifest\.jsonl line 4 \(record_id X\): field "
                                            r"'deviation_type': unknown deviation type 'foo'"):
        read_manifest(path)


def test_manifest_collect_returns_good_rows_and_every_error(tmp_path):
    path = write_jsonl(tmp_path / "manifest.jsonl", [
        manifest_row("R1"),
        "not json at all",
        manifest_row("R3", deviation_type="foo"),
        manifest_row("R4", batch_id=None),
        "",  # blank lines are skipped
        manifest_row("R6", prompt_injection="yes"),
        "[1, 2]",
        manifest_row("R8"),
    ])
    frame, errors = read_manifest(path, errors="collect")
    assert frame["record_id"].tolist() == ["R1", "R8"]
    assert [e.line for e in errors] == [2, 3, 4, 6, 7]
    assert [e.field for e in errors] == [None, "deviation_type", "batch_id", "prompt_injection",
                                         None]
    assert str(errors[2]).endswith("line 4 (record_id R4): field 'batch_id' is missing or null")
    assert str(errors[3]).endswith("(record_id R6): field 'prompt_injection' must be a boolean, "
                                   "got 'yes'")
    assert "expected a JSON object, got list" in str(errors[4])
    with pytest.raises(DataFileError, match=r"\[5 of 7 lines bad;"):
        read_manifest(path)


def test_manifest_parquet_and_csv(tmp_path):
    frame = pd.DataFrame([manifest_row(), manifest_row("R2", deviation_type="zero_duration")])
    frame["alcoa_principles"] = "Complete;Accurate"
    frame["injected_value"] = frame["original_value"] = "x"
    frame.to_parquet(tmp_path / "manifest.parquet")
    frame.to_csv(tmp_path / "manifest.csv", index=False)
    for name in ("manifest.parquet", "manifest.csv"):
        read = read_manifest(tmp_path / name)
        assert read["deviation_type"].tolist() == ["missing_quantity", "zero_duration"], name
        assert read["prompt_injection"].tolist() == [False, False], name
    frame.loc[1, "deviation_type"] = "nope"
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataFileError, match=r"bad\.parquet row 2 \(record_id R2\): field "
                                            r"'deviation_type': unknown deviation type 'nope'"):
        read_manifest(tmp_path / "bad.parquet")


def test_manifest_missing_required_column(tmp_path):
    path = write_jsonl(tmp_path / "manifest.jsonl",
                       [{"record_id": "R1", "batch_id": "B1", "field": "qty_actual"}])
    with pytest.raises(DataFileError, match=r"manifest\.jsonl: missing column\(s\) "
                                            r"\['deviation_type'\]"):
        read_manifest(path)


# ---- predictions ------------------------------------------------------------------------------
def prediction_csv(tmp_path, lines, name="predictions.csv"):
    path = tmp_path / name
    path.write_text(",".join(PREDICTION_COLUMNS) + "\n" + "\n".join(lines) + "\n")
    return path


def test_predictions_csv_with_null_rows_and_unknown_types(tmp_path):
    path = prediction_csv(tmp_path, [
        "m,benchmark,B1,R1,missing_quantity,qty_actual,qty empty,true",
        "m,benchmark,B1,R2,some_invented_type,,,True",  # a model error, not a file error
        "m,benchmark,B2,,,,,false",
    ])
    frame = read_predictions(path)
    assert frame["valid_output"].tolist() == [True, True, False]
    assert frame["deviation_type"].tolist()[:2] == ["missing_quantity", "some_invented_type"]
    assert frame["record_id"].isna().tolist() == [False, False, True]


def test_predictions_wrong_type_names_line_record_and_field(tmp_path):
    path = prediction_csv(tmp_path, [
        "m,benchmark,B1,R1,missing_quantity,,,true",
        "m,benchmark,B1,R2,zero_duration,,,maybe",
    ])
    with pytest.raises(DataFileError) as info:
        read_predictions(path)
    assert str(info.value).startswith(f"{path} line 3 (record_id R2): field 'valid_output' must "
                                      "be a boolean, got 'maybe'")
    assert info.value.field == "valid_output"


def test_predictions_jsonl_types_are_checked(tmp_path):
    good = {"model_id": "m", "split": "benchmark", "batch_id": "B1", "record_id": "R1",
            "deviation_type": "missing_quantity", "field": None, "evidence": "e",
            "valid_output": True}
    path = write_jsonl(tmp_path / "predictions.jsonl", [
        good, {**good, "record_id": 17}, {**good, "valid_output": "true"},
        {**good, "record_id": None, "deviation_type": None},
    ])
    frame, errors = read_predictions(path, errors="collect")
    assert len(frame) == 2
    assert [str(e).split(": ", 1)[1] for e in errors] == [
        "field 'record_id' must be a string, got 17",
        "field 'valid_output' must be a boolean, got 'true'",
    ]
    assert str(errors[1]).startswith(f"{path} line 3 (record_id R1)")


def test_predictions_keep_the_failed_call_flag(tmp_path):
    """A failed model call stays a failed call when its predictions are read back (absent: False);
    a flag that is not a boolean is an error naming line and field."""
    row = {"batch_id": "B1", "record_id": None, "deviation_type": None, "valid_output": False}
    path = write_jsonl(tmp_path / "predictions.jsonl", [
        {**row, CALL_FAILED: True}, {**row, "batch_id": "B2"}, {**row, "batch_id": "B3",
                                                               CALL_FAILED: "yes"},
    ])
    frame, errors = read_predictions(path, errors="collect")
    assert frame[CALL_FAILED].tolist() == [True, False]
    assert [(e.line, e.field) for e in errors] == [(3, CALL_FAILED)]
    csv_path = tmp_path / "predictions.csv"
    csv_path.write_text("batch_id,record_id,deviation_type,valid_output,call_failed\n"
                        "B1,,,false,true\nB2,,,true,\n")
    assert read_predictions(csv_path)[CALL_FAILED].tolist() == [True, False]


def test_predictions_missing_column(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("model_id,batch_id,deviation_type,valid_output\nm,B1,,true\n")
    with pytest.raises(DataFileError) as info:
        read_predictions(path)
    assert str(info.value) == f"{path}: missing column(s) ['record_id']"


def test_empty_predictions_file_gives_an_empty_frame(tmp_path):
    for name in ("predictions.jsonl", "predictions.csv"):
        (tmp_path / name).write_text("")
        frame = read_predictions(tmp_path / name)
        assert frame.empty and list(frame.columns) == [*PREDICTION_COLUMNS, CALL_FAILED], name


def test_file_level_errors(tmp_path):
    with pytest.raises(DataFileError, match="file not found"):
        read_predictions(tmp_path / "absent.jsonl")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataFileError, match=r"p\.txt: unsupported format '\.txt'"):
        read_predictions(tmp_path / "p.txt")
    (tmp_path / "p.parquet").write_text("not parquet")
    with pytest.raises(DataFileError, match=r"p\.parquet: not a readable Parquet file"):
        read_predictions(tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="errors must be"):
        read_predictions(prediction_csv(tmp_path, ["m,s,B1,,,,,true"]), errors="ignore")


# ---- records --------------------------------------------------------------------------------
def test_records_keep_every_row_and_odd_keys(tmp_path):
    rows = [record(i) for i in range(6)]
    rows[2] = {**rows[2], "operater_id": "OP0001"}  # misspelled key: a deviation, not an error
    rows[3] = {**rows[3], "record_id": rows[1]["record_id"]}  # duplicate record_id: kept
    path = write_jsonl(tmp_path / "records.jsonl", rows)
    frame = read_records(path)
    assert len(frame) == 6 and "operater_id" in frame.columns
    assert frame["record_id"].tolist()[3] == "R-BM-000001"
    ids = read_records(path, columns=())
    assert list(ids.columns) == ["record_id", "batch_id"]
    assert ids["record_id"].tolist() == frame["record_id"].tolist()
    assert list(read_records(path, columns=["step_seq"]).columns) == [
        "record_id", "batch_id", "step_seq"]


def test_records_missing_batch_id_names_line_record_and_field(tmp_path):
    rows = [record(i) for i in range(1, 21)]
    del rows[16]["batch_id"]
    rows[18]["batch_id"] = ""
    path = write_jsonl(tmp_path / "records.jsonl", rows)
    for columns in (None, ()):  # the fast id-only path falls back to the careful reader
        with pytest.raises(DataFileError) as info:
            read_records(path, columns=columns)
        assert str(info.value).startswith(
            f"{path} line 17 (record_id R-BM-000017): field 'batch_id' is missing [2 of 20 lines")
    frame, errors = read_records(path, errors="collect", columns=())
    assert len(frame) == 18
    assert [str(e) for e in errors][1] == (f"{path} line 19 (record_id R-BM-000019): field "
                                           "'batch_id' must be a non-empty string, got ''")


def test_records_truncated_line_and_csv(tmp_path):
    path = write_jsonl(tmp_path / "records.jsonl",
                       [record(1), json.dumps(record(2))[:30], record(3)])
    frame, errors = read_records(path, errors="collect", columns=())
    assert frame["record_id"].tolist() == ["R-BM-000001", "R-BM-000003"]
    assert errors[0].line == 2 and "truncated or malformed JSON" in str(errors[0])
    csv = tmp_path / "records.csv"
    csv.write_text("record_id,batch_id,step_seq\nR1,B1,1\n,B1,2\n")
    with pytest.raises(DataFileError, match=r"records\.csv line 3: field 'record_id' is null"):
        read_records(csv)
    (tmp_path / "no_batch.csv").write_text("record_id\nR1\n")
    with pytest.raises(DataFileError, match=r"missing column\(s\) \['batch_id'\]"):
        read_records(tmp_path / "no_batch.csv")


# ---- pandera schemas --------------------------------------------------------------------------
def test_pandera_schemas_hold_the_column_rules():
    manifest = pd.DataFrame([manifest_row()], dtype=object)
    manifest_schema().validate(manifest)
    with pytest.raises(pandera.errors.SchemaError):
        manifest_schema().validate(manifest.assign(deviation_type="foo"))
    predictions = pd.DataFrame([{"batch_id": "B1", "record_id": None, "deviation_type": None,
                                 "valid_output": False}], dtype=object)
    PREDICTIONS_SCHEMA.validate(predictions)
    with pytest.raises(pandera.errors.SchemaError):
        PREDICTIONS_SCHEMA.validate(predictions.assign(valid_output=None))


# ---- one JSON parser for every reader ----------------------------------------------------------
GOOD = '{"record_id":"R-BM-000001","batch_id":"B0","deviation_type":"missing_quantity"}'
BAD_LINES = {
    # orjson (limit 1024) used to accept it, then the stdlib reader hit RecursionError
    "nested 1000 deep": '{"record_id":"R2","batch_id":"B0","x":' + "[" * 1000 + "]" * 1000 + "}",
    # deeper than the one limit, shallow enough for both parsers: the same verdict everywhere
    "nested 100 deep": '{"record_id":"R2","batch_id":"B0","x":' + "[" * 100 + "]" * 100 + "}",
    "duplicate key": '{"record_id":"R2","batch_id":"B0","record_id":"R3"}',
    "nested duplicate key": '{"record_id":"R2","batch_id":"B0","p":{"v":1,"v":2}}',
    "1e999": '{"record_id":"R2","batch_id":"B0","qty_actual":1e999}',
    "NaN": '{"record_id":"R2","batch_id":"B0","qty_actual":NaN}',
    "null line": "null",
    "list line": "[1, 2]",
}
REASONS = {
    "nested 1000 deep": "nested deeper than 64", "nested 100 deep": "nested deeper than 64",
    "duplicate key": "duplicate key 'record_id'", "nested duplicate key": "duplicate key 'v'",
    "1e999": "infinity", "NaN": "malformed JSON", "null line": "expected a JSON object",
    "list line": "expected a JSON object",
}


@pytest.mark.parametrize("kind", BAD_LINES)
def test_every_reader_gives_a_bad_line_the_same_clean_error(tmp_path, kind):
    path = write_jsonl(tmp_path / "records.jsonl", [GOOD, BAD_LINES[kind], GOOD])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} line 2: .*{REASONS[kind]}"):
        list(read_jsonl(path))
    for read in (read_records, read_manifest):
        frame, errors = read(path, errors="collect")
        assert len(frame) == 2, read  # the good lines beside it are kept
        assert [e.line for e in errors] == [2] and REASONS[kind] in str(errors[0])


def test_duplicate_key_error_names_the_field(tmp_path):
    path = write_jsonl(tmp_path / "records.jsonl", [BAD_LINES["duplicate key"]])
    _, errors = read_records(path, errors="collect", columns=())
    assert errors[0].field == "record_id"
    assert str(errors[0]) == f"{path} line 1: duplicate key 'record_id'"


def test_a_pretty_printed_object_with_colons_in_strings_is_read(tmp_path):
    """A line that is not in this project's compact form takes the careful duplicate check."""
    path = write_jsonl(tmp_path / "records.jsonl", [
        '{ "record_id" : "R1", "batch_id": "B:1", "ts": "10:00", "p": {"a": [1, {"b": 2}]} }'])
    assert list(read_jsonl(path)) == [
        {"record_id": "R1", "batch_id": "B:1", "ts": "10:00", "p": {"a": [1, {"b": 2}]}}]
    assert read_records(path)["batch_id"].tolist() == ["B:1"]


def test_the_scoring_cli_does_not_crash_on_a_null_first_records_line(tmp_path):
    """pyarrow's JSON reader used to segfault (SIGSEGV) on it."""
    records = write_jsonl(tmp_path / "records.jsonl", ["null", record(1)])
    labels = write_jsonl(tmp_path / "labels.jsonl", [manifest_row("R-BM-000001", "B0")])
    predictions = write_jsonl(tmp_path / "predictions.jsonl", [
        {"batch_id": "B0", "record_id": None, "deviation_type": None, "valid_output": True}])
    proc = subprocess.run(
        [sys.executable, "-m", "scoring.gxp", "--records", str(records), "--labels", str(labels),
         "--predictions", str(predictions), "--n-boot", "0"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{records} line 1: expected a JSON object, got NoneType" in proc.stderr


# ---- quarantine: nothing overwritten, nothing lost --------------------------------------------
def rejects(paths):
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def test_quarantine_keeps_files_of_the_same_name_and_every_later_call(tmp_path):
    bad_a = write_jsonl(tmp_path / "a" / "data.jsonl", [record(1), "{bad a"])
    bad_b = write_jsonl(tmp_path / "b" / "data.jsonl", ["{bad b", record(2)])
    errors = read_records(bad_a, errors="collect")[1] + read_records(bad_b, errors="collect")[1]
    out = tmp_path / "q"
    first = quarantine(errors, out)
    assert len(set(first)) == 2
    assert sorted((r["file"], r["line"], r["original"]) for r in rejects(first)) == [
        (str(bad_a), 2, "{bad a"), (str(bad_b), 1, "{bad b")]
    before = {p: p.read_bytes() for p in first}
    again = quarantine(read_records(bad_a, errors="collect")[1], out)  # the same file once more
    assert not set(again) & set(first)
    assert {p: p.read_bytes() for p in first} == before
    assert [r["original"] for r in rejects(again)] == ["{bad a"]
    assert all(p.name.startswith("data.jsonl.rejects") and p.suffix == ".jsonl"
               for p in [*first, *again])


def test_quarantine_original_text_follows_the_readers_line_numbers(tmp_path):
    """A JSON string may hold U+2028 or U+0085 raw; str.splitlines would split there."""
    path = write_jsonl(tmp_path / "records.jsonl",
                       ['{"record_id":"R1","batch_id":"B1","c":"a\u2028b\x85c"}', "{bad"])
    errors = read_records(path, errors="collect")[1]
    assert [r["original"] for r in rejects(quarantine(errors, tmp_path / "q"))] == ["{bad"]
