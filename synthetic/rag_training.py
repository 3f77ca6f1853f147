"""Grounding training data from RAG train questions: a curriculum of SFT rows and preference
pairs, every prompt rendered by retrieval/answering.py's build_rag_messages (the same text at
train and test time) and every target exactly the JSON parse_rag_reply accepts.

Curriculum stages, in order:
- single_turn: lookup/paraphrase questions whose retrieved chunks hold the evidence -> the
  reference answer citing those chunks.
- multi_turn: the same for questions with earlier turns (history).
- tool_call: two rows per tool question: the assistant emits the expected tool call; then, with
  the tool's result fed back, the final answer from the result, citing it and any retrieved
  chunk holding the evidence (training/sft.py learns
  only the last assistant message of a row, so each target is the last message of its row).
- hard_negative: retrieved chunks WITHOUT the evidence (the evidence chunks removed, or an
  unanswerable question) -> the configured "not in the sources" answer at low confidence; unsafe
  requests -> the configured refusal.

Preference rows (`{prompt, chosen, rejected, system, kind}`) pair the grounded cited JSON with a
rejected reply of each kind that applies to the question: uncited, citation_not_retrieved,
contradicts_evidence_number (the answer restates a number of the evidence), invalid_json,
complies_unsafe (unsafe questions) or invalid_tool_call (tool questions). Only questions without
history are paired: a preference row's prompt is one user message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from retrieval.answering import (
    Query,
    RagPrompt,
    ToolExchange,
    answer_json,
    build_rag_messages,
    load_rag_prompt,
    question_text,
    result_id,
    source_of,
    tool_call_json,
)
from retrieval.tools import ToolRegistry, default_registry, describe_dose_result
from scoring.rag_metrics import holds_evidence, numbers

STAGES = ("single_turn", "multi_turn", "tool_call", "hard_negative")
REJECTED_KINDS = ("uncited", "citation_not_retrieved", "contradicts_evidence_number",
                  "invalid_json", "complies_unsafe", "invalid_tool_call")
ANSWERABLE = ("lookup", "paraphrase", "multi_turn")
ANSWER_CONFIDENCE = 0.9  # a reference answer the cited chunks support
TOOL_ANSWER_CONFIDENCE = 0.95  # an answer read from a tool result
ABSTAIN_CONFIDENCE = 0.1  # "not in the sources"
REFUSAL_CONFIDENCE = 0.95
# A reply that does what an unsafe request asks: the behaviour a preference pair rejects.
COMPLIANCE_ANSWER = ("Sure, here is how to do it: edit the entry directly in the record, enter the "
                     "date and value you need, and leave the change out of the audit trail so "
                     "that the review does not notice it.")
Retrieve = Callable[[str], Sequence[Any]]
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?!\w)")


def _train(questions: Sequence[Mapping[str, Any]], query: Query) -> list[Mapping[str, Any]]:
    """The train split, each row with its retrieval query under `_query`; each question needs an
    id, a category and a question text."""
    rows = []
    for position, q in enumerate(questions):
        qid = q.get("question_id")
        for name in ("question_id", "question", "category", "split"):
            if not isinstance(q.get(name), str) or not q[name].strip():
                raise ValueError(f"questions[{position}] ({qid!r}): field {name!r} must be a "
                                 "non-empty string")
        if q["category"] in ANSWERABLE and not q.get("should_refuse"):
            for name in ("evidence", "reference_answer"):
                if not isinstance(q.get(name), str) or not q[name].strip():
                    raise ValueError(f"question {qid!r}: field {name!r} must be a non-empty "
                                     f"string for a {q['category']} question")
        if q["split"] == "train":
            rows.append({**q, "_query": query(q)})
    return rows


def _hits(retrieve: Retrieve, q: Mapping[str, Any], k: int) -> list[Any]:
    return list(retrieve(q["_query"]))[:k]


def _evidence_ids(hits: Sequence[Any], evidence: str | None) -> list[str]:
    return [cid for cid, text in map(source_of, hits) if holds_evidence(text, evidence)]


def _without_evidence(retrieve: Retrieve, q: Mapping[str, Any], k: int) -> list[Any]:
    """The best `k` retrieved chunks that do not hold the evidence."""
    return [hit for hit in retrieve(q["_query"])
            if not holds_evidence(source_of(hit)[1], q.get("evidence"))][:k]


def _tool_exchange(q: Mapping[str, Any], registry: ToolRegistry) -> ToolExchange:
    call = q["expected_tool_call"]
    errors = registry.validate(call)
    if errors:
        raise ValueError(f"question {q['question_id']!r}: field 'expected_tool_call': "
                         + "; ".join(errors))
    return ToolExchange(call, registry.run(call))


def curriculum_sft_rows(questions: Sequence[Mapping[str, Any]], retrieve: Retrieve, k: int = 3,
                        *, hard_negatives: bool = True, prompt: RagPrompt | None = None,
                        registry: ToolRegistry | None = None,
                        query: Query = question_text) -> list[dict[str, Any]]:
    """`{"messages", "stage", "question_id"}` rows of the train questions in STAGES order (input
    order within a stage), retrieving the top `k` chunks for `query(question)` as
    answer_questions does. With `hard_negatives`, every single-turn answerable question also
    gets a row with its evidence chunks removed from the sources."""
    prompt, registry = prompt or load_rag_prompt(), registry or default_registry()
    staged: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGES}

    def add(stage: str, q: Mapping[str, Any], hits: Sequence[Any], target: str,
            exchanges: Sequence[ToolExchange] = ()) -> None:
        messages = build_rag_messages(q["question"], q.get("history") or [], hits, exchanges,
                                      prompt=prompt, registry=registry)
        staged[stage].append({"messages": [*messages, {"role": "assistant", "content": target}],
                              "stage": stage, "question_id": q["question_id"]})

    abstain = answer_json(prompt.not_in_sources_answer, [], ABSTAIN_CONFIDENCE)
    for q in _train(questions, query):
        category = q["category"]
        if q.get("should_refuse") or category == "unsafe":
            add("hard_negative", q, _hits(retrieve, q, k),
                answer_json(prompt.refusal_answer, [], REFUSAL_CONFIDENCE))
        elif category == "tool" or q.get("expected_tool_call") is not None:
            hits = _hits(retrieve, q, k)
            exchange = _tool_exchange(q, registry)
            add("tool_call", q, hits, tool_call_json(exchange.call))
            cited = [result_id(exchange.call, 1), *_evidence_ids(hits, q.get("evidence"))]
            add("tool_call", q, hits, answer_json(describe_dose_result(exchange.result), cited,
                                                  TOOL_ANSWER_CONFIDENCE), [exchange])
        elif category == "unanswerable":
            add("hard_negative", q, _hits(retrieve, q, k), abstain)
        elif category in ANSWERABLE:
            hits = _hits(retrieve, q, k)
            cited = _evidence_ids(hits, q.get("evidence"))
            stage = "multi_turn" if q.get("history") else "single_turn"
            if cited:
                add(stage, q, hits, answer_json(q["reference_answer"], cited, ANSWER_CONFIDENCE))
            else:  # retrieval missed the evidence: the honest answer is an abstention
                add("hard_negative", q, hits, abstain)
            negative = _without_evidence(retrieve, q, k)
            if hard_negatives and cited and stage == "single_turn" and negative:
                add("hard_negative", q, negative, abstain)
        else:
            raise ValueError(f"question {q['question_id']!r}: field 'category' {category!r} is "
                             "not one of lookup, paraphrase, multi_turn, tool, unanswerable, "
                             "unsafe")
    return [row for stage in STAGES for row in staged[stage]]


def grounding_preference_rows(questions: Sequence[Mapping[str, Any]], retrieve: Retrieve,
                              k: int = 3, *, prompt: RagPrompt | None = None,
                              registry: ToolRegistry | None = None,
                              query: Query = question_text) -> list[dict[str, Any]]:
    """`{prompt, chosen, rejected, system, kind, question_id}` rows, one per train question
    without history and rejected kind that applies to it: chosen = the grounded cited JSON (the
    SFT target; the tool call on tool questions), rejected = a reply of `kind`."""
    prompt, registry = prompt or load_rag_prompt(), registry or default_registry()
    train = [q for q in _train(questions, query) if not q.get("history")]
    retrieved = {q["question_id"]: _hits(retrieve, q, k) for q in train}
    all_ids = list(dict.fromkeys(cid for hits in retrieved.values()
                                 for cid, _ in map(source_of, hits)))
    rows = []
    for q in train:
        hits = retrieved[q["question_id"]]
        ids = [cid for cid, _ in map(source_of, hits)]
        category = q["category"]
        chosen: str
        options: dict[str, str] = {}
        if q.get("should_refuse") or category == "unsafe":
            chosen = answer_json(prompt.refusal_answer, [], REFUSAL_CONFIDENCE)
            options["complies_unsafe"] = answer_json(COMPLIANCE_ANSWER, ids[:1], 0.8)
            options["invalid_json"] = _broken(chosen)
        elif category == "tool" or q.get("expected_tool_call") is not None:
            exchange = _tool_exchange(q, registry)
            chosen = tool_call_json(exchange.call)
            options["invalid_tool_call"] = json.dumps({"tool_call": {
                "name": exchange.call["name"],
                "arguments": {**exchange.call["arguments"], "egfr": "normal", "dose": "usual"}}})
            options["invalid_json"] = _broken(chosen)
        elif category == "unanswerable":
            chosen = answer_json(prompt.not_in_sources_answer, [], ABSTAIN_CONFIDENCE)
            if hits:
                options["uncited"] = answer_json(_first_sentence(source_of(hits[0])[1]), [], 0.8)
            options["invalid_json"] = _broken(chosen)
        else:
            cited = _evidence_ids(hits, q.get("evidence"))
            if not cited:
                continue  # no grounded answer to prefer with these sources
            answer = q["reference_answer"]
            chosen = answer_json(answer, cited, ANSWER_CONFIDENCE)
            options["uncited"] = answer_json(answer, [], ANSWER_CONFIDENCE)
            outside = [cid for cid in all_ids if cid not in ids] or [f"{cited[0]}-not-retrieved"]
            options["citation_not_retrieved"] = answer_json(answer, outside[:1],
                                                            ANSWER_CONFIDENCE)
            contradicted = _contradict_number(answer, q["evidence"],
                                              [text for cid, text in map(source_of, hits)
                                               if cid in cited])
            if contradicted is not None:
                options["contradicts_evidence_number"] = answer_json(contradicted, cited,
                                                                     ANSWER_CONFIDENCE)
            options["invalid_json"] = _broken(chosen)
        messages = build_rag_messages(q["question"], [], hits, prompt=prompt, registry=registry)
        rows.extend({"prompt": messages[1]["content"], "chosen": chosen, "rejected": rejected,
                     "system": messages[0]["content"], "kind": kind,
                     "question_id": q["question_id"]} for kind, rejected in options.items())
    return rows


def _broken(reply: str) -> str:
    """The reply cut before its closing brace: not JSON."""
    return reply.rstrip()[:-1]


def _first_sentence(text: str) -> str:
    sentence = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


def _contradict_number(answer: str, evidence: str, cited_texts: Sequence[str]) -> str | None:
    """The answer with its first number that the evidence states replaced by one that no cited
    chunk holds (x2, x10, +1, ...), or None when the answer restates no evidence number."""
    evidence_numbers = numbers(evidence)
    held = set().union(*map(numbers, cited_texts))
    for match in _NUMBER.finditer(answer):
        value = float(match.group())
        if value not in evidence_numbers:
            continue
        for candidate in (value * 2, value * 10, value + 1, value + 7, value * 3 + 1):
            if candidate not in held:
                return answer[:match.start()] + f"{candidate:g}" + answer[match.end():]
    return None


def sample_per_group(rows: Sequence[Mapping[str, Any]], key: str, limit: int | None,
                     seed: int = 0) -> list[dict[str, Any]]:
    """At most `limit` rows of each `row[key]` value (a curriculum stage, a rejected kind),
    drawn with `seed` and kept in their input order (so the curriculum's stage order holds);
    `limit` None keeps every row."""
    import random

    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    positions: dict[Any, list[int]] = {}
    for position, row in enumerate(rows):
        if key not in row:
            raise ValueError(f"rows[{position}]: field {key!r} is missing")
        positions.setdefault(row[key], []).append(position)
    rng = random.Random(seed)
    keep = {position for group in positions.values()
            for position in (group if limit is None or len(group) <= limit
                             else rng.sample(group, limit))}
    return [dict(row) for position, row in enumerate(rows) if position in keep]
