"""The record audit learns: a tiny base model, fully fine-tuned (training/audit_sft.py) on
generated deviation-rich records with the LM loss on the record, beats itself before training on
held-out generated records by a clear margin, and has learned the records' text (the LM loss
on the prompt). Fails if learning broke: no rebalancing (2% deviating records) or a learning
rate of 0 leave the model at "no findings"; without the LM loss the records' loss stays high.
The margin comes from bench/bench_learning.py's spread over seeds (docs/benchmarks.md)."""

from __future__ import annotations

from training.audit_learning import LearningSetup, learning_run

# Held-out record F1 gain over the untrained base. Measured over seeds 0-2 (docs/benchmarks.md):
# see MIN_F1_GAIN's comment there; the threshold sits well below the smallest gain measured.
MIN_F1_GAIN = 0.4
# Drop of the held-out records' LM loss (nats per prompt token); without the LM loss term it
# hardly moves (the answer loss alone learns these easy types, so F1 cannot tell).
MIN_LM_LOSS_DROP = 2.0


def test_fine_tuning_learns_the_record_audit():
    result = learning_run(seed=0, setup=LearningSetup())
    base, tuned = result["base"], result["tuned"]
    assert base["record_f1"] < 0.2  # untrained: no valid findings
    assert tuned["invalid_rate"] < 0.1  # it learned the answer format
    assert tuned["record_f1"] >= base["record_f1"] + MIN_F1_GAIN, (base, tuned)
    assert tuned["clean_fpr"] < 0.5  # not "every record deviates" either
    # the LM loss on the record: the model learned the records' text, not only the answers
    assert tuned["lm_loss"] <= base["lm_loss"] - MIN_LM_LOSS_DROP, (base, tuned)
