"""Canonical JSON Lines: one compact JSON object per line, keys in insertion order, UTF-8.

The same rows always give the same bytes, so a sha256 of the file pins a generated split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

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


# ---- reading: one parser for every records, labels, predictions and inbox file ------------------
# Arrays/objects inside each other (a batch record needs 3); below orjson.dumps' own limit (254).
MAX_DEPTH = 64
_BOM = b"\xef\xbb\xbf"


class JsonLineError(ValueError):
    """A JSON Lines line that is not one usable JSON object: names the file, the line and, where
    known, the field (the duplicated key)."""

    def __init__(self, reason: str, *, path: str | Path | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.reason, self.field, self.line = reason, field, line
        self.path = None if path is None else str(path)
        where = "" if path is None else f"{path} line {line}: " if line else f"{path}: "
        super().__init__(f"{where}{reason}")


def _depth_over(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit` (iterative: a deep value cannot recurse)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    """object_pairs_hook of the careful check: a key twice in one object is an error."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise JsonLineError(f"duplicate key {key!r}", field=key)
    return obj


_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates)


def parse_json_line(raw: bytes | str, *, path: str | Path | None = None,
                    line: int | None = None) -> dict:
    """One JSON Lines line -> its object, or JsonLineError (a ValueError) naming path and line.

    Refused: malformed JSON, invalid UTF-8, a BOM, NaN/Infinity and numbers that overflow to
    infinity (1e999), anything but an object, nesting deeper than MAX_DEPTH and a key twice in
    one object. Integers beyond 64 bits become floats. orjson parses (fast, and bounded: its own
    limit is 1024 levels) but keeps the last of duplicate keys, so a line is proven free of them
    when its object serializes back to the same bytes (this project's compact lines always do).
    Any other line is re-read by the standard library with a hook that refuses duplicates (no
    library offers that check; the depth is already bounded, so it cannot recurse too deep).
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        return _parse(data.strip(b" \t\r\n"))
    except JsonLineError as exc:
        raise JsonLineError(exc.reason, path=path, line=line, field=exc.field) from None


def _parse(data: bytes) -> dict:
    if data.startswith(_BOM):
        raise JsonLineError("malformed JSON (a UTF-8 byte order mark is not supported)")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise JsonLineError(f"nested deeper than {MAX_DEPTH} levels") from None
        raise JsonLineError(f"truncated or malformed JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise JsonLineError(f"expected a JSON object, got {type(obj).__name__}")
    if data.count(b"{") + data.count(b"[") > MAX_DEPTH and _depth_over(obj, MAX_DEPTH):
        raise JsonLineError(f"nested deeper than {MAX_DEPTH} levels")
    if orjson.dumps(obj) != data:
        try:
            _PAIRS_DECODER.decode(data.decode("utf-8"))
        except JsonLineError:
            raise
        except ValueError as exc:  # e.g. an integer beyond Python's 4300-digit limit
            raise JsonLineError(f"malformed JSON ({exc})") from None
    return obj


def iter_jsonl_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each non-blank line. Lines end at a newline byte only: the
    numbering of every reader and of the quarantine's `original` text."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Each object of a JSON Lines file; the first bad line raises JsonLineError (file, line)."""
    for number, raw in iter_jsonl_lines(path):
        yield parse_json_line(raw, path=path, line=number)
