"""retrieval/: chunk ids and windows, reciprocal rank fusion by hand, BM25 + MiniLM hybrid search
on a small PHI-free corpus of SOP passages."""

from __future__ import annotations

import pytest

from retrieval.chunking import Chunk, Document, chunk_documents
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.index import HybridIndex, minilm_embedder

SOPS = [
    Document("sop-signatures", "SOP-QA-014 Electronic signatures",
             "Every executed batch record step must carry the performer's electronic signature "
             "and the verifier's second signature before the step is closed. A missing "
             "verifier signature is a data integrity deviation under the attributable principle."),
    Document("sop-corrections", "SOP-QA-021 Corrections to GMP records",
             "Corrections are made with a single line through the original entry so that it "
             "stays legible, with the reason, the date and the initials of the person making "
             "the correction. Overwriting or using correction fluid is forbidden."),
    Document("sop-temperature", "SOP-PR-007 Granulation temperature limits",
             "The granulation bowl temperature must stay between 40 and 45 degrees Celsius. An "
             "excursion outside the range is recorded in the batch record with the time and "
             "duration and triggers a deviation report within 24 hours."),
    Document("amr-cap", "AMR guideline: community-acquired pneumonia",
             "For adult community-acquired pneumonia without risk factors the first choice is "
             "amoxicillin, an Access antibiotic, for five days. Reserve antibiotics are not used "
             "for empirical treatment."),
    Document("amr-uti", "AMR guideline: lower urinary tract infection",
             "Uncomplicated lower urinary tract infection in non-pregnant women is treated with "
             "nitrofurantoin for five days or a single dose of fosfomycin."),
    Document("sop-cleaning", "SOP-PR-031 Equipment cleaning log",
             "After each batch the equipment cleaning log records the cleaning agent, the start "
             "and end time, the operator and the visual inspection result before release."),
]


def test_chunks_are_overlapping_windows_with_stable_ids():
    doc = Document("d1", "T", " ".join(f"w{i}" for i in range(25)))
    chunks = chunk_documents([doc], max_words=10, overlap_words=2)
    assert [c.chunk_id for c in chunks] == ["d1#000", "d1#001", "d1#002"]
    assert [c.text.split()[0] for c in chunks] == ["w0", "w8", "w16"]
    assert chunks[-1].text.split()[-1] == "w24" and len(chunks[0].text.split()) == 10
    assert chunk_documents([Document("d2", "T", "short text")])[0].chunk_id == "d2#000"


@pytest.mark.parametrize(("documents", "message"), [
    ([Document("d", "T", "a"), Document("d", "U", "b")], "'d' appears twice"),
    ([Document("e", "Empty", "  ")], "document 'e' .* has no text"),
])
def test_bad_documents_are_named(documents, message):
    with pytest.raises(ValueError, match=message):
        chunk_documents(documents)


def test_reciprocal_rank_fusion_by_hand():
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)  # 2nd and 1st
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["d"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63)
    assert [i for i, _ in reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]])][:2] == ["b", "a"]


@pytest.fixture(scope="module")
def index() -> HybridIndex:
    return HybridIndex(chunk_documents(SOPS, max_words=40, overlap_words=8), minilm_embedder())


@pytest.mark.parametrize(("query", "doc_id"), [
    ("Who must sign a batch record step before it is closed?", "sop-signatures"),
    ("How do I correct a wrong entry in a GMP record?", "sop-corrections"),
    ("granulation bowl temperature range", "sop-temperature"),
    ("first-line antibiotic for pneumonia in adults", "amr-cap"),
    ("treatment of cystitis in women", "amr-uti"),  # no shared term: dense finds it
])
def test_the_known_answers_chunk_ranks_in_the_top_3(index, query, doc_id):
    hits = index.search(query, k=3, mode="hybrid")
    assert doc_id in [h.chunk.doc_id for h in hits], [(h.chunk.chunk_id, h.ranks) for h in hits]
    assert [h.rank for h in hits] == [1, 2, 3]


def test_bm25_returns_only_chunks_that_share_a_term_and_hits_say_who_found_them(index):
    bm25 = index.search("nitrofurantoin", k=5, mode="bm25")
    assert [h.chunk.doc_id for h in bm25] == ["amr-uti"]  # zero-score chunks are not hits
    hybrid = index.search("nitrofurantoin", k=5)
    assert hybrid[0].chunk.doc_id == "amr-uti" and set(hybrid[0].ranks) == {"bm25", "dense"}
    dense = index.search("nitrofurantoin", k=len(index.chunks), mode="dense")
    assert len(dense) == len(index.chunks)
    assert all(a.score >= b.score for a, b in zip(dense, dense[1:], strict=False))


def test_bad_index_input_is_refused():
    chunk = Chunk("x#000", "x", "T", "text")
    with pytest.raises(ValueError, match="unique"):
        HybridIndex([chunk, chunk], lambda texts: [[1.0]] * len(texts))
    with pytest.raises(ValueError, match="at least one chunk"):
        HybridIndex([], lambda texts: [])
