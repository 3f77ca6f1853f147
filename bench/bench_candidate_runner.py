"""Benchmark: candidate-runner throughput against a local server with a fixed 200 ms answer time.

500 batches (two tiny records each) at concurrency 16: ideal wall time = 500 x 0.2 / 16 s; goal
wall/ideal <= 1.2. Then the same run again from the disk cache; goal: under 5% of the first run.
litellm is imported and warmed up by one request before timing (a one-off cost per process).

    .venv/bin/python bench/bench_candidate_runner.py [--batches 500] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fake_openai_server import flag_marker, sample_batch, sample_master  # noqa: E402
from local_server import served  # noqa: E402

from resources.clients.llm import LLMClient  # noqa: E402
from scoring.audit_prompt import load_prompt  # noqa: E402
from scoring.candidate_runner import run_llm_candidate  # noqa: E402
from scoring.model_registry import CandidateModel  # noqa: E402
from synthetic.catalog import load_catalog  # noqa: E402

KEY_ENV = "GXPLAB_BENCH_KEY"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delay-s", type=float, default=0.2)
    args = parser.parse_args()
    os.environ[KEY_ENV] = "sk-bench-dummy"
    batches = [sample_batch(f"B{i:04d}", 2, {2: "FLAG-ME"}) for i in range(args.batches + 1)]
    warm_up, records = batches[0], [r for batch in batches[1:] for r in batch]
    prompt, catalog, master = load_prompt(), load_catalog(), sample_master()
    with served(flag_marker, delay_s=args.delay_s) as (base_url, server), \
            tempfile.TemporaryDirectory() as cache_dir:
        model = CandidateModel(id="bench-model", kind="litellm", litellm_model="openai/bench-model",
                               api_base=base_url, api_key_env=KEY_ENV, required_env=(KEY_ENV,),
                               max_tokens=512)
        client = LLMClient(cache_dir=cache_dir, max_concurrency=args.concurrency, pricing={})

        def timed_run(batch_records: list[dict]) -> tuple[float, dict]:
            started = time.perf_counter()
            run = run_llm_candidate(model, batch_records, master, split="benchmark",
                                    client=client, prompt=prompt, catalog=catalog)
            return time.perf_counter() - started, run.summary

        timed_run(warm_up)  # imports litellm and opens its HTTP client; not timed
        wall, summary = timed_run(records)
        cached_wall, cached_summary = timed_run(records)
        client.close()

    ideal = args.batches * args.delay_s / args.concurrency
    print(f"batches {args.batches}, concurrency {args.concurrency}, answer delay {args.delay_s} s,"
          f" server in its own process, {os.cpu_count()} CPUs")
    print(f"first run : wall {wall:.2f} s, ideal {ideal:.2f} s, wall/ideal {wall / ideal:.3f} "
          f"(goal <= 1.2); failed {summary['n_failed_calls']}, "
          f"invalid {summary['n_invalid_outputs']}, findings {summary['n_findings']}, "
          f"latency p50 {summary['latency_p50_s']:.3f} s p95 {summary['latency_p95_s']:.3f} s")
    print(f"cache run : wall {cached_wall:.3f} s = {100 * cached_wall / wall:.2f}% of the first "
          f"run (goal < 5%); cached {cached_summary['n_cached']}/{args.batches}")
    print(f"server    : {server.n_requests} requests in all (1 warm-up + {args.batches}: none "
          f"from the cache run), max in flight {server.max_in_flight}")


if __name__ == "__main__":
    main()
