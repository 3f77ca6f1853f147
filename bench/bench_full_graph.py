"""Wall time of `gxplab benchmark` cold, then again with nothing changed (goal: the second run
skips all work: every step "up to date, skipped").

Both runs go into one fresh DAGSTER_HOME, artifact folder and SQLite warehouse, one after the
other in this process's environment, so the ratio compares like with like.

Run: `.venv/bin/python bench/bench_full_graph.py` (the whole graph, about 13 min cold on 2 cores)
or `.venv/bin/python bench/bench_full_graph.py --no-training` (the GxP benchmark alone).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GXPLAB = Path(sys.executable).parent / "gxplab"
STEP = re.compile(r"^  (\S.*?)\s+(ok|FAILED|up to date, skipped)\b", re.MULTILINE)


def run_benchmark(env: dict, extra: list[str]) -> tuple[float, dict[str, int]]:
    """One `gxplab benchmark`: its wall time and how many steps ran, failed or were skipped."""
    start = time.perf_counter()
    result = subprocess.run([str(GXPLAB), "benchmark", *extra], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"gxplab benchmark failed (rc {result.returncode}):\n{result.stderr[-3000:]}")
    counts = {"ok": 0, "FAILED": 0, "up to date, skipped": 0}
    for _, outcome in STEP.findall(result.stdout):
        counts[outcome] += 1
    return wall, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-training", action="store_true",
                        help="the GxP benchmark alone, not the models and evaluation stages")
    args = parser.parse_args()
    extra = ["--no-training"] if args.no_training else []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DAGSTER_HOME": f"{tmp}/dagster_home",
               "GXPLAB_ARTIFACTS_DIR": f"{tmp}/artifacts",
               "GXPLAB_WAREHOUSE_URL": f"sqlite:///{tmp}/warehouse.sqlite",
               "GXPLAB_LLM_CACHE_DIR": f"{tmp}/llm_cache", "HF_HUB_OFFLINE": "1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DAGSTER_DISABLE_TELEMETRY": "1"}
        env.pop("GXPLAB_DAGSTER_PG_URL", None)
        subprocess.run([str(GXPLAB), "init-instance"], env=env, check=True, capture_output=True)
        cold, cold_steps = run_benchmark(env, extra)
        warm, warm_steps = run_benchmark(env, extra)
    graph = "GxP benchmark (--no-training)" if args.no_training else "whole graph"
    print(f"full embedded graph: {graph}, 2 runs of `gxplab benchmark {' '.join(extra)}`")
    print(f"  cold:             {cold:7.1f} s  steps {cold_steps}")
    print(f"  nothing changed:  {warm:7.1f} s  steps {warm_steps}")
    print(f"  ratio cold/nothing-changed: {cold / warm:.1f}x")
    skipped_all = warm_steps["ok"] == 0 and warm_steps["FAILED"] == 0
    print(f"  goal (second run skips all work): {'met' if skipped_all else 'NOT met'}")


if __name__ == "__main__":
    main()
