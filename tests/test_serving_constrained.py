"""Grammar-constrained decoding on the OpenAI-compatible server, through the official `openai`
SDK against a real uvicorn with the tiny embedded model: response_format json_schema and
json_object (every answer valid, streamed too), logprobs with top_logprobs, forced tool calls,
bad schemas refused with a 400 naming the field; and LocalGenerator's `json_schemas`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import jsonschema
import openai
import pytest
from test_embedded_model import TINY
from test_serving import TOKEN, base_settings, running, wait_ready

from serving.app import create_app
from serving.catalog import ServedModel
from training.inference import DecodingSettings, LocalGenerator

VERDICT = {"type": "object", "additionalProperties": False, "required": ["d", "n"],
           "properties": {"d": {"enum": ["approve", "modify", "reject"]},
                          "n": {"type": "integer", "minimum": 1, "maximum": 5}}}
PROMPTS = ["Audit batch B26-001: qty_actual is missing.", "Is the signature on step 4 valid?",
           "Review the deviation log of line 3.", "Score this answer from 1 to 5."]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a GxP auditor. Answer in JSON."},
            {"role": "user", "content": text}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from training.embedded_model import build_embedded_base_model

    base = tmp_path_factory.mktemp("constrained") / "base"
    build_embedded_base_model(base, TINY)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GXPLAB_SERVE_TOKEN", TOKEN)
        app = create_app([ServedModel("base", str(base), None, "tiny embedded base")],
                         base_settings())
    with running(app) as url:
        wait_ready(url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
        yield SimpleNamespace(url=url, base=base, client=client)


def json_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema,
                                                   "strict": True}}


# --- LocalGenerator ------------------------------------------------------------------------------

def test_generator_constrains_the_chats_with_a_schema_and_leaves_the_others_free(served):
    generator = LocalGenerator(served.base, torch_threads=1)
    chats = [chat(p) for p in PROMPTS]
    free = generator.generate(chats, DecodingSettings(max_new_tokens=24))
    schemas = [VERDICT, None, VERDICT, None]
    mixed = generator.generate(chats, DecodingSettings(max_new_tokens=24), json_schemas=schemas,
                               logprobs=True, top_logprobs=3)
    for schema, answer, unconstrained in zip(schemas, mixed, free, strict=True):
        assert answer.constrained == (schema is not None)
        assert answer.logprobs and len(answer.logprobs) <= answer.completion_tokens
        if schema is None:
            assert answer.text == unconstrained.text  # a free row is not touched by the mask
            continue
        assert answer.finish_reason == "stop", answer
        jsonschema.validate(json.loads(answer.text), schema)
        # Renormalised over the allowed tokens: the first token must open the object.
        assert answer.logprobs[0].token.startswith("{")
        assert all(t.token.startswith("{") for t in answer.logprobs[0].top)
    assert not any(a.constrained for a in free) and all(a.logprobs is None for a in free)
    assert len(generator.grammars) == 1  # compiled once for the two chats
    with pytest.raises(ValueError, match="json_schemas: 1 entries for 4 chats"):
        generator.generate(chats, json_schemas=[VERDICT])


def test_generator_reports_a_constrained_answer_cut_by_max_new_tokens(served):
    generator = LocalGenerator(served.base, torch_threads=1)
    [answer] = generator.generate([chat(PROMPTS[0])], DecodingSettings(max_new_tokens=3),
                                  json_schemas=[VERDICT])
    assert answer.constrained and answer.finish_reason == "length"
    assert answer.text.startswith("{") and answer.completion_tokens == 3


# --- the server ----------------------------------------------------------------------------------

def test_json_schema_answers_validate_also_streamed(served):
    for prompt in PROMPTS:
        raw = served.client.chat.completions.with_raw_response.create(
            model="base", messages=chat(prompt), max_tokens=40, temperature=0,
            response_format=json_format(VERDICT))
        answer = raw.parse()
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content), VERDICT)
        assert raw.headers["x-gxplab-constrained"] == "true"
        assert "x-gxplab-json-attempts" not in raw.headers  # one generation, no retry
        streamed = served.client.chat.completions.create(
            model="base", messages=chat(prompt), max_tokens=40, temperature=0.8, seed=3,
            response_format=json_format(VERDICT), stream=True)
        chunks = list(streamed)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        jsonschema.validate(json.loads(text), VERDICT)
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_object_is_any_object(served):
    answer = served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[1]), max_tokens=64, temperature=0,
        response_format={"type": "json_object"})
    choice = answer.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # cut by max_tokens: still the start of an object, reported as such
        assert choice.finish_reason == "length" and answer.usage.completion_tokens == 64
        assert choice.message.content.startswith("{")


def test_logprobs_and_top_logprobs_in_the_openai_shape(served):
    answer = served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[3]), max_tokens=40, temperature=0,
        response_format=json_format(VERDICT), logprobs=True, top_logprobs=5)
    content = answer.choices[0].logprobs.content
    text = answer.choices[0].message.content
    assert "".join(t.token for t in content) == text
    assert b"".join(bytes(t.bytes) for t in content).decode("utf-8") == text
    for entry in content:
        assert entry.logprob <= 0 and 1 <= len(entry.top_logprobs) <= 5
        # greedy: the chosen token is the most likely of the allowed ones
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
    digit = next(t for t in content if t.token.strip().isdigit())
    # Under the schema only 1-5 may come as the digit: renormalised, they sum to 1.
    assert {t.token.strip() for t in digit.top_logprobs} == set("12345")
    assert sum(2.718281828 ** t.logprob for t in digit.top_logprobs) == pytest.approx(1, abs=1e-3)
    free = served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[3]), max_tokens=8, temperature=0, logprobs=True,
        stream=True, stream_options={"include_usage": True})
    chunks = list(free)
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs
               for e in c.choices[0].logprobs.content]
    usage = next(c.usage for c in chunks if c.usage)
    assert 0 < len(entries) <= usage.completion_tokens
    assert all(e.top_logprobs == [] for e in entries)


def test_forced_tool_call(served):
    tools = [{"type": "function", "function": {"name": "record_verdict",
                                               "description": "Record the audit verdict.",
                                               "parameters": VERDICT}},
             {"type": "function", "function": {"name": "noop", "description": "Do nothing."}}]
    answer = served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[0]), max_tokens=40, temperature=0, tools=tools,
        tool_choice={"type": "function", "function": {"name": "record_verdict"}})
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "record_verdict"
    assert call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), VERDICT)
    required = served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[0]), max_tokens=64, temperature=0, tools=tools,
        tool_choice="required")
    [call] = required.choices[0].message.tool_calls
    assert call.function.name in ("record_verdict", "noop")
    if call.function.name == "record_verdict":
        jsonschema.validate(json.loads(call.function.arguments), VERDICT)
    streamed = list(served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[0]), max_tokens=40, temperature=0, tools=tools,
        tool_choice={"type": "function", "function": {"name": "record_verdict"}}, stream=True))
    deltas = [d for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "record_verdict"
    jsonschema.validate(json.loads("".join(d.function.arguments for d in deltas)), VERDICT)
    assert streamed[-1].choices[0].finish_reason == "tool_calls"
    none = served.client.chat.completions.create(
        model="base", messages=chat(PROMPTS[0]), max_tokens=8, temperature=0, tools=tools,
        tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason != \
        "tool_calls"


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"response_format": json_format({"type": "object", "properties": {"a": {"type": "nope"}}})},
     "response_format.json_schema.schema", "nope"),
    ({"response_format": json_format({"type": "object", "properties": {"a": {"type": "string",
                                                                             "pattern": "(["}}})},
     "response_format.json_schema.schema", ""),
    ({"response_format": json_format({"type": "array"})}, "response_format.json_schema.schema",
     "the root must be an object schema"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
     "tools[0].function.parameters", ""),
    ({"tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice.function.name", "'g' is not one of the tools"),
    ({"top_logprobs": 3}, "top_logprobs", "needs logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "between 0 and 20"),
])
def test_bad_requests_are_400_naming_the_field(served, extra, param, words):
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.chat.completions.create(model="base", messages=chat(PROMPTS[0]),
                                              max_tokens=8, **extra)
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param and caught.value.body["message"].startswith(param)
    assert words in caught.value.body["message"]


def test_tool_results_in_the_history_are_accepted(served):
    reply = httpx.post(f"{served.url}/v1/chat/completions", timeout=60,
                       headers={"Authorization": f"Bearer {TOKEN}"}, json={
        "model": "base", "max_tokens": 6, "messages": [
            *chat(PROMPTS[0]),
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "record_verdict", "arguments": "{\"d\":\"reject\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "recorded"}]})
    assert reply.status_code == 200, reply.text


def test_an_engine_without_grammars_refuses_what_it_cannot_honour():
    from test_serving import ScriptedEngine, post, scripted_server

    engine = ScriptedEngine(lambda _chat: '{"d": "approve", "n": 2}')
    with scripted_server(engine) as url:
        body = {"model": "scripted", "messages": chat(PROMPTS[0])}
        for extra, param in (({"stream": True, "response_format": {"type": "json_object"}},
                              "stream"), ({"logprobs": True}, "logprobs")):
            reply = post(url, {**body, **extra})
            assert reply.status_code == 400 and reply.json()["error"]["param"] == param
        # JSON without streaming still goes through the check-and-retry path
        reply = post(url, {**body, "response_format": json_format(VERDICT)})
        assert reply.status_code == 200 and reply.headers["x-gxplab-json-attempts"] == "1"
        assert "x-gxplab-constrained" not in reply.headers


def test_tool_choice_auto_takes_only_a_well_formed_call():
    from serving.tools import parse_tools

    tools = [{"type": "function", "function": {"name": "record_verdict", "parameters": VERDICT}}]
    plan = parse_tools({"tools": tools})
    assert plan.choice == "auto" and plan.schema() is None and "record_verdict" in plan.prompt()
    [call] = plan.calls('{"name": "record_verdict", "arguments": {"d": "reject", "n": 2}}')
    assert call["function"] == {"name": "record_verdict", "arguments": '{"d":"reject","n":2}'}
    assert plan.calls('{"name": "record_verdict", "arguments": {"d": "maybe", "n": 2}}') is None
    assert plan.calls('{"name": "other", "arguments": {}}') is None
    assert plan.calls("The batch is fine.") is None
    forced = parse_tools({"tools": tools, "tool_choice": "required"})
    assert forced.schema() == VERDICT  # one tool: "required" forces it
