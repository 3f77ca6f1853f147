"""Wall time of `gxplab benchmark` cold, then again with nothing changed (goal: the second run
skips all work: every step "up to date, skipped"), and the cold run's time per step.

Both runs go into one fresh DAGSTER_HOME, artifact folder and SQLite warehouse, one after the
other in this process's environment, so the ratio compares like with like.

Run: `.venv/bin/python bench/bench_full_graph.py` (the whole graph, about 15 min cold on 2 cores)
or `.venv/bin/python bench/bench_full_graph.py --no-training` (the GxP benchmark alone);
`--cold-only` skips the second run. The per-step table lists every step's seconds, longest first,
and the totals per stage (models, rag, evaluation, GxP candidates).
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
TIMED_STEP = re.compile(r"^  (\S.*?)\s+(?:ok|FAILED)\s+([0-9.]+) s$", re.MULTILINE)


def step_times(stdout: str) -> list[tuple[str, float]]:
    """(label, seconds) of every step that ran, as `gxplab benchmark` printed them."""
    return [(label, float(seconds)) for label, seconds in TIMED_STEP.findall(stdout)]


def stage_of(label: str) -> str:
    """The stage a step label belongs to: its prefix before ':' (models, rag, evaluation),
    `gxp: <model>` for a candidate's predictions and scores, else `data`."""
    if ":" in label.split("[")[0]:
        return label.split(":")[0]
    if "|" in label:
        return "gxp: " + label.split("[", 1)[1].split("|")[0]
    return "data"


def print_step_table(steps: list[tuple[str, float]]) -> None:
    """The per-step breakdown, longest first, then the total per stage."""
    total = sum(seconds for _, seconds in steps) or 1.0
    print("\nper step (cold run), longest first:")
    for label, seconds in sorted(steps, key=lambda item: -item[1]):
        print(f"  {label:<56} {seconds:7.1f} s  {seconds / total:6.1%}")
    stages: dict[str, float] = {}
    for label, seconds in steps:
        stages[stage_of(label)] = stages.get(stage_of(label), 0.0) + seconds
    print("\nper stage:")
    for stage, seconds in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"  {stage:<56} {seconds:7.1f} s  {seconds / total:6.1%}")


def run_benchmark(env: dict, extra: list[str]) -> tuple[float, dict[str, int], str]:
    """One `gxplab benchmark`: its wall time, how many steps ran, failed or were skipped, and
    its output."""
    start = time.perf_counter()
    result = subprocess.run([str(GXPLAB), "benchmark", *extra], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"gxplab benchmark failed (rc {result.returncode}):\n{result.stderr[-3000:]}")
    counts = {"ok": 0, "FAILED": 0, "up to date, skipped": 0}
    for _, outcome in STEP.findall(result.stdout):
        counts[outcome] += 1
    return wall, counts, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-training", action="store_true",
                        help="the GxP benchmark alone, not the models and evaluation stages")
    parser.add_argument("--cold-only", action="store_true",
                        help="one cold run only (no second, nothing-changed run)")
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
        cold, cold_steps, cold_out = run_benchmark(env, extra)
        if not args.cold_only:
            warm, warm_steps, _ = run_benchmark(env, extra)
    graph = "GxP benchmark (--no-training)" if args.no_training else "whole graph"
    print(f"full embedded graph: {graph}, `gxplab benchmark {' '.join(extra)}`")
    print(f"  cold:             {cold:7.1f} s  steps {cold_steps}")
    print_step_table(step_times(cold_out))
    if args.cold_only:
        return
    print(f"  nothing changed:  {warm:7.1f} s  steps {warm_steps}")
    print(f"  ratio cold/nothing-changed: {cold / warm:.1f}x")
    skipped_all = warm_steps["ok"] == 0 and warm_steps["FAILED"] == 0
    print(f"  goal (second run skips all work): {'met' if skipped_all else 'NOT met'}")


if __name__ == "__main__":
    main()
