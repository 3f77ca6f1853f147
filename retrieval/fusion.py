"""Reciprocal rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009): score(d) = sum over rankings
of 1 / (k + rank(d)), rank from 1. Written here because it is four lines; the retrievers it fuses
are libraries (bm25s, sentence-transformers)."""

from __future__ import annotations

from collections.abc import Sequence

RRF_K = 60  # the paper's constant


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], *, k: int = RRF_K,
                           ) -> list[tuple[str, float]]:
    """(id, fused score) for every id in any ranking, best first; ties broken by id."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
