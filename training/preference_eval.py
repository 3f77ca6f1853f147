"""Held-out preference accuracy of a DPO or ORPO adapter: does it rank chosen above rejected?

For each held-out pair (never trained on) the completion's log-probability is summed over its
tokens under the tuned policy and under the reference:
- DPO: the implicit reward r(y) = beta * (log pi(y|x) - log pi_ref(y|x)); a pair is ranked right
  when r(chosen) > r(rejected) (DPO's `rewards/accuracies`). The reference is the base model (the
  adapter disabled) or, when DPO continues an adapter, the frozen model it started from.
- ORPO: the log-odds of the mean token log-probability p, log(p / (1 - p)) (ORPO's odds ratio);
  right when log-odds(chosen) > log-odds(rejected).
The base model is scored the same way on the same pairs with ORPO's log-odds (the order of the
mean token log-probabilities): the base's own preference, which DPO's reward cannot show (it is 0
for both answers of an untrained adapter). Accuracies get a Wilson 95% interval; the tuned-vs-base
difference a paired sign-flip count (McNemar's exact test). Plain Python; torch only inside.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sensible at 0 and n, unlike Wald's)."""
    if n <= 0:
        raise ValueError(f"wilson_interval: n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes must be in [0, {n}], got {successes}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(tuned: Sequence[bool], base: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value of paired right/wrong outcomes (1.0 with no discordant
    pair)."""
    if len(tuned) != len(base):
        raise ValueError(f"mcnemar_exact_p: {len(tuned)} tuned vs {len(base)} base outcomes")
    gained = sum(1 for t, b in zip(tuned, base, strict=True) if t and not b)
    lost = sum(1 for t, b in zip(tuned, base, strict=True) if b and not t)
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def log_odds(mean_logp: float) -> float:
    """log(p / (1 - p)) of p = exp(mean_logp), computed stably (mean_logp < 0)."""
    mean_logp = min(mean_logp, -1e-7)
    return mean_logp - math.log(-math.expm1(mean_logp))


def accuracy_summary(right: Sequence[bool], prefix: str) -> dict[str, Any]:
    """`{prefix}_accuracy`, its Wilson CI and n."""
    n, hits = len(right), sum(bool(r) for r in right)
    low, high = wilson_interval(hits, n)
    return {f"{prefix}_accuracy": hits / n, f"{prefix}_accuracy_ci_low": low,
            f"{prefix}_accuracy_ci_high": high, f"{prefix}_pairs": n}


def preference_outcomes(method: str, beta: float, policy: Mapping[str, Sequence[float]],
                        reference: Mapping[str, Sequence[float]],
                        base: Mapping[str, Sequence[float]]) -> dict[str, list[bool]]:
    """Per-pair right/wrong of the tuned model (`tuned`) and the base's own preference (`base`).

    Each mapping holds per-pair `chosen_sum`, `rejected_sum` (summed completion log-probs) and
    `chosen_mean`, `rejected_mean` (per-token means)."""
    if method == "dpo":
        tuned = [beta * (pc - rc) > beta * (pr - rr) for pc, rc, pr, rr in zip(
            policy["chosen_sum"], reference["chosen_sum"], policy["rejected_sum"],
            reference["rejected_sum"], strict=True)]
    elif method == "orpo":
        tuned = [log_odds(c) > log_odds(r) for c, r in zip(
            policy["chosen_mean"], policy["rejected_mean"], strict=True)]
    else:
        raise ValueError(f"preference_outcomes: method must be dpo or orpo, got {method!r}")
    base_right = [log_odds(c) > log_odds(r) for c, r in zip(
        base["chosen_mean"], base["rejected_mean"], strict=True)]
    return {"tuned": tuned, "base": base_right}


def heldout_preference_metrics(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]],
                               method: str, beta: float, ref_model: Any | None = None,
                               batch_size: int = 8) -> dict[str, Any]:
    """`heldout_*` metrics of a trained preference `model` (a peft model) on held-out
    conversational pairs `rows` ({} when there are none). `ref_model`: DPO's frozen reference when
    it is not the base model (None: `model` with its adapter disabled)."""
    if not rows:
        return {}
    policy = completion_logprobs(model, tokenizer, rows, batch_size)
    with _adapter_disabled(model):
        base = completion_logprobs(model, tokenizer, rows, batch_size)
    reference = (completion_logprobs(ref_model, tokenizer, rows, batch_size)
                 if ref_model is not None else base)
    outcomes = preference_outcomes(method, beta, policy, reference, base)
    if method == "dpo":
        margins = [beta * ((pc - rc) - (pr - rr)) for pc, rc, pr, rr in zip(
            policy["chosen_sum"], reference["chosen_sum"], policy["rejected_sum"],
            reference["rejected_sum"], strict=True)]
        rule = "DPO implicit reward beta*(log pi - log pi_ref): chosen > rejected"
    else:
        margins = [log_odds(c) - log_odds(r) for c, r in zip(
            policy["chosen_mean"], policy["rejected_mean"], strict=True)]
        rule = "ORPO log-odds of the mean token log-prob: chosen > rejected"
    summary = {**accuracy_summary(outcomes["tuned"], "heldout_preference"),
               **accuracy_summary(outcomes["base"], "heldout_base_preference"),
               "heldout_preference_rule": rule,
               "heldout_base_preference_rule": "the base model's log-odds of the mean token "
                                               "log-prob: chosen > rejected",
               "heldout_mean_margin": sum(margins) / len(margins),
               "heldout_vs_base_mcnemar_p": mcnemar_exact_p(outcomes["tuned"], outcomes["base"])}
    summary["heldout_preference_significant"] = summary["heldout_preference_accuracy_ci_low"] > 0.5
    return summary


@contextmanager
def _adapter_disabled(model: Any) -> Iterator[None]:
    """The peft model with its adapter(s) disabled: the base model."""
    disable = getattr(model, "disable_adapter", None)
    with disable() if disable is not None else nullcontext():
        yield


def completion_logprobs(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]],
                        batch_size: int = 8) -> dict[str, list[float]]:
    """Summed and mean log-probabilities of each row's chosen and rejected completion given its
    prompt (conversational rows: message lists, rendered with the tokenizer's chat template)."""
    import torch

    out: dict[str, list[float]] = {f"{side}_{kind}": [] for side in ("chosen", "rejected")
                                   for kind in ("sum", "mean")}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for side in ("chosen", "rejected"):
            encoded = [_encode(tokenizer, row["prompt"], row[side]) for row in rows]
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start:start + batch_size]
                with torch.no_grad():
                    sums, counts = _sequence_logprobs(model, chunk, tokenizer.pad_token_id,
                                                      device)
                out[f"{side}_sum"] += sums
                out[f"{side}_mean"] += [s / max(c, 1) for s, c in zip(sums, counts, strict=True)]
    finally:
        model.train(was_training)
    return out


def _encode(tokenizer: Any, prompt: Any, completion: Any) -> tuple[list[int], int]:
    """(token ids of prompt + completion, number of prompt tokens)."""
    if isinstance(prompt, str):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"], \
            len(prompt_ids)
    prompt_ids = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
    full = tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True,
                                         return_dict=False)
    return list(full), len(prompt_ids)


def _sequence_logprobs(model: Any, chunk: Sequence[tuple[list[int], int]], pad_id: int,
                       device: Any) -> tuple[list[float], list[int]]:
    import torch

    width = max(len(ids) for ids, _ in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    scored = torch.zeros((len(chunk), width), dtype=torch.bool)
    for row, (tokens, n_prompt) in enumerate(chunk):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        scored[row, n_prompt:len(tokens)] = True
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
    keep = scored[:, 1:].to(device)
    sums = (token_logp * keep).sum(dim=1)
    return sums.tolist(), keep.sum(dim=1).tolist()
