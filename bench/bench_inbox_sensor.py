"""Cost of one inbox_sensor tick with 10,000 files in the inbox (goal: under 5 s per tick).

The inbox holds 9,990 files already seen (per the cursor: records files still waiting for their
labels, and stray files), plus 5 new valid pairs (10 files) that the tick validates (readers,
record schema, labels against the reference auditor) and accepts. One tick = `inbox_sensor`
through `build_sensor_context` on a test instance; median of 3, each on a fresh set of new pairs,
with the partitions of the previous tick added between ticks as the daemon does.
One more tick without new pairs shows the cost of an idle tick.
Run: `.venv/bin/python bench/bench_inbox_sensor.py`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402

from sensors.inbox import inbox_sensor  # noqa: E402
from synthetic.catalog import load_catalog  # noqa: E402
from synthetic.jsonl import dumps_jsonl  # noqa: E402
from synthetic.master_data import build_site_master  # noqa: E402
from synthetic.splits import SplitSpec, generate_split, load_dataset_config  # noqa: E402

N_FILES, N_NEW_PAIRS, REPEATS, GOAL_S = 10_000, 5, 3, 5.0


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def main() -> None:
    cfg = load_dataset_config()
    master = build_site_master(cfg.site_master, cfg.seed)
    split = generate_split(SplitSpec("train", 3, 4, 6, 0.3), master, 7, load_catalog())
    records, labels = dumps_jsonl(split.records), dumps_jsonl(split.manifest)
    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        inbox = Path(tmp)
        os.environ["GXPLAB_INBOX_DIR"] = str(inbox)
        n_seen = N_FILES - 2 * N_NEW_PAIRS
        for i in range(n_seen):  # half waiting for labels, half not batch files at all
            path = inbox / (f"old-{i:05d}.records.jsonl" if i % 2 else f"note-{i:05d}.txt")
            path.write_bytes(records[:200])
            _age(path, 3600)
        cursor = inbox_sensor(dg.build_sensor_context(instance=instance)).cursor  # all seen
        timings = []
        for repeat in range(REPEATS):
            for j in range(N_NEW_PAIRS):
                for kind, data in (("records", records), ("labels", labels)):
                    path = inbox / f"new-{repeat}-{j}.{kind}.jsonl"
                    path.write_bytes(data)
                    _age(path, 60)
            n_files = sum(1 for _ in os.scandir(inbox))
            start = time.perf_counter()
            result = inbox_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
            timings.append(time.perf_counter() - start)
            accepted = [r for r in result.run_requests if r.job_name == "gxp_inbox_job"]
            assert len(accepted) == N_NEW_PAIRS, result
            instance.add_dynamic_partitions("inbox_batch", [r.partition_key for r in accepted])
            cursor = result.cursor
            print(f"tick {repeat + 1}: {n_files} entries in the inbox, {len(accepted)} pairs "
                  f"accepted, {timings[-1]:.3f} s")
        start = time.perf_counter()
        idle = inbox_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
        idle_s = time.perf_counter() - start
        assert not idle.run_requests, idle
        print(f"tick without new pairs ({REPEATS * N_NEW_PAIRS} accepted batches): {idle_s:.3f} s")
        median = statistics.median(timings)
        verdict = "meets" if median < GOAL_S else "MISSES"
        print(f"inbox_sensor tick, {N_FILES} files ({n_seen} seen + {N_NEW_PAIRS} new pairs): "
              f"median {median:.3f} s of {REPEATS} ({verdict} the {GOAL_S:g} s goal)")


if __name__ == "__main__":
    main()
