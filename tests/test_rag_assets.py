"""The RAG assets in Dagster: corpus, questions, the stored index and the retrieval evaluation."""

import json
import re

import dagster as dg
import numpy as np
import pytest
from fake_openai_server import FakeOpenAIServer, FakeReply

from assets import rag
from resources.io_manager import DatasetIOManager
from resources.llm import LLMResource
from retrieval.chunking import chunk_documents
from retrieval.index import HybridIndex, minilm_embedder
from retrieval.settings import load_rag_settings
from synthetic.rag_corpus import build_rag_corpus

# The first 60 answerable questions (lookups, paraphrases, multi-turn): the whole set's numbers are
# asserted in tests/test_retrieval_metrics.py; here the asset, its metadata, check and reranking.
MAX_QUESTIONS = 60


def _reverse_ranking(body: dict, index: int) -> FakeReply:
    """A listwise reranker that reverses the candidates; its first reply is not JSON."""
    prompt = body["messages"][-1]["content"]
    ids = re.findall(r"^<<<CHUNK (\S+)$", prompt, re.M)
    if index == 0:
        return FakeReply(content="I would rank them by relevance.")
    return FakeReply(content=json.dumps({"ranking": ids[::-1]}))


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag")
    assets = [rag.rag_corpus, rag.rag_questions, rag.rag_index, rag.rag_retrieval_eval,
              rag.rag_hybrid_not_worse_than_single]
    resources = {"io_manager": DatasetIOManager(root=str(root / "artifacts")),
                 "llm": LLMResource(cache_dir=str(root / "llm_cache"), max_retries=0)}
    # the retrieval evaluation with LLM reranking by an OpenAI-compatible server through litellm
    with (dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as patch,
          FakeOpenAIServer(_reverse_ranking) as server):
        patch.setenv("GXPLAB_OPENAI_COMPAT_BASE", server.base_url)
        patch.setenv("GXPLAB_OPENAI_COMPAT_MODEL", "reverse-ranker")
        result = dg.materialize(
            assets, instance=instance, resources=resources,
            run_config={"ops": {"rag_retrieval_eval": {"config": {
                "n_boot": 200, "reranker": "llm", "rerank_model": "openai-compatible",
                "max_questions": MAX_QUESTIONS}}}})
        rerank_calls = server.n_requests
        patch.delenv("GXPLAB_OPENAI_COMPAT_BASE")
        # read back as a downstream asset would: through the IO manager, from Parquet
        index_frame = dg.Definitions(assets=assets, resources=resources).load_asset_value(
            "rag_index", instance=instance)

        def evaluate_again(config: dict):
            """rag_retrieval_eval alone, with `config`, over the stored index and questions."""
            return dg.materialize(assets, instance=instance, resources=resources,
                                  selection=["rag_retrieval_eval"],
                                  run_config={"ops": {"rag_retrieval_eval": {"config": config}}})

        yield result, index_frame, evaluate_again, rerank_calls


def _metadata(result, node):
    return {k: getattr(v, "value", v)
            for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_corpus_and_index_metadata_say_what_was_built(materialized):
    result, *_ = materialized
    corpus = _metadata(result, "rag_corpus")
    assert corpus["documents"] == len(build_rag_corpus(0))
    assert set(corpus["documents_by_kind"]) == {"sop", "amr", "brsop"}
    index = _metadata(result, "rag_index")
    settings = load_rag_settings()
    expected = chunk_documents(build_rag_corpus(0), max_words=settings.max_words,
                               overlap_words=settings.overlap_words)
    assert index["chunks"] == len(expected) and index["dimensions"] == 384
    assert "no download" in index["embedder"]


def test_the_stored_index_searches_like_a_fresh_one(materialized):
    """Parquet round trip: the stored chunks and vectors give the same hits as an index built
    from the corpus now (BM25 rebuilt, vectors not recomputed)."""
    _, frame, *_ = materialized
    stored = rag.load_hybrid_index(frame)
    settings = load_rag_settings()
    fresh = HybridIndex(chunk_documents(build_rag_corpus(0), max_words=settings.max_words,
                                        overlap_words=settings.overlap_words), minilm_embedder())
    assert np.allclose(stored.vectors, fresh.vectors, atol=1e-5)
    for query in ("How long is a controlled drug register kept?",
                  "first choice antibiotic for community-acquired pneumonia"):
        for mode in rag.MODES:
            assert ([h.chunk.chunk_id for h in stored.search(query, k=5, mode=mode)]
                    == [h.chunk.chunk_id for h in fresh.search(query, k=5, mode=mode)])


def test_retrieval_eval_reports_each_retriever_and_the_check_tells_the_truth(materialized):
    result, *_ = materialized
    metadata = _metadata(result, "rag_retrieval_eval")
    means = metadata["means"]
    assert set(means) == {*rag.MODES, "hybrid+llm"}
    assert all(0 <= means[mode]["mrr"] <= 1 for mode in rag.MODES)
    assert "| hybrid |" in metadata["report"]
    frame = result.output_for_node("rag_retrieval_eval")
    assert metadata["questions"] == MAX_QUESTIONS
    assert len(frame) == 4 * MAX_QUESTIONS  # three retrievers and the reranked hybrid
    (check,) = result.get_asset_check_evaluations()
    worse = [row for row in metadata["comparisons"]
             if row["mode"] == "hybrid" and row["metric"] == "mrr" and row["significant"]
             and row["mean_difference"] < 0]
    assert check.passed == (not worse)
    assert check.severity == dg.AssetCheckSeverity.WARN


def test_llm_reranking_through_litellm_is_evaluated_against_hybrid(materialized):
    """index.reranker llm (here from the run config): every answerable question's fused hits are
    reranked by an OpenAI-compatible model through litellm; the reranked mode is compared with
    hybrid; an unusable reply keeps the fused order and is counted."""
    result, _, _, rerank_calls = materialized
    metadata = _metadata(result, "rag_retrieval_eval")
    frame = result.output_for_node("rag_retrieval_eval")
    questions = metadata["questions"]
    assert rerank_calls == questions and len(frame) == 4 * questions
    assert metadata["reranking"] == {
        "reranker": "llm", "model": "openai-compatible", "candidates": 10, "calls": questions,
        "replies_not_used": 1, "prompt_version": "rag-rerank-v1"}
    hybrid = {r.question_id: list(r.ranked_chunk_ids) for r in frame.itertuples()
              if r.mode == "hybrid"}
    reranked = {r.question_id: list(r.ranked_chunk_ids) for r in frame.itertuples()
                if r.mode == "hybrid+llm"}
    assert set(reranked) == set(hybrid)
    kept = [qid for qid in hybrid if reranked[qid] == hybrid[qid]]
    assert len(kept) == 1  # the unusable reply: fused order kept, nothing lost
    assert all(reranked[qid] == hybrid[qid][::-1] for qid in hybrid if qid not in kept)
    # reversing the fused order must hurt, and the comparison says so
    mrr = next(row for row in metadata["comparisons"]
               if row["mode"] == "hybrid+llm" and row["metric"] == "mrr")
    assert mrr["baseline"] == "hybrid" and mrr["mean_difference"] < 0 and mrr["significant"]
    assert metadata["means"]["hybrid+llm"]["mrr"] < metadata["means"]["hybrid"]["mrr"]


def test_llm_reranking_without_its_model_says_so(materialized):
    _, _, evaluate_again, _ = materialized  # GXPLAB_OPENAI_COMPAT_BASE is unset again
    rerun = evaluate_again({"n_boot": 50, "reranker": "llm", "rerank_model": "openai-compatible",
                            "max_questions": 4})
    reranking = _metadata(rerun, "rag_retrieval_eval")["reranking"]
    assert reranking["not_run"].startswith("skipped: environment variable "
                                           "GXPLAB_OPENAI_COMPAT_BASE")
    frame = rerun.output_for_node("rag_retrieval_eval")
    assert len(frame) == 3 * 4 and "hybrid+llm" not in set(frame["mode"])
    with pytest.raises(dg.Failure, match="'reranker': 'cross-encoder' is not one of"):
        evaluate_again({"reranker": "cross-encoder"})  # refused before any search
