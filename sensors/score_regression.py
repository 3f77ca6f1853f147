"""Request the retraining of an adapter whose production version's score has regressed.

The rules are in configs/retraining.yaml (`load_retraining_rules`); `evaluate_rule` decides one
rule from the warehouse's model registry and score history (plain Python, no Dagster);
`score_regression_sensor` runs every rule each tick and requests one run per regressed version.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import yaml

from jobs import all_jobs
from resources.warehouse import WarehouseResource
from scoring.model_registry import load_model_registry
from synthetic.catalog import CONFIG_DIR

RETRAINING_PATH = CONFIG_DIR / "retraining.yaml"
SPLIT_ASSETS = frozenset({"gxp_scores"})  # assets that write one score row per split
RUN_KEY_PREFIX = "score_regression"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an asset name / rule name
_MAX_TAG_CHARS = 200


@dataclass(frozen=True)
class RetrainingRule:
    """One entry of configs/retraining.yaml: which score of which adapter to watch."""

    name: str
    adapter: str
    asset_key: str
    model_id: str
    metric: str
    threshold: float
    margin: float
    job: str
    split: str | None = None
    alias: str = "production"
    higher_is_better: bool = True

    @property
    def digest(self) -> str:
        """Short hash of the rule's fields: editing a rule re-evaluates it."""
        payload = json.dumps({f.name: getattr(self, f.name) for f in fields(self)},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def where(self) -> str:
        split = f"[{self.split}]" if self.split else ""
        return f"{self.metric} of {self.model_id} in {self.asset_key}{split}"


_REQUIRED = ("asset_key", "model_id", "metric", "threshold", "margin", "job")
_FIELDS = tuple(f.name for f in fields(RetrainingRule) if f.name != "name")


def load_retraining_rules(
    path: str | Path | None = None,
    *,
    known_jobs: Collection[str] | None = None,
    adapters_by_model: Mapping[str, str | None] | None = None,
) -> list[RetrainingRule]:
    """Read and check configs/retraining.yaml (or another file of the same shape).

    `known_jobs`: job names a rule may request; `adapters_by_model`: model id -> its adapter
    (configs/models.yaml), to check that model_id runs the rule's adapter. Any problem raises
    ValueError naming the file, the entry and the field.
    """
    path = Path(path) if path else RETRAINING_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found (the score-regression rules)") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or set(raw) - {"rules"}:
        raise ValueError(f"{path}: expected a mapping with one key, 'rules' (a mapping of rule "
                         f"name to its fields); got {_describe(raw)}")
    entries = raw.get("rules") or {}
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: 'rules' must be a mapping of rule name to its fields, got "
                         f"{type(entries).__name__}")
    return [_rule(path, name, entry, known_jobs, adapters_by_model)
            for name, entry in entries.items()]


def _describe(raw: Any) -> str:
    return f"keys {sorted(map(str, raw))}" if isinstance(raw, dict) else type(raw).__name__


def _rule(path: Path, name: Any, entry: Any, known_jobs: Collection[str] | None,
          adapters_by_model: Mapping[str, str | None] | None) -> RetrainingRule:
    where = f"{path}: rules.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: the rule name must be an asset-like name (letters, digits, "
                         "underscores)")
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping of fields, got {type(entry).__name__}")
    unknown = sorted(set(map(str, entry)) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; the fields are {list(_FIELDS)}")
    missing = [f for f in _REQUIRED if entry.get(f) is None]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")

    def text(field: str, default: str | None = None) -> str | None:
        value = entry.get(field, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: field {field!r}: {value!r} must be a non-empty string")
        return value

    def number(field: str) -> float:
        value = entry[field]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ValueError(f"{where}: field {field!r}: {value!r} must be a finite number")
        return float(value)

    adapter = text("adapter", name)
    if not _NAME.match(adapter):
        raise ValueError(f"{where}: field 'adapter': {adapter!r} is not an asset name")
    higher = entry.get("higher_is_better", True)
    if not isinstance(higher, bool):
        raise ValueError(f"{where}: field 'higher_is_better': {higher!r} must be true or false")
    rule = RetrainingRule(
        name=name, adapter=adapter, asset_key=text("asset_key"), model_id=text("model_id"),
        metric=text("metric"), threshold=number("threshold"), margin=number("margin"),
        job=text("job"), split=text("split"), alias=text("alias", "production"),
        higher_is_better=higher,
    )
    if rule.margin < 0:
        raise ValueError(f"{where}: field 'margin': {rule.margin} must be >= 0")
    if rule.asset_key in SPLIT_ASSETS and rule.split is None:
        raise ValueError(f"{where}: field 'split' is required: {rule.asset_key} writes one score "
                         "per split (benchmark, control_clean, ...)")
    if known_jobs is not None and rule.job not in known_jobs:
        raise ValueError(f"{where}: field 'job': {rule.job!r} is not a job of this project "
                         f"({', '.join(sorted(known_jobs))})")
    if adapters_by_model is not None:
        if rule.model_id not in adapters_by_model:
            raise ValueError(f"{where}: field 'model_id': {rule.model_id!r} is not in "
                             "configs/models.yaml")
        if adapters_by_model[rule.model_id] != rule.adapter:
            raise ValueError(
                f"{where}: field 'model_id': {rule.model_id!r} runs adapter "
                f"{adapters_by_model[rule.model_id]!r} (configs/models.yaml), not {rule.adapter!r}"
            )
    return rule


# --- deciding one rule (plain Python) ------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What one rule found: state "regressed", "ok" or "waiting" (nothing to judge yet)."""

    rule: RetrainingRule
    state: str
    reason: str
    model_version: str | None = None
    dagster_run_id: str | None = None
    value: float | None = None
    previous_version: str | None = None
    previous_value: float | None = None


def _finite(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)


def evaluate_rule(
    rule: RetrainingRule,
    production: Mapping[str, Any] | None,
    history: pd.DataFrame,
    versions: list[Mapping[str, Any]],
) -> Verdict:
    """Decide one rule. `production`: Warehouse.get_alias(adapter, alias); `history`:
    Warehouse.score_history(...) of the rule (one row per model_version); `versions`:
    Warehouse.list_model_versions(adapter), newest first. The previous version is the newest
    version registered before the production one that has a (non-null) score."""
    if production is None:
        return Verdict(rule, "waiting", f"{rule.name}: no {rule.alias} version of {rule.adapter} "
                       "in the model registry yet")
    version = str(production["version"])
    by_version = {str(r["model_version"]): r for r in history.to_dict("records")}
    row = by_version.get(version)
    if row is None:
        return Verdict(rule, "waiting", f"{rule.name}: {rule.alias} version {version} has no "
                       f"{rule.where} yet", model_version=None)
    value, run_id = _finite(row["value"]), str(row["dagster_run_id"])
    if value is None:
        return Verdict(rule, "waiting", f"{rule.name}: {rule.where} of version {version} (run "
                       f"{run_id}) is null: nothing could be scored, not judged")
    older = [str(v["version"]) for v in versions]
    older = older[older.index(version) + 1:] if version in older else []
    previous = next((v for v in older if v in by_version
                     and _finite(by_version[v]["value"]) is not None), None)
    previous_value = _finite(by_version[previous]["value"]) if previous else None

    sign = 1.0 if rule.higher_is_better else -1.0
    worse = "<" if rule.higher_is_better else ">"
    problems = []
    if sign * value < sign * rule.threshold:
        problems.append(f"{value:.4f} {worse} threshold {rule.threshold:g}")
    if previous_value is not None and sign * value < sign * (previous_value - sign * rule.margin):
        problems.append(f"{value:.4f} {worse} previous version {previous} {previous_value:.4f} "
                        f"{'-' if rule.higher_is_better else '+'} margin {rule.margin:g}")
    head = f"{rule.name}: {rule.alias} version {version} {rule.where}"
    common = dict(model_version=version, dagster_run_id=run_id, value=value,
                  previous_version=previous, previous_value=previous_value)
    if problems:
        return Verdict(rule, "regressed", f"{head}: regressed ({'; '.join(problems)})", **common)
    against = (f"previous version {previous} {previous_value:.4f}, margin {rule.margin:g}"
               if previous else "no earlier version scored")
    return Verdict(rule, "ok", f"{head} = {value:.4f}: fine (threshold {rule.threshold:g}; "
                   f"{against})", **common)


def run_key(verdict: Verdict) -> str:
    """One key per (adapter, regressed version): the daemon launches a run key once."""
    return f"{RUN_KEY_PREFIX}:{verdict.rule.adapter}:{verdict.model_version}"


def parse_cursor(cursor: str | None) -> dict[str, dict[str, str]]:
    """The sensor's cursor: {rule name: {"model_version", "dagster_run_id", "rule"}}: what was
    last evaluated, and the digest of the rule then."""
    if not cursor:
        return {}
    try:
        parsed = json.loads(cursor)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ValueError(f"score_regression_sensor: cursor {cursor[:80]!r} is not the JSON "
                         "object it writes; reset it with `dagster sensor cursor "
                         "score_regression_sensor --delete`")
    return parsed


# --- the sensor ---------------------------------------------------------------------------------
def _check_targets(context: dg.SensorEvaluationContext, rules: list[RetrainingRule]) -> None:
    """With the repository at hand: each rule's job must materialize its adapter."""
    repo = context.repository_def
    if repo is None:
        return
    for rule in rules:
        keys = repo.get_job(rule.job).asset_layer.executable_asset_keys
        if dg.AssetKey(rule.adapter) not in keys:
            raise ValueError(f"{RETRAINING_PATH}: rules.{rule.name}: field 'job': {rule.job} does "
                             f"not materialize {rule.adapter}")


@dg.sensor(
    name="score_regression_sensor",
    jobs=all_jobs,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests the retraining of an adapter (a run of the rule's job with the adapter "
    "selected) when the latest score of its production version, read from the results "
    "warehouse, falls below the threshold in configs/retraining.yaml or below the previous "
    "version's score minus the margin; one run per regressed version. Off by default: on the "
    "embedded tiny base model the adapters score below any useful threshold, so it would "
    "retrain forever. Turn it on for a real base model: dagster sensor start "
    "score_regression_sensor.",
)
def score_regression_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult:
    adapters = {m.id: m.adapter for m in load_model_registry()}
    rules = load_retraining_rules(RETRAINING_PATH, known_jobs={j.name for j in all_jobs},
                                  adapters_by_model=adapters)
    _check_targets(context, rules)
    seen = parse_cursor(context.cursor)
    client = warehouse.client
    cursor: dict[str, dict[str, str]] = {}
    requests: dict[str, dg.RunRequest] = {}
    notes: list[str] = []
    for rule in rules:
        verdict = evaluate_rule(
            rule,
            client.get_alias(rule.adapter, rule.alias),
            client.score_history(rule.asset_key, rule.model_id, rule.metric, split=rule.split),
            client.list_model_versions(rule.adapter),
        )
        if verdict.model_version is None:  # waiting: keep what was last evaluated
            if rule.name in seen:
                cursor[rule.name] = seen[rule.name]
            notes.append(verdict.reason)
            continue
        state = {"model_version": verdict.model_version, "dagster_run_id": verdict.dagster_run_id,
                 "rule": rule.digest}
        cursor[rule.name] = state
        if seen.get(rule.name) == state:
            notes.append(f"{rule.name}: version {verdict.model_version} (run "
                         f"{verdict.dagster_run_id}) already evaluated")
            continue
        if verdict.state != "regressed":
            context.log.info(verdict.reason)
            notes.append(verdict.reason)
            continue
        context.log.warning(f"{verdict.reason}: requesting a {rule.job} run of {rule.adapter}")
        key = run_key(verdict)
        requests.setdefault(key, dg.RunRequest(
            run_key=key,
            job_name=rule.job,
            asset_selection=[dg.AssetKey(rule.adapter)],
            tags={
                "gxplab/retraining_rule": rule.name,
                "gxplab/regressed_version": verdict.model_version,
                "gxplab/regression": verdict.reason[:_MAX_TAG_CHARS],
            },
        ))
    encoded = json.dumps(cursor, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=list(requests.values()), cursor=encoded)
    return dg.SensorResult(
        skip_reason="; ".join(notes) or f"no rules in {RETRAINING_PATH}", cursor=encoded
    )
