"""Spread of the record-audit learning check over seeds (training/audit_learning.py).

Prints, per seed, the held-out record F1 / accuracy / type recall of the tiny base model and of
the model after full fine-tuning, their difference and the training time. The margin asserted by
tests/test_learning_gxp_audit.py is chosen from this spread (docs/benchmarks.md).

    PYTHONPATH=. .venv/bin/python bench/bench_learning.py --seeds 0 1 2
    PYTHONPATH=. .venv/bin/python bench/bench_learning.py --seeds 0 --lm-loss-weight 0
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from training.audit_learning import LearningSetup, learning_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=LearningSetup.steps)
    parser.add_argument("--lm-loss-weight", type=float, default=LearningSetup.lm_loss_weight)
    parser.add_argument("--learning-rate", type=float, default=LearningSetup.learning_rate)
    parser.add_argument("--deviation-rate", type=float, default=LearningSetup.deviation_rate)
    args = parser.parse_args(argv)
    setup = dataclasses.replace(LearningSetup(), steps=args.steps,
                                lm_loss_weight=args.lm_loss_weight,
                                learning_rate=args.learning_rate,
                                deviation_rate=args.deviation_rate)
    print(f"setup: {setup}")
    print("seed | base F1 | tuned F1 | F1 gain | base acc | tuned acc | tuned type recall | "
          "record LM loss base -> tuned | train s (wall / cpu)")
    for seed in args.seeds:
        started = time.perf_counter()
        result = learning_run(seed, setup)
        base, tuned, train = result["base"], result["tuned"], result["train"]
        print(f"{seed} | {base['record_f1']:.3f} | {tuned['record_f1']:.3f} | "
              f"{tuned['record_f1'] - base['record_f1']:+.3f} | {base['record_accuracy']:.3f} | "
              f"{tuned['record_accuracy']:.3f} | {tuned['type_recall']:.3f} | "
              f"{base['lm_loss']:.2f} -> {tuned['lm_loss']:.2f} | "
              f"{train['wall_s']:.0f} / {train['cpu_s']:.0f} "
              f"(total {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
