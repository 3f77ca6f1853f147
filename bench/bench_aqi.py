"""Benchmark: AQI (scoring/aqi.py) on 10,000 x 2,048 embeddings. Goal: under 2 s per layer.

Synthetic, seeded, float32 hidden states of shape (layers, n, d), like the pooled hidden states
the `aqi_scores` asset reads: n prompts, the first half safe (label 0), the second half unsafe
(label 1). Per layer a Gaussian prompt component with a decaying spectrum (sd of dimension j is
1 / sqrt(1 + j / 64), so PCA has something to find; total sd s = sqrt(sum of the variances)) and
the unsafe rows shifted along a random unit direction by (0.5 + 0.25 layer) s, so AQI grows with
depth. A "tuned" model of the same prompts is the base plus independent noise (0.3 times each
dimension's sd) with the unsafe rows shifted by another 0.2 s (delta-AQI > 0).

Measured after one untimed warm-up call of each path, the all-layer ones included (lazy imports;
on a VM the first use of fresh memory costs about 1 s per GiB, see the "memory:" line):
    aqi raw          aqi_by_layer(hidden[l:l+1], labels): one layer, float32 in (converted to
                     float64 inside, as in real use); every layer in every round
    aqi raw, all     aqi_by_layer(hidden, labels): all layers in one call; per layer = total / L
    sklearn CH       sklearn.metrics.calinski_harabasz_score(hidden[l], labels) on the same
                     float32 layer, right after aqi raw on it: the reference for the ratio column
    aqi PCA          aqi_by_layer(hidden[l:l+1], labels, pca_components=P)
    sklearn PCA      PCA(P, random_state=0).fit_transform(float64 layer): the PCA inside aqi PCA
    delta raw        delta_aqi(base[l], tuned[l], labels, n_boot=...) (one layer): n_boot=1 (the
                     fixed cost: both AQIs, the per-cluster split) and n_boot=N, back to back; the
                     bootstrap alone is the median over rounds of t(N) - t(1)
    delta PCA        the same call with pca_components=P, n_boot=N (two PCA fits, one per model)
    delta all        delta_aqi(base, tuned, labels, n_boot=N) (layer=None, all layers; the
                     resampling weights are shared by the layers); per layer = total / L
    probe matmul     one block of the bootstrap's main product, (B x n/2) counts @ (n/2 x d)
                     float64, B = scoring.aqi's block of resamples: gives the GFLOPS this machine
                     delivers at that moment (other processes lower it)
    probe weights    drawing delta_aqi's resampling counts (multinomial, both labels) for N
                     resamples, as delta_aqi does
Each measurement runs --repeats rounds and the table shows the median (and min, max) over the
samples. aqi raw and sklearn CH run on every layer in each round (layers x repeats samples); the
costlier rows run once a round, round r on layer r mod L (all layers have the same shape, so they
cost the same). delta all runs --overall-repeats times (0 skips it). Columns: s/layer = median /
layers in the call; ms/resample = median / n_boot (fixed cost included); x sklearn CH = s/layer
over sklearn CH's median. Below the table: the bootstrap alone, and a cost model (4 n d flops per
resample and layer: both models, both labels, at the probe's GFLOPS, plus the weights) set
against the measured times; then the goal check and a check that AQI's CHI equals sklearn's CH.

Run time on 2 cores with the defaults: 100-150 s at a load average of 1-3 (most of it the
bootstrap at d = 2,048 and the PCA fits), up to 5 minutes under heavy load; --n-boot 200 or
--overall-repeats 0 cut it down.

    .venv/bin/python bench/bench_aqi.py [--n 10000] [--d 2048] [--layers 4] [--n-boot 1000]
        [--pca 64] [--repeats 3] [--overall-repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import numpy as np
import scipy
import sklearn
from sklearn.decomposition import PCA
from sklearn.metrics import calinski_harabasz_score
from threadpoolctl import threadpool_info

from scoring.aqi import _BLOCK_CELLS, aqi_by_layer, delta_aqi  # the block size delta_aqi uses

GOAL_S_PER_LAYER = 2.0  # issue: AQI on 10,000 x 2,048 embeddings in under 2 s per layer
TUNED_NOISE = 0.3  # sd of the tuned model's own noise, relative to each dimension's sd
TUNED_EXTRA_SHIFT = 0.2  # the tuned model's extra separation, in units of the total sd


def make_states(
    n: int, d: int, layers: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, tuned, labels): float32 (layers, n, d) hidden states of the same n prompts."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.array([0, 1]), [n // 2, n - n // 2])
    unsafe = labels == 1
    scale = (1.0 / np.sqrt(1.0 + np.arange(d) / 64.0)).astype(np.float32)
    base = np.empty((layers, n, d), dtype=np.float32)
    tuned = np.empty_like(base)
    total_sd = float(np.sqrt(np.sum(scale.astype(float) ** 2)))  # sqrt of E||x - c||^2
    for layer in range(layers):
        direction = rng.standard_normal(d)
        direction = (direction / np.linalg.norm(direction)).astype(np.float32)
        separation = total_sd * (0.5 + 0.25 * layer)
        base[layer] = rng.standard_normal((n, d), dtype=np.float32) * scale
        base[layer, unsafe] += separation * direction
        noise = rng.standard_normal((n, d), dtype=np.float32) * (TUNED_NOISE * scale)
        tuned[layer] = base[layer] + noise
        tuned[layer, unsafe] += TUNED_EXTRA_SHIFT * total_sd * direction
    return base, tuned, labels


def timed(call: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def draw_weights(sizes: list[int], n_boot: int, block: int, seed: int) -> None:
    """delta_aqi's resampling counts for n_boot resamples, drawn in the same blocks."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        [rng.multinomial(m, np.full(m, 1.0 / m), size=size).astype(float) for m in sizes]


def blas_summary() -> str:
    pools = [f"{p.get('internal_api')} {p.get('num_threads')} threads" for p in threadpool_info()]
    return ", ".join(dict.fromkeys(pools)) or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="prompts (half safe, half unsafe)")
    parser.add_argument("--d", type=int, default=2048, help="embedding width")
    parser.add_argument("--layers", type=int, default=4, help="layers L")
    parser.add_argument("--n-boot", type=int, default=1000, help="delta_aqi bootstrap resamples")
    parser.add_argument("--pca", type=int, default=64, help="pca_components for the PCA rows")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every measurement")
    parser.add_argument(
        "--overall-repeats", type=int, default=None,
        help="rounds of delta_aqi over all layers (default: --repeats; 0 skips it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic states")
    args = parser.parse_args()
    if args.n_boot < 2 or args.repeats < 1 or args.layers < 1 or args.n < 4:
        parser.error("need --n-boot >= 2, --repeats >= 1, --layers >= 1 and --n >= 4")
    overall_repeats = args.repeats if args.overall_repeats is None else args.overall_repeats
    L, N, P, n, d = args.layers, args.n_boot, args.pca, args.n, args.d

    load_start = os.getloadavg()
    wall_start = time.perf_counter()
    elapsed, (base, tuned, labels) = timed(lambda: make_states(n, d, L, args.seed))
    sizes = [int(np.sum(labels == i)) for i in (0, 1)]
    block = max(1, _BLOCK_CELLS // max(n, d))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, numpy "
        f"{np.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, "
        f"BLAS: {blas_summary()}"
    )
    print(
        f"states: base and tuned float32 {base.shape} each (n={n}: {sizes[0]} safe, "
        f"{sizes[1]} unsafe; d={d}), built in {elapsed:.1f} s; n_boot={N} (blocks of "
        f"{block}), PCA {P}, {args.repeats} rounds, seed {args.seed}"
    )

    # Warm-up, untimed: lazy imports, and memory. On this machine (a VM) the first use of fresh
    # memory is slow (the line below shows it); once the process has touched its high-water mark,
    # freed and reallocated memory is fast. So every path runs once, the largest calls included.
    first, again = (timed(lambda: np.ones(2**27))[0] for _ in range(2))
    print(f"memory: first touch of 1 GiB {first:.2f} s, again {again:.2f} s")
    aqi_by_layer(base, labels)
    calinski_harabasz_score(base[0], labels)
    aqi_by_layer(base[:1], labels, pca_components=P)
    delta_aqi(base, tuned, labels, n_boot=2)
    rng = np.random.default_rng(args.seed)
    counts = rng.multinomial(sizes[0], np.full(sizes[0], 1.0 / sizes[0]), size=block).astype(float)
    centred = rng.standard_normal((sizes[0], d))

    times: dict[str, list[float]] = {}
    values: dict[str, list[float]] = {}
    boot_alone: list[float] = []

    def record(name: str, function: Callable[..., object], *args: object, **kw: object) -> object:
        seconds, result = timed(partial(function, *args, **kw))
        times.setdefault(name, []).append(seconds)
        return result

    for r in range(args.repeats):
        for layer in range(L):
            raw = record("aqi_raw", aqi_by_layer, base[layer : layer + 1], labels)
            chi = record("sk_ch", calinski_harabasz_score, base[layer], labels)
            values.setdefault("chi_rel_diff", []).append(abs(raw[0].chi - chi) / chi)
            values.setdefault(f"aqi_raw_{layer}", []).append(raw[0].aqi)
        record("aqi_raw_all", aqi_by_layer, base, labels)
        layer = r % L
        pair = (base[layer], tuned[layer], labels)
        pca = record("aqi_pca", aqi_by_layer, base[layer : layer + 1], labels, pca_components=P)
        values.setdefault(f"aqi_pca_{layer}", []).append(pca[0].aqi)
        record("sk_pca", PCA(n_components=P, random_state=0).fit_transform,
               base[layer].astype(np.float64))
        record("delta_raw_1", delta_aqi, *pair, n_boot=1)
        delta = record("delta_raw_N", delta_aqi, *pair, n_boot=N, seed=r)
        boot_alone.append(times["delta_raw_N"][-1] - times["delta_raw_1"][-1])
        values.setdefault(f"delta_raw_{layer}", []).append(delta.estimate)
        values.setdefault("delta_raw_width", []).append(delta.high - delta.low)
        record("delta_pca_N", delta_aqi, *pair, n_boot=N, seed=r, pca_components=P)
        record("probe_matmul", np.matmul, counts, centred)
        record("probe_weights", draw_weights, sizes, N, block, r)
    for r in range(overall_repeats):
        overall = record("delta_all_N", delta_aqi, base, tuned, labels, n_boot=N, seed=r)
        values.setdefault("delta_all", []).append(overall.estimate)

    med = {name: statistics.median(samples) for name, samples in times.items()}
    ch = med["sk_ch"]
    rows = [
        # key, label, layers in the call (None: not a per-layer figure), resamples
        ("aqi_raw", "aqi_by_layer raw, one layer", 1, 0),
        ("aqi_raw_all", f"aqi_by_layer raw, {L} layers in one call", L, 0),
        ("sk_ch", "sklearn calinski_harabasz_score, one layer", 1, 0),
        ("aqi_pca", f"aqi_by_layer PCA {P}, one layer", 1, 0),
        ("sk_pca", f"  of which: sklearn PCA({P}).fit_transform", 1, 0),
        ("delta_raw_1", "delta_aqi raw, one layer, n_boot=1 (fixed cost)", 1, 0),
        ("delta_raw_N", f"delta_aqi raw, one layer, n_boot={N}", 1, N),
        ("delta_pca_N", f"delta_aqi PCA {P}, one layer, n_boot={N}", 1, N),
        ("delta_all_N", f"delta_aqi raw, {L} layers (layer=None), n_boot={N}", L, N),
        ("probe_matmul", f"probe: ({block} x {sizes[0]}) @ ({sizes[0]} x {d}) float64", None, 0),
        ("probe_weights", f"probe: resampling weights for {N} resamples", None, 0),
    ]
    head = (f"{'measurement':<54}{'samples':>8}{'median s':>10}{'min s':>8}{'max s':>8}"
            f"{'s/layer':>9}{'ms/resample':>12}{'x sklearn CH':>13}")
    print(head)
    print("-" * len(head))
    for key, label, per, resamples in rows:
        if key not in times:
            continue
        samples, m = times[key], med[key]
        per_layer = f"{m / per:.3f}" if per else ""
        ratio = f"{m / per / ch:.1f}" if per else ""
        per_resample = f"{1000 * m / resamples:.2f}" if resamples else ""
        print(
            f"{label:<54}{len(samples):>8}{m:>10.3f}{min(samples):>8.3f}{max(samples):>8.3f}"
            f"{per_layer:>9}{per_resample:>12}{ratio:>13}"
        )
    print("-" * len(head))

    alone = statistics.median(boot_alone)
    gflops = 2 * block * sizes[0] * d / med["probe_matmul"] / 1e9
    matmul_s = 4 * n * d * N / (gflops * 1e9)  # per layer: 2 models x 2 labels x 2 n_i d flops
    print(
        f"bootstrap alone (raw, one layer): median of t(n_boot={N}) - t(n_boot=1) over the rounds "
        f"{alone:.3f} s = {1000 * alone / N:.2f} ms per resample (both models)"
    )
    print(
        f"cost model: the probe ran at {gflops:.0f} GFLOPS; {N} resamples x 4 n d = "
        f"{4 * n * d * N / 1e9:.1f} GFLOP per layer = {matmul_s:.2f} s, plus the weights "
        f"{med['probe_weights']:.2f} s per call -> one layer {matmul_s + med['probe_weights']:.2f}"
        f" s (measured {alone:.2f} s)"
        + (f"; {L} layers in one call: {L} x {med['delta_raw_1']:.2f} s fixed + {L} x "
           f"{matmul_s:.2f} s + {med['probe_weights']:.2f} s = "
           f"{L * (med['delta_raw_1'] + matmul_s) + med['probe_weights']:.2f} s (measured "
           f"{med['delta_all_N']:.2f} s)" if "delta_all_N" in med else "")
    )

    per_layer = {"raw": "aqi_raw", f"PCA {P}": "aqi_pca"}
    for name, key in per_layer.items():
        verdict = "met" if med[key] < GOAL_S_PER_LAYER else "NOT met"
        print(
            f"goal: aqi_by_layer {name} under {GOAL_S_PER_LAYER:.0f} s per layer: median "
            f"{med[key]:.3f} s (min {min(times[key]):.3f}, max {max(times[key]):.3f}) -> {verdict}"
        )
    print(
        "check: |AQI's CHI - sklearn CH| / CH at most "
        f"{max(values['chi_rel_diff']):.1e} over every layer and round"
    )
    aqi_raw = [statistics.median(values[f"aqi_raw_{layer}"]) for layer in range(L)]
    aqi_pca = {k.rsplit("_", 1)[1]: v[0] for k, v in values.items() if k.startswith("aqi_pca_")}
    deltas = {k.rsplit("_", 1)[1]: v[0] for k, v in values.items()
              if k.startswith("delta_raw_") and k[-1].isdigit()}
    print(
        "values: AQI raw per layer " + ", ".join(f"{a:.4f}" for a in aqi_raw)
        + "; AQI PCA per layer " + ", ".join(f"{k}: {v:.4f}" for k, v in sorted(aqi_pca.items()))
        + "; delta-AQI raw per layer "
        + ", ".join(f"{k}: {v:+.4f}" for k, v in sorted(deltas.items()))
        + f" (median CI width {statistics.median(values['delta_raw_width']):.4f})"
        + (f"; delta-AQI over {L} layers {values['delta_all'][0]:+.4f}"
           if "delta_all" in values else "")
    )
    load_end = os.getloadavg()
    print(
        f"wall {time.perf_counter() - wall_start:.0f} s; load average (1, 5, 15 min) at start "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, at end "
        f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}"
    )


if __name__ == "__main__":
    main()
