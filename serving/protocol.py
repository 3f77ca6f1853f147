"""The OpenAI chat-completions wire format: request checking, errors and response bodies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from serving.guardrails import InvalidSchemaError, check_schema
from serving.settings import ServingSettings
from serving.tools import ToolError, ToolPlan, history_message, parse_tools
from training.constrained import ANY_OBJECT_SCHEMA, SchemaError, check_grammar_schema
from training.inference import DecodingSettings

ROLES = ("system", "user", "assistant", "tool")
MAX_TOP_LOGPROBS = 20
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
MAX_STOP_SEQUENCES = 4
# Fields this server cannot honour: refused rather than silently ignored.
_UNSUPPORTED = ("logit_bias", "audio", "modalities", "prediction")


class ApiError(Exception):
    """An error answered as an OpenAI-style body: {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def invalid(param: str, message: str) -> ApiError:
    """400 naming the field."""
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


@dataclass(frozen=True)
class ResponseFormat:
    """text, json_object, or json_schema with its schema."""

    type: str = "text"
    schema: Mapping[str, Any] | None = None

    @property
    def is_json(self) -> bool:
        return self.type != "text"

    def key(self) -> tuple[str, Any]:
        return self.type, self.schema

    def constraint(self) -> Mapping[str, Any] | None:
        """The schema generation is constrained to: the given one, any object, or none."""
        return self.schema if self.schema is not None else \
            ANY_OBJECT_SCHEMA if self.type == "json_object" else None


@dataclass(frozen=True)
class ChatRequest:
    """A checked /v1/chat/completions request."""

    model: str
    messages: tuple[Mapping[str, str], ...]
    retrieved: tuple[bool, ...]  # per message: marked `"retrieved": true` by the caller
    decoding: DecodingSettings
    stream: bool = False
    include_usage: bool = False
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    logprobs: bool = False
    top_logprobs: int = 0
    tools: ToolPlan | None = None

    @property
    def tool_plan(self) -> ToolPlan | None:
        """The tools when the model may call them (not with tool_choice "none")."""
        return self.tools if self.tools is not None and self.tools.active else None

    def constraint(self) -> Mapping[str, Any] | None:
        """The JSON schema the answer is generated under, if any (a forced tool's first)."""
        plan = self.tool_plan
        schema = plan.schema() if plan is not None else None
        return schema if schema is not None else self.response_format.constraint()

    def key(self) -> Any:
        """What besides the messages and decoding changes the answer (the cache key)."""
        return [self.response_format.key(), self.logprobs, self.top_logprobs,
                self.tools.key() if self.tools is not None else None]


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise invalid(name, f"must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _integer(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"must be an integer, got {value!r}")
    return value


def _content(message: Mapping[str, Any], where: str) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise invalid(f"{where}.content[{i}]", "only text parts "
                              "({'type': 'text', 'text': ...}) are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise invalid(f"{where}.content", f"must be a string or a list of text parts, got "
                  f"{type(content).__name__}")


def _messages(body: Mapping[str, Any]) -> tuple[tuple[dict[str, str], ...], tuple[bool, ...]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise invalid("messages", "must be a non-empty list of messages")
    messages, retrieved = [], []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(where, f"must be an object, got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role", f"{role!r} is not one of {', '.join(ROLES)}")
        flag = message.get("retrieved", False)
        if not isinstance(flag, bool):
            raise invalid(f"{where}.retrieved", f"must be true or false, got {flag!r}")
        try:
            plain = history_message(message, where)
        except ToolError as err:
            raise invalid(err.param, err.message) from None
        messages.append(plain or {"role": role, "content": _content(message, where)})
        retrieved.append(flag)
    return tuple(messages), tuple(retrieved)


def _response_format(body: Mapping[str, Any]) -> ResponseFormat:
    raw = body.get("response_format")
    if raw is None:
        return ResponseFormat()
    if not isinstance(raw, dict) or raw.get("type") not in RESPONSE_FORMATS:
        raise invalid("response_format.type", f"must be one of {', '.join(RESPONSE_FORMATS)}")
    if raw["type"] != "json_schema":
        return ResponseFormat(raw["type"])
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise invalid("response_format.json_schema", "must be an object with a 'schema'")
    if not isinstance(spec.get("name", ""), str) or not isinstance(spec.get("strict", False),
                                                                  bool | None):
        raise invalid("response_format.json_schema", "'name' must be a string and 'strict' "
                                                     "true or false")
    if isinstance(spec["schema"], dict) and spec["schema"].get("type", "object") != "object":
        raise invalid("response_format.json_schema.schema", "the root must be an object "
                      f"schema (type 'object'), got type {spec['schema'].get('type')!r}")
    try:
        check_schema(spec["schema"])
        check_grammar_schema(spec["schema"])
    except (InvalidSchemaError, SchemaError) as err:
        raise invalid("response_format.json_schema.schema", str(err)) from None
    return ResponseFormat("json_schema", spec["schema"])


def parse_chat_request(body: Any, settings: ServingSettings) -> ChatRequest:
    """Check a request body; ApiError(400) names the first bad field."""
    if not isinstance(body, dict):
        raise invalid("body", f"must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model", "must be a non-empty string")
    for name in _UNSUPPORTED:
        if body.get(name) is not None:
            raise invalid(name, "is not supported by this server")
    n = _integer(body, "n")
    if n not in (None, 1):
        raise invalid("n", f"only 1 choice per request is supported, got {n}")
    logprobs, top_logprobs = _logprobs(body)
    try:
        tools = parse_tools(body)
    except ToolError as err:
        raise invalid(err.param, err.message) from None
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, -2, 2) not in (None, 0.0):
            raise invalid(name, "is not supported by this server (only 0)")
    messages, retrieved = _messages(body)
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if top_p == 0:
        raise invalid("top_p", "must be above 0")
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    max_tokens = _integer(body, max_name)
    if max_tokens is not None and not 1 <= max_tokens <= settings.max_tokens:
        raise invalid(max_name, f"must be between 1 and {settings.max_tokens} (the server's "
                                f"cap), got {max_tokens}")
    stop = body.get("stop")
    stops: tuple[str, ...] = (stop,) if isinstance(stop, str) else \
        tuple(stop) if isinstance(stop, list) else ()
    if stop is not None and (not isinstance(stop, str | list) or len(stops) > MAX_STOP_SEQUENCES
                             or not all(isinstance(s, str) and s for s in stops)):
        raise invalid("stop", f"must be a non-empty string or a list of at most "
                              f"{MAX_STOP_SEQUENCES} non-empty strings")
    seed = _integer(body, "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", f"must be true or false, got {stream!r}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise invalid("stream_options", "must be an object like {'include_usage': true}")
    response_format = _response_format(body)
    temperature = settings.default_temperature if temperature is None else temperature
    # Greedy decoding ignores the seed and top_p: dropping them lets such requests share a batch
    # and a cache entry.
    greedy = temperature == 0
    decoding = DecodingSettings(
        max_new_tokens=max_tokens or settings.default_max_tokens, temperature=temperature,
        top_p=None if greedy else top_p, stop_strings=stops,
        seed=0 if greedy or seed is None else seed)
    return ChatRequest(model=model, messages=messages, retrieved=retrieved, decoding=decoding,
                       stream=stream, include_usage=bool(options.get("include_usage")),
                       response_format=response_format, logprobs=logprobs,
                       top_logprobs=top_logprobs, tools=tools)


def _logprobs(body: Mapping[str, Any]) -> tuple[bool, int]:
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise invalid("logprobs", f"must be true or false, got {logprobs!r}")
    top = _integer(body, "top_logprobs")
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise invalid("top_logprobs", f"must be between 0 and {MAX_TOP_LOGPROBS}, got {top}")
    if top and not logprobs:
        raise invalid("top_logprobs", "needs logprobs: true")
    return bool(logprobs), top or 0


# --- responses ---------------------------------------------------------------------------------

def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(cid: str, model: str, content: str | None, finish_reason: str,
                    token_usage: Mapping[str, int], *, logprobs: Any = None,
                    tool_calls: Any = None) -> dict[str, Any]:
    """A chat.completion; `logprobs` is {"content": [...]} or None, `tool_calls` a list or None
    (then the message carries them and no content)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message = {"role": "assistant", "content": None, "tool_calls": list(tool_calls)}
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": logprobs,
                         "finish_reason": finish_reason}],
            "usage": dict(token_usage)}


def chunk_body(cid: str, model: str, created: int, delta: Mapping[str, Any],
               finish_reason: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": dict(delta), "logprobs": logprobs,
                         "finish_reason": finish_reason}]}


def usage_chunk_body(cid: str, model: str, created: int, token_usage: Mapping[str, int]
                     ) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [], "usage": dict(token_usage)}
