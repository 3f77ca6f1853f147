"""OpenAI `tools` / `tool_choice` for local models: checking, the prompt, the constraint, the calls.

The tools are described to the model in a system message added after the caller's own (after
the guardrails screened them). With `tool_choice` naming a function, or "required" with one
tool, the answer is generated under that tool's `parameters` schema and returned as its call.
"required" with several tools constrains the answer to {"name": <one of them>, "arguments":
<its parameters>}. "auto" generates freely: an answer that is exactly such a JSON object, naming
a listed tool with arguments valid for its schema, becomes a tool call, anything else is the
message content (the model chooses by answering with that object or not). "none" ignores the
tools. A call's id is `call_` + 24 hex digits; its arguments are a compact JSON string.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.guardrails import InvalidSchemaError, check_schema, first_json_object, schema_error
from training.constrained import SchemaError, check_grammar_schema

CHOICES = ("auto", "required", "none")
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


class ToolError(ValueError):
    """A bad `tools` / `tool_choice` field; `param` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


@dataclass(frozen=True)
class Tool:
    """One function the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ToolPlan:
    """The request's tools and how the model must use them: `choice` is auto, required, none or
    function (then `forced` names it)."""

    tools: tuple[Tool, ...]
    choice: str
    forced: str | None = None

    @property
    def active(self) -> bool:
        return self.choice != "none"

    def tool(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)

    def forced_tool(self) -> Tool | None:
        """The tool every answer calls: the named one, or the only one under "required"."""
        if self.choice == "function":
            return self.tool(self.forced or "")
        return self.tools[0] if self.choice == "required" and len(self.tools) == 1 else None

    def schema(self) -> Mapping[str, Any] | None:
        """The JSON schema the answer is generated under (None: free generation)."""
        forced = self.forced_tool()
        if forced is not None:
            return forced.parameters
        if self.choice != "required":
            return None
        return {"anyOf": [{"type": "object", "additionalProperties": False,
                           "required": ["name", "arguments"],
                           "properties": {"name": {"const": t.name}, "arguments": t.parameters}}
                          for t in self.tools]}

    def key(self) -> Any:
        return [self.choice, self.forced, [[t.name, t.description, t.parameters]
                                           for t in self.tools]]

    def prompt(self) -> str:
        """The system message describing the tools."""
        lines = ["You can call these tools. To call one, answer only with a JSON object "
                 '{"name": <tool name>, "arguments": <arguments object>}.']
        for tool in self.tools:
            lines.append(f"- {tool.name}: {tool.description} Parameters: "
                         f"{json.dumps(tool.parameters, separators=(',', ':'), sort_keys=True)}")
        if self.forced_tool() is not None:
            lines.append(f"Call {self.forced_tool().name}: answer with its arguments "  # type: ignore[union-attr]
                         "object only.")
        return "\n".join(lines)

    def calls(self, text: str) -> list[dict[str, Any]] | None:
        """The tool calls in the answer `text`, or None when it is plain content."""
        forced = self.forced_tool()
        if forced is not None:
            value = first_json_object(text)
            return [tool_call(forced.name, value if value is not None else text)]
        value = first_json_object(text)
        if value is None or set(value) != {"name", "arguments"}:
            return None
        tool = self.tool(str(value["name"]))
        if tool is None or not isinstance(value["arguments"], dict) \
                or schema_error(value["arguments"], tool.parameters) is not None:
            return None
        return [tool_call(tool.name, value["arguments"])]


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    """An OpenAI `tool_calls[]` entry (arguments as a compact JSON string)."""
    text = arguments if isinstance(arguments, str) else \
        json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": text}}


def _check_parameters(schema: Any, where: str) -> Mapping[str, Any]:
    if schema is None:
        return EMPTY_PARAMETERS
    try:
        check_schema(schema)
        check_grammar_schema(schema)
    except (InvalidSchemaError, SchemaError) as err:
        raise ToolError(where, str(err)) from None
    return schema


def _tool(raw: Any, i: int) -> Tool:
    where = f"tools[{i}]"
    if not isinstance(raw, dict) or raw.get("type") != "function" \
            or not isinstance(raw.get("function"), dict):
        raise ToolError(where, "must be {'type': 'function', 'function': {...}}")
    function = raw["function"]
    name = function.get("name")
    if not isinstance(name, str) or not name or len(name) > 64 \
            or not all(c.isalnum() or c in "_-" for c in name):
        raise ToolError(f"{where}.function.name", f"must be 1-64 letters, digits, _ or -, got "
                                                  f"{name!r}")
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise ToolError(f"{where}.function.description", "must be a string")
    return Tool(name, description, _check_parameters(function.get("parameters"),
                                                     f"{where}.function.parameters"))


def _choice(raw: Any, tools: tuple[Tool, ...]) -> tuple[str, str | None]:
    if raw is None:
        return "auto", None
    if isinstance(raw, str):
        if raw not in CHOICES:
            raise ToolError("tool_choice", f"must be one of {', '.join(CHOICES)} or "
                                           "{'type': 'function', 'function': {'name': ...}}")
        return raw, None
    name = raw.get("function", {}).get("name") if isinstance(raw, dict) \
        and raw.get("type") == "function" and isinstance(raw.get("function"), dict) else None
    if not isinstance(name, str):
        raise ToolError("tool_choice", "must be {'type': 'function', 'function': {'name': ...}}")
    if name not in {t.name for t in tools}:
        raise ToolError("tool_choice.function.name", f"{name!r} is not one of the tools: "
                                                     f"{', '.join(t.name for t in tools)}")
    return "function", name


def parse_tools(body: Mapping[str, Any]) -> ToolPlan | None:
    """The request's ToolPlan, or None without tools; ToolError names the bad field."""
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise ToolError(legacy, "is not supported: use tools and tool_choice")
    raw = body.get("tools")
    if raw is None:
        if body.get("tool_choice") not in (None, "none"):
            raise ToolError("tool_choice", "needs tools")
        return None
    if not isinstance(raw, list) or not raw:
        raise ToolError("tools", "must be a non-empty list of tools")
    tools = tuple(_tool(item, i) for i, item in enumerate(raw))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ToolError("tools", f"tool names must be unique, got {', '.join(names)}")
    choice, forced = _choice(body.get("tool_choice"), tools)
    return ToolPlan(tools, choice, forced)


def history_message(message: Mapping[str, Any], where: str) -> dict[str, str] | None:
    """A `tool` message, or an assistant message holding only tool calls, as plain chat text
    (the chat template knows system, user and assistant); None for any other message."""
    if message.get("role") == "tool":
        content = message.get("content")
        if not isinstance(content, str):
            raise ToolError(f"{where}.content", "must be a string")
        call = message.get("tool_call_id") or "?"
        return {"role": "user", "content": f"Result of tool call {call}: {content}"}
    calls = message.get("tool_calls")
    if message.get("role") == "assistant" and message.get("content") is None and calls:
        if not isinstance(calls, list):
            raise ToolError(f"{where}.tool_calls", "must be a list")
        described = [{"name": c.get("function", {}).get("name"),
                      "arguments": c.get("function", {}).get("arguments")}
                     for c in calls if isinstance(c, dict)]
        return {"role": "assistant", "content": json.dumps(described, ensure_ascii=False)}
    return None
