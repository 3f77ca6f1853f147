"""Canonical JSON Lines: one compact JSON object per line, keys in insertion order, UTF-8.

The same rows always give the same bytes, so a sha256 of the file pins a generated split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

_SEPARATORS = (",", ":")


def dumps_row(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False, separators=_SEPARATORS)


def dumps_jsonl(rows: Iterable[dict]) -> bytes:
    """Canonical JSONL bytes ("\\n" after every line, also the last)."""
    return "".join(dumps_row(r) + "\n" for r in rows).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_jsonl(rows: Iterable[dict], path: str | Path, chunk_rows: int = 10_000) -> str:
    """Stream rows (any iterable) to `path` as canonical JSONL; return the file's sha256 hex."""
    digest = hashlib.sha256()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        buf: list[str] = []
        for row in rows:
            buf.append(dumps_row(row))
            if len(buf) >= chunk_rows:
                data = ("\n".join(buf) + "\n").encode("utf-8")
                digest.update(data)
                handle.write(data)
                buf.clear()
        if buf:
            data = ("\n".join(buf) + "\n").encode("utf-8")
            digest.update(data)
            handle.write(data)
    return digest.hexdigest()


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
