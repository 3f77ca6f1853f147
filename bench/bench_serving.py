"""Benchmark: the GxPLab server's dynamic batching against one request at a time.

The server (`python -m serving`) runs in its own process on loopback with one model: the
embedded base model built from configs/base_model.yaml's `embedded` settings into a temp folder
(`--pretrain-steps` shortens its pretraining only; the architecture, hence the speed, is the
configured one), or `--base-model PATH`. From this process, `--clients` concurrent clients send
`--requests` distinct greedy chat completions (`--max-tokens` each; cache off, rate limit off),
first to a server with batching, then to one started with --no-batching. Printed side by side:
wall time, throughput, p50/p95 latency, the batch sizes the server reported, and the ratios.

    .venv/bin/python bench/bench_serving.py [--requests 128] [--clients 32] [--max-tokens 32]
                                            [--base-model PATH | --pretrain-steps N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is built here; nothing to download


@dataclass
class RunResult:
    mode: str
    wall_s: float
    latencies_s: list[float]
    completion_tokens: int
    batch_sizes: Counter[int]
    failures: int

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies_s, n=100, method="inclusive")[int(q * 100) - 1]


def build_model(folder: Path, pretrain_steps: int | None) -> Path:
    from training.embedded_model import build_embedded_base_model, load_base_model_settings

    config = load_base_model_settings().embedded
    if pretrain_steps is not None:
        config = replace(config, pretrain_steps=pretrain_steps)
    began = time.perf_counter()
    info = build_embedded_base_model(folder, config)
    print(f"built the embedded base model ({info.parameter_count:,} parameters, "
          f"{config.pretrain_steps} pretraining steps) in {time.perf_counter() - began:.1f} s",
          flush=True)
    return folder


def chats(n: int) -> list[list[dict[str, str]]]:
    """Distinct audit questions of similar length (about the same padding for every batch)."""
    return [[{"role": "system", "content": "You are a GxP data-integrity auditor."},
             {"role": "user", "content": f"Batch B26-{i:04d}, step {i % 24 + 1}: the charged "
                                         f"quantity of material M-{i % 97:03d} is missing. Which "
                                         f"ALCOA+ principle does this break?"}]
            for i in range(n)]


async def _drive(url: str, headers: dict[str, str], requests: list, clients: int,
                 max_tokens: int) -> tuple[float, list[float], int, Counter[int], int]:
    latencies: list[float] = []
    tokens, sizes, failures = 0, Counter[int](), 0
    pending = list(reversed(requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal tokens, failures
        while pending:
            messages = pending.pop()
            began = time.perf_counter()
            reply = await client.post(f"{url}/v1/chat/completions", json={
                "model": "base", "messages": messages, "max_tokens": max_tokens,
                "temperature": 0})
            if reply.status_code != 200:
                failures += 1
                continue
            latencies.append(time.perf_counter() - began)
            tokens += reply.json()["usage"]["completion_tokens"]
            sizes[int(reply.headers["x-gxplab-batch-size"])] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits, headers=headers) as client:
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - began
    return wall, latencies, tokens, sizes, failures


def run_mode(mode: str, base_model: Path, args: argparse.Namespace) -> RunResult:
    """One measured run against a fresh server (resources/clients/local_server.py) with the
    response cache off, so every request generates."""
    from resources.clients.local_server import local_server

    catalog = [{"name": "base", "base_model_path": str(base_model), "adapter_path": None}]
    with local_server(catalog, settings={"cache_entries": 0},
                      server_args=["--no-batching"] if mode == "no batching" else []) as (
            api_base, token):
        url, headers = api_base.removesuffix("/v1"), {"Authorization": f"Bearer {token}"}
        work = chats(args.requests + 1)
        asyncio.run(_drive(url, headers, work[:1], 1, args.max_tokens))  # warm-up, not timed
        wall, latencies, tokens, sizes, failures = asyncio.run(
            _drive(url, headers, work[1:], args.clients, args.max_tokens))
    return RunResult(mode, wall, latencies, tokens, sizes, failures)


def report(results: list[RunResult], args: argparse.Namespace) -> None:
    from tabulate import tabulate

    rows = []
    for r in results:
        mean_batch = sum(k * v for k, v in r.batch_sizes.items()) / max(1, r.batch_sizes.total())
        rows.append([r.mode, len(r.latencies_s), r.failures, f"{r.wall_s:.2f}",
                     f"{r.throughput:.2f}", f"{r.completion_tokens / r.wall_s:.0f}",
                     f"{r.quantile(0.5):.3f}", f"{r.quantile(0.95):.3f}", f"{mean_batch:.1f}",
                     max(r.batch_sizes)])
    print(f"\n{args.requests} requests, {args.clients} concurrent clients, max_tokens "
          f"{args.max_tokens}, greedy, {os.cpu_count()} CPUs, server in its own process")
    print(tabulate(rows, headers=["mode", "ok", "failed", "wall s", "req/s", "tokens/s",
                                  "p50 s", "p95 s", "mean batch", "max batch"],
                   tablefmt="github"))
    batched, alone = results
    print(f"\nbatched / no batching: throughput x{batched.throughput / alone.throughput:.2f}, "
          f"p50 latency x{batched.quantile(0.5) / alone.quantile(0.5):.2f}, "
          f"p95 latency x{batched.quantile(0.95) / alone.quantile(0.95):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=128, help="timed requests (128)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens a request (32)")
    parser.add_argument("--base-model", type=Path,
                        help="a saved base model folder (default: build the embedded one)")
    parser.add_argument("--pretrain-steps", type=int,
                        help="pretraining steps of the built model (default: the config's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        folder = Path(tmp)
        base = args.base_model or build_model(folder / "base_model", args.pretrain_steps)
        results = [run_mode(mode, base, args) for mode in ("batching", "no batching")]
    report(results, args)


if __name__ == "__main__":
    main()
