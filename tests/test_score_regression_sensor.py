"""score_regression_sensor: retraining is requested when a production adapter's score regresses.

The sensor runs through dg.build_sensor_context on a real SQLite warehouse holding hand-made rows
(model versions, the production alias, scores per version); Warehouse.score_history, its input,
also runs on PostgreSQL (tests/pg.py; marked `postgres`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from definitions import defs
from jobs import all_jobs
from resources.clients.warehouse import SCORE_HISTORY_COLUMNS, Provenance, Warehouse
from resources.warehouse import WarehouseResource
from scoring.model_registry import load_model_registry
from sensors import score_regression as sr
from sensors.score_regression import (
    RetrainingRule,
    evaluate_rule,
    load_retraining_rules,
    score_regression_sensor,
)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
GRPO = ("grpo_adapter", "embedded-grpo", "judge_evaluations", "weighted_reward")  # threshold 0.2
GXP = ("gxp_audit_adapter", "embedded-gxp-audit", "gxp_scores", "gxp1_f1")  # threshold 0.5


# --- hand-made warehouse rows -------------------------------------------------------------------
@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/warehouse.sqlite"


def register(wh: Warehouse, task: str, *versions: str, production: str | None = None) -> None:
    for version in versions:
        wh.register_model_version(task, version, artifact_uri=f"/models/{task}/{version}")
    if production:
        wh.promote(task, production)


def score(wh: Warehouse, which: tuple[str, str, str, str], version: str, value: float | None,
          *, run: str | None = None, split: str = "test", hours: float = 0,
          status: str = "succeeded") -> str:
    """One succeeded run of the asset for the model's `version` with `value` as the metric."""
    _, model_id, asset_key, metric = which
    run = run or f"run-{model_id}-{version}-{split}-{hours}"
    prov = Provenance(run, model_id, split, "d" * 64, "p-v1", "c0de", model_version=version)
    wh.record_run(prov, asset_key=asset_key, partition_key=f"{model_id}|{split}", status=status,
                  scores=[{"metric": metric, "value": value}, {"metric": "other", "value": 1.0}],
                  finished_at=T0 + timedelta(hours=hours))
    return run


INSTANCE = dg.DagsterInstance.ephemeral()  # the sensor reads the warehouse, not the instance


def tick(url: str, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=INSTANCE, cursor=cursor, definitions=defs,
        resources={"warehouse": WarehouseResource(url=url)},
    )  # fmt: skip
    result = score_regression_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def requested(result: dg.SensorResult) -> list[tuple[str, str, list[str]]]:
    return [(r.job_name, r.run_key, [k.to_user_string() for k in r.asset_selection])
            for r in result.run_requests or []]


# --- the sensor ---------------------------------------------------------------------------------
def test_a_production_score_below_its_threshold_requests_retraining(wh: Warehouse, url) -> None:
    register(wh, "grpo_adapter", "v1", production="v1")
    run = score(wh, GRPO, "v1", 0.12)
    result = tick(url)
    assert requested(result) == [
        ("gxp_models_job", "score_regression:grpo_adapter:v1", ["grpo_adapter"])
    ]
    (request,) = result.run_requests
    assert request.tags["gxplab/regressed_version"] == "v1"
    assert "0.1200 < threshold 0.2" in request.tags["gxplab/regression"]
    # The cursor holds what was evaluated per rule; gxp_audit_adapter has no production version.
    (rule,) = [r for r in load_retraining_rules() if r.name == "grpo_adapter"]
    assert json.loads(result.cursor) == {
        "grpo_adapter": {"model_version": "v1", "dagster_run_id": run, "rule": rule.digest}
    }


def test_a_fine_score_skips_with_the_reason(wh: Warehouse, url) -> None:
    register(wh, "grpo_adapter", "v1", production="v1")
    score(wh, GRPO, "v1", 0.6)
    result = tick(url)
    assert not result.run_requests
    assert "grpo_adapter: production version v1 weighted_reward of embedded-grpo in " \
           "judge_evaluations = 0.6000: fine" in result.skip_reason.skip_message
    assert "gxp_audit_adapter: no production version of gxp_audit_adapter in the model " \
           "registry yet" in result.skip_reason.skip_message


def test_worse_than_the_previous_version_by_more_than_the_margin_requests(wh, url) -> None:
    register(wh, "grpo_adapter", "v1", "v2", production="v1")
    wh.promote("grpo_adapter", "v2")
    score(wh, GRPO, "v1", 0.61)
    score(wh, GRPO, "v2", 0.50, hours=1)  # above the threshold, 0.11 below v1: margin is 0.05
    result = tick(url)
    assert requested(result) == [
        ("gxp_models_job", "score_regression:grpo_adapter:v2", ["grpo_adapter"])
    ]
    assert "0.5000 < previous version v1 0.6100 - margin 0.05" in (
        result.run_requests[0].tags["gxplab/regression"]
    )
    # Within the margin it is fine.
    score(wh, GRPO, "v2", 0.58, hours=2)
    assert not tick(url).run_requests


def test_the_same_state_on_the_next_tick_requests_nothing_again(wh: Warehouse, url) -> None:
    register(wh, "grpo_adapter", "v1", production="v1")
    score(wh, GRPO, "v1", 0.1)
    first = tick(url)
    assert len(first.run_requests) == 1
    again = tick(url, cursor=first.cursor)
    assert not again.run_requests
    assert "grpo_adapter: version v1 (run run-embedded-grpo-v1-test-0) already evaluated" in (
        again.skip_reason.skip_message
    )
    assert again.cursor == first.cursor
    # A new evaluation of the same regressed version asks again under the same run key, which
    # the daemon launches only once: one regression, one retraining run.
    score(wh, GRPO, "v1", 0.05, hours=1)
    third = tick(url, cursor=again.cursor)
    assert [r.run_key for r in third.run_requests] == [first.run_requests[0].run_key]
    # The retraining registers v2 (not promoted): production is still v1, nothing new.
    register(wh, "grpo_adapter", "v2")
    score(wh, GRPO, "v2", 0.4, hours=2)
    assert not tick(url, cursor=third.cursor).run_requests


def test_an_edited_rule_is_evaluated_again(wh: Warehouse, url, tmp_path, monkeypatch) -> None:
    register(wh, "grpo_adapter", "v1", production="v1")
    score(wh, GRPO, "v1", 0.3)
    first = tick(url)
    assert not first.run_requests  # 0.3 >= 0.2
    stricter = sr.RETRAINING_PATH.read_text().replace("threshold: 0.2", "threshold: 0.4")
    assert stricter != sr.RETRAINING_PATH.read_text()
    (tmp_path / "retraining.yaml").write_text(stricter)
    monkeypatch.setattr(sr, "RETRAINING_PATH", tmp_path / "retraining.yaml")
    assert [r.run_key for r in tick(url, cursor=first.cursor).run_requests] == [
        "score_regression:grpo_adapter:v1"
    ]


def test_a_foreign_cursor_says_how_to_reset_it(url, wh) -> None:
    with pytest.raises(ValueError, match="dagster sensor cursor score_regression_sensor --delete"):
        tick(url, cursor="not json")


def test_a_gxp_rule_reads_its_split_only(wh: Warehouse, url) -> None:
    register(wh, "gxp_audit_adapter", "a1", production="a1")
    score(wh, GXP, "a1", 0.9, split="control_faulty", hours=1)  # newer, but another split
    score(wh, GXP, "a1", 0.3, split="benchmark")
    result = tick(url)
    assert requested(result) == [
        ("gxp_models_job", "score_regression:gxp_audit_adapter:a1", ["gxp_audit_adapter"])
    ]
    assert "gxp1_f1 of embedded-gxp-audit in gxp_scores[benchmark]" in (
        result.run_requests[0].tags["gxplab/regression"]
    )


def test_a_version_without_a_score_waits(wh: Warehouse, url) -> None:
    register(wh, "grpo_adapter", "v1", "v2", production="v1")
    wh.promote("grpo_adapter", "v2")
    score(wh, GRPO, "v1", 0.1)  # the old version was bad; the production one is not scored yet
    result = tick(url)
    assert not result.run_requests
    assert "grpo_adapter: production version v2 has no weighted_reward of embedded-grpo in " \
           "judge_evaluations yet" in result.skip_reason.skip_message


# --- bad configuration --------------------------------------------------------------------------
GOOD = {"asset_key": "judge_evaluations", "model_id": "embedded-grpo",
        "metric": "weighted_reward", "threshold": 0.2, "margin": 0.05, "job": "gxp_models_job"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "threshold"},
         r"rules\.grpo_adapter: missing field\(s\) \['threshold'\]"),
        ({**GOOD, "threshold": "high"},
         r"rules\.grpo_adapter: field 'threshold': 'high' must be a finite number"),
        ({**GOOD, "margin": -0.1}, r"rules\.grpo_adapter: field 'margin': -0.1 must be >= 0"),
        ({**GOOD, "treshold": 0.3}, r"rules\.grpo_adapter: unknown field\(s\) \['treshold'\]"),
        ({**GOOD, "job": "gxp_retrain_job"},
         r"rules\.grpo_adapter: field 'job': 'gxp_retrain_job' is not a job of this project"),
        ({**GOOD, "model_id": "embedded-gxp-audit"},
         r"field 'model_id': 'embedded-gxp-audit' runs adapter 'gxp_audit_adapter'"),
        ({**GOOD, "asset_key": "gxp_scores"},
         r"rules\.grpo_adapter: field 'split' is required: gxp_scores writes one score per"),
        ({**GOOD, "higher_is_better": "yes"},
         r"field 'higher_is_better': 'yes' must be true or false"),
        ({**GOOD, "job": "gxp_reports_job"},
         r"rules\.grpo_adapter: field 'job': gxp_reports_job does not materialize grpo_adapter"),
    ],
)
def test_a_bad_rule_fails_the_tick_naming_file_entry_and_field(
    tmp_path, url, wh, monkeypatch, entry, message
) -> None:
    path = tmp_path / "retraining.yaml"
    path.write_text(json.dumps({"rules": {"grpo_adapter": entry}}))  # JSON is YAML
    monkeypatch.setattr(sr, "RETRAINING_PATH", path)
    with pytest.raises(ValueError, match=message) as error:
        tick(url)
    assert str(error.value).startswith(f"{path}: rules.grpo_adapter: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [grpo_adapter]\n", "'rules' must be a mapping of rule name to its fields"),
        ("rule:\n  grpo_adapter: {}\n", "expected a mapping with one key, 'rules'"),
        ("rules:\n  grpo_adapter: [\n", "not valid YAML"),
        ("rules:\n  grpo-adapter: {}\n", "rules.grpo-adapter: the rule name must be"),
    ],
)
def test_a_malformed_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "retraining.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        load_retraining_rules(path)
    assert str(error.value).startswith(f"{path}: ")
    with pytest.raises(ValueError, match="file not found") as missing:
        load_retraining_rules(tmp_path / "missing.yaml")
    assert str(missing.value).startswith(f"{tmp_path / 'missing.yaml'}: ")


def test_the_project_rules_load_and_target_their_adapters() -> None:
    adapters = {m.id: m.adapter for m in load_model_registry()}
    rules = load_retraining_rules(known_jobs={j.name for j in all_jobs},
                                  adapters_by_model=adapters)
    assert [(r.name, r.adapter, r.model_id, r.asset_key, r.split) for r in rules] == [
        ("grpo_adapter", "grpo_adapter", "embedded-grpo", "judge_evaluations", None),
        ("gxp_audit_adapter", "gxp_audit_adapter", "embedded-gxp-audit", "gxp_scores",
         "benchmark"),
    ]
    assert score_regression_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert "embedded tiny base model" in score_regression_sensor.description
    assert score_regression_sensor.required_resource_keys == {"warehouse"}


# --- evaluate_rule: the decision alone ----------------------------------------------------------
def _history(rows: list[tuple[str, float | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"model_version": v, "value": x, "dagster_run_id": f"r-{v}"} for v, x in rows]
    )


FPR = RetrainingRule(name="fpr", adapter="gxp_audit_adapter", asset_key="gxp_scores",
                     model_id="embedded-gxp-audit", metric="gxp1_fpr", threshold=0.1, margin=0.02,
                     job="gxp_models_job", split="control_clean", higher_is_better=False)


@pytest.mark.parametrize(
    ("production", "rows", "state"),
    [
        ("v2", [("v2", 0.05), ("v1", 0.04)], "ok"),  # 0.01 worse: within the margin
        ("v2", [("v2", 0.07), ("v1", 0.04)], "regressed"),  # 0.03 worse than v1 + 0.02
        ("v2", [("v2", 0.12)], "regressed"),  # above the 0.1 ceiling
        ("v2", [("v2", 0.02), ("v1", 0.09)], "ok"),  # better than before
        ("v2", [("v2", None)], "waiting"),  # nothing could be scored: not judged
        ("v3", [("v2", 0.01)], "waiting"),  # production not scored yet
    ],
)
def test_lower_is_better_rules(production: str, rows, state: str) -> None:
    versions = [{"version": v} for v in ("v3", "v2", "v1")]  # newest first
    verdict = evaluate_rule(FPR, {"version": production}, _history(rows), versions)
    assert verdict.state == state, verdict.reason


def test_the_previous_version_is_the_newest_older_one_with_a_score() -> None:
    rule = RetrainingRule(name="g", adapter="grpo_adapter", asset_key="judge_evaluations",
                          model_id="embedded-grpo", metric="weighted_reward", threshold=0.2,
                          margin=0.05, job="gxp_models_job")
    versions = [{"version": v} for v in ("v4", "v3", "v2", "v1")]
    # v2 was never scored (null), v4 is newer than production: v1 is the baseline.
    history = _history([("v4", 0.9), ("v3", 0.5), ("v2", None), ("v1", 0.7)])
    verdict = evaluate_rule(rule, {"version": "v3"}, history, versions)
    assert (verdict.state, verdict.previous_version, verdict.previous_value) == (
        "regressed", "v1", 0.7,
    )  # fmt: skip


# --- Warehouse.score_history ------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_wh(request: pytest.FixtureRequest, tmp_path) -> Iterator[Warehouse]:
    url = (f"sqlite:///{tmp_path}/h.sqlite" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    warehouse = Warehouse(url)
    warehouse.upgrade()
    yield warehouse
    warehouse.close()


def test_score_history_has_the_latest_succeeded_score_per_version(any_wh: Warehouse) -> None:
    score(any_wh, GXP, "a1", 0.40, split="benchmark", hours=0)
    score(any_wh, GXP, "a1", 0.45, split="benchmark", hours=1)  # re-evaluated: this one counts
    score(any_wh, GXP, "a2", 0.70, split="benchmark", hours=2)
    score(any_wh, GXP, "a2", 0.10, split="benchmark", hours=3, status="failed")  # ignored
    score(any_wh, GXP, "a2", 0.99, split="control_clean", hours=4)  # another split
    history = any_wh.score_history("gxp_scores", "embedded-gxp-audit", "gxp1_f1",
                                   split="benchmark")
    assert list(history.columns) == list(SCORE_HISTORY_COLUMNS)
    assert history[["model_version", "value"]].values.tolist() == [["a2", 0.70], ["a1", 0.45]]
    assert history["dagster_run_id"].iloc[1] == "run-embedded-gxp-audit-a1-benchmark-1"
    everywhere = any_wh.score_history("gxp_scores", "embedded-gxp-audit", "gxp1_f1")
    assert everywhere[["model_version", "split", "value"]].values.tolist() == [
        ["a2", "control_clean", 0.99], ["a1", "benchmark", 0.45],
    ]  # fmt: skip
    assert any_wh.score_history("judge_evaluations", "embedded-gxp-audit", "gxp1_f1").empty
