"""Retrieval metrics for the RAG evaluation (issue 6): per query recall@k, reciprocal rank, nDCG@k
(binary relevance) and hit@k; per retrieval mode the means with percentile bootstrap CIs, and
hybrid against each single retriever (and the LLM-reranked hybrid against hybrid) paired on the
questions (mean difference with its bootstrap CI, paired t-test, Cohen's d_z, Holm over every
comparison), as a dict and a Markdown report.

Input rows: {"question_id", "category", "mode" (MODES), "ranked_chunk_ids"
(best first), "relevant" (non-empty)}. Plain numpy/scipy via scoring.stats, no Dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scoring.stats import bootstrap_ci, holm_where_tested, paired_comparison

RERANKED = "hybrid+llm"  # hybrid, then retrieval/rerank.py's LLM reranking
MODES = ("bm25", "dense", "hybrid", RERANKED)
# (mode, baseline) pairs compared, where both modes have rows
COMPARISONS = (("hybrid", "bm25"), ("hybrid", "dense"), (RERANKED, "hybrid"))
DEFAULT_KS = (1, 3, 5, 10)
ROW_FIELDS = ("question_id", "category", "mode", "ranked_chunk_ids", "relevant")


def recall_at_k(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """Share of the relevant ids among the first k ranked."""
    wanted = _relevant_set(relevant)
    return len(wanted & set(ranked[:_k(k)])) / len(wanted)


def hit_at_k(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """1.0 when a relevant id is among the first k ranked, else 0.0."""
    wanted = _relevant_set(relevant)
    return float(any(item in wanted for item in ranked[:_k(k)]))


def reciprocal_rank(ranked: Sequence[str], relevant: Sequence[str]) -> float:
    """1 / rank of the first relevant id (ranks from 1); 0.0 when none is ranked."""
    wanted = _relevant_set(relevant)
    for rank, item in enumerate(ranked, start=1):
        if item in wanted:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """nDCG@k with binary gains: DCG = sum of 1 / log2(rank + 1) over relevant ids in the first k,
    divided by the DCG of an ideal ranking (all relevant ids first)."""
    wanted = _relevant_set(relevant)
    k = _k(k)
    dcg = sum(1.0 / math.log2(rank + 1)
              for rank, item in enumerate(ranked[:k], start=1) if item in wanted)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(wanted)) + 1))
    return dcg / ideal


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """mrr, then recall@k, ndcg@k and hit@k for each k."""
    return ["mrr", *(f"{name}@{k}" for name in ("recall", "ndcg", "hit") for k in ks)]


def query_metrics(ranked: Sequence[str], relevant: Sequence[str],
                  ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Every metric of `metric_names(ks)` for one query."""
    values = {"mrr": reciprocal_rank(ranked, relevant)}
    for k in ks:
        values[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
    for k in ks:
        values[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
    for k in ks:
        values[f"hit@{k}"] = hit_at_k(ranked, relevant, k)
    return values


def retrieval_report(per_query_rows: Sequence[Mapping[str, Any]], *,
                     ks: Sequence[int] = DEFAULT_KS, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, Any]:
    """Per mode: n and each metric's mean with its percentile bootstrap 95% CI; per category and
    mode: the means; comparisons: mode - baseline per metric (COMPARISONS), paired on the
    questions both
    modes answered (mean difference, bootstrap CI, paired t, p, Cohen's d_z, Holm-adjusted p over
    all comparisons, significant = p_holm <= alpha); `markdown`: the tables."""
    scores = _scores(per_query_rows, ks)
    names = metric_names(ks)
    modes: dict[str, Any] = {}
    for mode in MODES:
        rows = scores.get(mode)
        if not rows:
            continue
        entry: dict[str, Any] = {"n": len(rows), "metrics": {}}
        for name in names:
            ci = bootstrap_ci(np.array([r[1][name] for r in rows.values()]), n_boot=n_boot,
                              seed=seed)
            entry["metrics"][name] = {"mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}
        modes[mode] = entry
    categories: dict[str, dict[str, dict[str, float]]] = {}
    for mode, rows in scores.items():
        for category in sorted({r[0] for r in rows.values()}):
            values = [r[1] for r in rows.values() if r[0] == category]
            categories.setdefault(category, {})[mode] = {
                "n": len(values), **{name: float(np.mean([v[name] for v in values]))
                                     for name in names}}
    comparisons = _compare(scores, names, n_boot=n_boot, seed=seed, alpha=alpha)
    report = {"modes": modes, "by_category": categories, "comparisons": comparisons,
              "ks": list(ks), "n_boot": n_boot, "seed": seed, "alpha": alpha}
    report["markdown"] = report_markdown(report)
    return report


def _compare(scores: Mapping[str, Mapping[str, tuple[str, dict[str, float]]]],
             names: Sequence[str], *, n_boot: int, seed: int,
             alpha: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for mode, baseline in COMPARISONS:
        if mode not in scores or baseline not in scores:
            continue
        keys = sorted(set(scores[mode]) & set(scores[baseline]))
        for name in names:
            h = np.array([scores[mode][q][1][name] for q in keys])
            b = np.array([scores[baseline][q][1][name] for q in keys])
            stats = paired_comparison(h, b, n_boot=n_boot, seed=seed)
            rows.append({"mode": mode, "baseline": baseline, "metric": name, "n_pairs": len(keys),
                         "mode_mean": stats.pop("tuned_mean"),
                         "baseline_mean": stats.pop("base_mean"), **stats})
    p_holm, significant = holm_where_tested([row["p_value"] for row in rows], alpha)
    for row, adjusted, flag in zip(rows, p_holm, significant, strict=True):
        row.update(p_holm=adjusted, significant=flag)
    return rows


def report_markdown(report: Mapping[str, Any], metrics: Sequence[str] | None = None) -> str:
    """The report's tables: means [95% CI] per mode, means per category, each comparison."""
    names = list(metrics or metric_names(report["ks"]))
    lines = ["| mode | n | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for mode, entry in report["modes"].items():
        cells = [f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
                 for m in (entry["metrics"][name] for name in names)]
        lines.append(f"| {mode} | {entry['n']} | " + " | ".join(cells) + " |")
    short = [name for name in ("mrr", "recall@3", "ndcg@5") if name in names] or names[:3]
    lines += ["", "| category | mode | n | " + " | ".join(short) + " |",
              "|---|---|---|" + "---|" * len(short)]
    for category, by_mode in report["by_category"].items():
        for mode, values in by_mode.items():
            lines.append(f"| {category} | {mode} | {values['n']} | "
                         + " | ".join(f"{values[name]:.3f}" for name in short) + " |")
    lines += ["", "| mode | vs | metric | n | mode mean | baseline mean | difference [95% CI] | "
              "p | p (Holm) | d_z |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["comparisons"]:
        if row["metric"] not in names:
            continue
        lines.append(
            f"| {row['mode']} | {row['baseline']} | {row['metric']} | {row['n_pairs']} | "
            f"{row['mode_mean']:.3f} | {row['baseline_mean']:.3f} | "
            f"{row['mean_difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | "
            f"{row['p_value']:.3g} | {row['p_holm']:.3g}{' *' if row['significant'] else ''} | "
            f"{row['cohens_dz']:.2f} |")
    return "\n".join(lines)


def _scores(rows: Sequence[Mapping[str, Any]],
            ks: Sequence[int]) -> dict[str, dict[str, tuple[str, dict[str, float]]]]:
    """mode -> question_id -> (category, metrics); bad rows are ValueErrors naming them."""
    if not rows:
        raise ValueError("retrieval_report needs at least one per-query row")
    out: dict[str, dict[str, tuple[str, dict[str, float]]]] = {}
    for position, row in enumerate(rows, start=1):
        qid = row.get("question_id")
        name = f"question {qid!r}" if qid else f"row {position}"
        if missing := [f for f in ROW_FIELDS if f not in row]:
            raise ValueError(f"retrieval row {name}: field {missing[0]!r} is missing")
        mode = row["mode"]
        if mode not in MODES:
            raise ValueError(f"retrieval row {name}: field 'mode' {mode!r} is not one of {MODES}")
        if not isinstance(row["ranked_chunk_ids"], Sequence) or isinstance(
                row["ranked_chunk_ids"], str):
            raise ValueError(f"retrieval row {name}: field 'ranked_chunk_ids' must be a list")
        if not row["relevant"] or isinstance(row["relevant"], str):
            raise ValueError(f"retrieval row {name}: field 'relevant' must be a non-empty list")
        if qid in out.setdefault(mode, {}):
            raise ValueError(f"retrieval row {name}: field 'question_id' appears twice for "
                             f"mode {mode!r}")
        out[mode][qid] = (str(row["category"]),
                          query_metrics(list(row["ranked_chunk_ids"]), list(row["relevant"]), ks))
    return out


def _relevant_set(relevant: Sequence[str]) -> set[str]:
    wanted = set(relevant)
    if not wanted:
        raise ValueError("a retrieval metric needs at least one relevant id")
    return wanted


def _k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return k
