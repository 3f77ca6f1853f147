"""The RAG assets in Dagster: corpus, questions, the stored index and the retrieval evaluation."""

import dagster as dg
import numpy as np
import pytest

from assets import rag
from resources.io_manager import DatasetIOManager
from retrieval.chunking import chunk_documents
from retrieval.index import HybridIndex, minilm_embedder
from retrieval.settings import load_rag_settings
from synthetic.rag_corpus import build_rag_corpus


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag")
    assets = [rag.rag_corpus, rag.rag_questions, rag.rag_index, rag.rag_retrieval_eval,
              rag.rag_hybrid_not_worse_than_single]
    resources = {"io_manager": DatasetIOManager(root=str(root / "artifacts"))}
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets, instance=instance, resources=resources,
            run_config={"ops": {"rag_retrieval_eval": {"config": {"n_boot": 200}}}})
        # read back as a downstream asset would: through the IO manager, from Parquet
        index_frame = dg.Definitions(assets=assets, resources=resources).load_asset_value(
            "rag_index", instance=instance)
        yield result, index_frame


def _metadata(result, node):
    return {k: getattr(v, "value", v)
            for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


def test_corpus_and_index_metadata_say_what_was_built(materialized):
    result, _ = materialized
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
    _, frame = materialized
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
    result, _ = materialized
    metadata = _metadata(result, "rag_retrieval_eval")
    means = metadata["means"]
    assert set(means) == set(rag.MODES)
    assert all(0 <= means[mode]["mrr"] <= 1 for mode in rag.MODES)
    assert "| hybrid |" in metadata["report"]
    frame = result.output_for_node("rag_retrieval_eval")
    assert len(frame) == 3 * metadata["questions"]
    (check,) = result.get_asset_check_evaluations()
    worse = [row for row in metadata["hybrid_vs_single"]
             if row["metric"] == "mrr" and row["significant"] and row["mean_difference"] < 0]
    assert check.passed == (not worse)
    assert check.severity == dg.AssetCheckSeverity.WARN
