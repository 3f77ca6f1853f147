"""Retrieval latency per query at 10k and 100k chunks: BM25, dense and hybrid (RRF) search of
retrieval/index.py, measured side by side in one run.

The chunks are the RAG corpus's (synthetic/rag_corpus.py) repeated with distinct ids and a
distinct tag word each, so BM25 indexes every one; their vectors are the real MiniLM vectors of
the corpus chunks with small Gaussian noise, renormalised (embedding 100k chunks would take
minutes and does not change the cost of a search, a matrix-vector product). The query is
embedded for real on every dense / hybrid search. Run: python bench/bench_retrieval.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.chunking import Chunk, chunk_documents  # noqa: E402
from retrieval.index import HybridIndex, chunk_passage, minilm_embedder  # noqa: E402
from retrieval.settings import load_rag_settings  # noqa: E402
from synthetic.rag_corpus import build_rag_corpus  # noqa: E402
from synthetic.rag_questions import build_rag_questions, retrieval_query  # noqa: E402


def scaled_index(base: list[Chunk], vectors: np.ndarray, size: int, embed, seed: int = 0):
    rng = np.random.default_rng(seed)
    chunks, rows = [], []
    for i in range(size):
        source = base[i % len(base)]
        chunks.append(Chunk(f"{source.chunk_id}~{i}", source.doc_id, source.title,
                            f"{source.text} tag{i}"))
        rows.append(vectors[i % len(base)])
    noisy = np.asarray(rows) + rng.normal(0, 0.02, (size, vectors.shape[1]))
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    started = time.perf_counter()
    index = HybridIndex(chunks, embed, vectors=noisy.astype(np.float32))
    return index, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=50, help="queries timed per mode")
    args = parser.parse_args()
    from tabulate import tabulate

    settings = load_rag_settings()
    corpus = build_rag_corpus(settings.seed)
    base = chunk_documents(corpus, max_words=settings.max_words,
                           overlap_words=settings.overlap_words)
    embed = minilm_embedder()
    vectors = embed([chunk_passage(chunk) for chunk in base])
    queries = [retrieval_query(q) for q in build_rag_questions(corpus, settings.seed)
               if q["doc_id"]][:args.queries]
    rows = []
    for size in args.sizes:
        index, build_s = scaled_index(base, vectors, size, embed)
        for mode in ("bm25", "dense", "hybrid"):
            index.search(queries[0], k=10, mode=mode)  # warm-up
            times = []
            for query in queries:
                started = time.perf_counter()
                index.search(query, k=10, mode=mode, depth=settings.depth)
                times.append((time.perf_counter() - started) * 1000)
            times.sort()
            rows.append([f"{size:,}", mode, f"{build_s:.1f}", f"{statistics.median(times):.1f}",
                         f"{times[int(0.95 * (len(times) - 1))]:.1f}"])
    print(f"{len(queries)} queries per mode, k 10, depth {settings.depth}, 1 process")
    print(tabulate(rows, headers=["chunks", "mode", "index build s (BM25)", "p50 ms", "p95 ms"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
