"""G-Eval logprobs from an OpenAI-style answer: the top log-probabilities at each score digit.

A judge answering JSON such as {"score": 4, ...} or {"scores": {"safety": 3, ...}} with per-token
logprobs (`choices[0].logprobs.content`) gives, for every key whose value is a digit 1-5, the
alternatives at the token that generated that digit: what `geval_score` (scoring/judge.py)
weights. Works with any OpenAI-compatible endpoint that returns logprobs, the GxPLab server's
local models included. Plain Python: no Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

SCORE_DIGITS = "12345"
_KEY_BEFORE = re.compile(r'"((?:[^"\\]|\\.)+)"\s*:\s*$')


def _field(entry: Any, name: str) -> Any:
    return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)


def score_token_logprobs(content: Sequence[Any] | None) -> dict[str, list[dict[str, Any]]]:
    """{JSON key: [{"token", "logprob"}, ...]} at the token holding that key's 1-5 score (the
    first such value per key). Entries are OpenAI `logprobs.content[]` items (dicts or SDK
    objects); without `top_logprobs` the chosen token alone is given."""
    scores: dict[str, list[dict[str, Any]]] = {}
    text = ""
    for entry in content or []:
        token = str(_field(entry, "token") or "")
        digit = token.strip()
        if len(digit) == 1 and digit in SCORE_DIGITS:
            key = _KEY_BEFORE.search(text + token[:token.index(digit)])
            if key and key.group(1) not in scores:
                top = _field(entry, "top_logprobs") or [entry]
                scores[key.group(1)] = [{"token": str(_field(t, "token")),
                                         "logprob": float(_field(t, "logprob"))} for t in top]
        text += token
    return scores


def _score_schema() -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": 5}


def behaviour_answer_schema(max_justification: int = 400) -> dict[str, Any]:
    """The behavioural judge's answer: {"score": 1-5, "justification": str}."""
    return {"type": "object", "additionalProperties": False,
            "required": ["score", "justification"],
            "properties": {"score": _score_schema(),
                           "justification": {"type": "string", "maxLength": max_justification}}}


def judge_answer_schema(metric_names: Sequence[str], max_justification: int = 600
                        ) -> dict[str, Any]:
    """The rubric judge's answer: {"scores": {metric: 1-5, ...}, "justification": str}."""
    return {"type": "object", "additionalProperties": False,
            "required": ["scores", "justification"],
            "properties": {
                "scores": {"type": "object", "additionalProperties": False,
                           "required": list(metric_names),
                           "properties": {name: _score_schema() for name in metric_names}},
                "justification": {"type": "string", "maxLength": max_justification}}}


def answer_schema_for(model: Any, schema: dict[str, Any]) -> dict[str, Any] | None:
    """`schema` when the judge model asks for JSON-schema answers, else None (the client then
    sends the model's own response_format)."""
    return schema if getattr(model, "response_format", None) == "json_schema" else None
