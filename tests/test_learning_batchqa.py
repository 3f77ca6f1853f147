"""Learning regression test: small adapters trained from a small base must beat it on held-out data.

Seeded, one thread, a small embedded-architecture base (training/learning_probe.py PROBE_BASE).
Two tasks (training/learning_probe.py):
- DPO on the offline alignment-instructions pairs, a quarter held out: the held-out preference
  accuracy (DPO's implicit reward, chosen > rejected) must reach MIN_DPO_ACCURACY with a Wilson
  95% CI above 0.5, beat the base model's own ranking of the same pairs by MIN_DPO_GAIN, and the
  mean held-out reward margin must reach MIN_DPO_MARGIN;
- the batch-record Q&A SFT: the mean answer loss on the test split (summaries never trained on)
  must fall below the base's by MIN_BATCHQA_LOSS_DROP nats.
The margins come from bench/bench_learning_adapters.py (docs/benchmarks.md, "Learning regression
margins"): with the current base, 3 seeds gave accuracy 1.0 (base 0.0), margins 1.37-1.86
and answer-loss drops of 1.80-1.89 nats. Broken runs fail the DPO check: learning rate 0
(accuracy 0, margin 0); chosen and rejected swapped in half the training pairs (margin 0.40).
The batchqa loss check catches a run that does not train (learning rate 0) but not answers
shuffled against their questions (the loss falls as far: the tiny model learns the answers'
form, not yet to read the question); the DPO check covers mislabelled data. One broken run is
trained here too, to show that the check can fail.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training.embedded_model import EmbeddedModelConfig, build_embedded_base_model
from training.learning_probe import (
    BATCHQA_PROBE_SETTINGS,
    DPO_PROBE_SETTINGS,
    PROBE_BASE,
    batchqa_learning_case,
    preference_learning_case,
)

MIN_DPO_ACCURACY = 0.9
MIN_DPO_GAIN = 0.3
MIN_DPO_MARGIN = 1.0
MIN_BATCHQA_LOSS_DROP = 1.0


def dpo_learned(result: dict) -> bool:
    """The DPO criterion of this test (also applied to a broken run, which must fail it)."""
    return (result["heldout_preference_accuracy"] >= MIN_DPO_ACCURACY
            and result["heldout_preference_accuracy_ci_low"] > 0.5
            and result["heldout_preference_accuracy"]
            - result["heldout_base_preference_accuracy"] >= MIN_DPO_GAIN
            and result["heldout_mean_margin"] >= MIN_DPO_MARGIN)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("learning")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(root / "base", EmbeddedModelConfig.from_mapping(PROBE_BASE))
    yield SimpleNamespace(root=root, model=str(root / "base"))
    torch.set_num_threads(previous)


def test_dpo_ranks_held_out_pairs_better_than_its_base(base) -> None:
    result = preference_learning_case(base.model, Path(base.root) / "dpo", seed=0,
                                      settings=DPO_PROBE_SETTINGS)
    assert result["heldout_preference_pairs"] == 15
    assert dpo_learned(result), result
    assert result["heldout_preference_significant"] is True
    assert result["heldout_mean_margin"] > 0


def test_dpo_with_learning_rate_zero_fails_the_check(base) -> None:
    result = preference_learning_case(base.model, Path(base.root) / "dpo_lr0", seed=0,
                                      settings={**DPO_PROBE_SETTINGS, "learning_rate": 0.0})
    # the adapter never moves: every implicit reward is 0, no pair is ranked right
    assert result["heldout_preference_accuracy"] == 0.0
    assert not dpo_learned(result)


def test_batchqa_held_out_answer_loss_falls_below_the_base(base) -> None:
    result = batchqa_learning_case(base.model, Path(base.root) / "batchqa", seed=0,
                                   settings=BATCHQA_PROBE_SETTINGS)
    assert result["heldout_rows"] >= 50
    drop = result["base_answer_loss"] - result["tuned_answer_loss"]
    assert drop >= MIN_BATCHQA_LOSS_DROP, result
