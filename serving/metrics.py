"""Prometheus metrics of one app (its own registry, so that several apps can live in a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServingMetrics:
    """The server's counters, histograms and gauges (names prefixed gxplab_serving_)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gxplab_serving_requests", "Chat completion requests by model "
                                "and HTTP status", ["model", "status"], registry=r)
        self.latency = Histogram("gxplab_serving_request_latency_seconds", "Chat completion "
                                 "latency, request received to last byte sent", ["model"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("gxplab_serving_batch_size", "Requests generated together "
                                    "in one engine call", ["model"], buckets=BATCH_BUCKETS,
                                    registry=r)
        self.tokens = Counter("gxplab_serving_tokens", "Tokens by model and kind "
                              "(prompt, completion)", ["model", "kind"], registry=r)
        self.cache = Counter("gxplab_serving_cache", "Response cache look-ups by result "
                             "(hit, miss)", ["model", "result"], registry=r)
        self.guardrail_events = Counter("gxplab_serving_guardrail_events", "Guardrail events: "
                                        "PHI redactions (by pattern, input or output), injection "
                                        "rules matched, JSON retries and failures",
                                        ["model", "guardrail", "rule"], registry=r)
        self.queue_depth = Gauge("gxplab_serving_queue_depth", "Requests waiting for the model",
                                 ["model"], registry=r)
        self.models_loaded = Gauge("gxplab_serving_models_loaded", "Models loaded and ready",
                                   registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
