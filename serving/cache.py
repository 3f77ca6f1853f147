"""The server's rate limiter (a token bucket per client) and its response cache (an LRU of
temperature-0 answers). Plain Python: no Dagster."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from serving.protocol import ChatRequest


class RateLimiter:
    """A token bucket per client: `per_minute` requests a minute, bursts of at most that many."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000) -> None:
        self.capacity = per_minute
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, updated)

    def acquire(self, client: str) -> float:
        """0 if the request may go ahead (one token taken), else seconds until it may."""
        if self.capacity <= 0:
            return 0.0
        now = self.clock()
        tokens, updated = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self.rate)
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)
            self._prune(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        if len(self._buckets) > self.max_clients:  # forget clients whose bucket has refilled
            self._buckets = {c: (t, u) for c, (t, u) in self._buckets.items()
                             if t + (now - u) * self.rate < self.capacity}


@dataclass(frozen=True)
class CachedAnswer:
    """A generated answer: what a cache hit replays (its headers describe the generation)."""

    content: str
    finish_reason: str
    usage: Mapping[str, int]
    headers: Mapping[str, str]
    phi_output: Mapping[str, int]
    logprobs: Mapping[str, Any] | None = None  # {"content": [...]} when asked for
    tool_calls: Sequence[Mapping[str, Any]] | None = None


class ResponseCache:
    """LRU of temperature-0 answers keyed by a sha256 of (model, messages, decoding, format)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[str, CachedAnswer] = OrderedDict()

    @staticmethod
    def key(request: ChatRequest, messages: Sequence[Mapping[str, str]]) -> str:
        raw = json.dumps([request.model, list(messages), asdict(request.decoding),
                          request.key()], sort_keys=True, default=list)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def get(self, key: str) -> CachedAnswer | None:
        answer = self._items.get(key)
        if answer is not None:
            self._items.move_to_end(key)
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        if self.entries <= 0:
            return
        self._items[key] = answer
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)
