"""The fake OpenAI-compatible server of tests/ in a child process, for the throughput benchmarks.

In its own process the server does not share the client's GIL and CPU. `make_responder` (a
module-level function, so that it pickles) builds the server's responder inside the child.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


@dataclass
class ServerStats:
    """Filled in when the server stops: requests answered and the most in flight at once."""

    n_requests: int = 0
    max_in_flight: int = 0


def _serve(make_responder: Callable[..., Any], kwargs: dict, replies: Any, stop: Any) -> None:
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(make_responder(**kwargs)) as server:
        replies.put(server.base_url)
        stop.wait()
        replies.put((server.n_requests, server.max_in_flight))


@contextmanager
def served(make_responder: Callable[..., Any], **kwargs: Any) -> Iterator[tuple[str, ServerStats]]:
    """(base URL, stats) of a fake server answering with `make_responder(**kwargs)`."""
    context = multiprocessing.get_context("spawn")
    replies, stop = context.Queue(), context.Event()
    process = context.Process(target=_serve, args=(make_responder, kwargs, replies, stop),
                              daemon=True)
    process.start()
    stats = ServerStats()
    try:
        yield replies.get(timeout=60), stats
    finally:
        stop.set()
        stats.n_requests, stats.max_in_flight = replies.get(timeout=60)
        process.join(timeout=10)
