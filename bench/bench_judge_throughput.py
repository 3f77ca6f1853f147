"""Benchmark: AMR LLM-judge throughput against a local server with a fixed 300 ms answer time.

2,000 judgements (distinct answers to the AMR cases) at concurrency 50, through the real path:
`scoring.judge.LLMJudge` -> `resources.clients.llm.LLMClient` -> litellm -> HTTP. Ideal wall time
= 2000 x 0.3 / 50 = 12 s; goal wall/ideal <= 1.2. Then the same judgements again from the disk
cache; goal: under 5% of the first run, with no request reaching the server. The server runs in
its own process (it must not share the client's GIL); litellm is warmed up by one request first.

    .venv/bin/python bench/bench_judge_throughput.py [--calls 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fake_openai_server import FakeReply, fixed  # noqa: E402
from local_server import ServerStats, served  # noqa: E402

from resources.clients.llm import LLMClient  # noqa: E402
from scoring.judge import LLMJudge, load_judge_config, summarize_scores  # noqa: E402
from scoring.model_registry import parse_model_entry  # noqa: E402
from synthetic.amr_cases import generate_amr_cases, reference_answer  # noqa: E402

KEY_ENV = "GXPLAB_BENCH_KEY"


def judge_responder(delay_s: float):
    """Runs in the server process: a judge that gives the same 1-5 scores after `delay_s`."""
    names = [metric.name for metric in load_judge_config().metrics]
    content = json.dumps({"scores": dict.fromkeys(names, 4), "justification": "Checked."})
    return fixed(FakeReply(content=content, delay_s=delay_s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="judgements (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests in flight (50)")
    parser.add_argument("--delay-s", type=float, default=0.3, help="server answer time (0.3 s)")
    args = parser.parse_args()
    os.environ[KEY_ENV] = "sk-bench-dummy"
    cases = generate_amr_cases(240)
    chosen = [cases[i % len(cases)] for i in range(args.calls + 1)]
    # distinct answers, so that no judgement of the first run is a cache hit
    answers = [f"{reference_answer(case)}\n(answer {i})" for i, case in enumerate(chosen)]
    with served(judge_responder, delay_s=args.delay_s) as (base_url, server):
        wall, summary, cached_wall, cached = _run(args, base_url, chosen, answers)
    report(args, wall, summary, cached_wall, cached, server)


def _run(args, base_url: str, chosen: list[dict], answers: list[str]):
    model = parse_model_entry({
        "id": "bench-judge", "kind": "litellm", "litellm_model": "openai/bench-judge",
        "api_base": base_url, "api_key_env": KEY_ENV, "required_env": [KEY_ENV],
        "response_format": "json_object", "max_tokens": 256}, {}, "bench")

    with tempfile.TemporaryDirectory() as cache_dir:
        client = LLMClient(cache_dir=cache_dir, max_concurrency=args.concurrency, pricing={})
        judge = LLMJudge(client, model)

        def timed(case_list: list[dict], texts: list[str]) -> tuple[float, dict]:
            started = time.perf_counter()
            scores = judge.score_many(case_list, texts)
            return time.perf_counter() - started, summarize_scores(scores)

        timed(chosen[:1], answers[:1])  # imports litellm and opens its HTTP client; not timed
        wall, summary = timed(chosen[1:], answers[1:])
        cached_wall, cached = timed(chosen[1:], answers[1:])
        client.close()
    return wall, summary, cached_wall, cached


def report(args, wall: float, summary: dict, cached_wall: float, cached: dict,
           server: ServerStats) -> None:
    ideal = args.calls * args.delay_s / args.concurrency
    print(f"judgements {args.calls}, concurrency {args.concurrency}, answer delay {args.delay_s} s,"
          f" server in its own process, {os.cpu_count()} CPUs")
    print(f"first run : wall {wall:.2f} s, ideal {ideal:.2f} s, wall/ideal {wall / ideal:.3f} "
          f"(goal <= 1.2); judged {summary['n_judged']}, failed {summary['n_failed']}, "
          f"mean reward {summary['mean_weighted_reward']:.3f}")
    print(f"cache run : wall {cached_wall:.3f} s = {100 * cached_wall / wall:.2f}% of the first "
          f"run (goal < 5%); judged {cached['n_judged']}, failed {cached['n_failed']}")
    print(f"server    : {server.n_requests} requests in all (1 warm-up + {args.calls}: none "
          f"from the cache run), max in flight {server.max_in_flight}")


if __name__ == "__main__":
    main()
