"""A scriptable OpenAI-compatible chat-completions server for tests and benchmarks.

Stdlib only (`http.server.ThreadingHTTPServer` on 127.0.0.1, ephemeral port, background thread).
A *responder* decides each answer from the request body and the request's 0-based index; helpers
below build the common scripts (audit answers flagging a marker, malformed JSON, HTTP errors,
delays, sequences). The server counts requests and the maximum number handled at the same time.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from scoring.audit_prompt import RECORDS_CLOSE, RECORDS_OPEN


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer: a chat completion with `content`, or an HTTP error `status`."""

    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    usage: dict[str, int] | None = None  # default: characters // 4 of prompt and answer
    error_message: str | None = None  # body message of an HTTP error (default: "scripted HTTP n")


Responder = Callable[[dict[str, Any], int], FakeReply]


def batch_records_from_request(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The records the audit prompt put between the batch-record delimiters."""
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
    start = text.index(RECORDS_OPEN) + len(RECORDS_OPEN)
    block = text[start:text.index(RECORDS_CLOSE, start)]
    return [json.loads(line) for line in block.splitlines() if line.strip()]


def flag_marker(marker: str = "FLAG-ME", deviation_type: str = "placeholder_text_in_notes",
                *, delay_s: float = 0.0, usage: dict[str, int] | None = None) -> Responder:
    """Answer like a model that flags every record whose comments contain `marker`."""

    def respond(body: dict[str, Any], _index: int) -> FakeReply:
        findings = [
            {"record_id": r["record_id"], "deviation_type": deviation_type, "field": "comments",
             "evidence": f"comments contain {marker!r}"}
            for r in batch_records_from_request(body) if marker in str(r.get("comments") or "")
        ]
        answer = {"summary": f"{len(findings)} finding(s)", "findings": findings}
        return FakeReply(content=json.dumps(answer), delay_s=delay_s, usage=usage)

    return respond


def fixed(reply: FakeReply) -> Responder:
    """Always the same reply (e.g. malformed content, HTTP 500)."""
    return lambda _body, _index: reply


def sequence(*responders: Responder) -> Responder:
    """Request i gets responders[i]; the last one answers every later request."""
    return lambda body, index: responders[min(index, len(responders) - 1)](body, index)


def with_faults(ok: Responder, failures: Sequence[FakeReply], failure_rate: float,
                seed: int = 7) -> Responder:
    """`ok`'s answer, except that each request fails with probability `failure_rate` with one of
    `failures` (in equal parts); seeded, so that a single-threaded run is repeatable."""
    rng = random.Random(seed)

    def respond(body: dict[str, Any], index: int) -> FakeReply:
        if rng.random() < failure_rate:
            return failures[rng.randrange(len(failures))]
        return ok(body, index)

    return respond


class FakeOpenAIServer:
    """Context manager running the fake server; `base_url` ends in /v1 as litellm expects."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder: Responder = responder or flag_marker()
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.busy_s = 0.0  # summed handling time of every request: / wall = mean in flight
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True)  # fast shutdown

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def n_requests(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def stats(self) -> dict[str, Any]:
        """Requests so far, the most in flight at once and the summed handling seconds."""
        with self._lock:
            return {"n_requests": len(self.requests), "max_in_flight": self.max_in_flight,
                    "busy_s": self.busy_s}

    def _begin(self, body: dict[str, Any], auth: str) -> int:
        with self._lock:
            self.requests.append(body)
            self.auth_headers.append(auth)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return len(self.requests) - 1

    def _end(self, started: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.busy_s += time.monotonic() - started


def _completion(body: dict[str, Any], reply: FakeReply, index: int) -> dict[str, Any]:
    content = reply.content or ""
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    usage = reply.usage or {"prompt_tokens": prompt_chars // 4,
                            "completion_tokens": len(content) // 4}
    return {
        "id": f"chatcmpl-fake-{index}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
    }


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
        # TCP_NODELAY: headers and body go out as two writes; with Nagle's algorithm the body
        # would wait for the client's delayed ACK (about 40 ms per request).
        disable_nagle_algorithm = True

        def log_message(self, *_args: object) -> None:  # keep test output quiet
            return

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            # The client may have given up already (timeout test).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [
                    {"id": "fake-model", "object": "model", "owned_by": "tests"}]}, {})
            elif self.path.rstrip("/").endswith("/stats"):  # for benchmarks in another process
                self._send(200, server.stats(), {})
            else:
                self._send(404, {"error": {"message": "not found"}}, {})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found"}}, {})
                return
            index = server._begin(body, self.headers.get("Authorization", ""))
            started = time.monotonic()
            try:
                reply = server.responder(body, index)
                time.sleep(reply.delay_s)
                if reply.status == 200:
                    self._send(200, _completion(body, reply, index), reply.headers)
                else:
                    message = reply.error_message or f"scripted HTTP {reply.status}"
                    error = {"message": message, "type": "fake_error",
                             "code": str(reply.status)}
                    self._send(reply.status, {"error": error}, reply.headers)
            finally:
                server._end(started)

    return Handler


def sample_master() -> dict[str, Any]:
    """A small site master-data dict in the generator's shape."""
    step = {"unit_procedure": "UP1", "operation": "OP1", "phase": "DISPENSE",
            "materials": ["MAT-001"], "equipment_class": "MIXER",
            "temperature_c": {"low": 18.0, "high": 25.0, "target": 21.0},
            "duration_min": {"low": 10.0, "high": 30.0, "target": 20.0}}
    return {
        "site_id": "SITE-GX01", "timezone": "Europe/Berlin",
        "extracted_at": "2026-11-20T18:00:00+01:00",
        "status_codes": ["COMPLETED", "ABORTED"],
        "operators": [{"operator_id": "OP0001", "name": "A. Weber", "role": "operator"},
                      {"operator_id": "OP0002", "name": "B. Kaya", "role": "QA verifier"}],
        "equipment": [{"equipment_id": "EQ-MIX-01", "description": "Mixer 1",
                       "equipment_class": "MIXER"}],
        "materials": [{"material_id": "MAT-001", "name": "Lactose", "uom": "kg"}],
        "recipes": [
            {"product_code": "PRD-A", "name": "Tablet A", "recipe_version": "3",
             "steps": [step, {**step, "phase": "BLEND"}]},
            {"product_code": "PRD-B", "name": "Tablet B", "recipe_version": "1", "steps": [step]},
        ],
    }


def sample_batch(batch_id: str, n_steps: int = 3, comments: dict[int, str] | None = None,
                 ) -> list[dict[str, Any]]:
    """`n_steps` clean records of product PRD-A (fields as contracts.RECORD_FIELDS);
    `comments` overrides the comments of the given step_seq values."""
    records = []
    for seq in range(1, n_steps + 1):
        records.append({
            "record_id": f"{batch_id}-S{seq:02d}", "batch_id": batch_id, "product_code": "PRD-A",
            "unit_procedure": "UP1", "operation": "OP1", "phase": f"PHASE-{seq}",
            "step_seq": seq, "material_id": "MAT-001", "material_lot": f"LOT-{seq}",
            "qty_actual": 1.5, "uom": "kg", "equipment_id": "EQ-MIX-01",
            "operator_id": "OP0001", "verifier_id": "OP0002",
            "start_ts": f"2026-11-02T08:{seq:02d}:00+01:00",
            "end_ts": f"2026-11-02T08:{seq:02d}:30+01:00",
            "recorded_ts": f"2026-11-02T08:{seq:02d}:40+01:00", "status": "COMPLETED",
            "parameters": {"temperature_c": {"value": 21.0, "low": 18.0, "high": 25.0, "unit": "C"},
                           "duration_min": {"value": 20.0, "low": 10.0, "high": 30.0,
                                            "unit": "min"}},
            "environment": {"room_temp_c": 21.0, "relative_humidity_pct": 40.0,
                            "differential_pressure_pa": 12.0},
            "comments": (comments or {}).get(seq, "Step completed as instructed."),
            "audit_trail": [],
        })
    return records


@dataclass
class ScriptedResult:
    """An LLMCallResult stand-in: text, optional per-metric top logprobs (which LLMCallResult does
    not carry today), status."""

    text: str
    logprobs: dict | None = None
    status: str = "ok"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "cached": False, "cost_usd": 0.0}


class LogprobClient:
    """A completion client (LLMClient's protocol) answering every request with `text` and
    `logprobs`, for G-Eval paths no local server can exercise."""

    def __init__(self, text: str, logprobs: dict) -> None:
        self.text, self.logprobs = text, logprobs

    def complete_many(self, model: Any, requests: Any, progress: Any = None) -> list:
        return [ScriptedResult(text=self.text, logprobs=self.logprobs) for _ in requests]

    def close(self) -> None:
        return None
