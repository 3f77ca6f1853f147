"""Documents into overlapping word windows with stable ids (`<doc_id>#<n>`), so a citation names
exactly the passage an answer came from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    text: str


def chunk_documents(documents: Iterable[Document], *, max_words: int = 120,
                    overlap_words: int = 20) -> list[Chunk]:
    """Each document as windows of at most `max_words` words, consecutive windows sharing
    `overlap_words`. Ids are `<doc_id>#<index>` (index from 0, three digits). A document id that
    repeats, or an empty document, is a ValueError naming it."""
    if max_words < 1 or not 0 <= overlap_words < max_words:
        raise ValueError(f"need max_words >= 1 and 0 <= overlap_words < max_words, got "
                         f"{max_words} and {overlap_words}")
    chunks: list[Chunk] = []
    seen: set[str] = set()
    step = max_words - overlap_words
    for document in documents:
        if document.doc_id in seen:
            raise ValueError(f"document id {document.doc_id!r} appears twice")
        seen.add(document.doc_id)
        words = document.text.split()
        if not words:
            raise ValueError(f"document {document.doc_id!r} ({document.title!r}) has no text")
        starts = range(0, max(len(words) - overlap_words, 1), step)
        for index, start in enumerate(starts):
            chunks.append(Chunk(f"{document.doc_id}#{index:03d}", document.doc_id,
                                document.title, " ".join(words[start:start + max_words])))
    return chunks
