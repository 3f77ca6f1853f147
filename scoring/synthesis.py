"""Results synthesis: base-vs-tuned significance, the cost-quality Pareto front, the final report.

Plain Python (pandas, numpy; statistics from `scoring.stats`, plots in `scoring.synthesis_plots`,
HTML through markdown-it-py); no Dagster import. The `synthesis_report` asset passes the
leaderboard, the training comparison, the AQI scores, the evaluation frames (the shared long-form
contract: model_id, base_model_id, model_version, item_id, metric, value, status, detail) and a
lineage dict, and saves what `build_report` returns with `save_report`.

Statistics (METHODS.md "Statistics"): a tuned model's "ok" rows are paired with its base model's
"ok" rows on (item_id, metric); the mean difference (tuned - base) gets a percentile bootstrap 95%
CI (1000 resamples, seeded), a two-sided paired t-test and Cohen's d_z; every p-value of one report
is Holm-adjusted in one family. aqi_scores keeps no bootstrap samples, so a delta-AQI has no
p-value: it counts as significant when its 95% CI excludes 0, outside the Holm family.
"""

from __future__ import annotations

import base64
import html as html_lib
import math
import numbers
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.item_scores import ITEM_COLUMNS, ITEM_STATUSES
from scoring.leaderboard import leaderboard_markdown
from scoring.stats import bootstrap_ci, cohens_dz, holm_correction, paired_t_test

CONTRACT_COLUMNS = ITEM_COLUMNS
STATUSES = ITEM_STATUSES
ALPHA = 0.05
N_BOOT = 1000
SEED = 0

# Evaluation assets with a section of their own, in report order (other sources follow).
EVALUATION_SECTIONS = {
    "judge_evaluations": "Judge scores (AMR prescription validation)",
    "behavioral_metrics": "Behavioural metrics",
    "batchqa_eval": "Batch-record QA",
}
SECTION_TITLES = (
    "Summary and recommendations",
    "Leaderboard",
    "Cost-quality Pareto front",
    "Alignment quality (AQI)",
    *EVALUATION_SECTIONS.values(),
    "Training comparison",
    "Significance of base-vs-tuned differences",
    "Lineage",
)

# Metrics where a lower value is the better one; every other metric counts as higher-is-better
# (judge scores and reward, refusal on unsafe prompts, helpfulness, exact/semantic match, F1, AQI).
LOWER_IS_BETTER = frozenset({
    "hallucinated", "hallucination_rate", "attack_success_rate", "invalid_output_rate",
    "clean_fpr", "gxp1_fpr", "over_refusal_rate", "false_refusal_rate", "error_rate",
    "latency_s", "latency_p50_s", "latency_p95_s", "cost_usd",
})

PAIRED_TEST = "paired t (Holm)"
CI_ONLY_TEST = "bootstrap 95% CI excludes 0 (no p-value)"
AQI_SOURCE = "aqi_scores"
AQI_METRIC = "delta_aqi"
COMPARISON_COLUMNS = (
    "source", "model_id", "model_version", "base_model_id", "base_model_version", "metric",
    "n_pairs", "base_mean", "tuned_mean", "mean_diff", "ci_low", "ci_high", "t", "p_value", "d_z",
    "test", "note",
)
# Leaderboard quality columns the Pareto front may use, in order of preference.
PARETO_QUALITY = (
    ("gxp1_f1", "GxP1 F1 (deviation present or not) on the benchmark split"),
    ("gxp2_micro_f1", "GxP2 micro F1 (deviation type) on the benchmark split"),
)
LINEAGE_KEYS = (
    ("run_id", "run id"),
    ("code_version", "code version"),
    ("dataset_hashes", "data hashes"),
    ("model_versions", "model versions"),
    ("prompt_versions", "prompt versions"),
)
_TOLERANCE = 1e-12  # differences equal within this (relative to the value scale) have no variance


# --- Pareto front ---------------------------------------------------------------------------------


def pareto_front(
    frame: pd.DataFrame, cost_col: str, quality_col: str, higher_is_better: bool = True
) -> list[bool]:
    """One flag per row: True when the row is on the cost-quality Pareto front.

    A row is on the front when no other row is at most as costly and strictly better, nor strictly
    cheaper and at least as good (identical rows are all on it). Rows with a NaN/None cost or
    quality are left out and get False; `pareto_table` says which and why."""
    cost, quality = _pareto_values(frame, cost_col, quality_col)
    valid = ~(np.isnan(cost) | np.isnan(quality))
    score = quality if higher_is_better else -quality
    c, q = cost[valid], score[valid]
    flags = []
    for i in range(len(cost)):
        if not valid[i]:
            flags.append(False)
            continue
        dominated = ((c <= cost[i]) & (q > score[i])) | ((c < cost[i]) & (q >= score[i]))
        flags.append(not bool(dominated.any()))
    return flags


def pareto_table(
    frame: pd.DataFrame, cost_col: str, quality_col: str, *, label_col: str = "model_id",
    higher_is_better: bool = True,
) -> pd.DataFrame:
    """model_id, cost, quality, on_front (nullable: NA where excluded) and note ("no cost",
    "no quality") per row of `frame`, in its order."""
    if label_col not in frame:
        raise ValueError(f"pareto: column {label_col!r} missing (columns: {list(frame.columns)})")
    cost, quality = _pareto_values(frame, cost_col, quality_col)
    flags = pareto_front(frame, cost_col, quality_col, higher_is_better)
    notes = [", ".join(reason for reason, missing in (("no cost", np.isnan(c)),
                                                      ("no quality", np.isnan(q))) if missing)
             for c, q in zip(cost, quality, strict=True)]
    on_front = pd.array([pd.NA if note else flag for flag, note in zip(flags, notes, strict=True)],
                        dtype="boolean")
    return pd.DataFrame({"model_id": frame[label_col].astype(str).to_numpy(), "cost": cost,
                         "quality": quality, "on_front": on_front, "note": notes})


def _pareto_values(frame: pd.DataFrame, cost_col: str, quality_col: str):
    missing = [c for c in (cost_col, quality_col) if c not in frame]
    if missing:
        raise ValueError(f"pareto: column(s) {missing} missing (columns: {list(frame.columns)})")
    cost = _float_column(frame, cost_col, "pareto")
    quality = _float_column(frame, quality_col, "pareto")
    negative = np.flatnonzero(cost < 0)
    if len(negative):
        row = frame.iloc[negative[0]]
        raise ValueError(f"pareto: row {_row_name(row, negative[0])}: field {cost_col!r} is "
                         f"negative ({cost[negative[0]]!r}); a cost is >= 0")
    return cost, quality


def _float_column(frame: pd.DataFrame, column: str, where: str) -> np.ndarray:
    values = np.empty(len(frame))
    for i, value in enumerate(frame[column].tolist()):
        if value is None or value is pd.NA:
            values[i] = np.nan
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where}: row {_row_name(frame.iloc[i], i)}: field {column!r} is "
                             f"not a number: {value!r}")
        values[i] = float(value)
    return values


def _row_name(row: pd.Series, position: int) -> str:
    for key in ("model_id", "model", "adapter"):
        if key in row and isinstance(row[key], str):
            return f"{position} ({key}={row[key]!r})"
    return str(position)


# --- paired base-vs-tuned comparisons -------------------------------------------------------------


def paired_comparisons(
    items: pd.DataFrame | None, source: str, *, n_boot: int = N_BOOT, seed: int = SEED
) -> pd.DataFrame:
    """One row per (tuned model, metric) of a contract frame: the model's "ok" rows paired with
    its base_model_id's "ok" rows on item_id (pairs in item_id order, so row order does not
    matter). n_pairs, base and tuned mean over the pairs, mean difference (tuned - base), its
    percentile bootstrap 95% CI, paired t and two-sided p, Cohen's d_z. With fewer than 2 pairs or
    identical differences the CI, t, p and d_z are NaN and `note` says why."""
    frame = _check_items(items, source)
    if frame.empty:
        return _empty_comparisons()
    ok = frame[frame["status"] == "ok"]
    values = {key: group.set_index("item_id")["value"]
              for key, group in ok.groupby(["model_id", "metric"], sort=False)}
    versions = {model: ", ".join(sorted({str(v) for v in group["model_version"].dropna()}))
                for model, group in frame.groupby("model_id", sort=False)}
    bases = _bases(frame, source)
    rows = []
    for model in sorted(bases):
        base = bases[model]
        model_rows = frame[frame["model_id"] == model]
        for metric in sorted(model_rows["metric"].unique()):
            tuned = values.get((model, metric), pd.Series(dtype=float))
            base_values = values.get((base, metric), pd.Series(dtype=float))
            row = {"source": source, "model_id": model,
                   "model_version": versions.get(model) or None,
                   "base_model_id": base, "base_model_version": versions.get(base) or None,
                   "metric": metric, "test": PAIRED_TEST,
                   **_paired_statistics(tuned, base_values, n_boot=n_boot, seed=seed)}
            if row["n_pairs"] == 0:
                row["note"] = _no_pairs_reason(model, base, metric, tuned, base_values, frame)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _paired_statistics(tuned: pd.Series, base: pd.Series, *, n_boot: int, seed: int) -> dict:
    common = sorted(set(tuned.index) & set(base.index))
    t_values = tuned.loc[common].to_numpy(dtype=float)
    b_values = base.loc[common].to_numpy(dtype=float)
    n = len(common)
    out = {"n_pairs": n, "base_mean": np.nan, "tuned_mean": np.nan, "mean_diff": np.nan,
           "ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "p_value": np.nan, "d_z": np.nan,
           "note": None}
    if n == 0:
        return out
    d = t_values - b_values
    out.update(base_mean=float(b_values.mean()), tuned_mean=float(t_values.mean()),
               mean_diff=float(d.mean()))
    if n < 2:
        out["note"] = "1 pair: statistics need at least 2"
        return out
    scale = max(1.0, float(np.max(np.abs(np.concatenate([t_values, b_values])))))
    if float(np.max(d) - np.min(d)) <= _TOLERANCE * scale:
        out["note"] = f"zero variance: every difference is {d[0]:+.4g}"
        return out
    ci = bootstrap_ci(d, np.mean, n_boot=n_boot, seed=seed)
    t, p = paired_t_test(t_values, b_values)
    out.update(ci_low=ci.low, ci_high=ci.high, t=t, p_value=p, d_z=cohens_dz(t_values, b_values))
    return out


def _no_pairs_reason(model, base, metric, tuned, base_values, frame) -> str:
    if not (frame["model_id"] == base).any():
        return f"base model {base!r} has no rows"
    if tuned.empty:
        return f"{model!r} has no ok rows for {metric!r}"
    if base_values.empty:
        return f"base model {base!r} has no ok rows for {metric!r}"
    return "no item_id in common with the base model"


def _bases(frame: pd.DataFrame, source: str) -> dict[str, str]:
    """model_id -> its base_model_id, for models that have one (one per model)."""
    bases: dict[str, str] = {}
    for model, group in frame.groupby("model_id", sort=False):
        named = {b for b in group["base_model_id"].tolist() if not _is_missing(b)}
        if len(named) > 1:
            raise ValueError(f"{source}: model {model!r}: field 'base_model_id' has several "
                             f"values {sorted(named)}; one base per model")
        if not named:
            continue
        base = named.pop()
        if not isinstance(base, str):
            raise ValueError(f"{source}: model {model!r}: field 'base_model_id' must be a string "
                             f"or None, got {base!r}")
        if base == model:
            raise ValueError(f"{source}: model {model!r}: field 'base_model_id' names itself")
        bases[model] = base
    return bases


def _check_items(items: pd.DataFrame | None, source: str) -> pd.DataFrame:
    """The contract frame, validated: columns present, status ok/failed, finite value on ok rows,
    one ok row per (model_id, item_id, metric)."""
    if items is None:
        return pd.DataFrame(columns=list(CONTRACT_COLUMNS))
    if not isinstance(items, pd.DataFrame):
        raise ValueError(f"{source}: expected a pandas DataFrame, got {type(items).__name__}")
    if items.empty:  # no rows (a never-materialized source): nothing to validate
        return pd.DataFrame(columns=list(CONTRACT_COLUMNS))
    missing = [c for c in CONTRACT_COLUMNS if c not in items]
    if missing:
        raise ValueError(f"{source}: column(s) {missing} missing; the contract's leading columns "
                         f"are {list(CONTRACT_COLUMNS)}")
    frame = items.reset_index(drop=True)
    for i, row in enumerate(frame[["model_id", "item_id", "metric", "status", "value"]]
                            .itertuples(index=False)):
        name = f"{source}: row {i} (model_id={row.model_id!r}, item_id={row.item_id!r}, " \
               f"metric={row.metric!r})"
        for key in ("model_id", "item_id", "metric"):
            if not isinstance(getattr(row, key), str) or not getattr(row, key):
                raise ValueError(f"{name}: field {key!r} must be a non-empty string")
        if row.status not in STATUSES:
            raise ValueError(f"{name}: field 'status' must be one of {STATUSES}, got "
                             f"{row.status!r}")
        if row.status == "ok":
            value = row.value
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value)):
                raise ValueError(f"{name}: field 'value' must be a finite number on an ok row, "
                                 f"got {value!r}")
    ok = frame[frame["status"] == "ok"]
    duplicated = ok.duplicated(["model_id", "item_id", "metric"], keep=False)
    if duplicated.any():
        row = ok[duplicated].iloc[0]
        raise ValueError(f"{source}: model_id={row['model_id']!r}, item_id={row['item_id']!r}, "
                         f"metric={row['metric']!r}: several ok rows; pairing needs one")
    frame = frame.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype(float)
    return frame


def aqi_comparisons(aqi: pd.DataFrame | None, *, base_model_id: str = "base_model") -> pd.DataFrame:
    """One comparison row per tuned model of an aqi_scores frame (per model and layer: model,
    layer, aqi, delta_aqi, ci_low, ci_high). tuned and base mean are the mean AQI over layers,
    mean_diff the delta-AQI with its CI; no p-value (the frame holds no bootstrap samples): the
    row is significant when the CI excludes 0. The base is the one model without a delta, else
    `base_model_id`."""
    if aqi is None or aqi.empty:
        return _empty_comparisons()
    frame = _check_aqi(aqi)
    has_delta = frame.groupby("model", sort=False)["delta_aqi"].apply(lambda s: s.notna().any())
    without = [m for m, flag in has_delta.items() if not flag]
    base = without[0] if len(without) == 1 else base_model_id
    base_rows = frame[frame["model"] == base]
    base_mean = float(base_rows["aqi"].mean()) if len(base_rows) else np.nan
    rows = []
    for model in sorted(m for m, flag in has_delta.items() if flag):
        group = frame[frame["model"] == model]
        first = group[group["delta_aqi"].notna()].iloc[0]
        low, high = float(first["ci_low"]), float(first["ci_high"])
        note = "no p-value (aqi_scores keeps no bootstrap samples): significant if CI excludes 0"
        if math.isnan(low) or math.isnan(high):
            note = "no CI in aqi_scores"
        rows.append({
            "source": AQI_SOURCE, "model_id": model, "model_version": None, "base_model_id": base,
            "base_model_version": None, "metric": AQI_METRIC,
            "n_pairs": int(group["n"].max()) if "n" in group and group["n"].notna().any() else None,
            "base_mean": base_mean, "tuned_mean": float(group["aqi"].mean()),
            "mean_diff": float(first["delta_aqi"]), "ci_low": low, "ci_high": high,
            "t": np.nan, "p_value": np.nan, "d_z": np.nan, "test": CI_ONLY_TEST, "note": note,
        })
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _check_aqi(aqi: pd.DataFrame) -> pd.DataFrame:
    frame = aqi.rename(columns={"model_id": "model"}) if "model" not in aqi else aqi
    missing = [c for c in ("model", "aqi") if c not in frame]
    if missing:
        raise ValueError(f"aqi_scores: column(s) {missing} missing (columns: {list(aqi.columns)})")
    frame = frame.reset_index(drop=True).copy()
    for column in ("aqi", "delta_aqi", "ci_low", "ci_high"):
        frame[column] = (_float_column(frame, column, "aqi_scores") if column in frame
                         else np.nan)
    bad = frame[frame["delta_aqi"].notna() & (frame["ci_low"] > frame["ci_high"])]
    if len(bad):
        raise ValueError(f"aqi_scores: model {bad.iloc[0]['model']!r}: field 'ci_low' is above "
                         f"'ci_high'")
    return frame


def holm_adjust(comparisons: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Adds p_holm and significant to every comparison of one report, adjusted together.

    Rows with a p-value form one Holm family (significant: p_holm < alpha). Rows without one are
    kept unadjusted (p_holm NaN): a CI-only row (delta-AQI) is significant when its CI excludes 0,
    any other (too few pairs, zero variance) has significant = NA."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    out = comparisons.reset_index(drop=True).copy()
    for column in ("p_value", "ci_low", "ci_high"):
        if column not in out:
            raise ValueError(f"holm_adjust: column {column!r} missing")
    p = pd.to_numeric(out["p_value"], errors="coerce").to_numpy(dtype=float)
    has_p = ~np.isnan(p)
    p_holm = np.full(len(out), np.nan)
    if has_p.any():
        p_holm[has_p], _ = holm_correction(p[has_p], alpha)
    significant = pd.array([pd.NA] * len(out), dtype="boolean")
    tests = out["test"].tolist() if "test" in out else [None] * len(out)
    for i in range(len(out)):
        if has_p[i]:
            significant[i] = bool(p_holm[i] < alpha)
        elif tests[i] == CI_ONLY_TEST:
            low, high = float(out["ci_low"].iloc[i]), float(out["ci_high"].iloc[i])
            if not (math.isnan(low) or math.isnan(high)):
                significant[i] = not (low <= 0.0 <= high)
    out["p_holm"] = p_holm
    out["significant"] = significant
    return out


def _empty_comparisons() -> pd.DataFrame:
    return pd.DataFrame(columns=list(COMPARISON_COLUMNS))


# --- recommendations ------------------------------------------------------------------------------


def recommendations(
    comparisons: pd.DataFrame, *, lower_is_better: Collection[str] = LOWER_IS_BETTER,
    alpha: float = ALPHA,
) -> list[str]:
    """Plain-text findings per source and tuned model: a verdict, then the metrics where it is
    significantly better, NOT significantly different, significantly worse, or not tested.

    `comparisons` should come from `holm_adjust` over the whole report; without a `significant`
    column it is adjusted here, over these rows only. Metrics in `lower_is_better` improve when
    they fall; all others when they rise."""
    if comparisons is None or comparisons.empty:
        return ["No base-vs-tuned comparison is available: no evaluation frame or AQI result "
                "named a tuned model together with its base."]
    frame = comparisons if "significant" in comparisons else holm_adjust(comparisons, alpha)
    lines = []
    for (source, model), group in frame.sort_values(["source", "model_id", "metric"]).groupby(
            ["source", "model_id"], sort=False):
        base = group["base_model_id"].iloc[0]
        better, same, worse, untested = [], [], [], []
        for row in group.to_dict("records"):
            significant = row["significant"]
            if _is_missing(significant):
                untested.append(f"{row['metric']} ({row['note'] or 'no test'})")
                continue
            lower = row["metric"] in lower_is_better
            text = _finding(row, lower)
            if not significant:
                same.append(text)
            elif (row["mean_diff"] < 0) == lower:
                better.append(text)
            else:
                worse.append(text)
        where = f"[{source}] {model} vs {base}"
        lines.append(f"{where}: {_verdict(model, base, better, same, worse)}")
        if better:
            lines.append(f"{where}: significantly better on {'; '.join(better)}.")
        if same:
            lines.append(f"{where}: difference NOT significant on {'; '.join(same)}.")
        if worse:
            lines.append(f"{where}: significantly worse on {'; '.join(worse)}.")
        if untested:
            lines.append(f"{where}: not tested on {'; '.join(untested)}.")
    return lines


def _verdict(model: str, base: str, better: list, same: list, worse: list) -> str:
    if better and not worse:
        return (f"adopt {model} over {base} for this task: significant gains on {len(better)} "
                f"metric(s), no significant loss.")
    if better and worse:
        return (f"trade-off: {model} gains significantly on {len(better)} metric(s) and loses "
                f"significantly on {len(worse)}; weigh them before adopting it.")
    if worse:
        return (f"do not adopt {model} for this task: significantly worse than {base} on "
                f"{len(worse)} metric(s), no significant gain.")
    if same:
        return (f"no significant difference from {base} on any tested metric: the evidence does "
                f"not favour the tuned model.")
    return "no metric could be tested."


def _finding(row: dict, lower: bool) -> str:
    direction = "lower is better" if lower else "higher is better"
    ci = f"95% CI [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
    if row.get("test") == CI_ONLY_TEST:
        where = "excludes" if row["significant"] else "includes"
        return f"{row['metric']} ({_signed(row['mean_diff'])}, {ci} {where} 0; {direction})"
    return (f"{row['metric']} ({_signed(row['mean_diff'])}, {ci}, Holm p = "
            f"{_p(row['p_holm'])}, d_z = {_num(row['d_z'], '.2f')}, n = {row['n_pairs']}; "
            f"{direction})")


# --- the report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """The synthesis report: Markdown (images referenced as images/<name>.png), self-contained
    HTML (images embedded), the Holm-adjusted comparisons, the Pareto table and the PNGs.
    `unavailable`: section title -> why it has no content."""

    markdown: str
    html: str
    comparisons: pd.DataFrame
    pareto: pd.DataFrame
    images: dict[str, bytes]
    unavailable: dict[str, str] = field(default_factory=dict)


def build_report(
    leaderboard: pd.DataFrame | None,
    training: pd.DataFrame | None,
    aqi: pd.DataFrame | None,
    evaluations: Mapping[str, pd.DataFrame | None] | None,
    *,
    title: str,
    generated_at: str | datetime,
    lineage: Mapping | None,
    alpha: float = ALPHA,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> Report:
    """The whole report. Any input may be None or empty: its section then says "not available"
    and why. `evaluations`: source name (e.g. "judge_evaluations") -> contract frame."""
    from scoring import synthesis_plots

    evaluations = dict(evaluations or {})
    images: dict[str, bytes] = {}
    unavailable: dict[str, str] = {}

    sources = [*EVALUATION_SECTIONS, *sorted(s for s in evaluations if s not in
                                             EVALUATION_SECTIONS)]
    parts = [paired_comparisons(evaluations.get(source), source, n_boot=n_boot, seed=seed)
             for source in sources]
    parts.append(aqi_comparisons(aqi))
    parts = [part for part in parts if not part.empty]
    comparisons = holm_adjust(pd.concat(parts, ignore_index=True) if parts
                              else _empty_comparisons(), alpha)
    lines = recommendations(comparisons, alpha=alpha)

    sections: dict[str, str] = {}
    sections["Leaderboard"] = _leaderboard_section(leaderboard, unavailable)
    pareto_text, pareto, pareto_summary = _pareto_section(leaderboard, unavailable, images,
                                                          synthesis_plots)
    sections["Cost-quality Pareto front"] = pareto_text
    sections["Alignment quality (AQI)"] = _aqi_section(aqi, comparisons, unavailable, images,
                                                       synthesis_plots)
    for source in sources:
        heading = EVALUATION_SECTIONS.get(source, f"Evaluation: {source}")
        sections[heading] = _evaluation_section(source, evaluations.get(source), unavailable,
                                                heading)
    sections["Training comparison"] = _training_section(training, unavailable)
    sections["Significance of base-vs-tuned differences"] = _significance_section(
        comparisons, alpha, n_boot, seed, unavailable, images, synthesis_plots)
    sections["Lineage"] = _lineage_section(lineage, evaluations, unavailable)
    summary = _summary_section(generated_at, leaderboard, pareto_summary, comparisons, training,
                               lines, unavailable, alpha)

    stamp = generated_at.isoformat() if isinstance(generated_at, datetime) else str(generated_at)
    blocks = [f"# {_text(title)}", f"Generated {_text(stamp)}.",
              f"## Summary and recommendations\n\n{summary}"]
    blocks += [f"## {heading}\n\n{body}" for heading, body in sections.items()]
    markdown = "\n\n".join(blocks).rstrip() + "\n"
    return Report(markdown=markdown, html=render_html(markdown, images, title),
                  comparisons=comparisons, pareto=pareto, images=images,
                  unavailable=unavailable)


def save_report(report: Report, directory: str | Path) -> dict[str, Path]:
    """Writes report.md, report.html and images/<name>.png; returns {relative path: path}."""
    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = {"report.md": root / "report.md", "report.html": root / "report.html"}
    paths["report.md"].write_text(report.markdown, encoding="utf-8")
    paths["report.html"].write_text(report.html, encoding="utf-8")
    for name, png in report.images.items():
        path = root / "images" / f"{name}.png"
        path.write_bytes(png)
        paths[f"images/{name}.png"] = path
    return paths


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .88em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def render_html(markdown: str, images: Mapping[str, bytes], title: str) -> str:
    """Self-contained HTML: the Markdown rendered by markdown-it-py (CommonMark + tables, raw HTML
    off), images/<name>.png references replaced by base64 data URIs, inline CSS."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        body = body.replace(f'src="images/{name}.png"', f'src="data:image/png;base64,{data}"')
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html_lib.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"{body}</body>\n</html>\n")


# --- sections -------------------------------------------------------------------------------------


def _not_available(section: str, reason: str, unavailable: dict[str, str]) -> str:
    unavailable[section] = reason
    return f"_Not available: {_text(reason)}._"


def _absent(frame, name: str) -> str | None:
    """Why `frame` cannot be used, or None."""
    if frame is None:
        return f"{name} was not provided"
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        return f"{name} has no rows"
    return None


def _leaderboard_section(leaderboard, unavailable) -> str:
    section = "Leaderboard"
    reason = _absent(leaderboard, "the leaderboard")
    if reason:
        return _not_available(section, reason, unavailable)
    if "model_id" not in leaderboard:
        raise ValueError(f"leaderboard: column 'model_id' missing (columns: "
                         f"{list(leaderboard.columns)})")
    table = leaderboard_markdown(_with_ci_tuples(leaderboard))
    return ("One row per candidate model, ranked by GxP2 micro F1 then GxP1 F1; 95% CIs in "
            "brackets; cost and p50 latency of the benchmark split.\n\n" + table)


def _with_ci_tuples(leaderboard: pd.DataFrame) -> pd.DataFrame:
    """The asset stores CIs as <col>_ci_low/<col>_ci_high (Parquet); leaderboard_markdown reads
    (low, high) tuples in <col>_ci."""
    table = leaderboard.copy()
    for low_col in [c for c in table.columns if c.endswith("_ci_low")]:
        column = low_col[: -len("_low")]
        high_col = column + "_high"
        if column in table or high_col not in table:
            continue
        table[column] = [(float(lo), float(hi)) if not (pd.isna(lo) or pd.isna(hi)) else None
                         for lo, hi in zip(table[low_col], table[high_col], strict=True)]
    return table


def _pareto_axes(leaderboard: pd.DataFrame):
    """(cost values, cost label, quality column, quality label) or a reason string."""
    if "cost_usd" not in leaderboard:
        return "the leaderboard has no cost_usd column"
    quality = next(((c, label) for c, label in PARETO_QUALITY
                    if c in leaderboard and leaderboard[c].notna().any()), None)
    if quality is None:
        return "the leaderboard has no GxP1 F1 or GxP2 micro F1 value"
    cost = _float_column(leaderboard, "cost_usd", "leaderboard")
    label = "cost of one benchmark-split run (USD)"
    if "batches" in leaderboard:
        batches = _float_column(leaderboard, "batches", "leaderboard")
        costed = ~np.isnan(cost)
        if costed.any() and np.all(batches[costed] > 0):
            cost = cost / batches * 1000.0
            label = "cost per 1,000 batches of the benchmark split (USD)"
    return cost, label, quality[0], quality[1]


def _pareto_section(leaderboard, unavailable, images, plots):
    section = "Cost-quality Pareto front"
    empty = pd.DataFrame(columns=["model_id", "cost", "quality", "on_front", "note"])
    reason = _absent(leaderboard, "the leaderboard")
    axes = reason or _pareto_axes(leaderboard)
    if isinstance(axes, str):
        return _not_available(section, axes, unavailable), empty, None
    cost, cost_label, quality_col, quality_label = axes
    points = leaderboard[["model_id", quality_col]].copy()
    points["cost"] = cost
    table = pareto_table(points, "cost", quality_col)
    table = table.assign(cost_basis=cost_label, quality_metric=quality_col)
    low, high = f"{quality_col}_ci_low", f"{quality_col}_ci_high"
    if low in leaderboard and high in leaderboard:
        table["quality_ci_low"] = _float_column(leaderboard, low, "leaderboard")
        table["quality_ci_high"] = _float_column(leaderboard, high, "leaderboard")
    elif f"{quality_col}_ci" in leaderboard:
        cis = [v if isinstance(v, tuple) else (np.nan, np.nan)
               for v in leaderboard[f"{quality_col}_ci"]]
        table["quality_ci_low"] = [float(v[0]) for v in cis]
        table["quality_ci_high"] = [float(v[1]) for v in cis]
    front = table[table["on_front"].fillna(False).astype(bool)]
    no_cost = table[table["note"].str.contains("no cost")]["model_id"].tolist()
    no_quality = table[table["note"] == "no quality"]["model_id"].tolist()
    text = [f"Cost: {cost_label}. Quality: {quality_label} (higher is better). A model is on the "
            "front when no other model is at most as costly and strictly better, nor strictly "
            "cheaper and at least as good."]
    if len(front):
        members = ", ".join(f"{m} ({_num(q)} at {_num(c, '.4g')} USD)" for m, q, c in
                            front[["model_id", "quality", "cost"]].itertuples(index=False))
        text.append(f"On the front: {_text(members)}.")
    else:
        text.append("No model has both a cost and a quality value: the front is empty.")
    if no_cost:
        text.append(f"No cost (excluded from the front): {_text(', '.join(no_cost))}.")
    if no_quality:
        text.append(f"No quality value (excluded from the front): "
                    f"{_text(', '.join(no_quality))}.")
    rows = [[m, _num(c, ".4g"), _num(q), _flag(f), n or ""] for m, c, q, f, n in
            table[["model_id", "cost", "quality", "on_front", "note"]].itertuples(index=False)]
    text.append(markdown_table(["model", "cost (USD)", quality_col, "on front", "note"], rows))
    if len(front):
        images["pareto_front"] = plots.pareto_plot(table, cost_label=cost_label,
                                                   quality_label=quality_label)
        text.append("![cost-quality Pareto front](images/pareto_front.png)")
    summary = {"front": front["model_id"].tolist(), "quality": quality_col, "cost": cost_label,
               "no_cost": no_cost}
    return "\n\n".join(text), table, summary


def _aqi_section(aqi, comparisons, unavailable, images, plots) -> str:
    section = "Alignment quality (AQI)"
    reason = _absent(aqi, "aqi_scores")
    if reason:
        return _not_available(section, reason, unavailable)
    frame = _check_aqi(aqi)
    deltas = comparisons[comparisons["source"] == AQI_SOURCE].set_index("model_id")
    rows = []
    for model, group in frame.groupby("model", sort=False):
        layers = group["layer"].tolist() if "layer" in group else []
        best = group.loc[group["aqi"].idxmax()] if group["aqi"].notna().any() else None
        delta = deltas.loc[model] if model in deltas.index else None
        rows.append([
            model, str(len(layers) or len(group)), _num(group["aqi"].mean()),
            "–" if best is None or "layer" not in group else
            f"{best['layer']} ({_num(best['aqi'])})",
            "–" if delta is None else _signed(delta["mean_diff"]),
            "–" if delta is None else f"[{_num(delta['ci_low'])}, {_num(delta['ci_high'])}]",
            "–" if delta is None else _flag(delta["significant"]),
        ])
    text = ["AQI (0-1, higher: safe and unsafe prompts further apart in the hidden states) per "
            "model, mean over layers; delta-AQI = tuned - base on the same prompts with its 95% "
            "paired bootstrap CI from aqi_scores. aqi_scores keeps no bootstrap samples, so there "
            "is no p-value: a delta counts as significant when its CI excludes 0.",
            markdown_table(["model", "layers", "mean AQI", "best layer (AQI)", "delta-AQI",
                            "95% CI", "CI excludes 0"], rows)]
    if len(deltas):
        images["delta_aqi"] = plots.delta_aqi_plot(deltas.reset_index())
        text.append("![delta-AQI with 95% CIs](images/delta_aqi.png)")
    else:
        text.append("No tuned model has a delta-AQI in aqi_scores.")
    return "\n\n".join(text)


def _evaluation_section(source, items, unavailable, heading) -> str:
    reason = _absent(items, source)
    if reason:
        return _not_available(heading, reason, unavailable)
    frame = _check_items(items, source)
    metrics = sorted(frame["metric"].unique())
    rows = []
    for model, group in frame.groupby("model_id", sort=False):
        base = next((b for b in group["base_model_id"] if not _is_missing(b)), None)
        version = ", ".join(sorted({str(v) for v in group["model_version"].dropna()})) or "–"
        cells = [model, version, base or "–"]
        for metric in metrics:
            rows_m = group[group["metric"] == metric]
            ok = rows_m[rows_m["status"] == "ok"]["value"]
            cells.append("–" if rows_m.empty else
                         f"{_num(ok.mean()) if len(ok) else '–'} ({len(ok)}/{len(rows_m)})")
        cells.append(str(int((group["status"] == "failed").sum())))
        rows.append(cells)
    return (f"Per model mean of each metric over its ok rows; (k/n) = ok rows / all rows of that "
            f"metric; {len(frame)} rows from {source}.\n\n"
            + markdown_table(["model", "version", "base", *metrics, "failed rows"], rows))


def _training_section(training, unavailable) -> str:
    section = "Training comparison"
    reason = _absent(training, "training_comparison")
    if reason:
        return _not_available(section, reason, unavailable)
    columns = [c for c in training.columns if c != "losses"]
    rows = [[_cell(v) for v in record] for record in training[columns].itertuples(index=False)]
    text = ["The adapters side by side (training_comparison). Losses of different objectives are "
            "on different scales and are compared only within an objective.",
            markdown_table(columns, rows)]
    findings = _training_findings(training)
    if findings:
        text.append("\n".join(f"- {_text(line)}" for line in findings))
    return "\n\n".join(text)


def _training_findings(training: pd.DataFrame | None) -> list[str]:
    """Lowest eval loss per objective; fastest adapter by tokens/s."""
    if training is None or training.empty or "adapter" not in training:
        return []
    lines = []
    if "eval_loss" in training:
        frame = training.assign(eval_loss=pd.to_numeric(training["eval_loss"], errors="coerce"))
        groups = frame.groupby("objective", sort=True) if "objective" in frame else [("all", frame)]
        for objective, group in groups:
            group = group[group["eval_loss"].notna()]
            if len(group) > 1:
                best = group.loc[group["eval_loss"].idxmin()]
                lines.append(f"{objective}: lowest eval loss {best['adapter']} "
                             f"({best['eval_loss']:.4g}) of {len(group)} adapters")
    if "tokens_per_s" in training:
        speed = pd.to_numeric(training["tokens_per_s"], errors="coerce")
        if speed.notna().sum() > 1:
            best = training.loc[speed.idxmax()]
            lines.append(f"highest throughput: {best['adapter']} ({speed.max():.4g} tokens/s)")
    return lines


def _significance_section(comparisons, alpha, n_boot, seed, unavailable, images, plots) -> str:
    section = "Significance of base-vs-tuned differences"
    if comparisons.empty:
        return _not_available(section, "no evaluation frame or AQI result pairs a tuned model with "
                              "its base", unavailable)
    m = int(comparisons["p_value"].notna().sum())
    rows = []
    for row in comparisons.sort_values(["source", "model_id", "metric"]).to_dict("records"):
        rows.append([row["source"], row["model_id"], row["base_model_id"], row["metric"],
                     _cell(row["n_pairs"]), _num(row["base_mean"]), _num(row["tuned_mean"]),
                     _signed(row["mean_diff"]),
                     f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}]", _p(row["p_value"]),
                     _p(row["p_holm"]), _num(row["d_z"], ".2f"), _flag(row["significant"]),
                     "" if pd.isna(row["note"]) else row["note"]])
    text = [f"Each tuned model's ok rows paired with its base model's ok rows on item_id: mean "
            f"difference (tuned - base) with a percentile bootstrap 95% CI ({n_boot} resamples, "
            f"seed {seed}), two-sided paired t-test, Cohen's d_z = mean(d)/sd(d). The {m} "
            f"p-values of this report are Holm-adjusted together; significant: Holm p < {alpha}. "
            "Delta-AQI rows have no p-value and count as significant when their CI excludes 0.",
            markdown_table(["source", "model", "base", "metric", "n", "base mean", "tuned mean",
                            "difference", "95% CI", "p", "Holm p", "d_z", "significant",
                            "note"], rows)]
    plotted = comparisons[comparisons["ci_low"].notna() & comparisons["ci_high"].notna()]
    if len(plotted):
        images["comparisons"] = plots.comparison_plot(plotted)
        text.append("![mean differences with 95% CIs](images/comparisons.png)")
    return "\n\n".join(text)


def _lineage_section(lineage, evaluations, unavailable) -> str:
    section = "Lineage"
    seen = []
    for source, items in evaluations.items():
        if isinstance(items, pd.DataFrame) and not items.empty and "model_version" in items:
            pairs = items[["model_id", "model_version"]].drop_duplicates()
            seen += [[source, m, _cell(v)] for m, v in pairs.itertuples(index=False)]
    if not lineage and not seen:
        return _not_available(section, "no lineage was passed and no evaluation frame carries "
                              "model versions", unavailable)
    lineage = dict(lineage or {})
    text = []
    if lineage:
        known = [key for key, _ in LINEAGE_KEYS]
        for key, label in [*LINEAGE_KEYS, *[(k, k) for k in sorted(lineage, key=str)
                                            if k not in known]]:
            value = lineage.get(key)
            if isinstance(value, Mapping) and value:
                text.append(f"**{_text(label)}**\n\n" + markdown_table(
                    ["name", "value"], [[str(k), _cell(v)] for k, v in value.items()]))
            else:
                missing = value is None or (isinstance(value, Mapping) and not value)
                shown = "not recorded" if missing else _cell(value)
                text.append(f"**{_text(label)}**: {_text(shown)}")
    else:
        text.append("No lineage dict was passed.")
    if seen:
        text.append("**model versions in the evaluation frames**\n\n"
                    + markdown_table(["source", "model", "model_version"], seen))
    return "\n\n".join(text)


def _summary_section(generated_at, leaderboard, pareto_summary, comparisons, training, lines,
                     unavailable, alpha) -> str:
    facts = []
    if isinstance(leaderboard, pd.DataFrame) and not leaderboard.empty:
        top = leaderboard.iloc[0]
        score = next(((c, top[c]) for c in ("gxp2_micro_f1", "gxp1_f1")
                      if c in leaderboard and pd.notna(top[c])), None)
        best = f"; top of the leaderboard: {top['model_id']}" + (
            f" ({score[0]} {_num(score[1])})" if score else "")
        facts.append(f"{len(leaderboard)} model(s) on the leaderboard{best}.")
    if pareto_summary:
        front = ", ".join(pareto_summary["front"]) or "none"
        facts.append(f"Cost-quality Pareto front ({pareto_summary['quality']} vs "
                     f"{pareto_summary['cost']}): {front}.")
    aqi = comparisons[comparisons["source"] == AQI_SOURCE]
    if len(aqi):
        significant = aqi["significant"].fillna(False).astype(bool)
        above = aqi[significant & (aqi["mean_diff"] > 0)]
        below = aqi[significant & (aqi["mean_diff"] < 0)]
        facts.append(f"Delta-AQI: CI above 0 for {', '.join(above['model_id']) or 'none'}; below 0"
                     f" for {', '.join(below['model_id']) or 'none'}; {len(aqi)} tuned model(s).")
    facts += [f"Training: {line}." for line in _training_findings(training)]
    tested = comparisons[comparisons["p_value"].notna()]
    if len(comparisons):
        n_sig = int(tested["significant"].fillna(False).astype(bool).sum())
        facts.append(f"{len(comparisons)} base-vs-tuned comparison(s); {len(tested)} with a "
                     f"p-value, Holm-adjusted together: {n_sig} significant at alpha = {alpha}.")
    if unavailable:
        facts.append("Not available: " + "; ".join(f"{k} ({v})" for k, v in unavailable.items())
                     + ".")
    body = "\n".join(f"- {_text(fact)}" for fact in facts) or "- No input was available."
    recs = "\n".join(f"- {_text(line)}" for line in lines)
    return f"{body}\n\n**Recommendations**\n\n{recs}"


# --- formatting -----------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table; cells escaped (| and Markdown punctuation, newlines as spaces)."""
    lines = ["| " + " | ".join(_text(str(h)) for h in headers) + " |",
             "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_text(str(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _text(value: str) -> str:
    """Escapes what would turn plain text into Markdown structure."""
    out = str(value).replace("\r", " ").replace("\n", " ")
    for char in ("\\", "`", "*", "[", "]", "<", ">", "|", "#"):
        out = out.replace(char, "\\" + char)
    return out


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _num(value, fmt: str = ".3f") -> str:
    if _is_missing(value):
        return "–"
    return format(float(value), fmt)


def _signed(value) -> str:
    return "–" if _is_missing(value) else f"{float(value):+.3f}"


def _p(value) -> str:
    if _is_missing(value):
        return "–"
    return f"{value:.1e}" if value < 0.001 else f"{value:.3f}"


def _flag(value) -> str:
    if _is_missing(value):
        return "–"
    return "yes" if bool(value) else "no"


def _cell(value) -> str:
    if _is_missing(value):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format(float(value), ".4g")
    if isinstance(value, list | tuple | np.ndarray):
        return f"{len(value)} values"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)
