"""Answers from engines that decode under a grammar: JSON response formats, forced tool calls and
log-probabilities (training/constrained.py does the decoding).

With such an engine (`LocalEngine`), a `response_format` of json_schema or json_object, or a
forced tool, is honoured by construction in one generation: no retry with a reminder. The
answer is still checked against the schema (and PHI in its string values redacted); a JSON
answer cut by `max_tokens` is returned as generated with finish_reason "length". Logprobs are
withheld (null, header `x-gxplab-logprobs: withheld`) when PHI redaction changed the answer, since
the tokens would carry what was redacted. Plain Python: no Dagster.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fastapi.responses import Response, StreamingResponse

from serving.cache import CachedAnswer
from serving.engine import GenerateOptions
from serving.guardrails import enforce_json, redact_json_value, redact_phi
from serving.protocol import (
    ApiError,
    ChatRequest,
    chunk_body,
    completion_id,
    usage,
    usage_chunk_body,
)
from serving.tools import ToolPlan
from training.constrained import TokenLogprob
from training.inference import Generation


def options(chat: ChatRequest) -> GenerateOptions:
    """The engine options of a request: its constraint and logprobs."""
    return GenerateOptions(chat.constraint(), chat.logprobs, chat.top_logprobs)


def with_tools(messages: list[dict[str, str]], plan: ToolPlan | None) -> list[dict[str, str]]:
    """The messages with the tools' description added to the system message (or as one)."""
    if plan is None:
        return messages
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']}\n\n{plan.prompt()}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": plan.prompt()}, *messages]


def logprobs_body(entries: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    """OpenAI `choices[].logprobs`: {"content": [{token, logprob, bytes, top_logprobs}]}."""
    return None if entries is None else {"content": [e.to_openai() for e in entries]}


def _redact(text: str, redact: bool) -> tuple[str, Counter[str]]:
    if not redact:
        return text, Counter()
    redaction = redact_phi(text)
    return redaction.text, Counter(redaction.counts)


def _tool_calls(plan: ToolPlan, text: str, redact: bool
                ) -> tuple[list[dict[str, Any]] | None, Counter[str]]:
    calls = plan.calls(text)
    counts: Counter[str] = Counter()
    for call in calls or []:
        function = call["function"]
        try:
            arguments = json.loads(function["arguments"])
        except json.JSONDecodeError:
            continue
        if redact:
            arguments, found = redact_json_value(arguments)
            if found:
                counts.update(found)
                function["arguments"] = json.dumps(arguments, ensure_ascii=False,
                                                   separators=(",", ":"))
    return calls, counts


def _json_content(chat: ChatRequest, text: str, redact: bool) -> tuple[str, Counter[str]]:
    """The checked JSON answer: as generated unless redaction changed a value."""
    fmt = chat.response_format
    check = enforce_json(text, fmt.schema, redact=redact)
    if not check.ok:  # the grammar makes this unreachable unless the engine ignored it
        raise ApiError(502, f"the constrained answer does not satisfy response_format "
                            f"{fmt.type}: {check.error}", type="server_error",
                       param="response_format", code="invalid_model_output")
    counts = Counter(check.redactions)
    return (json.dumps(check.value, ensure_ascii=False) if counts else text.strip()), counts


def build_answer(chat: ChatRequest, generation: Generation, headers: dict[str, str], *,
                 redact: bool) -> CachedAnswer:
    """The reply to one constrained generation: tool calls, checked JSON or text; logprobs."""
    plan, finish = chat.tool_plan, generation.finish_reason
    headers["x-gxplab-constrained"] = "true" if generation.constrained else "false"
    content: str | None = generation.text
    calls = None
    if plan is not None and finish == "stop":
        calls, phi_out = _tool_calls(plan, generation.text, redact)
        if calls:
            content, finish = None, "tool_calls"
        else:
            content, phi_out = _redact(generation.text, redact)
    elif chat.response_format.is_json and finish == "stop":
        content, phi_out = _json_content(chat, generation.text, redact)
    else:  # free text, or JSON cut short by max_tokens (finish_reason "length")
        content, phi_out = _redact(generation.text, redact)
    logprobs = None
    if chat.logprobs:
        if phi_out:
            headers["x-gxplab-logprobs"] = "withheld"
        else:
            logprobs = logprobs_body(generation.logprobs)
    return CachedAnswer(content or "", finish, usage(generation.prompt_tokens,
                                                     generation.completion_tokens),
                        headers, dict(phi_out), logprobs=logprobs, tool_calls=calls)


def answer_chunks(cid: str, model: str, created: int, answer: CachedAnswer
                  ) -> Iterator[dict[str, Any]]:
    """A whole answer as stream chunks (tool calls are only streamed once decided): the role,
    the tool calls or the content with the logprobs, then the finish."""
    yield chunk_body(cid, model, created, {"role": "assistant", "content": ""})
    if answer.tool_calls:
        yield chunk_body(cid, model, created, {"tool_calls": [
            {"index": i, **call} for i, call in enumerate(answer.tool_calls)]})
    else:
        yield chunk_body(cid, model, created, {"content": answer.content},
                         logprobs=answer.logprobs)
    yield chunk_body(cid, model, created, {}, answer.finish_reason)


def stream_logprobs(chat: ChatRequest, entries: Sequence[TokenLogprob],
                    phi_counts: Mapping[str, int]) -> dict[str, Any] | None:
    """The logprobs sent with the last chunk of a stream, or None (not asked for, or withheld
    because PHI was redacted from the streamed text)."""
    if not chat.logprobs or any(phi_counts.values()):
        return None
    return logprobs_body(entries)


def whole_stream(chat: ChatRequest, reply: Response) -> StreamingResponse:
    """The completion `reply` (a JSON chat.completion) sent as a stream of chunks."""
    body = json.loads(bytes(reply.body))
    choice = body["choices"][0]
    answer = CachedAnswer(choice["message"]["content"] or "", choice["finish_reason"],
                          body["usage"], {}, {}, logprobs=choice["logprobs"],
                          tool_calls=choice["message"].get("tool_calls"))
    cid, created = completion_id(), int(time.time())
    chunks = list(answer_chunks(cid, chat.model, created, answer))
    if chat.include_usage:
        chunks.append(usage_chunk_body(cid, chat.model, created, body["usage"]))
    events = [f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks]
    headers = {k: v for k, v in reply.headers.items() if k.startswith("x-gxplab")}
    return StreamingResponse(iter([*events, "data: [DONE]\n\n"]),
                             media_type="text/event-stream",
                             headers={**headers, "Cache-Control": "no-cache"})
