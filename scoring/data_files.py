"""Readers for the scoring inputs (records, label manifest, predictions) with clear errors.

Format by suffix: .jsonl/.json (JSON Lines), .csv, .parquet. Every problem is a `DataFileError`
naming the file, the line (JSON Lines/CSV) or row (Parquet), the record_id when known and the field.
With errors="collect" a reader returns the good rows and the list of errors, so a caller can
quarantine the bad lines and go on; errors="raise" (default) raises the first problem and says how
many lines were bad in total. Column and type rules live in the pandera schemas below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO, overload

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow

from synthetic.catalog import DeviationCatalog, load_catalog
from synthetic.contracts import CALL_FAILED, MANIFEST_COLUMNS, PREDICTION_COLUMNS
from synthetic.jsonl import JsonLineError, iter_jsonl_lines, parse_json_line

Errors = Literal["raise", "collect"]
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
SUFFIXES = (*JSON_SUFFIXES, ".csv", ".parquet")
MANIFEST_REQUIRED = ("record_id", "batch_id", "deviation_type")
PREDICTIONS_REQUIRED = ("batch_id", "record_id", "deviation_type", "valid_output")
RECORDS_REQUIRED = ("record_id", "batch_id")
_CSV_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class DataFileError(ValueError):
    """A bad input file or line; the message names file, line/row, record_id and field."""

    def __init__(
        self,
        path: str | Path,
        reason: str,
        *,
        line: int | None = None,
        location: str = "line",
        record_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.path, self.reason, self.line, self.location = str(path), reason, line, location
        self.record_id, self.field = record_id, field
        where = self.path if line is None else f"{self.path} {location} {line}"
        if record_id is not None:
            where += f" (record_id {record_id})"
        # A reason starting with ':' reads "field 'x': unknown ...", otherwise "field 'x' is ...".
        glue = "" if reason.startswith(":") else " "
        what = reason if field is None else f"field {field!r}{glue}{reason}"
        super().__init__(f"{where}: {what}")


# ---- pandera schemas: types are checked element-wise on the raw values so one bad line does not
# ---- fail a whole column, and each failure keeps its row index (-> line number).
def _element(predicate: Callable[[Any], bool], error: str) -> pa.Check:
    return pa.Check(predicate, element_wise=True, error=error)


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _is_principles(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list | tuple | np.ndarray) and all(isinstance(v, str) for v in value)


IS_STRING = _element(_is_str, "must be a non-empty string")
IS_BOOLEAN = _element(_is_bool, "must be a boolean")
IS_TEXT = _element(lambda v: isinstance(v, str), "must be a string")
IS_PRINCIPLES = _element(_is_principles, "must be a list of ALCOA+ principle names")
UNKNOWN_TYPE = ": unknown deviation type"


def manifest_schema(catalog: DeviationCatalog | None = None) -> pa.DataFrameSchema:
    """Label-manifest columns; deviation_type must be a slug of the catalog."""
    slugs = frozenset((catalog or load_catalog()).slugs)
    in_catalog = _element(lambda v: v in slugs, UNKNOWN_TYPE)
    return pa.DataFrameSchema(
        {
            "record_id": pa.Column(None, IS_STRING),
            "batch_id": pa.Column(None, IS_STRING),
            "deviation_type": pa.Column(None, [IS_STRING, in_catalog]),
            "field": pa.Column(None, IS_TEXT, nullable=True, required=False),
            "alcoa_principles": pa.Column(None, IS_PRINCIPLES, nullable=True, required=False),
            "why": pa.Column(None, IS_TEXT, nullable=True, required=False),
            # Injected/original values are whatever the record held: any JSON value.
            "injected_value": pa.Column(None, nullable=True, required=False),
            "original_value": pa.Column(None, nullable=True, required=False),
            "prompt_injection": pa.Column(None, IS_BOOLEAN, nullable=True, required=False),
        },
        name="gxp_manifest",
    )


# A predicted deviation_type outside the catalog is a model error, not a file error: the scorer
# counts it as a wrong type, so it is only required to be a string here.
PREDICTIONS_SCHEMA = pa.DataFrameSchema(
    {
        "model_id": pa.Column(None, IS_TEXT, nullable=True, required=False),
        "split": pa.Column(None, IS_TEXT, nullable=True, required=False),
        "batch_id": pa.Column(None, IS_STRING),
        "record_id": pa.Column(None, IS_TEXT, nullable=True),  # "" from a model: hallucinated
        "deviation_type": pa.Column(None, IS_TEXT, nullable=True),
        "field": pa.Column(None, IS_TEXT, nullable=True, required=False),
        "evidence": pa.Column(None, IS_TEXT, nullable=True, required=False),
        "valid_output": pa.Column(None, IS_BOOLEAN),
        CALL_FAILED: pa.Column(None, IS_BOOLEAN, nullable=True, required=False),
    },
    name="gxp_predictions",
)


# ---- raw loading ------------------------------------------------------------------------------
class _Raw:
    """Rows of one file as raw Python values, with their line/row numbers and parse errors."""

    def __init__(self, frame: pd.DataFrame, lines: np.ndarray, location: str, errors: list) -> None:
        self.frame, self.lines, self.location, self.errors = frame, lines, location, errors


def _check_path(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        known = ", ".join(SUFFIXES)
        raise DataFileError(path, f"unsupported format {suffix!r}; use one of {known}")
    if not path.is_file():
        raise DataFileError(path, "file not found")
    return suffix


def _iter_json_lines(path: Path, errors: list[DataFileError]) -> Iterable[tuple[int, dict]]:
    """(line, object) of each good line (synthetic.jsonl's one parser); bad lines go to `errors`."""
    for line, raw in iter_jsonl_lines(path):
        try:
            yield line, parse_json_line(raw)
        except JsonLineError as exc:
            error = DataFileError(path, exc.reason, line=line)
            error.field = exc.field  # the duplicated key; the reason already names it
            errors.append(error)


def _read_tabular(path: Path, suffix: str) -> tuple[pd.DataFrame, np.ndarray, str]:
    """A CSV (all text) or Parquet table, its line/row numbers and what to call them."""
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=True)
        except pd.errors.EmptyDataError:
            return pd.DataFrame(), np.zeros(0, dtype=int), "line"
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataFileError(path, f"malformed CSV ({exc})") from None
        # The header is line 1 (exact unless a quoted field spans lines).
        return frame, np.arange(len(frame)) + 2, "line"
    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataFileError(path, f"not a readable Parquet file ({exc})") from None
    return frame, np.arange(len(frame)) + 1, "row"


def _load_table(path: Path, columns: tuple[str, ...], bool_columns: tuple[str, ...]) -> _Raw:
    """Read any supported file into object columns (the contract columns that are present)."""
    suffix = _check_path(path)
    errors: list[DataFileError] = []
    if suffix in JSON_SUFFIXES:
        lines, rows = [], []
        for line, obj in _iter_json_lines(path, errors):
            lines.append(line)
            rows.append(obj)
        present = [c for c in columns if any(c in row for row in rows)] if rows else list(columns)
        frame = pd.DataFrame([[row.get(c) for c in present] for row in rows], columns=present,
                             dtype=object)
        return _Raw(frame, np.asarray(lines, dtype=int), "line", errors)
    frame, lines, location = _read_tabular(path, suffix)
    if frame.empty and not len(frame.columns):
        frame = pd.DataFrame(columns=list(columns))
    frame = frame.astype(object).where(frame.notna(), None)
    if suffix == ".csv":
        for column in bool_columns:  # CSV has no types: accept true/false/1/0/yes/no
            if column in frame:
                frame[column] = [_CSV_BOOLEANS.get(v.strip().lower(), v) if isinstance(v, str)
                                 else v for v in frame[column]]
    return _Raw(frame, lines, location, errors)


def _validate(
    path: Path,
    raw: _Raw,
    schema: pa.DataFrameSchema,
    required: tuple[str, ...],
    columns: tuple[str, ...],
) -> tuple[pd.DataFrame, list[DataFileError]]:
    frame = raw.frame
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataFileError(path, f"missing column(s) {missing}")
    frame = frame.reindex(columns=list(columns)).astype(object)
    frame = frame.where(frame.notna(), None)
    frame.index = pd.RangeIndex(len(frame))
    errors = list(raw.errors)
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        errors += _row_errors(path, raw, frame, exc.failure_cases)
    bad_rows = {e.line for e in errors if e.line is not None}
    keep = ~np.isin(raw.lines, list(bad_rows)) if bad_rows else np.ones(len(frame), dtype=bool)
    errors.sort(key=lambda e: e.line or 0)
    return frame[keep].reset_index(drop=True), errors


def _row_errors(path: Path, raw: _Raw, frame: pd.DataFrame, failures: pd.DataFrame) -> list:
    errors = []
    for case in failures.itertuples(index=False):
        if case.index is None or pd.isna(case.index):  # a whole-column failure: no line to name
            errors.append(DataFileError(path, f"{case.check}, got {case.failure_case!r}",
                                        field=str(case.column)))
            continue
        index = int(case.index)
        record_id = frame.at[index, "record_id"] if "record_id" in frame else None
        value = case.failure_case
        if case.check == "not_nullable":
            reason = "is missing or null"
        elif case.check == UNKNOWN_TYPE:
            reason = f"{UNKNOWN_TYPE} {value!r}"
        else:
            reason = f"{case.check}, got {value!r}"
        errors.append(DataFileError(
            path, reason, line=int(raw.lines[index]), location=raw.location,
            record_id=record_id if isinstance(record_id, str) else None, field=str(case.column),
        ))
    return errors


def _finish(frame: pd.DataFrame, errors: list[DataFileError], mode: Errors, n: int):
    """Collect mode: (good rows, errors). Raise mode: the first error, with the bad-line count."""
    if mode == "collect":
        return frame, errors
    if mode != "raise":
        raise ValueError(f"errors must be 'raise' or 'collect', got {mode!r}")
    if errors:
        first = errors[0]
        n_bad = len({e.line for e in errors})
        first.args = (f"{first.args[0]} [{n_bad} of {n} {first.location}s bad; "
                      "read with errors='collect' to keep the good ones]",)
        raise first
    return frame


def _typed(frame: pd.DataFrame, str_columns: tuple[str, ...], bool_columns: dict) -> pd.DataFrame:
    """Validated object columns -> pandas string columns (null stays NaN) and plain booleans."""
    for column in str_columns:
        frame[column] = frame[column].astype("str")
    for column, default in bool_columns.items():
        frame[column] = [default if v is None else bool(v) for v in frame[column]]
        frame[column] = frame[column].astype(bool)
    return frame


# ---- public readers ----------------------------------------------------------------------
@overload
def read_manifest(path: str | Path, *, errors: Literal["raise"] = ...,
                  catalog: DeviationCatalog | None = ...) -> pd.DataFrame: ...
@overload
def read_manifest(path: str | Path, *, errors: Literal["collect"],
                  catalog: DeviationCatalog | None = ...) -> tuple[pd.DataFrame, list]: ...
def read_manifest(path, *, errors="raise", catalog=None):
    """Read a label manifest (MANIFEST_COLUMNS); deviation_type must be a catalog slug.

    record_id, batch_id and deviation_type are required; the other columns may be absent (null;
    prompt_injection then False).
    """
    path = Path(path)
    raw = _load_table(path, MANIFEST_COLUMNS, ("prompt_injection",))
    frame, found = _validate(path, raw, manifest_schema(catalog), MANIFEST_REQUIRED,
                             MANIFEST_COLUMNS)
    frame = _typed(frame, (*MANIFEST_REQUIRED, "field", "why"), {"prompt_injection": False})
    return _finish(frame, found, errors, len(raw.frame) + len(raw.errors))


@overload
def read_predictions(path: str | Path, *,
                     errors: Literal["raise"] = ...) -> pd.DataFrame: ...
@overload
def read_predictions(path: str | Path, *,
                     errors: Literal["collect"]) -> tuple[pd.DataFrame, list]: ...
def read_predictions(path, *, errors="raise"):
    """Read predictions (PREDICTION_COLUMNS): one row per finding, or one null row per clean batch.

    batch_id and valid_output must be set; record_id and deviation_type may be null. model_id,
    split, field and evidence may be absent; the optional `call_failed` (a failed model call, not
    an answer) is False when absent.
    """
    path = Path(path)
    columns = (*PREDICTION_COLUMNS, CALL_FAILED)
    raw = _load_table(path, columns, ("valid_output", CALL_FAILED))
    frame, found = _validate(path, raw, PREDICTIONS_SCHEMA, PREDICTIONS_REQUIRED, columns)
    text = tuple(c for c in PREDICTION_COLUMNS if c != "valid_output")
    frame = _typed(frame, text, {"valid_output": True, CALL_FAILED: False})
    return _finish(frame, found, errors, len(raw.frame) + len(raw.errors))


@overload
def read_records(path: str | Path, *, errors: Literal["raise"] = ...,
                 columns: Iterable[str] | None = ...) -> pd.DataFrame: ...
@overload
def read_records(path: str | Path, *, errors: Literal["collect"],
                 columns: Iterable[str] | None = ...) -> tuple[pd.DataFrame, list]: ...
def read_records(path, *, errors="raise", columns=None):
    """Read batch records, keeping every row (duplicates, extra or misspelled keys are deviations
    under test, not file errors); only record_id and batch_id must be non-empty strings.

    `columns` limits the returned columns (record_id and batch_id are always kept); scoring passes
    just those two, which keeps reading a million records to a few seconds.
    """
    path = Path(path)
    keep = None if columns is None else list(dict.fromkeys([*RECORDS_REQUIRED, *columns]))
    found: list[DataFileError] = []
    suffix = _check_path(path)
    if suffix in JSON_SUFFIXES:
        frame = _json_records(path, keep, found)
        n_total = len(frame) + len(found)  # one error at most per line
    else:
        table, lines, location = _read_tabular(path, suffix)
        missing = [c for c in RECORDS_REQUIRED if c not in table.columns]
        if missing:
            raise DataFileError(path, f"missing column(s) {missing}")
        ids = table[list(RECORDS_REQUIRED)].astype(object)
        good = np.ones(len(table), dtype=bool)
        for i, obj in enumerate(ids.where(ids.notna(), None).to_dict("records")):
            problem = _record_problem(path, int(lines[i]), location, obj)
            if problem is not None:
                found.append(problem)
                good[i] = False
        frame = table.loc[good, keep or list(table.columns)].reset_index(drop=True)
        n_total = len(table)
    return _finish(frame, found, errors, n_total)


def iter_record_dicts(path: Path, found: list[DataFileError]) -> Iterator[dict]:
    """The good records of a JSON Lines file as written (absent keys stay absent); each bad line
    (not JSON, not an object, record_id or batch_id missing or not a non-empty string) goes to
    `found` as the error naming file, line and field."""
    for line, obj in _iter_json_lines(path, found):
        record_id, batch_id = obj.get("record_id"), obj.get("batch_id")
        ids_ok = type(record_id) is str and record_id and type(batch_id) is str and batch_id
        problem = None if ids_ok else _record_problem(path, line, "line", obj)
        if problem is None:
            yield obj
        else:
            found.append(problem)


def _json_records(path: Path, keep: list[str] | None, found: list[DataFileError]) -> pd.DataFrame:
    """The good records of a JSON Lines file (`keep`: their columns, None: all); bad lines go to
    `found`."""
    rows = [obj if keep is None else [obj.get(c) for c in keep]
            for obj in iter_record_dicts(path, found)]
    if not rows:
        return pd.DataFrame(columns=keep or list(RECORDS_REQUIRED))
    return pd.DataFrame(rows, columns=keep)


def _record_problem(path: Path, line: int, location: str, obj: dict) -> DataFileError | None:
    record_id = obj.get("record_id")
    shown = record_id if _is_str(record_id) else None
    for field in RECORDS_REQUIRED:
        value = obj.get(field)
        if value is None:
            reason = "is missing" if field not in obj else "is null"
        elif not _is_str(value):
            reason = f"must be a non-empty string, got {value!r}"
        else:
            continue
        return DataFileError(path, reason, line=line, location=location, record_id=shown,
                             field=field)
    return None


def quarantine(errors: Sequence[DataFileError], out_dir: str | Path) -> list[Path]:
    """Write rejected lines to `<out_dir>/<input file name>.rejects.jsonl`, one JSON object per
    error (file, line, record_id, field, error, and the original line for text files), so that
    nothing is lost when the good rows go on. Nothing is overwritten either: when that name is
    taken (an earlier call, or a file of the same name from another folder) the next free one of
    `<name>.rejects.1.jsonl`, `<name>.rejects.2.jsonl`, ... is used. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[DataFileError]] = {}
    for error in errors:
        by_file.setdefault(error.path, []).append(error)
    written = []
    for source, file_errors in by_file.items():
        source_path = Path(source)
        original = _original_lines(source_path, {e.line for e in file_errors
                                                 if e.line and e.location == "line"})
        with _new_rejects_file(out_dir, source_path.name) as handle:
            for error in file_errors:
                line_text = original.get(error.line) if error.location == "line" else None
                handle.write(json.dumps({
                    "file": error.path, "line": error.line, "record_id": error.record_id,
                    "field": error.field, "error": str(error), "original": line_text,
                }, ensure_ascii=False) + "\n")
        written.append(Path(handle.name))
    return written


def _original_lines(path: Path, wanted: set[int]) -> dict[int, str]:
    """The text of the `wanted` lines of a JSON Lines/CSV file, numbered as the readers number
    them (a newline byte ends a line; undecodable bytes become U+FFFD); none if it is gone."""
    if path.suffix.lower() not in {*JSON_SUFFIXES, ".csv"} or not wanted or not path.is_file():
        return {}
    found = {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number in wanted:
                found[number] = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
    return found


def _new_rejects_file(out_dir: Path, name: str) -> TextIO:
    """A new rejects file opened for writing: created exclusively, so never one that exists."""
    for n in range(100_000):
        target = out_dir / (f"{name}.rejects.jsonl" if n == 0 else f"{name}.rejects.{n}.jsonl")
        try:
            return target.open("x", encoding="utf-8")  # the caller closes it
        except FileExistsError:
            continue
    raise DataFileError(out_dir / name, "no free rejects file name left in the quarantine folder")
