"""Prior-shift correction of a classifier-like answer: the record auditor's "no findings".

The record auditor is trained on deviation-rich data (about half the chats deviate) so that it
learns the deviations at all, but it audits records of which about 2% deviate. A model trained
under one class prior and used under another over-predicts the class that was rarer in use
(here: findings). Bayes' rule gives the fix without retraining or tuning on evaluation data
(Saerens, Latinne and Decaestecker, "Adjusting the outputs of a classifier to new a priori
probabilities", Neural Computation 14(1), 2002): add

    bias = logit(p_use) - logit(p_train)

to the log-odds of the answer, where p_train is the share of "no findings" answers in the
training chats and p_use the share of records without a deviation where the model is used (the
train split's, which has the benchmark's generator and rate). The answer "no findings" is one
token of the embedded tokenizer, so the bias is a `sequence_bias` of the model's
generation_config.json: every `generate()` on the saved model applies it (the generate task, the
server), and greedy decoding under the answer schema then answers "no findings" unless the model
is sure enough of a finding. Plain Python: no torch, no Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def none_share(rows: Sequence[Mapping[str, Any]], none_answer: str) -> float:
    """The share of training chats whose assistant answer is `none_answer`."""
    if not rows:
        raise ValueError("no training rows to take the answer prior from")
    answers = [row["messages"][-1]["content"] for row in rows]
    return sum(answer == none_answer for answer in answers) / len(answers)


def prior_correction(tokenizer: Any, rows: Sequence[Mapping[str, Any]], none_answer: str,
                     use_deviation_rate: float) -> dict[str, Any]:
    """The bias for `none_answer`'s token and what it came from (metadata). No bias (and the
    reason) when the answer is not one token or a prior is 0 or 1."""
    p_train = none_share(rows, none_answer)
    p_use = 1.0 - use_deviation_rate
    ids = tokenizer.encode(none_answer, add_special_tokens=False)
    info: dict[str, Any] = {"train_no_findings_share": round(p_train, 4),
                            "use_no_findings_share": round(p_use, 4)}
    if len(ids) != 1:
        return {**info, "applied": False, "why": f"{none_answer!r} is {len(ids)} tokens, not 1"}
    if not (0 < p_train < 1 and 0 < p_use < 1):
        return {**info, "applied": False, "why": "a prior of 0 or 1 has no log-odds"}
    bias = _logit(p_use) - _logit(p_train)
    return {**info, "applied": True, "token_id": ids[0], "no_findings_bias": round(bias, 4)}


def apply_correction(model: Any, correction: Mapping[str, Any]) -> None:
    """Put the bias into the model's generation config (saved with it)."""
    if correction.get("applied"):
        model.generation_config.sequence_bias = [[[int(correction["token_id"])],
                                                  float(correction["no_findings_bias"])]]
