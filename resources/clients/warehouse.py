"""Results warehouse of the GxP benchmark: runs, predictions, scores, per-item evaluation scores,
LLM calls and failed Dagster runs (SQLAlchemy 2).

Plain Python, no Dagster import. Every row carries its provenance (dataset hash, model id and
version, prompt version, code version, Dagster run id, split), so a reviewer can trace a number to
what produced it.
The schema is owned by Alembic (`resources/warehouse_migrations/`); `Warehouse.upgrade()` brings a
database to head and is safe to call at every start. See docs/warehouse.md.

CLI: `python -m resources.clients.warehouse {upgrade,counts} [--url URL]`.
"""

from __future__ import annotations

import argparse
import getpass
import io
import json
import logging
import math
import os
import re
import subprocess
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///var/warehouse.sqlite"
URL_ENV = "GXPLAB_WAREHOUSE_URL"
CODE_VERSION_ENV = "GXPLAB_CODE_VERSION"
RUN_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed", "skipped")
PROVENANCE_FIELDS: tuple[str, ...] = (
    "dagster_run_id", "model_id", "split", "dataset_hash", "prompt_version", "code_version",
    "model_version",
)  # fmt: skip
# model_version of rows written before revision 0003 (and of callers that do not know it).
UNVERSIONED = "unversioned"
ITEM_STATUSES: tuple[str, ...] = ("ok", "failed")
_ID_LEN = 255  # length of every identifier column; checked up front so SQLite and PostgreSQL agree
_CHUNK_ROWS = 5_000  # rows per executemany: bounds memory of one round trip for ~100k predictions
# From this many rows a table is loaded with COPY on PostgreSQL: measured on 100k predictions,
# COPY took ~1 s where executemany (SQLAlchemy's insertmanyvalues) took ~5.5 s.
_COPY_MIN_ROWS = 1_000
_COPY_CHUNK_ROWS = 20_000
_MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "warehouse_migrations"
# Key of the PostgreSQL advisory lock that serialises concurrent upgrade() calls (several Dagster
# step processes may start at once on a fresh database).
_UPGRADE_LOCK_KEY = zlib.crc32(b"gxplab.warehouse.upgrade")

# --- schema (the migrations in resources/warehouse_migrations/ must create exactly this) ---------
METADATA = MetaData()
# BIGINT on PostgreSQL (predictions grow by ~100k rows per run); SQLite autoincrements only INTEGER.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def _provenance_columns() -> list[Column]:
    columns = [Column(name, String(_ID_LEN), nullable=False) for name in PROVENANCE_FIELDS[:-1]]
    # Added by revision 0003; rows from before it read 'unversioned'.
    model_version = Column("model_version", String(_ID_LEN), nullable=False,
                           server_default=UNVERSIONED)  # fmt: skip
    return [*columns, model_version]


def _run_fk(table: str) -> Column:
    fk = ForeignKey("benchmark_runs.id", ondelete="CASCADE", name=f"fk_{table}_run_id")
    return Column("run_id", _ID, fk, nullable=False)


BENCHMARK_RUNS = Table(
    "benchmark_runs",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    *_provenance_columns(),
    # Revision 0005: the original run of the re-execution lineage (Dagster's root_run_id; the
    # run itself for an original run). Null only in rows written outside record_run.
    Column("dagster_root_run_id", String(_ID_LEN)),
    Column("asset_key", String(_ID_LEN), nullable=False),
    Column("partition_key", String(_ID_LEN), nullable=False),  # "" when unpartitioned
    Column("status", String(16), nullable=False),
    Column("detail", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("summary", JSON),
    UniqueConstraint("dagster_run_id", "asset_key", "partition_key", name="uq_benchmark_runs_step"),
    CheckConstraint(
        "status IN ('running', 'succeeded', 'failed', 'skipped')", name="ck_benchmark_runs_status"
    ),
    Index("ix_benchmark_runs_model_split", "model_id", "split", "status"),
    # One row per step of a lineage: a re-executed step replaces its rows (a unique index, not a
    # constraint, so that SQLite adds it without copying the table; see revision 0005).
    Index(
        "uq_benchmark_runs_lineage_step", "dagster_root_run_id", "asset_key", "partition_key",
        unique=True,
    ),
)
PREDICTIONS = Table(
    "predictions",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    _run_fk("predictions"),
    *_provenance_columns(),
    Column("batch_id", Text, nullable=False),
    # Text, not String(n): these come from model output and may be arbitrarily long.
    Column("record_id", Text),
    Column("deviation_type", Text),
    Column("field", Text),
    Column("evidence", Text),
    Column("valid_output", Boolean, nullable=False),
    Index("ix_predictions_run_id", "run_id"),
    Index("ix_predictions_model_split", "model_id", "split"),
)
SCORES = Table(
    "scores",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    _run_fk("scores"),
    *_provenance_columns(),
    Column("metric", String(_ID_LEN), nullable=False),
    Column("value", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("n", Integer),
    UniqueConstraint("run_id", "metric", name="uq_scores_run_metric"),
    Index("ix_scores_model_split_metric", "model_id", "split", "metric"),
)
SCORE_DETAILS = Table(
    "score_details",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    _run_fk("score_details"),
    *_provenance_columns(),
    Column("deviation_type", String(_ID_LEN), nullable=False),
    Column("support", Integer, nullable=False),
    Column("tp", Integer, nullable=False),
    Column("fp", Integer, nullable=False),
    Column("fn", Integer, nullable=False),
    Column("precision", Float),
    Column("recall", Float),
    Column("f1", Float),
    UniqueConstraint("run_id", "deviation_type", name="uq_score_details_run_type"),
)
LLM_CALLS = Table(
    "llm_calls",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    _run_fk("llm_calls"),
    *_provenance_columns(),
    # Text throughout: values come from the LLM client and provider, with no fixed length.
    Column("request_id", Text, nullable=False),  # the audited batch_id
    Column("litellm_model", Text),
    Column("cache_key", Text),
    Column("cached", Boolean),
    Column("attempts", Integer),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("latency_s", Float),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("cost_usd", Float),
    Column("cost_source", Text),
    Column("response_text", Text),
    Index("ix_llm_calls_run_id", "run_id"),
    Index("ix_llm_calls_cache_key", "cache_key"),
)
# Revision 0003: one row per (item, metric) of an evaluation asset (judge_evaluations,
# behavioral_metrics, batchqa_eval); "failed" items keep their row with a null value.
ITEM_SCORES = Table(
    "item_scores",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    _run_fk("item_scores"),
    *_provenance_columns(),
    Column("item_id", Text, nullable=False),  # prompt/case/question id
    Column("metric", String(_ID_LEN), nullable=False),
    Column("value", Float),
    Column("status", String(16), nullable=False),
    Column("detail", Text),  # the error, or a short justification
    UniqueConstraint("run_id", "item_id", "metric", name="uq_item_scores_run_item_metric"),
    CheckConstraint("status IN ('ok', 'failed')", name="ck_item_scores_status"),
    Index("ix_item_scores_model_metric", "model_id", "metric"),
)
_CHILD_TABLES = (PREDICTIONS, SCORES, SCORE_DETAILS, LLM_CALLS, ITEM_SCORES)

# Model registry (revision 0002): trained adapter versions per task, named aliases such as
# "production" that point at one version, and the append-only history of alias moves.
MODEL_VERSIONS = Table(
    "model_versions",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("task", String(_ID_LEN), nullable=False),  # e.g. qlora_adapter, gxp_audit_adapter
    Column("version", String(_ID_LEN), nullable=False),  # run-id or timestamp label
    Column("artifact_uri", Text, nullable=False),  # adapter folder path or s3:// URI
    Column("archive_uri", Text),
    Column("archive_sha256", String(64)),
    Column("base_model", Text),
    Column("dataset_hash", String(_ID_LEN)),
    Column("config", JSON),
    Column("metrics", JSON),
    Column("code_version", String(_ID_LEN), nullable=False),
    Column("dagster_run_id", String(_ID_LEN)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("task", "version", name="uq_model_versions_task_version"),
    Index("ix_model_versions_task_created", "task", "created_at"),
)
MODEL_ALIASES = Table(
    "model_aliases",
    METADATA,
    Column("task", String(_ID_LEN), primary_key=True),
    Column("alias", String(_ID_LEN), primary_key=True),
    Column("version", String(_ID_LEN), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("previous_version", String(_ID_LEN)),  # where a rollback goes; null when nowhere
    ForeignKeyConstraint(
        ["task", "version"],
        ["model_versions.task", "model_versions.version"],
        name="fk_model_aliases_version",
    ),
)
MODEL_ALIAS_EVENTS = Table(
    "model_alias_events",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("task", String(_ID_LEN), nullable=False),
    Column("alias", String(_ID_LEN), nullable=False),
    Column("from_version", String(_ID_LEN)),  # null on the alias's first promotion
    Column("to_version", String(_ID_LEN), nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", Text),
    Column("reason", Text),
    Column("at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["task", "to_version"],
        ["model_versions.task", "model_versions.version"],
        name="fk_model_alias_events_version",
    ),
    CheckConstraint("action IN ('promote', 'rollback')", name="ck_model_alias_events_action"),
    Index("ix_model_alias_events_task_alias", "task", "alias", "id"),
)
MODEL_TABLES = (MODEL_VERSIONS, MODEL_ALIASES, MODEL_ALIAS_EVENTS)

# Revision 0004: one row per failed Dagster run (sensors/run_failures.py writes it).
RUN_FAILURES = Table(
    "run_failures",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("dagster_run_id", String(_ID_LEN), nullable=False),
    Column("job_name", String(_ID_LEN), nullable=False),
    Column("partition_key", String(_ID_LEN)),  # null when the run is not partitioned
    Column("asset_keys", JSON, nullable=False),  # the assets the run planned, "a/b" strings
    Column("failed_steps", JSON, nullable=False),  # step keys that failed; [] for a run-level error
    Column("error", Text, nullable=False),  # scrubbed: never holds a secret of the environment
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("dagster_run_id", name="uq_run_failures_dagster_run_id"),
    Index("ix_run_failures_failed_at", "failed_at"),
)
TABLES = (BENCHMARK_RUNS, *_CHILD_TABLES, *MODEL_TABLES, RUN_FAILURES)

LATEST_SCORE_COLUMNS: tuple[str, ...] = (
    "model_id", "split", "metric", "value", "ci_low", "ci_high", "n", "dataset_hash",
    "prompt_version", "code_version", "model_version", "dagster_run_id", "finished_at",
)  # fmt: skip
RUN_SUMMARY_COLUMNS: tuple[str, ...] = (
    "model_id", "split", "status", "detail", "summary", "asset_key", "partition_key",
    "dagster_run_id", "dataset_hash", "prompt_version", "code_version", "model_version",
    "started_at", "finished_at",
)  # fmt: skip
ITEM_SCORE_COLUMNS: tuple[str, ...] = (
    "run_id", "asset_key", *PROVENANCE_FIELDS, "item_id", "metric", "value", "status", "detail",
)
EVALUATION_SCORE_COLUMNS: tuple[str, ...] = (
    "run_id", "asset_key", *PROVENANCE_FIELDS, "metric", "value", "ci_low", "ci_high", "n",
    "finished_at",
)
SCORE_HISTORY_COLUMNS: tuple[str, ...] = (
    "model_version", "split", "metric", "value", "ci_low", "ci_high", "n", "dagster_run_id",
    "finished_at",
)  # fmt: skip
RUN_FAILURE_COLUMNS: tuple[str, ...] = (
    "id", "dagster_run_id", "job_name", "partition_key", "asset_keys", "failed_steps", "error",
    "failed_at", "recorded_at",
)  # fmt: skip


class WarehouseError(RuntimeError):
    """A warehouse problem whose message is safe to log (never holds the URL's password)."""


class ModelRegistryError(WarehouseError):
    """A model-registry request that cannot be met (unknown task or version, a conflicting
    registration, nothing to roll back to); the message names the task, version and alias."""


@dataclass(frozen=True)
class Provenance:
    """What produced a result; copied onto every warehouse row."""

    dagster_run_id: str
    model_id: str
    split: str
    dataset_hash: str
    prompt_version: str
    code_version: str
    # The model's version: a registered adapter version, "base:<model>" for a base model, the
    # litellm model string for an API model; "unversioned" when the caller does not know it.
    model_version: str = UNVERSIONED
    # Dagster's root_run_id: the original run when this run re-executes another (from failure,
    # run retries); None (or the run id itself) for an original run. Not copied onto the child
    # rows: benchmark_runs holds it, and record_run keys a step on it (see lineage_run_id).
    dagster_root_run_id: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "dagster_root_run_id":
                continue
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Provenance.{f.name} must be a non-empty string, got {value!r}")
            if len(value) > _ID_LEN:
                raise ValueError(f"Provenance.{f.name} is longer than {_ID_LEN} characters")

    @property
    def lineage_run_id(self) -> str:
        """The original run of this run's re-execution lineage (the run itself if original)."""
        return self.dagster_root_run_id or self.dagster_run_id

    def columns(self) -> dict[str, str]:
        """The PROVENANCE_FIELDS values, as stamped on every benchmark row."""
        return {name: getattr(self, name) for name in PROVENANCE_FIELDS}


# --- URLs, secrets, code version ---------------------------------------------------------------
def _parse_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The parser's message echoes the whole string, password included.
        raise WarehouseError("invalid warehouse URL (not shown: it may hold a password)") from None
    # SQLAlchemy would pick psycopg2 anyway today, but say so: it is the driver that is installed.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def redact_url(url: str | URL) -> str:
    """The URL with its password masked as ***, safe for logs and messages."""
    return _parse_url(url).render_as_string(hide_password=True)


def _scrub(message: str, url: URL) -> str:
    if url.password:
        message = message.replace(str(url.password), "***")
    return message


# Names of environment variables whose values are secrets (OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY,
# HF_TOKEN, PGPASSWORD, ...); and user:password@ in URLs held by any variable
# (GXPLAB_WAREHOUSE_URL, GXPLAB_DAGSTER_PG_URL, ...).
_SECRET_ENV_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|AUTH", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:([^@\s/]+)@")
_MIN_SECRET_CHARS = 4  # as the LLM client: shorter values would mangle ordinary text
_NOT_SECRETS = frozenset({"true", "false", "none", "null"})
_MAX_ERROR_CHARS = 20_000  # a run_failures.error longer than this is cut (the event log has all)


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Secret values of the environment, longest first: values of variables named like secrets
    (…KEY…, …SECRET…, …TOKEN…, …PASSW…, …CREDENTIAL…, …PRIVATE…, …AUTH…) and the passwords
    (raw and percent-decoded) in URLs held by any variable."""
    environ = dict(os.environ if environ is None else environ)
    found: set[str] = set()
    for name, value in environ.items():
        value = value.strip()
        if _SECRET_ENV_NAME.search(name):
            found.add(value)
        for password in _URL_PASSWORD.findall(value):
            found.update((password, unquote(password)))
    return sorted(
        (v for v in found if len(v) >= _MIN_SECRET_CHARS and v.lower() not in _NOT_SECRETS
         and not v.isdigit()),
        key=lambda v: (-len(v), v),
    )  # fmt: skip


def scrub_secrets(message: str, *, extra: Iterable[str] = ()) -> str:
    """`message` with every secret of the environment (see `environment_secrets`) and every value
    in `extra` (e.g. the warehouse URL's password) replaced by ***."""
    secrets = {*environment_secrets(), *(v for v in extra if v and len(v) >= _MIN_SECRET_CHARS)}
    for secret in sorted(secrets, key=lambda v: (-len(v), v)):  # longest first: no partial leaks
        message = message.replace(secret, "***")
    return message


def code_version() -> str:
    """Git sha of this checkout (+dirty with uncommitted changes), else $GXPLAB_CODE_VERSION, else
    "unknown"."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = _git(repo, "rev-parse", "HEAD")
        if sha:
            return f"{sha}+dirty" if _git(repo, "status", "--porcelain") else sha
    except (OSError, subprocess.SubprocessError):
        pass  # no git binary or not a checkout (installed package, container image): fall back
    return os.environ.get(CODE_VERSION_ENV) or "unknown"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return out.stdout.strip()


# --- input conversion (all checks happen before the database is touched) ------------------------
def _scalar(value: Any) -> Any:
    """Plain Python value for a driver: numpy scalars unboxed, NaN/NA as None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _jsonable(value: Any, where: str) -> Any:
    """JSON-safe copy of a summary: NaN/inf become null (PostgreSQL's JSON rejects them)."""
    value = _scalar(value) if not isinstance(value, dict | list | tuple) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def _frame_rows(df: pd.DataFrame, name: str, required: Sequence[str], optional: Sequence[str] = ()):
    """Rows of `df` restricted to the given columns as plain dicts; extra columns are ignored."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; has {list(df.columns)}")
    frame = df.reindex(columns=[*required, *optional]).astype(object)
    frame = frame.where(frame.notna(), None)
    return [{k: _scalar(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _where(name: str, i: int, row: dict) -> str:
    ident = ", ".join(f"{k}={row[k]!r}" for k in ("record_id", "batch_id") if row.get(k))
    return f"{name} row {i}" + (f" ({ident})" if ident else "")


def _prediction_rows(df: pd.DataFrame, prov: Provenance) -> list[dict]:
    rows = _frame_rows(
        df,
        "predictions",
        ("batch_id", "record_id", "deviation_type", "valid_output"),
        ("field", "evidence", "model_id", "split"),
    )
    for i, row in enumerate(rows):
        for col in ("model_id", "split"):  # contract columns that repeat the provenance
            value = row.pop(col)
            if value is not None and value != getattr(prov, col):
                raise ValueError(
                    f"{_where('predictions', i, row)}: field {col}={value!r} differs from "
                    f"provenance {col}={getattr(prov, col)!r}"
                )
        if row["batch_id"] is None:
            raise ValueError(f"{_where('predictions', i, row)}: field batch_id is empty")
        if row["valid_output"] not in (True, False):
            raise ValueError(
                f"{_where('predictions', i, row)}: field valid_output must be true or false, "
                f"got {row['valid_output']!r}"
            )
        row["valid_output"] = bool(row["valid_output"])
    return rows


_SCORE_KEYS = ("metric", "value", "ci_low", "ci_high", "n")
_PER_TYPE_KEYS = ("deviation_type", "support", "tp", "fp", "fn", "precision", "recall", "f1")
_LLM_CALL_COLUMNS = tuple(
    c.name for c in LLM_CALLS.columns if c.name not in {"id", "run_id", *PROVENANCE_FIELDS}
)


def _score_rows(scores: Iterable[dict]) -> list[dict]:
    rows = []
    for i, score in enumerate(scores):
        unknown = sorted(set(score) - set(_SCORE_KEYS))
        if unknown or "metric" not in score or "value" not in score:
            raise ValueError(
                f"scores[{i}] ({score.get('metric')!r}): needs keys metric and value, may have "
                f"ci_low, ci_high, n; unknown key(s) {unknown}"
            )
        row = {k: _scalar(score.get(k)) for k in _SCORE_KEYS}
        if not isinstance(row["metric"], str) or not row["metric"]:
            raise ValueError(f"scores[{i}]: field metric must be a non-empty string")
        rows.append(row)
    return rows


def _per_type_rows(df: pd.DataFrame) -> list[dict]:
    rows = _frame_rows(df, "per_type", _PER_TYPE_KEYS)
    for i, row in enumerate(rows):
        for col in ("deviation_type", "support", "tp", "fp", "fn"):
            if row[col] is None:
                raise ValueError(
                    f"per_type row {i} ({row['deviation_type']!r}): field {col} is empty"
                )
    return rows


def _llm_call_rows(calls: Iterable[dict], prov: Provenance) -> list[dict]:
    rows = []
    for i, call in enumerate(calls):
        model_id = call.get("model_id")
        if model_id is not None and model_id != prov.model_id:
            raise ValueError(
                f"llm_calls[{i}] (request_id={call.get('request_id')!r}): field model_id="
                f"{model_id!r} differs from provenance model_id={prov.model_id!r}"
            )
        row = {k: _scalar(call.get(k)) for k in _LLM_CALL_COLUMNS}
        if row["response_text"] is None:  # LLMCallResult.to_dict() names the response `text`
            row["response_text"] = _scalar(call.get("text"))
        for col in ("request_id", "status"):
            if row[col] is None:
                raise ValueError(f"llm_calls[{i}]: field {col} is missing or empty")
        rows.append(row)
    return rows


_ITEM_KEYS = ("item_id", "metric", "value", "status")
_ITEM_OPTIONAL = ("detail", "model_id", "model_version")


def _item_score_rows(items: pd.DataFrame | list[dict], prov: Provenance) -> list[dict]:
    """Checked item_scores rows: item_id, metric, value (None/NaN -> NULL), status, detail."""
    if isinstance(items, pd.DataFrame):
        rows = _frame_rows(items, "item_scores", _ITEM_KEYS, _ITEM_OPTIONAL)
    elif isinstance(items, list | tuple):
        rows = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ValueError(f"item_scores row {i}: must be a dict, got {type(item).__name__}")
            missing = [k for k in _ITEM_KEYS if k not in item]
            if missing:
                raise ValueError(f"item_scores row {i}: field(s) {missing} missing")
            rows.append({k: _scalar(item.get(k)) for k in (*_ITEM_KEYS, *_ITEM_OPTIONAL)})
    else:
        raise ValueError(
            f"item_scores must be a DataFrame or a list of dicts, got {type(items).__name__}"
        )
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        where = f"item_scores row {i}"
        for col in ("item_id", "metric"):
            if not isinstance(row[col], str) or not row[col].strip():
                raise ValueError(
                    f"{where}: field {col} must be a non-empty string, got {row[col]!r}"
                )
        where += f" (item_id={row['item_id']!r}, metric={row['metric']!r})"
        if len(row["metric"]) > _ID_LEN:
            raise ValueError(f"{where}: field metric is longer than {_ID_LEN} characters")
        for col in ("model_id", "model_version"):  # contract columns that repeat the provenance
            value = row.pop(col)
            if value is not None and value != getattr(prov, col):
                raise ValueError(
                    f"{where}: field {col}={value!r} differs from provenance "
                    f"{col}={getattr(prov, col)!r}"
                )
        if row["status"] not in ITEM_STATUSES:
            raise ValueError(
                f"{where}: field status must be one of {ITEM_STATUSES}, got {row['status']!r}"
            )
        value = row["value"]
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where}: field value must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{where}: field value must be finite, got {value!r}")
            row["value"] = float(value)
        elif row["status"] == "ok":
            raise ValueError(
                f"{where}: field value is null (or NaN) but status is 'ok'; an item that could "
                "not be scored has status 'failed'"
            )
        if row["detail"] is not None and not isinstance(row["detail"], str):
            raise ValueError(
                f"{where}: field detail must be a string or null, got "
                f"{type(row['detail']).__name__}"
            )
        key = (row["item_id"], row["metric"])
        if key in seen:
            raise ValueError(f"{where}: the same item and metric as row {seen[key]}")
        seen[key] = i
    return rows


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return None if value is None else value.astimezone(UTC)


def _as_list(values: str | Iterable[str] | None) -> list[str] | None:
    return [values] if isinstance(values, str) else None if values is None else list(values)


def _chunks(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- Alembic ------------------------------------------------------------------------------------
def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """Alembic configuration built in code (no alembic.ini); pass a connection to run on it."""
    config = Config()
    # ConfigParser interpolates '%', so escape it in paths and URLs.
    config.set_main_option("script_location", str(_MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


# --- the warehouse ------------------------------------------------------------------------------
class Warehouse:
    """Writer and reader of the results warehouse at any SQLAlchemy URL."""

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self._url = _parse_url(url)
        self._engine = self._create_engine(echo)
        self._schema_checked = False

    def __repr__(self) -> str:
        return f"Warehouse({self.url!r})"

    @property
    def url(self) -> str:
        """The URL with its password masked."""
        return self._url.render_as_string(hide_password=True)

    def _create_engine(self, echo: bool) -> Engine:
        url, kwargs = self._url, {"echo": echo}
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                # One shared connection, otherwise each connection sees its own empty database.
                kwargs |= {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
            else:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        elif url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            kwargs |= {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        engine = create_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            event.listen(engine, "connect", _sqlite_foreign_keys)
        return engine

    def close(self) -> None:
        """Close pooled connections."""
        self._engine.dispose()

    def _connect(self) -> Connection:
        try:
            return self._engine.connect()
        except DBAPIError as exc:
            reason = _scrub(str(exc.orig).strip(), self._url)
            # `from None`: the chained driver error is not needed and is not ours to scrub.
            raise WarehouseError(
                f"cannot connect to the warehouse at {self.url}: {reason}"
            ) from None

    def _head(self) -> str:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None, f"no migrations in {_MIGRATIONS_DIR}"
        return head

    def upgrade(self) -> str:
        """Migrate the schema to head (a no-op when there); returns the revision."""
        with self._connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                # Concurrent starters wait here instead of racing to CREATE the same tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            command.upgrade(alembic_config(conn), "head")
            revision = MigrationContext.configure(conn).get_current_revision()
        log.info("warehouse %s at schema revision %s", self.url, revision)
        self._schema_checked = True
        return str(revision)

    def _check_schema(self, conn: Connection) -> None:
        if self._schema_checked:
            return
        current, head = MigrationContext.configure(conn).get_current_revision(), self._head()
        if current != head:
            raise WarehouseError(
                f"warehouse {self.url} is at schema revision {current}, this code needs {head}: "
                "run `python -m resources.clients.warehouse upgrade` or Warehouse.upgrade()"
            )
        self._schema_checked = True

    def record_run(
        self,
        prov: Provenance,
        *,
        asset_key: str,
        partition_key: str | None,
        status: str,
        detail: str | None = None,
        summary: dict | None = None,
        predictions: pd.DataFrame | None = None,
        scores: list[dict] | None = None,
        per_type: pd.DataFrame | None = None,
        llm_calls: list[dict] | None = None,
        item_scores: pd.DataFrame | list[dict] | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> int:
        """Write one run and its rows in one transaction; returns the run id.

        Idempotent per step of a re-execution lineage, (prov.lineage_run_id, asset_key,
        partition_key): recording the same step again, in the same run or in a re-execution of
        it (a new Dagster run with that root_run_id), replaces the step's rows and keeps its id;
        the row then carries the recording run's dagster_run_id. started_at defaults to the first
        recording's time in the same run (now for a new run), finished_at to now unless status is
        "running". `item_scores`: per-item rows of an evaluation (item_id, metric, value, status
        "ok" | "failed", detail).
        """
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        children = {
            PREDICTIONS: _prediction_rows(predictions, prov) if predictions is not None else [],
            SCORES: _score_rows(scores or []),
            SCORE_DETAILS: _per_type_rows(per_type) if per_type is not None else [],
            LLM_CALLS: _llm_call_rows(llm_calls or [], prov),
            ITEM_SCORES: _item_score_rows(item_scores, prov) if item_scores is not None else [],
        }
        now, started_at = datetime.now(UTC), _utc(started_at, "started_at")
        run = {
            **prov.columns(),
            "dagster_root_run_id": prov.lineage_run_id,
            "asset_key": asset_key,
            "partition_key": partition_key or "",
            "status": status,
            "detail": detail,
            "summary": _jsonable(summary, "summary") if summary is not None else None,
            "finished_at": _utc(finished_at, "finished_at")
            or (None if status == "running" else now),
        }
        runs = BENCHMARK_RUNS.c
        key = (
            (runs.dagster_root_run_id == prov.lineage_run_id)
            & (runs.asset_key == asset_key)
            & (runs.partition_key == run["partition_key"])
        )
        with self._connect() as conn, conn.begin():
            self._check_schema(conn)
            old = conn.execute(select(runs.id, runs.started_at, runs.dagster_run_id).where(key))
            old = old.first()
            same_run = old is not None and old.dagster_run_id == prov.dagster_run_id
            run["started_at"] = started_at or (old.started_at if same_run else now)
            if old is None:
                run_id = conn.execute(insert(BENCHMARK_RUNS).values(run)).inserted_primary_key[0]
            else:
                run_id = old.id
                for table in _CHILD_TABLES:
                    conn.execute(delete(table).where(table.c.run_id == run_id))
                conn.execute(
                    update(BENCHMARK_RUNS).where(BENCHMARK_RUNS.c.id == run_id).values(run)
                )
            stamp = {"run_id": run_id, **prov.columns()}
            for table, rows in children.items():
                _insert_rows(conn, table, [{**stamp, **row} for row in rows])
        log.info(
            "warehouse: run %s %s[%s] %s/%s %s (%s)",
            run_id,
            asset_key,
            run["partition_key"],
            prov.model_id,
            prov.split,
            status,
            ", ".join(f"{t.name}={len(r)}" for t, r in children.items()),
        )
        return int(run_id)

    def _query(self, stmt, columns: Sequence[str]) -> pd.DataFrame:
        with self._connect() as conn:
            self._check_schema(conn)
            rows = conn.execute(stmt).mappings().all()
        df = pd.DataFrame([dict(r) for r in rows], columns=list(columns))
        for col in ("started_at", "finished_at"):
            if col in df.columns:  # SQLite hands back naive datetimes; they were written in UTC
                df[col] = pd.to_datetime(df[col], utc=True)
        return df

    @staticmethod
    def _filters(model_ids, splits) -> list:
        runs, out = BENCHMARK_RUNS.c, []
        if (models := _as_list(model_ids)) is not None:
            out.append(runs.model_id.in_(models))
        if (split_list := _as_list(splits)) is not None:
            out.append(runs.split.in_(split_list))
        return out

    def latest_scores(
        self,
        model_ids: str | Iterable[str] | None = None,
        splits: str | Iterable[str] | None = None,
        *,
        asset_key: str | None = None,
    ) -> pd.DataFrame:
        """Metrics of the most recent succeeded run that wrote scores, per (model_id, split);
        of any asset unless `asset_key` names one (e.g. gxp_scores)."""
        runs = BENCHMARK_RUNS.c
        rank = func.row_number().over(
            partition_by=(runs.model_id, runs.split),
            order_by=(runs.finished_at.desc(), runs.id.desc()),
        )
        filters = self._filters(model_ids, splits)
        if asset_key is not None:
            filters.append(runs.asset_key == asset_key)
        latest = (
            select(runs.id, rank.label("rank"))
            .where(runs.status == "succeeded", exists().where(SCORES.c.run_id == runs.id))
            .where(*filters)
            .subquery()
        )
        stmt = (
            select(*(SCORES.c[c] for c in LATEST_SCORE_COLUMNS[:-1]), runs.finished_at)
            .join(BENCHMARK_RUNS, runs.id == SCORES.c.run_id)
            .join(latest, (latest.c.id == SCORES.c.run_id) & (latest.c.rank == 1))
            .order_by(SCORES.c.model_id, SCORES.c.split, SCORES.c.metric)
        )
        return self._query(stmt, LATEST_SCORE_COLUMNS)

    def latest_run_summaries(
        self,
        model_ids: str | Iterable[str] | None = None,
        splits: str | Iterable[str] | None = None,
        *,
        asset_key: str | None = None,
    ) -> pd.DataFrame:
        """Status, summary and detail of the latest run of any status per (model_id, split)."""
        runs = BENCHMARK_RUNS.c
        when = func.coalesce(runs.finished_at, runs.started_at)
        rank = func.row_number().over(
            partition_by=(runs.model_id, runs.split), order_by=(when.desc(), runs.id.desc())
        )
        filters = self._filters(model_ids, splits)
        if asset_key is not None:
            filters.append(runs.asset_key == asset_key)
        latest = select(BENCHMARK_RUNS, rank.label("rank")).where(*filters).subquery()
        stmt = (
            select(*(latest.c[c] for c in RUN_SUMMARY_COLUMNS))
            .where(latest.c.rank == 1)
            .order_by(latest.c.model_id, latest.c.split)
        )
        return self._query(stmt, RUN_SUMMARY_COLUMNS)

    def item_scores(
        self,
        asset_key: str | None = None,
        model_ids: str | Iterable[str] | None = None,
        dagster_run_id: str | None = None,
    ) -> pd.DataFrame:
        """Per-item evaluation rows of every recorded run (history included; pass dagster_run_id
        for one run), with the run's asset_key and the provenance. Columns: ITEM_SCORE_COLUMNS."""
        runs, items = BENCHMARK_RUNS.c, ITEM_SCORES.c
        filters = []
        if asset_key is not None:
            filters.append(runs.asset_key == asset_key)
        if (models := _as_list(model_ids)) is not None:
            filters.append(items.model_id.in_(models))
        if dagster_run_id is not None:
            filters.append(items.dagster_run_id == dagster_run_id)
        stmt = (
            select(*(runs.asset_key if c == "asset_key" else items[c] for c in ITEM_SCORE_COLUMNS))
            .join(BENCHMARK_RUNS, runs.id == items.run_id)
            .where(*filters)
            .order_by(items.run_id, items.id)
        )
        return self._query(stmt, ITEM_SCORE_COLUMNS)

    def latest_evaluation_scores(self, asset_key: str) -> pd.DataFrame:
        """The `scores` rows of the latest (by finished_at) succeeded run of `asset_key` per
        model_id, with the provenance. Columns: EVALUATION_SCORE_COLUMNS."""
        runs = BENCHMARK_RUNS.c
        rank = func.row_number().over(
            partition_by=runs.model_id, order_by=(runs.finished_at.desc(), runs.id.desc())
        )
        latest = (
            select(runs.id, rank.label("rank"))
            .where(runs.status == "succeeded", runs.asset_key == asset_key)
            .subquery()
        )
        own = {"asset_key": runs.asset_key, "finished_at": runs.finished_at}  # the rest: scores
        stmt = (
            select(*(own[c] if c in own else SCORES.c[c] for c in EVALUATION_SCORE_COLUMNS))
            .join(BENCHMARK_RUNS, runs.id == SCORES.c.run_id)
            .join(latest, (latest.c.id == SCORES.c.run_id) & (latest.c.rank == 1))
            .order_by(SCORES.c.model_id, SCORES.c.metric)
        )
        return self._query(stmt, EVALUATION_SCORE_COLUMNS)

    def table_counts(self) -> dict[str, int]:
        """Row count of every warehouse table."""
        with self._connect() as conn:
            self._check_schema(conn)
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in TABLES
            }

    def score_history(
        self, asset_key: str, model_id: str, metric: str, *, split: str | None = None
    ) -> pd.DataFrame:
        """Per model_version of `model_id`, `metric` from the latest (by finished_at) succeeded
        run of `asset_key` (of one split if given), newest first: how the versions of a model
        compare (the score-regression sensor's input). Columns: SCORE_HISTORY_COLUMNS."""
        runs = BENCHMARK_RUNS.c
        filters = [
            runs.status == "succeeded", runs.asset_key == asset_key, runs.model_id == model_id,
            SCORES.c.metric == metric,
        ]  # fmt: skip
        if split is not None:
            filters.append(runs.split == split)
        rank = func.row_number().over(
            partition_by=runs.model_version, order_by=(runs.finished_at.desc(), runs.id.desc())
        )
        ranked = (
            select(
                runs.model_version, runs.split, SCORES.c.metric, SCORES.c.value, SCORES.c.ci_low,
                SCORES.c.ci_high, SCORES.c.n, runs.dagster_run_id, runs.finished_at,
                runs.id.label("run_id"), rank.label("rank"),
            )  # fmt: skip
            .join(SCORES, SCORES.c.run_id == runs.id)
            .where(*filters)
            .subquery()
        )
        stmt = (
            select(*(ranked.c[c] for c in SCORE_HISTORY_COLUMNS))
            .where(ranked.c.rank == 1)
            .order_by(ranked.c.finished_at.desc(), ranked.c.run_id.desc())
        )
        return self._query(stmt, SCORE_HISTORY_COLUMNS)

    # --- failed runs (revision 0004) -------------------------------------------------------------
    def record_run_failure(
        self,
        dagster_run_id: str,
        *,
        job_name: str,
        error: str,
        partition_key: str | None = None,
        asset_keys: Iterable[str] = (),
        failed_steps: Iterable[str] = (),
        failed_at: datetime | None = None,
    ) -> dict:
        """Record a failed Dagster run; returns its row (RUN_FAILURE_COLUMNS).

        Idempotent per dagster_run_id: recording the same run again updates its row and keeps its
        id and first recorded_at. `error` is scrubbed before it is stored: every secret of the
        environment (`environment_secrets`) and this warehouse URL's password become ***; it is
        cut at 20,000 characters. failed_at (timezone-aware) defaults to now.
        """
        where = f"run failure {dagster_run_id!r}"
        _check_name(dagster_run_id, "dagster_run_id", "run failure")
        _check_name(job_name, "job_name", where)
        if partition_key is not None:
            _check_name(partition_key, "partition_key", where)
        if not isinstance(error, str) or not error.strip():
            raise ValueError(f"{where}: field error must be a non-empty string, got {error!r}")
        lists = {}
        for field, values in (("asset_keys", asset_keys), ("failed_steps", failed_steps)):
            if isinstance(values, str):
                raise ValueError(f"{where}: field {field} must be a list of strings, not a string")
            lists[field] = sorted({_check_name(v, field, where) for v in values})
        scrubbed = scrub_secrets(error, extra=[self._url.password] if self._url.password else [])
        if len(scrubbed) > _MAX_ERROR_CHARS:
            scrubbed = scrubbed[:_MAX_ERROR_CHARS] + f"\n... (cut at {_MAX_ERROR_CHARS} characters)"
        now = datetime.now(UTC)
        row = {
            "dagster_run_id": dagster_run_id, "job_name": job_name,
            "partition_key": partition_key, **lists, "error": scrubbed,
            "failed_at": _utc(failed_at, "failed_at") or now,
        }  # fmt: skip
        key = RUN_FAILURES.c.dagster_run_id == dagster_run_id
        for attempt in (1, 2):
            try:
                with self._connect() as conn, conn.begin():
                    self._check_schema(conn)
                    if conn.execute(select(RUN_FAILURES.c.id).where(key)).first() is None:
                        conn.execute(insert(RUN_FAILURES).values({**row, "recorded_at": now}))
                    else:
                        conn.execute(update(RUN_FAILURES).where(key).values(row))
                    stored = conn.execute(select(RUN_FAILURES).where(key)).mappings().one()
                break
            except IntegrityError:
                # Another process recorded the same run between our read and insert: update it.
                if attempt == 2:
                    raise
        log.info(
            "warehouse: run failure %s of job %s recorded (failed steps: %s)",
            dagster_run_id, job_name, ", ".join(lists["failed_steps"]) or "none",
        )  # fmt: skip
        out = {c: stored[c] for c in RUN_FAILURE_COLUMNS}
        return {**out, "failed_at": _as_utc(out["failed_at"]),
                "recorded_at": _as_utc(out["recorded_at"])}  # fmt: skip

    def run_failures(
        self, since: datetime | None = None, *, job_name: str | None = None
    ) -> pd.DataFrame:
        """Recorded failed runs, oldest first; only those failed at or after `since`
        (timezone-aware) and of `job_name` when given. Columns: RUN_FAILURE_COLUMNS (asset_keys
        and failed_steps as lists, failed_at and recorded_at as UTC timestamps)."""
        failures = RUN_FAILURES.c
        stmt = select(*(failures[c] for c in RUN_FAILURE_COLUMNS))
        if since is not None:
            stmt = stmt.where(failures.failed_at >= _utc(since, "since"))
        if job_name is not None:
            stmt = stmt.where(failures.job_name == job_name)
        df = self._query(stmt.order_by(failures.failed_at, failures.id), RUN_FAILURE_COLUMNS)
        for col in ("failed_at", "recorded_at"):
            df[col] = pd.to_datetime(df[col], utc=True)
        return df

    # --- model registry ---------------------------------------------------------------------------
    def register_model_version(
        self,
        task: str,
        version: str,
        *,
        artifact_uri: str | Path,
        archive_uri: str | Path | None = None,
        archive_sha256: str | None = None,
        base_model: str | None = None,
        dataset_hash: str | None = None,
        config: dict | None = None,
        metrics: dict | None = None,
        dagster_run_id: str | None = None,
        code_version: str | None = None,
    ) -> dict:
        """Record a trained model version of `task`; returns its row (see list_model_versions).

        Idempotent: registering the same task and version again with the same artifact (uris,
        sha256, base model, dataset hash, config, metrics) returns the stored row. A version is
        immutable: different content, a different sha256 above all, raises ModelRegistryError
        naming the task and version. code_version defaults to the checkout's code_version().
        """
        row = _model_version_row(
            task,
            version,
            artifact_uri=artifact_uri,
            archive_uri=archive_uri,
            archive_sha256=archive_sha256,
            base_model=base_model,
            dataset_hash=dataset_hash,
            config=config,
            metrics=metrics,
            dagster_run_id=dagster_run_id,
            code_version=code_version,
        )
        try:
            with self._connect() as conn, conn.begin():
                self._check_schema(conn)
                existing = _version_row(conn, task, version)
                if existing is None:
                    conn.execute(
                        insert(MODEL_VERSIONS).values({**row, "created_at": datetime.now(UTC)})
                    )
                    log.info("model registry: registered %s version %s", task, version)
                    return _version_dict(_version_row(conn, task, version), [])
        except IntegrityError:
            # Another process registered the same task and version between our read and insert.
            with self._connect() as conn:
                existing = _version_row(conn, task, version)
            if existing is None:
                raise
        _check_same_version(existing, row)
        with self._connect() as conn:
            aliases = _aliases_of(conn, task).get(version, [])
        return _version_dict(existing, aliases)

    def list_model_versions(self, task: str | None = None) -> list[dict]:
        """Registered versions, newest first, each with `aliases`: the aliases pointing at it."""
        stmt = select(MODEL_VERSIONS).order_by(
            MODEL_VERSIONS.c.created_at.desc(), MODEL_VERSIONS.c.id.desc()
        )
        if task is not None:
            stmt = stmt.where(MODEL_VERSIONS.c.task == task)
        with self._connect() as conn:
            self._check_schema(conn)
            rows = conn.execute(stmt).mappings().all()
            aliases: dict[tuple[str, str], list[str]] = {}
            alias_stmt = select(MODEL_ALIASES).order_by(MODEL_ALIASES.c.alias)
            if task is not None:
                alias_stmt = alias_stmt.where(MODEL_ALIASES.c.task == task)
            for a in conn.execute(alias_stmt).mappings():
                aliases.setdefault((a["task"], a["version"]), []).append(a["alias"])
        return [_version_dict(r, aliases.get((r["task"], r["version"]), [])) for r in rows]

    def get_alias(self, task: str, alias: str = "production") -> dict | None:
        """The version row `alias` of `task` points at (plus alias, previous_version and
        alias_updated_at), or None when the alias is not set."""
        with self._connect() as conn:
            self._check_schema(conn)
            current = _alias_row(conn, task, alias)
            if current is None:
                return None
            row = _version_row(conn, task, current["version"])
            aliases = _aliases_of(conn, task).get(current["version"], [])
        return {
            **_version_dict(row, aliases),
            "alias": alias,
            "previous_version": current["previous_version"],
            "alias_updated_at": _as_utc(current["updated_at"]),
        }

    def promote(
        self,
        task: str,
        version: str,
        alias: str = "production",
        reason: str | None = None,
        *,
        actor: str | None = None,
    ) -> dict:
        """Point `alias` of `task` at a registered `version` and record the move in the history.

        Promoting the version the alias already points at changes nothing (changed=False).
        Returns the event: task, alias, action, from_version, to_version, previous_version,
        actor, reason, at, changed. Unknown task or version: ModelRegistryError naming them.
        """
        _check_name(task, "task", "promote")
        _check_name(version, "version", f"promote of task {task!r}")
        _check_name(alias, "alias", f"promote of task {task!r}")
        with self._connect() as conn, conn.begin():
            self._check_schema(conn)
            _lock_alias(conn, task, alias)
            if _version_row(conn, task, version) is None:
                raise _unknown_version(conn, task, version)
            current = _alias_row(conn, task, alias)
            if current is not None and current["version"] == version:
                return _alias_event(
                    task, alias, "promote", version, version, current["previous_version"],
                    actor, reason, _as_utc(current["updated_at"]), changed=False,
                )  # fmt: skip
            history = [*_alias_stack(conn, task, alias), version]
            return _move_alias(conn, task, alias, "promote", current, history, actor, reason)

    def rollback(
        self,
        task: str,
        alias: str = "production",
        reason: str | None = None,
        *,
        actor: str | None = None,
    ) -> dict:
        """Move `alias` of `task` back to the version it pointed at before the current one.

        Successive rollbacks walk further back through the promotions (a promotion after a
        rollback starts from there). ModelRegistryError when the task is unknown, the alias is
        not set or there is no earlier version. Returns the event, as promote does.
        """
        _check_name(task, "task", "rollback")
        _check_name(alias, "alias", f"rollback of task {task!r}")
        with self._connect() as conn, conn.begin():
            self._check_schema(conn)
            _lock_alias(conn, task, alias)
            current = _alias_row(conn, task, alias)
            if current is None:
                if not _task_exists(conn, task):
                    raise _unknown_task(conn, task)
                raise ModelRegistryError(
                    f"cannot roll back alias {alias!r} of task {task!r}: it was never set "
                    "(promote a version first)"
                )
            history = _alias_stack(conn, task, alias)
            if not history or history[-1] != current["version"]:
                raise WarehouseError(
                    f"alias {alias!r} of task {task!r} points at {current['version']!r} but its "
                    f"history in model_alias_events ends at {history[-1:]}: the tables were "
                    "edited by hand"
                )
            if len(history) < 2:
                raise ModelRegistryError(
                    f"cannot roll back alias {alias!r} of task {task!r}: no version before "
                    f"{current['version']!r} is left in its history (promote one instead)"
                )
            return _move_alias(conn, task, alias, "rollback", current, history[:-1], actor, reason)

    def alias_history(self, task: str, alias: str = "production") -> list[dict]:
        """Promotions and rollbacks of `alias` of `task`, newest first."""
        events = MODEL_ALIAS_EVENTS.c
        stmt = (
            select(MODEL_ALIAS_EVENTS)
            .where(events.task == task, events.alias == alias)
            .order_by(events.id.desc())
        )
        with self._connect() as conn:
            self._check_schema(conn)
            rows = conn.execute(stmt).mappings().all()
        return [{**dict(r), "at": _as_utc(r["at"])} for r in rows]


# --- model registry helpers ---------------------------------------------------------------------
_VERSION_CONTENT: tuple[str, ...] = (
    "artifact_uri", "archive_uri", "archive_sha256", "base_model", "dataset_hash", "config",
    "metrics",
)  # fmt: skip
_SHA256_HEX = frozenset("0123456789abcdef")


def _check_name(value: Any, field: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field} must be a non-empty string, got {value!r}")
    if len(value) > _ID_LEN:
        raise ValueError(f"{where}: field {field} is longer than {_ID_LEN} characters")
    return value


def _optional_text(value: Any, field: str, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, Path):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field} must be a non-empty string, got {value!r}")
    return value


def _model_version_row(task: str, version: str, **values: Any) -> dict:
    """Checked column values of a model_versions row (no id, no created_at)."""
    _check_name(task, "task", "model version")
    where = f"model version {version!r} of task {task!r}"
    _check_name(version, "version", f"model version of task {task!r}")
    if values["artifact_uri"] is None:
        raise ValueError(f"{where}: field artifact_uri is required")
    row: dict[str, Any] = {"task": task, "version": version}
    for field in ("artifact_uri", "archive_uri", "base_model"):
        row[field] = _optional_text(values[field], field, where)
    for field in ("dataset_hash", "dagster_run_id", "code_version"):
        value = values[field]
        row[field] = None if value is None else _check_name(value, field, where)
    sha = values["archive_sha256"]
    if sha is not None and not (
        isinstance(sha, str) and len(sha) == 64 and set(sha) <= _SHA256_HEX
    ):
        raise ValueError(
            f"{where}: field archive_sha256 must be 64 lowercase hex digits, got {sha!r}"
        )
    row["archive_sha256"] = sha
    for field in ("config", "metrics"):
        value = values[field]
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}: field {field} must be a dict, got {type(value).__name__}")
        row[field] = None if value is None else _jsonable(value, f"{where}: {field}")
    row["code_version"] = row["code_version"] or code_version()
    return row


def _check_same_version(stored: Any, row: dict) -> None:
    """Raise ModelRegistryError unless a stored version holds the same artifact as `row`."""
    differ = [f for f in _VERSION_CONTENT if stored[f] != row[f]]
    if not differ:
        return
    where = f"model version {row['version']!r} of task {row['task']!r}"
    if "archive_sha256" in differ:
        raise ModelRegistryError(
            f"{where} is already registered with archive_sha256 {stored['archive_sha256']}, "
            f"not {row['archive_sha256']}: versions are immutable, register the new artifact "
            "under a new version label"
        )
    raise ModelRegistryError(
        f"{where} is already registered with different {', '.join(differ)}: versions are "
        "immutable, register the new artifact under a new version label"
    )


def _as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC datetime (SQLite hands back naive datetimes; they were written in UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _version_dict(row: Any, aliases: list[str]) -> dict:
    out = dict(row)
    out["created_at"] = _as_utc(out["created_at"])
    out["aliases"] = sorted(aliases)
    return out


def _version_row(conn: Connection, task: str, version: str) -> Any:
    versions = MODEL_VERSIONS.c
    stmt = select(MODEL_VERSIONS).where(versions.task == task, versions.version == version)
    return conn.execute(stmt).mappings().first()


def _alias_row(conn: Connection, task: str, alias: str) -> Any:
    aliases = MODEL_ALIASES.c
    stmt = select(MODEL_ALIASES).where(aliases.task == task, aliases.alias == alias)
    return conn.execute(stmt).mappings().first()


def _aliases_of(conn: Connection, task: str) -> dict[str, list[str]]:
    """version -> aliases pointing at it, for one task."""
    out: dict[str, list[str]] = {}
    stmt = select(MODEL_ALIASES.c.version, MODEL_ALIASES.c.alias).where(
        MODEL_ALIASES.c.task == task
    )
    for version, alias in conn.execute(stmt):
        out.setdefault(version, []).append(alias)
    return out


def _task_exists(conn: Connection, task: str) -> bool:
    return conn.execute(select(exists().where(MODEL_VERSIONS.c.task == task))).scalar_one()


def _unknown_task(conn: Connection, task: str) -> ModelRegistryError:
    tasks = conn.execute(select(MODEL_VERSIONS.c.task).distinct().order_by(MODEL_VERSIONS.c.task))
    known = ", ".join(tasks.scalars()) or "none"
    return ModelRegistryError(
        f"unknown task {task!r}: no model version is registered for it (registered tasks: {known})"
    )


def _unknown_version(conn: Connection, task: str, version: str) -> ModelRegistryError:
    if not _task_exists(conn, task):
        return _unknown_task(conn, task)
    versions = MODEL_VERSIONS.c
    newest = conn.execute(
        select(versions.version)
        .where(versions.task == task)
        .order_by(versions.created_at.desc(), versions.id.desc())
        .limit(5)
    )
    return ModelRegistryError(
        f"task {task!r} has no version {version!r} (newest registered: "
        f"{', '.join(newest.scalars())})"
    )


def _lock_alias(conn: Connection, task: str, alias: str) -> None:
    """Serialise moves of one alias on PostgreSQL (also its first promotion, when no row exists
    to lock yet). SQLite serialises writers by itself."""
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"gxplab.model_alias\0{task}\0{alias}".encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _alias_stack(conn: Connection, task: str, alias: str) -> list[str]:
    """Versions the alias went through, replayed from its history: a promotion pushes its version,
    a rollback pops the current one; the last item is the current version."""
    events = MODEL_ALIAS_EVENTS.c
    stmt = (
        select(events.action, events.to_version)
        .where(events.task == task, events.alias == alias)
        .order_by(events.id)
    )
    stack: list[str] = []
    for action, to_version in conn.execute(stmt):
        if action == "promote":
            stack.append(to_version)
        elif stack:
            stack.pop()
    return stack


def _alias_event(
    task: str,
    alias: str,
    action: str,
    from_version: str | None,
    to_version: str,
    previous_version: str | None,
    actor: str | None,
    reason: str | None,
    at: datetime | None,
    *,
    changed: bool,
) -> dict:
    return {
        "task": task, "alias": alias, "action": action, "from_version": from_version,
        "to_version": to_version, "previous_version": previous_version, "actor": actor,
        "reason": reason, "at": at, "changed": changed,
    }  # fmt: skip


def _move_alias(
    conn: Connection,
    task: str,
    alias: str,
    action: str,
    current: Any,
    history: list[str],
    actor: str | None,
    reason: str | None,
) -> dict:
    """Point the alias at history[-1] (previous_version: history[-2]) and append the event."""
    now, actor = datetime.now(UTC), actor or _current_user()
    to_version, previous = history[-1], history[-2] if len(history) > 1 else None
    from_version = None if current is None else current["version"]
    values = {"version": to_version, "updated_at": now, "previous_version": previous}
    if current is None:
        conn.execute(insert(MODEL_ALIASES).values(task=task, alias=alias, **values))
    else:
        aliases = MODEL_ALIASES.c
        conn.execute(
            update(MODEL_ALIASES).where(aliases.task == task, aliases.alias == alias).values(values)
        )
    event = _alias_event(
        task, alias, action, from_version, to_version, previous, actor, reason, now, changed=True
    )
    conn.execute(
        insert(MODEL_ALIAS_EVENTS).values(
            {c.name: event[c.name] for c in MODEL_ALIAS_EVENTS.columns if c.name != "id"}
        )
    )
    log.info(
        "model registry: %s %s of %s: %s -> %s (%s)",
        action, alias, task, from_version, to_version, reason or "no reason given",
    )  # fmt: skip
    return event


def _current_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment and no passwd entry
        return None


def _insert_rows(conn: Connection, table: Table, rows: list[dict]) -> None:
    if conn.dialect.name == "postgresql" and len(rows) >= _COPY_MIN_ROWS:
        for chunk in _chunks(rows, _COPY_CHUNK_ROWS):
            _copy_rows(conn, table, chunk)
        return
    for chunk in _chunks(rows, _CHUNK_ROWS):
        conn.execute(insert(table), chunk)


def _copy_text(value: Any) -> str:
    """One value in PostgreSQL's COPY text format (NULL is \\N; backslash escapes)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    return (
        str(value)
        .replace("\\", "\\\\")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )


def _copy_rows(conn: Connection, table: Table, rows: list[dict]) -> None:
    """COPY rows into table on the connection's open transaction (psycopg2)."""
    columns = list(rows[0])
    quote = conn.dialect.identifier_preparer
    sql = "COPY {} ({}) FROM STDIN".format(
        quote.format_table(table), ", ".join(quote.quote(c) for c in columns)
    )
    data = io.StringIO("".join("\t".join(_copy_text(r[c]) for c in columns) + "\n" for r in rows))
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(sql, data)
    finally:
        cursor.close()


def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    # SQLite ignores FOREIGN KEY clauses unless asked, per connection.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# --- CLI ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resources.clients.warehouse",
        description="Results warehouse of the GxP benchmark (see docs/warehouse.md).",
    )
    parser.add_argument(
        "action",
        choices=("upgrade", "counts"),
        help="upgrade: migrate the schema to head; counts: rows per table",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"SQLAlchemy URL (default: ${URL_ENV}, else {DEFAULT_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print counts as JSON")
    args = parser.parse_args(argv)
    try:
        warehouse = Warehouse(args.url)
        try:
            if args.action == "upgrade":
                print(f"{warehouse.url}: schema revision {warehouse.upgrade()}")
            else:
                counts = warehouse.table_counts()
                if args.json:
                    print(json.dumps(counts))
                else:
                    print("\n".join(f"{name:<20} {n:>10}" for name, n in counts.items()))
        finally:
            warehouse.close()
    except WarehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
