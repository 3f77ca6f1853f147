"""Benchmark: generate N synthetic batch records (2% deviations) streamed to JSONL, then audit them.

    python bench/bench_generate.py [--records 10000 1000000] [--chunk-batches 500]
                                   [--audit-chunk 200000] [--seed N] [--keep DIR] [--no-audit]

Each size runs in its own subprocess so that its peak RSS (resource.getrusage) is its own.
Generation goes through `iter_split_chunks` (bounded memory) into `write_jsonl`. The audit then
reads the file back in chunks of whole batches (the auditor's batch rules only look inside a
batch, so chunking by batch is exact) and times `audit_records` alone and with JSON parsing; it
also checks that the findings equal the label manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MEAN_STEPS = 20  # mean records per batch over the master recipes (16..24)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _loads():
    try:
        import orjson
        return orjson.loads
    except ImportError:  # pragma: no cover
        return json.loads


def run_one(n_records: int, chunk_batches: int, audit_chunk: int, seed: int, workdir: Path,
            audit: bool) -> dict:
    from synthetic.jsonl import write_jsonl
    from synthetic.master_data import build_site_master
    from synthetic.splits import SplitSpec, iter_split_chunks, load_dataset_config

    cfg = load_dataset_config()
    master = build_site_master(cfg.site_master, seed)
    spec = SplitSpec("bench", max(1, round(n_records / MEAN_STEPS)), 16, 24, 0.02)
    records_path = workdir / f"records_{n_records}.jsonl"
    manifest: list[dict] = []
    counts = {"records": 0}

    def rows():
        for chunk in iter_split_chunks(spec, master, seed, chunk_batches=chunk_batches):
            manifest.extend(chunk.manifest)
            counts["records"] += len(chunk.records)
            yield from chunk.records

    t0 = time.perf_counter()
    sha = write_jsonl(rows(), records_path)
    write_jsonl(manifest, workdir / f"manifest_{n_records}.jsonl")
    gen_s = time.perf_counter() - t0
    out = {"records": counts["records"], "batches": spec.n_batches, "deviations": len(manifest),
           "gen_s": gen_s, "gen_rps": counts["records"] / gen_s, "gen_peak_mb": _peak_mb(),
           "file_mb": records_path.stat().st_size / 1e6, "sha256": sha}
    if not audit:
        return out

    from scoring.reference_auditor import audit_records

    loads = _loads()
    audit_s = 0.0
    found: set[tuple] = set()
    t0 = time.perf_counter()

    def run(buf: list[dict]) -> None:
        nonlocal audit_s
        t = time.perf_counter()
        findings = audit_records(buf, master)
        audit_s += time.perf_counter() - t
        found.update((f.record_id, f.deviation_type) for f in findings)

    buf: list[dict] = []
    with records_path.open("rb") as handle:
        for line in handle:
            rec = loads(line)
            if len(buf) >= audit_chunk and rec["batch_id"] != buf[-1]["batch_id"]:
                run(buf)
                buf = []
            buf.append(rec)
    if buf:
        run(buf)
    total_s = time.perf_counter() - t0
    labels = {(r["record_id"], r["deviation_type"]) for r in manifest}
    out.update({"audit_s": audit_s, "audit_rps": out["records"] / audit_s,
                "audit_total_s": total_s, "peak_mb": _peak_mb(), "exact": found == labels})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--chunk-batches", type=int, default=500)
    ap.add_argument("--audit-chunk", type=int, default=200_000,
                    help="records per audit call (rounded up to whole batches)")
    ap.add_argument("--seed", type=int, default=None, help="default: configs/datasets.yaml seed")
    ap.add_argument("--keep", type=Path, default=None, help="keep the JSONL files in this folder")
    ap.add_argument("--no-audit", action="store_true")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.seed is None:
        from synthetic.splits import load_dataset_config
        args.seed = load_dataset_config().seed
    if args.one is not None:  # child: one size, JSON result on stdout
        res = run_one(args.one, args.chunk_batches, args.audit_chunk, args.seed, args.workdir,
                      not args.no_audit)
        print(json.dumps(res))
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="gxp_bench_") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in args.records:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", str(n),
                   "--workdir", str(workdir), "--chunk-batches", str(args.chunk_batches),
                   "--audit-chunk", str(args.audit_chunk), "--seed", str(args.seed)]
            if args.no_audit:
                cmd.append("--no-audit")
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
            if proc.returncode:
                sys.stderr.write(proc.stderr)
                return proc.returncode
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    header = (f"{'records':>10} {'batches':>8} {'devs':>6} {'gen s':>7} {'gen rec/s':>10} "
              f"{'gen peak MB':>11} {'file MB':>8}")
    if not args.no_audit:
        header += f" {'audit s':>8} {'audit rec/s':>11} {'+parse s':>9} {'peak MB':>8} {'exact':>6}"
    print(header)
    for r in results:
        line = (f"{r['records']:>10} {r['batches']:>8} {r['deviations']:>6} {r['gen_s']:>7.1f} "
                f"{r['gen_rps']:>10.0f} {r['gen_peak_mb']:>11.0f} {r['file_mb']:>8.1f}")
        if not args.no_audit:
            line += (f" {r['audit_s']:>8.1f} {r['audit_rps']:>11.0f} {r['audit_total_s']:>9.1f} "
                     f"{r['peak_mb']:>8.0f} {str(r['exact']):>6}")
        print(line)
    return 0 if all(r.get("exact", True) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
