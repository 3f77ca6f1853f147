"""Benchmark: the candidate runner against a provider failing 30% of calls, beside a fault-free one.

The same 500 batches (two tiny records each) at concurrency 16 are audited twice through the real
path (`scoring.candidate_runner` -> `LLMClient` -> litellm -> HTTP), each time against a fresh
local server with a fixed answer time (0.2 s): once fault-free, once with 30% of requests failing
(half 429 with Retry-After, half 503 with the client's jittered backoff; a failure is answered after
--fault-delay-s, at once by default, as a rate limiter does). The client uses its default retry
settings: 4 retries; a 429 waits its Retry-After, a 503 a full-jitter backoff (uniform below a
ceiling of 0.25 s doubling per retry). Goal: faulty wall / fault-free wall <= 1.5, the median of
--repeats pairs run side by side. The mean number of requests in flight is the server's summed
handling time / wall time; "attempts per batch" counts how many batches needed 1, 2, ... HTTP
attempts, and the tail is the time from 90% of the batches done to the end of the run. Each server
runs in its own process; litellm is warmed up by one request before each timed run.

    .venv/bin/python bench/bench_llm_faults.py [--batches 500] [--fault-rate 0.3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fake_openai_server import (  # noqa: E402
    FakeReply,
    flag_marker,
    sample_batch,
    sample_master,
    with_faults,
)
from local_server import served  # noqa: E402

from resources.clients.llm import LLMClient  # noqa: E402
from scoring.audit_prompt import load_prompt  # noqa: E402
from scoring.candidate_runner import run_llm_candidate  # noqa: E402
from scoring.model_registry import CandidateModel  # noqa: E402
from synthetic.catalog import load_catalog  # noqa: E402

KEY_ENV = "GXPLAB_BENCH_KEY"


def faulty_auditor(delay_s: float, fault_rate: float, fault_delay_s: float, retry_after_s: str):
    """Runs in the server process: flags the marker after `delay_s`; `fault_rate` of the requests
    fail instead (429 with Retry-After or 503, in equal parts) after `fault_delay_s`."""
    failures = (FakeReply(status=429, headers={"Retry-After": retry_after_s},
                          delay_s=fault_delay_s),
                FakeReply(status=503, delay_s=fault_delay_s))
    return with_faults(flag_marker(delay_s=delay_s), failures, fault_rate)


def _server_stats(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/stats", timeout=10) as answer:
        return json.load(answer)


def timed_run(args, fault_rate: float, warm_up: list[dict], records: list[dict]) -> dict:
    """Wall time, failed calls, attempts and the mean in flight of one run against a new server."""
    prompt, catalog, master = load_prompt(), load_catalog(), sample_master()
    with served(faulty_auditor, delay_s=args.delay_s, fault_rate=fault_rate,
                fault_delay_s=args.fault_delay_s, retry_after_s=args.retry_after) as (
            base_url, _stats), tempfile.TemporaryDirectory() as cache_dir:
        model = CandidateModel(id="bench-model", kind="litellm", litellm_model="openai/bench-model",
                               api_base=base_url, api_key_env=KEY_ENV, required_env=(KEY_ENV,),
                               max_tokens=512)
        client = LLMClient(cache_dir=cache_dir, max_concurrency=args.concurrency, pricing={})

        done_at: list[float] = []

        def run(batch_records: list[dict], progress=None):
            return run_llm_candidate(model, batch_records, master, split="benchmark",
                                     client=client, prompt=prompt, catalog=catalog,
                                     progress=progress)

        run(warm_up)  # imports litellm and opens its HTTP client; not timed (may fail: no matter)
        before = _server_stats(base_url)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run(records, lambda _done, _total: done_at.append(time.perf_counter() - started))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        after = _server_stats(base_url)
        client.close()
    return {"wall": wall, "client_cpu": cpu, "failed": result.summary["n_failed_calls"],
            "requests": after["n_requests"] - before["n_requests"],
            "mean_in_flight": (after["busy_s"] - before["busy_s"]) / wall,
            "p90_done": sorted(done_at)[int(0.9 * (len(done_at) - 1))],
            "longest": max(result.calls, key=lambda call: call["latency_s"]),
            "attempts": Counter(call["attempts"] for call in result.calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay-s", type=float, default=0.2, help="answer time (0.2 s)")
    parser.add_argument("--fault-rate", type=float, default=0.3)
    parser.add_argument("--fault-delay-s", type=float, default=0.0,
                        help="time before a failure is answered (default 0: at once)")
    parser.add_argument("--retry-after", default="1", help="a 429's Retry-After seconds (1)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (3)")
    args = parser.parse_args()
    os.environ[KEY_ENV] = "sk-bench-dummy"
    batches = [sample_batch(f"B{i:04d}", 2, {2: "FLAG-ME"}) for i in range(args.batches + 1)]
    warm_up, records = batches[0], [r for batch in batches[1:] for r in batch]
    print(f"batches {args.batches}, concurrency {args.concurrency}, answer delay {args.delay_s} s, "
          f"failures answered after {args.fault_delay_s} s, Retry-After {args.retry_after} s, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    ratios = []
    for _ in range(args.repeats):  # pairs side by side: a busy machine slows both alike
        clean = timed_run(args, 0.0, warm_up, records)
        faulty = timed_run(args, args.fault_rate, warm_up, records)
        for name, run in (("fault-free", clean), (f"{args.fault_rate:.0%} faults", faulty)):
            print(f"{name:>11}: wall {run['wall']:6.2f} s (client CPU {run['client_cpu']:.2f} s),"
                  f" {run['requests']} requests, failed calls {run['failed']}, mean in flight "
                  f"{run['mean_in_flight']:.1f} of {args.concurrency}, 90% of the batches done "
                  f"at {run['p90_done']:.2f} s (tail {run['wall'] - run['p90_done']:.2f} s), "
                  f"longest call {run['longest']['latency_s']:.2f} s "
                  f"({run['longest']['attempts']} attempts)")
            print(f"{'':>13}attempts per batch: " + ", ".join(
                f"{n}: {count}" for n, count in sorted(run["attempts"].items())))
        ratios.append(faulty["wall"] / clean["wall"])
        print(f"ratio faulty/fault-free wall: {ratios[-1]:.2f}")
    print(f"median ratio of {args.repeats} pair(s): {statistics.median(ratios):.2f} "
          f"(goal <= 1.5); load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
