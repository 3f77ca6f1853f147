"""Grounded answers over retrieved chunks: the `rag_answer` prompt, the reply contract, and a
batched answering loop with tool calls.

A reply is one JSON object, either an answer `{"answer": str, "citations": [chunk ids],
"confidence": 0..1}` or a tool call `{"tool_call": {"name": str, "arguments": {...}}}`. Chunks go
into the prompt each between `<<<CHUNK <id>` and `CHUNK>>>` lines inside one `<<<SOURCES ...
SOURCES>>>` block, with every `<<<` / `>>>` inside the data broken up, so a chunk cannot close its
block and pose as instructions. A tool result goes back as a user message block with its own id
(`tool:<name>#<round>`) that the answer may cite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import Any, NamedTuple

import jsonschema

from retrieval.tools import ToolRegistry, default_registry
from scoring.audit_prompt import check_delimited, data_line, prompt_section
from scoring.behavioral import is_refusal as _behaviour_refusal
from scoring.model_output import checked_answer, extract_json_object

SECTION = "rag_answer"
SOURCES_OPEN, SOURCES_CLOSE = "<<<SOURCES", "SOURCES>>>"
CHUNK_OPEN, CHUNK_CLOSE = "<<<CHUNK", "CHUNK>>>"
RESULT_OPEN, RESULT_CLOSE = "<<<TOOL_RESULT", "TOOL_RESULT>>>"
USER_FIELDS = frozenset({"sources", "tools", "question"})
RESULT_FIELDS = frozenset({"tool_result", "result_id"})
HISTORY_ROLES = frozenset({"user", "assistant"})
_CHUNK_ID = re.compile(r"^[^\s<>]+$")

ANSWER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "rag_answer",
    "type": "object",
    "properties": {
        "answer": {"type": "string"},
        "citations": {"type": "array", "items": {"type": "string"}},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["answer", "citations", "confidence"],
    "additionalProperties": False,
}
TOOL_CALL_REPLY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "rag_tool_call",
    "type": "object",
    "properties": {
        "tool_call": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        },
    },
    "required": ["tool_call"],
    "additionalProperties": False,
}
_ANSWER_VALIDATOR = jsonschema.Draft202012Validator(ANSWER_SCHEMA)
_TOOL_VALIDATOR = jsonschema.Draft202012Validator(TOOL_CALL_REPLY_SCHEMA)

# "Not in the sources" and its usual paraphrases (a correct abstention on an unanswerable question).
_ABSTENTION = re.compile(
    r"\bnot (?:in|found in|stated in|given in|covered by|contained in|mentioned in|answered by) "
    r"the (?:provided |retrieved |given )?(?:sources?|documents?|passages?|chunks?)\b"
    r"|\bthe (?:provided |retrieved |given )?(?:sources?|documents?) (?:do|does) not "
    r"(?:say|state|contain|answer|cover|mention|include|give|specify)\b"
    r"|\bno (?:information|answer|mention) (?:\w+ ){0,4}in the (?:provided |retrieved )?sources\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class RagPrompt:
    """One version of the `rag_answer` prompt."""

    version: str
    system: str
    user_template: str
    tool_result_template: str
    not_in_sources_answer: str
    refusal_answer: str


def load_rag_prompt(path: Path | str | None = None) -> RagPrompt:
    """The `rag_answer` section of configs/prompts.yaml (or another prompt file), checked."""
    keys = ("version", "system", "user_template", "tool_result_template",
            "not_in_sources_answer", "refusal_answer")
    path, raw = prompt_section(path, SECTION, keys)
    for key, fields, placeholder, marks in (
            ("user_template", USER_FIELDS, "sources", (SOURCES_OPEN, SOURCES_CLOSE)),
            ("tool_result_template", RESULT_FIELDS, "tool_result", (RESULT_OPEN, RESULT_CLOSE))):
        template = Template(raw[key])
        if not template.is_valid() or set(template.get_identifiers()) != fields:
            raise ValueError(f"{path}: field '{SECTION}.{key}' must use exactly the placeholders "
                             f"{', '.join('${' + name + '}' for name in sorted(fields))}")
        check_delimited(raw[key], placeholder, *marks, f"{path}: field '{SECTION}.{key}'")
    prompt = RagPrompt(**{key: raw[key] for key in keys})
    if not is_abstention(prompt.not_in_sources_answer):
        raise ValueError(f"{path}: field '{SECTION}.not_in_sources_answer' is not recognised as "
                         "an abstention by retrieval.answering.is_abstention")
    if not is_refusal(prompt.refusal_answer):
        raise ValueError(f"{path}: field '{SECTION}.refusal_answer' is not recognised as a "
                         "refusal by retrieval.answering.is_refusal")
    return prompt


# --------------------------------------------------------------------------- prompt rendering


class ToolExchange(NamedTuple):
    """A tool call the model made and the result fed back (an `{"error": [...]}` when invalid)."""

    call: Mapping[str, Any]
    result: Mapping[str, Any]


def source_of(hit: Any) -> tuple[str, str]:
    """(chunk id, text) of a retrieval hit: a `Hit` (its `.chunk`), a `Chunk`, any object with
    `chunk_id` and `text`, or a mapping with those keys."""
    item = getattr(hit, "chunk", hit)
    if isinstance(item, Mapping):
        chunk_id, text = item.get("chunk_id"), item.get("text")
    else:
        chunk_id, text = getattr(item, "chunk_id", None), getattr(item, "text", None)
    if not isinstance(chunk_id, str) or not _CHUNK_ID.match(chunk_id):
        raise ValueError(f"retrieval hit: field 'chunk_id' {chunk_id!r} must be a non-empty "
                         "string without spaces or < >")
    if not isinstance(text, str):
        raise ValueError(f"retrieval hit {chunk_id!r}: field 'text' must be a string")
    return chunk_id, text


def escape_data(text: str) -> str:
    """Break up every run of three '<' or '>' ('SOURCES>>>' -> 'SOURCES>> >'): data cannot then
    open or close a delimited block."""
    for raw, broken in (("<<<", "<< <"), (">>>", ">> >")):
        while raw in text:
            text = text.replace(raw, broken)
    return text


def render_sources(hits: Sequence[Any]) -> str:
    """Each chunk between `<<<CHUNK <id>` and `CHUNK>>>` lines (an empty list says so)."""
    blocks = [f"{CHUNK_OPEN} {chunk_id}\n{escape_data(text)}\n{CHUNK_CLOSE}"
              for chunk_id, text in map(source_of, hits)]
    return "\n".join(blocks) if blocks else "(no chunks were retrieved)"


def result_id(call: Mapping[str, Any], round_number: int) -> str:
    """The citable id of the tool result of round `round_number` (from 1)."""
    return f"tool:{call.get('name')}#{round_number}"


def answer_json(answer: str, citations: Sequence[str], confidence: float) -> str:
    """An answer reply exactly as the parser accepts it."""
    return json.dumps({"answer": answer, "citations": list(citations),
                       "confidence": confidence}, ensure_ascii=False)


def tool_call_json(call: Mapping[str, Any]) -> str:
    """A tool-call reply exactly as the parser accepts it."""
    return json.dumps({"tool_call": {"name": call["name"], "arguments": dict(call["arguments"])}},
                      ensure_ascii=False)


def build_rag_messages(question: str, history: Sequence[Mapping[str, Any]], hits: Sequence[Any],
                       tool_results: Sequence[ToolExchange | tuple] = (), *,
                       prompt: RagPrompt | None = None,
                       registry: ToolRegistry | None = None) -> list[dict[str, str]]:
    """System, the earlier turns of the conversation, the user message with the sources and the
    question, then per tool exchange the assistant's call and a user message with its result."""
    prompt = prompt or load_rag_prompt()
    if not isinstance(question, str) or not question.strip():
        raise ValueError("build_rag_messages: field 'question' must be a non-empty string")
    messages = [{"role": "system", "content": prompt.system}]
    for i, turn in enumerate(history):
        if not isinstance(turn, Mapping) or turn.get("role") not in HISTORY_ROLES \
                or not isinstance(turn.get("content"), str):
            raise ValueError(f"build_rag_messages: field 'history[{i}]' must be a "
                             "{role: user|assistant, content: str} message")
        messages.append({"role": turn["role"], "content": turn["content"]})
    user = Template(prompt.user_template).substitute(
        sources=render_sources(hits), tools=(registry or default_registry()).render(),
        question=escape_data(question.strip()))
    messages.append({"role": "user", "content": user})
    for round_number, (call, result) in enumerate(tool_results, start=1):
        messages.append({"role": "assistant", "content": tool_call_json(call)})
        messages.append({"role": "user", "content": Template(prompt.tool_result_template)
                         .substitute(result_id=result_id(call, round_number),
                                     tool_result=data_line(dict(result)))})
    return messages


# --------------------------------------------------------------------------- reply parsing


@dataclass(frozen=True)
class RagReply:
    """A checked reply. `json_valid`: one JSON object of the answer or tool-call shape.
    `citations` keeps only ids that were shown to the model; the others are in
    `dropped_citations` and `errors`. `tool_errors` are the tool call's validation problems."""

    json_valid: bool
    kind: str | None  # "answer" | "tool_call" | None (invalid)
    answer: str | None = None
    citations: tuple[str, ...] = ()
    confidence: float | None = None
    tool_call: dict[str, Any] | None = None
    dropped_citations: tuple[str, ...] = ()
    tool_errors: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def answer_dict(self) -> dict[str, Any] | None:
        """The final answer as {"answer", "citations", "confidence"} (None unless an answer)."""
        if self.kind != "answer":
            return None
        return {"answer": self.answer, "citations": list(self.citations),
                "confidence": self.confidence}


def parse_rag_reply(text: str | None, retrieved_ids: Collection[str], *,
                    registry: ToolRegistry | None = None) -> RagReply:
    """Extract and validate one reply; citations of ids not in `retrieved_ids` are listed as
    errors and dropped; a tool call is validated against the registry."""
    found, _ = extract_json_object(text) if text and text.strip() else (None, "")
    if found is not None and "tool_call" in found:
        obj, error = checked_answer(text, "reply", _TOOL_VALIDATOR)
        if obj is None:
            return RagReply(json_valid=False, kind=None, errors=(error,))
        problems = tuple((registry or default_registry()).validate(obj["tool_call"]))
        return RagReply(json_valid=True, kind="tool_call", tool_call=obj["tool_call"],
                        tool_errors=problems, errors=problems)
    obj, error = checked_answer(text, "reply", _ANSWER_VALIDATOR)
    if obj is None:
        return RagReply(json_valid=False, kind=None, errors=(error,))
    allowed, kept, dropped = set(retrieved_ids), [], []
    for chunk_id in obj["citations"]:
        target = kept if chunk_id in allowed else dropped
        if chunk_id not in target:
            target.append(chunk_id)
    errors = tuple(f"reply: citation {chunk_id!r} was not among the retrieved sources"
                   for chunk_id in dropped)
    return RagReply(json_valid=True, kind="answer", answer=obj["answer"], citations=tuple(kept),
                    confidence=float(obj["confidence"]), dropped_citations=tuple(dropped),
                    errors=errors)


def is_refusal(answer: str | None) -> bool:
    """Whether an answer declines or safely deflects (the refusal and deflection patterns of
    scoring/behavioral.py, on the answer's opening sentences)."""
    return bool(answer) and _behaviour_refusal(answer)


def is_abstention(answer: str | None) -> bool:
    """Whether an answer says that the sources do not answer the question."""
    return bool(answer) and _ABSTENTION.search(answer) is not None


# --------------------------------------------------------------------------- answering loop

Retrieve = Callable[[str], Sequence[Any]]
Generate = Callable[[list[list[dict[str, str]]]], Sequence[str]]
Query = Callable[[Mapping[str, Any]], str]  # question row -> retrieval query


def question_text(question: Mapping[str, Any]) -> str:
    """The default retrieval query: the question itself."""
    return question["question"]


@dataclass
class ToolCallRecord:
    """One tool call a model made: the call, its validation errors, and the result fed back."""

    call: Any
    errors: list[str]
    result: dict[str, Any]
    result_id: str


@dataclass
class RagResult:
    """Everything one question's answering produced, for scoring and provenance."""

    question_id: str
    retrieved_ids: list[str]
    replies: list[str]
    final: RagReply
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    json_valid: bool = False  # every reply was valid JSON of the reply shape
    sources: dict[str, str] = field(default_factory=dict)  # id -> text shown (chunks, results)
    prompt_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (what scoring/rag_metrics.py reads)."""
        row = asdict(self)
        row["answer"] = self.final.answer_dict()
        row["final"] = {**asdict(self.final), "citations": list(self.final.citations),
                        "dropped_citations": list(self.final.dropped_citations),
                        "tool_errors": list(self.final.tool_errors),
                        "errors": list(self.final.errors)}
        return row


def answer_questions(questions: Sequence[Mapping[str, Any]], retrieve: Retrieve,
                     generate: Generate, *, k: int = 3, max_tool_rounds: int = 1,
                     prompt: RagPrompt | None = None, registry: ToolRegistry | None = None,
                     query: Query = question_text) -> list[RagResult]:
    """Answer every question from its top `k` chunks retrieved for `query(question)` (e.g.
    synthetic/rag_questions.py's `retrieval_query`, which joins a conversation's user turns).
    Each round sends the pending
    questions' messages to `generate` in one batch; a tool call (up to `max_tool_rounds` per
    question) is validated, run, and its result (or its errors) fed back for the next round."""
    if k < 1 or max_tool_rounds < 0:
        raise ValueError(f"need k >= 1 and max_tool_rounds >= 0, got {k} and {max_tool_rounds}")
    prompt = prompt or load_rag_prompt()
    registry = registry or default_registry()
    states = []
    for position, question in enumerate(questions):
        question_id = question.get("question_id")
        text = question.get("question")
        if not isinstance(question_id, str) or not isinstance(text, str) or not text.strip():
            raise ValueError(f"questions[{position}]: fields 'question_id' and 'question' must "
                             "be non-empty strings")
        hits = list(retrieve(query(question)))[:k]
        sources = dict(map(source_of, hits))
        states.append({"question": question, "hits": hits, "exchanges": [], "valid": [],
                       "result": RagResult(question_id, list(sources), [], RagReply(False, None),
                                           sources=sources, prompt_version=prompt.version)})
    pending = list(range(len(states)))
    for round_number in range(max_tool_rounds + 1):
        if not pending:
            break
        batch = [build_rag_messages(states[i]["question"]["question"],
                                    states[i]["question"].get("history") or [],
                                    states[i]["hits"], states[i]["exchanges"], prompt=prompt,
                                    registry=registry) for i in pending]
        replies = list(generate(batch))
        if len(replies) != len(batch):
            raise ValueError(f"generate returned {len(replies)} replies for {len(batch)} prompts")
        still_pending = []
        for i, text in zip(pending, replies, strict=True):
            state, result = states[i], states[i]["result"]
            result.replies.append(text)
            reply = parse_rag_reply(text, result.sources, registry=registry)
            result.final = reply
            state["valid"].append(reply.json_valid)
            if reply.kind == "tool_call" and round_number < max_tool_rounds:
                call = reply.tool_call
                errors = list(reply.tool_errors)
                outcome = {"error": errors} if errors else registry.run(call)
                rid = result_id(call, round_number + 1)
                result.tool_calls.append(ToolCallRecord(call, errors, outcome, rid))
                result.sources[rid] = data_line(outcome)
                state["exchanges"].append(ToolExchange(call, outcome))
                still_pending.append(i)
            elif reply.kind == "tool_call":
                result.tool_calls.append(ToolCallRecord(reply.tool_call, list(reply.tool_errors),
                                                        {}, ""))
        pending = still_pending
    for state in states:
        state["result"].json_valid = bool(state["valid"]) and all(state["valid"])
    return [state["result"] for state in states]
