"""Benchmark: reference audit plus GxP scoring of N records (default 1,000,000). Goal: < 30 s.

The records are generated first (streamed in chunks of batches, not timed as part of the goal);
the audit runs chunk by chunk (it is per batch, so chunking is exact) and the scorer then scores
all predictions against the whole manifest with 1000 bootstrap resamples.

    python bench/bench_audit_score.py [--records 1000000] [--chunk-batches 2000]
"""

from __future__ import annotations

import argparse
import resource
import time

import pandas as pd

from scoring.gxp import score_predictions
from scoring.reference_auditor import audit_records, findings_to_predictions
from synthetic.catalog import load_catalog
from synthetic.contracts import MANIFEST_COLUMNS
from synthetic.master_data import build_site_master
from synthetic.splits import SplitSpec, iter_split_chunks, load_dataset_config

STEPS_PER_BATCH = 20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--chunk-batches", type=int, default=2000)
    args = parser.parse_args()
    config = load_dataset_config()
    catalog = load_catalog()
    master = build_site_master(config.site_master, config.seed)
    spec = SplitSpec(
        name="benchmark",
        n_batches=args.records // STEPS_PER_BATCH,
        steps_min=STEPS_PER_BATCH,
        steps_max=STEPS_PER_BATCH,
        deviation_rate=0.02,
    )
    generate_s = audit_s = 0.0
    predictions, manifest, units = [], [], []
    started = time.perf_counter()
    for chunk in iter_split_chunks(
        spec, master, config.seed, chunk_batches=args.chunk_batches, catalog=catalog
    ):
        generate_s += time.perf_counter() - started
        began = time.perf_counter()
        findings = audit_records(chunk.records, master, catalog)
        batch_ids = list(dict.fromkeys(r["batch_id"] for r in chunk.records))
        predictions.extend(
            findings_to_predictions(findings, batch_ids, "reference_auditor", "benchmark")
        )
        audit_s += time.perf_counter() - began
        manifest.extend(chunk.manifest)
        units.extend((r["record_id"], r["batch_id"]) for r in chunk.records)
        started = time.perf_counter()
    n_records = len(units)
    began = time.perf_counter()
    scores = score_predictions(
        pd.DataFrame(manifest, columns=list(MANIFEST_COLUMNS)),
        pd.DataFrame(predictions),
        pd.DataFrame(units, columns=["record_id", "batch_id"]),
        n_boot=1000,
        seed=0,
    )
    score_s = time.perf_counter() - began
    print(
        f"records: {n_records:,}  batches: {spec.n_batches:,}  "
        f"labelled deviations: {len(manifest):,}"
    )
    print("| stage | seconds | records/s |")
    print("|---|---|---|")
    print(f"| generate (not in goal) | {generate_s:.1f} | {n_records / generate_s:,.0f} |")
    print(f"| reference audit | {audit_s:.1f} | {n_records / audit_s:,.0f} |")
    print(f"| scoring + 1000 bootstrap resamples | {score_s:.1f} | {n_records / score_s:,.0f} |")
    print(
        f"| audit + scoring (goal < 30 s) | {audit_s + score_s:.1f} | "
        f"{n_records / (audit_s + score_s):,.0f} |"
    )
    print(
        f"peak RSS: {peak_rss_mb():,.0f} MB; GxP1 F1 {scores.metrics['gxp1_f1'].value:.4f}, "
        f"GxP2 micro F1 {scores.metrics['gxp2_micro_f1'].value:.4f} "
        "(reference auditor: 1.0 expected)"
    )


if __name__ == "__main__":
    main()
