"""Benchmark: how reliably the small adapters learn, and how broken runs look, on a small base.

The margins of tests/test_learning_batchqa.py come from this spread. On a small embedded-
architecture base model (training/learning_probe.py PROBE_BASE: hidden 64, 2 layers, built here
in seconds) it runs, per seed (--seeds):
- dpo: DPO (training/preference.py) on the offline alignment-instructions pairs, a quarter held
  out; held-out preference accuracy (implicit reward, chosen > rejected) with its Wilson 95% CI,
  and the base model's own ranking (log-odds) of the same pairs;
- batchqa: the batch-record Q&A SFT on 160 train rows; the mean answer loss on the test split's
  questions (summaries never trained on) of base and tuned model, and answer matching (own answer
  more likely than another question type's answer).
Then the broken controls at the first seed: DPO with chosen/rejected swapped in half of the
training pairs (`flipped`) and with learning rate 0 (`lr0`); batchqa with answers shuffled
against their questions (`shuffled`) and with learning rate 0.

    .venv/bin/python bench/bench_learning_adapters.py [--seeds 0,1,2] [--work-dir DIR]
        [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_cases(work: Path, seeds: list[int]) -> list[dict[str, Any]]:
    """Every case's result row: task, case, seed and the probe's numbers."""
    import torch

    from training.embedded_model import EmbeddedModelConfig, build_embedded_base_model
    from training.learning_probe import (
        BATCHQA_PROBE_SETTINGS,
        DPO_PROBE_SETTINGS,
        PROBE_BASE,
        batchqa_learning_case,
        preference_learning_case,
    )

    torch.set_num_threads(1)
    base = work / "base"
    build_embedded_base_model(base, EmbeddedModelConfig.from_mapping(PROBE_BASE))
    cases: list[tuple[str, str, int, dict[str, Any]]] = []
    for seed in seeds:
        cases += [("dpo", "ok", seed, {}), ("batchqa", "ok", seed, {})]
    first = seeds[0]
    cases += [("dpo", "flipped", first, {"flip_labels": True}),
              ("dpo", "lr0", first, {"settings": {**DPO_PROBE_SETTINGS, "learning_rate": 0.0}}),
              ("batchqa", "shuffled", first, {"shuffle_answers": True}),
              ("batchqa", "lr0", first,
               {"settings": {**BATCHQA_PROBE_SETTINGS, "learning_rate": 0.0}})]
    rows = []
    for task, case, seed, extra in cases:
        out = work / f"{task}-{case}-{seed}"
        began = time.perf_counter()
        if task == "dpo":
            result = preference_learning_case(str(base), out, seed=seed,
                                              **{"settings": DPO_PROBE_SETTINGS, **extra})
        else:
            result = batchqa_learning_case(str(base), out, seed=seed,
                                           **{"settings": BATCHQA_PROBE_SETTINGS, **extra})
        rows.append({"task": task, "case": case, "seed": seed,
                     "case_wall_s": time.perf_counter() - began,
                     **{k: v for k, v in result.items() if not k.endswith("_rule")}})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per case with the numbers the test's margins are chosen from."""
    lines = ["| task | case | seed | base | tuned | tuned - base | tuned CI (95%) / more | steps | "
             "case s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["task"] == "dpo":
            base, tuned = r["heldout_base_preference_accuracy"], r["heldout_preference_accuracy"]
            ci = (f"[{r['heldout_preference_accuracy_ci_low']:.3f}, "
                  f"{r['heldout_preference_accuracy_ci_high']:.3f}], margin "
                  f"{r['heldout_mean_margin']:.2f}")
            label = "held-out preference accuracy"
        else:
            base, tuned = r["base_answer_loss"], r["tuned_answer_loss"]
            ci = (f"matching {r['base_answer_matching']:.3f} -> "
                  f"{r['tuned_answer_matching']:.3f}")
            label = "held-out answer loss"
        lines.append(f"| {r['task']} ({label}) | {r['case']} | {r['seed']} | {base:.3f} | "
                     f"{tuned:.3f} | {tuned - base:+.3f} | {ci} | {int(r['steps'])} | "
                     f"{r['case_wall_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--json", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        parser.error("--seeds: give at least one seed")
    with tempfile.TemporaryDirectory(prefix="bench_learning_") as tmp:
        rows = run_cases(args.work_dir or Path(tmp), seeds)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
