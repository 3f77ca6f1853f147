"""scoring/retrieval_metrics.py: metrics against sklearn and hand computation, the report's
statistics, and the real thing: BM25, dense and hybrid retrieval over the RAG corpus."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from retrieval.chunking import chunk_documents
from retrieval.index import HybridIndex, minilm_embedder
from scoring.retrieval_metrics import (
    MODES,
    hit_at_k,
    metric_names,
    ndcg_at_k,
    query_metrics,
    recall_at_k,
    reciprocal_rank,
    retrieval_report,
)
from scoring.stats import bootstrap_ci, holm_correction, paired_t_test
from synthetic.rag_corpus import build_rag_corpus
from synthetic.rag_questions import (
    ANSWERABLE,
    build_rag_questions,
    relevant_chunk_ids,
    retrieval_query,
)

SEARCH_MODES = ("bm25", "dense", "hybrid")  # the index's modes; hybrid+llm reranks hybrid
RANKED = ["a", "b", "c", "d", "e"]


def test_recall_mrr_and_hit_by_hand():
    assert recall_at_k(RANKED, ["b", "e", "z"], 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, ["b", "e", "z"], 5) == pytest.approx(2 / 3)
    assert reciprocal_rank(RANKED, ["c", "e"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(RANKED, ["z"]) == 0.0
    assert hit_at_k(RANKED, ["c"], 2) == 0.0 and hit_at_k(RANKED, ["c"], 3) == 1.0
    assert recall_at_k(["a"], ["a"], 10) == 1.0  # fewer ranked than k


@pytest.mark.parametrize(("relevant", "k"), [(["b"], 3), (["a", "d"], 3), (["c", "e", "z"], 5),
                                             (["d"], 2), (["b", "c"], 1), (["e"], 5)])
def test_ndcg_matches_sklearn(relevant, k):
    universe = [*RANKED, "z"]  # "z" relevant but never ranked
    y_true = np.array([[float(item in relevant) for item in universe]])
    y_score = np.array([[len(RANKED) - RANKED.index(item) if item in RANKED else 0.0
                         for item in universe]])
    expected = ndcg_score(y_true, y_score, k=k)
    assert ndcg_at_k(RANKED, relevant, k) == pytest.approx(expected)


def test_ndcg_by_hand_and_bad_input():
    # relevant at ranks 2 and 4 of the top 5: (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(RANKED, ["b", "d"], 5) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one relevant"):
        recall_at_k(RANKED, [], 3)
    with pytest.raises(ValueError, match="positive integer"):
        ndcg_at_k(RANKED, ["a"], 0)
    assert set(query_metrics(RANKED, ["a"], ks=(1, 3))) == set(metric_names((1, 3)))


def _rows(seed: int = 3, n: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        items = [f"c{j}" for j in range(10)]
        for mode in MODES:
            order = list(rng.permutation(items))
            if mode == "hybrid" and q % 3:  # hybrid puts the relevant chunk first 2/3 of the time
                order.remove("c0")
                order.insert(0, "c0")
            rows.append({"question_id": f"rq-{q:04d}", "category": "lookup" if q % 2 else "tool",
                         "mode": mode, "ranked_chunk_ids": order[:5], "relevant": ["c0"]})
    return rows


def test_report_means_cis_and_paired_comparisons_use_scoring_stats():
    rows = _rows()
    report = retrieval_report(rows, ks=(1, 3), n_boot=200, seed=1)
    by = {(r["mode"], r["question_id"]): r for r in rows}
    rr = {mode: np.array([reciprocal_rank(by[(mode, f"rq-{q:04d}")]["ranked_chunk_ids"], ["c0"])
                          for q in range(40)]) for mode in MODES}
    for mode in MODES:
        entry = report["modes"][mode]["metrics"]["mrr"]
        ci = bootstrap_ci(rr[mode], n_boot=200, seed=1)
        assert entry["mean"] == pytest.approx(rr[mode].mean())
        assert (entry["ci_low"], entry["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert report["modes"][mode]["n"] == 40
    comparisons = report["comparisons"]  # hybrid vs bm25 and dense, reranked vs hybrid
    assert len(comparisons) == 3 * len(metric_names((1, 3)))
    assert {(c["mode"], c["baseline"]) for c in comparisons} == {
        ("hybrid", "bm25"), ("hybrid", "dense"), ("hybrid+llm", "hybrid")}
    reranked = next(c for c in comparisons if c["mode"] == "hybrid+llm" and c["metric"] == "mrr")
    assert reranked["mean_difference"] == pytest.approx((rr["hybrid+llm"] - rr["hybrid"]).mean())
    row = next(c for c in comparisons if c["baseline"] == "bm25" and c["metric"] == "mrr")
    t, p = paired_t_test(rr["hybrid"], rr["bm25"])
    assert row["mean_difference"] == pytest.approx((rr["hybrid"] - rr["bm25"]).mean())
    assert (row["t"], row["p_value"]) == pytest.approx((t, p))
    adjusted, _ = holm_correction([c["p_value"] for c in comparisons])
    assert [c["p_holm"] for c in comparisons] == pytest.approx(list(adjusted))
    assert row["significant"] and row["mean_difference"] > 0
    lookup = report["by_category"]["lookup"]["hybrid"]
    assert lookup["n"] == 20 and lookup["mrr"] == pytest.approx(rr["hybrid"][1::2].mean())
    assert "| hybrid | 40 |" in report["markdown"]
    assert "| hybrid | bm25 | mrr | 40 |" in report["markdown"]
    without_reranking = retrieval_report([r for r in rows if r["mode"] != "hybrid+llm"], n_boot=20)
    assert len(without_reranking["comparisons"]) == 2 * len(metric_names())


@pytest.mark.parametrize(("change", "message"), [
    ({"mode": "sparse"}, "question 'rq-0000': field 'mode'"),
    ({"relevant": []}, "question 'rq-0000': field 'relevant'"),
    ({"ranked_chunk_ids": "c0"}, "question 'rq-0000': field 'ranked_chunk_ids'"),
])
def test_bad_report_rows_are_named(change, message):
    rows = _rows(n=2)
    rows[0].update(change)
    with pytest.raises(ValueError, match=message):
        retrieval_report(rows, n_boot=10)
    with pytest.raises(ValueError, match="appears twice"):
        retrieval_report([_rows(n=1)[0]] * 2, n_boot=10)


# --------------------------------------------------------------------------- the real thing


@pytest.fixture(scope="module")
def real_report() -> dict:
    corpus = build_rag_corpus(0)
    chunks = chunk_documents(corpus, max_words=80, overlap_words=15)
    index = HybridIndex(chunks, minilm_embedder())
    rows = []
    for question in build_rag_questions(corpus, 0):
        if question["category"] not in ANSWERABLE:
            continue
        relevant = relevant_chunk_ids(question, chunks)
        for mode in SEARCH_MODES:
            hits = index.search(retrieval_query(question), k=10, mode=mode)
            rows.append({"question_id": question["question_id"],
                         "category": question["category"], "mode": mode,
                         "ranked_chunk_ids": [h.chunk.chunk_id for h in hits],
                         "relevant": relevant})
    report = retrieval_report(rows)
    print("\n" + report["markdown"])
    return report


def _mean(report: dict, mode: str, metric: str) -> float:
    return report["modes"][mode]["metrics"][metric]["mean"]


def test_real_retrieval_behaves_as_designed_per_category(real_report):
    assert {mode: real_report["modes"][mode]["n"] for mode in SEARCH_MODES} == dict.fromkeys(
        SEARCH_MODES, 332)
    by = real_report["by_category"]
    # lookups share rare words with their evidence, paraphrases do not
    assert by["lookup"]["bm25"]["recall@3"] >= 0.9
    assert by["paraphrase"]["bm25"]["recall@3"] < by["paraphrase"]["dense"]["recall@3"]
    assert by["lookup"]["bm25"]["recall@3"] > by["paraphrase"]["bm25"]["recall@3"] + 0.5


def _comparison(report: dict, baseline: str, metric: str) -> dict:
    return next(row for row in report["comparisons"]
                if row["mode"] == "hybrid" and row["baseline"] == baseline
                and row["metric"] == metric)


@pytest.mark.parametrize("metric", ["mrr", "recall@3"])
def test_fusion_beats_bm25_and_both_retrievers_on_keyword_lookups(real_report, metric):
    """Measured, not assumed (the report is printed). Fusion beats BM25 on the whole set, and both
    retrievers on the keyword lookups it is meant for (MRR). On this corpus dense retrieval alone is
    better than equal-weight RRF overall (paraphrases: BM25 ranks chunks sharing only common
    words and drags dense's hit down); that comparison is reported in rag_retrieval_eval and in
    docs/benchmarks.md, not asserted."""
    versus_bm25 = _comparison(real_report, "bm25", metric)
    assert versus_bm25["significant"] and versus_bm25["ci_low"] > 0
    lookup = real_report["by_category"]["lookup"]
    assert lookup["hybrid"]["mrr"] > max(lookup["bm25"]["mrr"], lookup["dense"]["mrr"])
