"""The litellm client against a real local HTTP server, and the model registry."""

import asyncio
import json
import logging
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, FakeReply, fixed, sequence

from resources.clients.llm import LLMClient, check_pricing, load_pricing
from scoring.model_output import OUTPUT_JSON_SCHEMA
from scoring.model_registry import (
    CandidateModel,
    enabled_candidates,
    load_model_registry,
    model_availability,
    resolve_api_base,
    resolve_litellm_model,
)

SECRET = "sk-test-Zq81-do-not-leak"
KEY_ENV = "GXPLAB_TEST_LLM_KEY"
ANSWER = '{"summary": "No deviations found.", "findings": []}'
USAGE = {"prompt_tokens": 2000, "completion_tokens": 500}


@pytest.fixture
def start_server():
    servers = []

    def start(responder=None):
        server = FakeOpenAIServer(responder or fixed(FakeReply(content=ANSWER, usage=USAGE)))
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def fake_model(server, **overrides):
    fields = {"id": "fake-model", "kind": "litellm", "litellm_model": "openai/fake-model",
              "api_base": server.base_url, "api_key_env": KEY_ENV, "required_env": (KEY_ENV,),
              "response_format": "json_object", "max_tokens": 256}
    return CandidateModel(**{**fields, **overrides})


def client(tmp_path=None, **overrides):
    settings = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                "timeout_s": 10, "pricing": {}}
    return LLMClient(cache_dir=tmp_path, **{**settings, **overrides})


def requests_for(n):
    return [(f"r{i}", [{"role": "user", "content": f"audit batch {i}"}], f"key-{i}")
            for i in range(n)]


def test_ok_call_sends_the_model_settings_and_key(start_server):
    server = start_server()
    [result] = client().complete_many(fake_model(server), requests_for(1))
    assert (result.status, result.text, result.attempts, result.cached) == ("ok", ANSWER, 1, False)
    assert (result.prompt_tokens, result.completion_tokens) == (2000, 500)
    assert (result.cost_usd, result.cost_source) == (None, "unpriced")
    body = server.requests[0]
    assert body["model"] == "fake-model" and body["temperature"] == 0
    assert body["max_tokens"] == 256 and body["response_format"] == {"type": "json_object"}
    assert body["messages"] == [{"role": "user", "content": "audit batch 0"}]
    assert server.auth_headers == [f"Bearer {SECRET}"]


def test_json_schema_response_format_carries_the_output_schema(start_server):
    server = start_server()
    client().complete_many(fake_model(server, response_format="json_schema"), requests_for(1))
    sent = server.requests[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "gxp_audit_output"
    assert sent["json_schema"]["schema"] == {k: v for k, v in OUTPUT_JSON_SCHEMA.items()
                                             if k != "$schema"}


def test_no_response_format_when_none(start_server):
    server = start_server()
    client().complete_many(fake_model(server, response_format="none"), requests_for(1))
    assert "response_format" not in server.requests[0]


def test_rate_limit_then_success_is_retried(start_server):
    server = start_server(sequence(fixed(FakeReply(status=429, headers={"Retry-After": "0"})),
                                   fixed(FakeReply(content=ANSWER))))
    [result] = client().complete_many(fake_model(server), requests_for(1))
    assert (result.status, result.attempts, result.text) == ("ok", 2, ANSWER)
    assert server.n_requests == 2


def test_persistent_server_error_fails_after_max_retries(start_server):
    server = start_server(fixed(FakeReply(status=500)))
    [result] = client(max_retries=2).complete_many(fake_model(server), requests_for(1))
    assert (result.status, result.attempts, result.text) == ("error", 3, None)
    assert "InternalServerError" in result.error
    assert server.n_requests == 3


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(start_server, status):
    server = start_server(fixed(FakeReply(status=status)))
    [result] = client(max_retries=3).complete_many(fake_model(server), requests_for(1))
    assert (result.status, result.attempts) == ("error", 1)
    assert server.n_requests == 1


def test_timeout_is_retried_then_reported(start_server):
    server = start_server(fixed(FakeReply(content=ANSWER, delay_s=3.0)))
    model = fake_model(server, timeout_s=0.2)
    [result] = client(max_retries=1).complete_many(model, requests_for(1))
    assert (result.status, result.attempts) == ("error", 2)
    assert "Timeout" in result.error
    assert server.n_requests == 2


def test_rerun_is_served_from_cache_without_http(start_server, tmp_path):
    server = start_server()
    model = fake_model(server)
    pricing = {"fake-model": {"input_per_1m": 2.5, "output_per_1m": 10.0}}
    first = client(tmp_path, pricing=pricing).complete_many(model, requests_for(3))
    assert server.n_requests == 3
    # A new client on the same directory: the cache is on disk, not in memory.
    again = client(tmp_path, pricing=pricing).complete_many(model, requests_for(3))
    assert server.n_requests == 3
    for before, after in zip(first, again, strict=True):
        assert after.cached and not before.cached
        assert (after.text, after.cache_key, after.attempts) == (before.text, before.cache_key, 0)
        assert after.cost_usd == 0.0
        assert after.original_cost_usd == pytest.approx(0.01) == before.cost_usd
        assert after.original_latency_s == before.latency_s


def test_cache_key_changes_with_sampling_settings_and_messages(start_server, tmp_path):
    server = start_server()
    llm = client(tmp_path)
    llm.complete_many(fake_model(server), requests_for(1))
    llm.complete_many(fake_model(server, temperature=0.7), requests_for(1))
    llm.complete_many(fake_model(server, response_format="none"), requests_for(1))
    # Same caller key, other messages: the client hashes the messages itself.
    llm.complete_many(fake_model(server), [("r0", [{"role": "user", "content": "other"}], "key-0")])
    assert server.n_requests == 4


def test_failed_calls_are_not_cached(start_server, tmp_path):
    server = start_server(sequence(fixed(FakeReply(status=401)), fixed(FakeReply(content=ANSWER))))
    model = fake_model(server)
    [failed] = client(tmp_path).complete_many(model, requests_for(1))
    [retried] = client(tmp_path).complete_many(model, requests_for(1))
    assert (failed.status, retried.status, retried.cached) == ("error", "ok", False)
    assert server.n_requests == 2


def test_cost_from_model_pricing_yaml_entry(start_server):
    server = start_server()
    pricing = {"openai/fake-model": {"input_per_1m": 2.5, "output_per_1m": 10.0}}
    [result] = client(pricing=pricing).complete_many(fake_model(server), requests_for(1))
    # 2000 x 2.5 / 1e6 + 500 x 10 / 1e6
    assert result.cost_usd == pytest.approx(0.01)
    assert result.cost_source == "model_pricing.yaml"


def test_cost_from_litellm_cost_map(start_server):
    server = start_server()
    model = fake_model(server, id="gpt-4o", litellm_model="openai/gpt-4o")
    [result] = client().complete_many(model, requests_for(1))
    # litellm's bundled map prices gpt-4o at 2.5e-6 / 1e-5 USD per token.
    assert result.cost_usd == pytest.approx(2000 * 2.5e-6 + 500 * 1e-5)
    assert result.cost_source == "litellm"


def test_default_pricing_file_loads_and_bad_pricing_is_rejected():
    pricing = load_pricing()
    assert pricing["groq/llama-3.3-70b-versatile"]["input_per_1m"] == 0.59
    with pytest.raises(ValueError, match=r"models\.x field 'output_per_1m'"):
        check_pricing({"x": {"input_per_1m": 1.0, "output_per_1m": -1}})


@pytest.mark.parametrize(("client_limit", "model_limit", "bound"), [(4, None, 4), (16, 2, 2)])
def test_concurrency_bound_is_respected(start_server, client_limit, model_limit, bound):
    server = start_server(fixed(FakeReply(content=ANSWER, delay_s=0.05)))
    model = fake_model(server, max_concurrency=model_limit)
    results = client(max_concurrency=client_limit).complete_many(model, requests_for(24))
    assert all(r.status == "ok" for r in results)
    assert 1 <= server.max_in_flight <= bound
    assert server.n_requests == 24


def test_the_slot_is_released_while_a_retry_waits(start_server):
    """With one slot, the second request is sent while the first one waits out its Retry-After:
    the server sees r0, r1, then r0's retry (holding the slot while sleeping gave r0, r0, r1)."""
    server = start_server(sequence(
        fixed(FakeReply(status=429, headers={"Retry-After": "2"})),
        lambda body, _index: FakeReply(content=body["messages"][0]["content"])))
    results = client(max_concurrency=1, backoff_max_s=10).complete_many(
        fake_model(server), requests_for(2))
    assert [(r.status, r.attempts) for r in results] == [("ok", 2), ("ok", 1)]
    assert [body["messages"][0]["content"] for body in server.requests] == [
        "audit batch 0", "audit batch 1", "audit batch 0"]
    assert server.max_in_flight == 1


def test_a_retry_gets_the_next_slot_before_requests_not_yet_started(start_server):
    """With one slot, r0's retry (queued while r1 is answered) is sent before r2 and r3."""
    def respond(body, index):
        content = body["messages"][0]["content"]
        if index == 0:
            return FakeReply(status=503, headers={"Retry-After": "0"})
        return FakeReply(content=content, delay_s=1.0 if content.endswith(" 1") else 0.0)

    server = start_server(respond)
    results = client(max_concurrency=1).complete_many(fake_model(server), requests_for(4))
    assert [r.status for r in results] == ["ok"] * 4
    assert [body["messages"][0]["content"][-1] for body in server.requests] == [
        "0", "1", "0", "2", "3"]


@pytest.mark.parametrize(("attempt", "retry_after", "throttled", "drawn"), [
    (1, None, False, (0.0, 0.25)),  # 5xx, timeout, connection error: full jitter from 0.25 s
    (3, None, False, (0.0, 1.0)),
    (9, None, False, (0.0, 20.0)),  # the ceiling stops at backoff_max_s
    (1, None, True, (0.25, 0.5)),  # a 429 without Retry-After: equal jitter from 0.5 s
    (3, None, True, (1.0, 2.0)),
])
def test_backoff_draws_below_the_doubling_ceiling(monkeypatch, attempt, retry_after, throttled,
                                                   drawn):
    draws = []
    monkeypatch.setattr("resources.clients.llm.random.uniform",
                        lambda low, high: draws.append((low, high)) or high)
    delay = LLMClient(pricing={})._backoff_s(attempt, retry_after, throttled=throttled)
    assert draws == [drawn] and delay == drawn[1]


@pytest.mark.parametrize(("attempt", "throttled"), [(1, True), (4, True), (4, False)])
def test_retry_after_is_the_wait_not_added_to_a_backoff(monkeypatch, attempt, throttled):
    monkeypatch.setattr("resources.clients.llm.random.uniform",
                        lambda *_args: pytest.fail("no backoff drawn under a Retry-After"))
    settings = LLMClient(pricing={})
    assert settings._backoff_s(attempt, 1.0, throttled=throttled) == 1.0
    assert settings._backoff_s(attempt, 600.0, throttled=throttled) == 20.0  # backoff_max_s


def test_each_failure_gets_its_own_backoff_kind(start_server, monkeypatch):
    """A 503 backs off as an error, a 429 without Retry-After as throttling, one with it waits
    what it says; the real path passes these to _backoff_s."""
    waits = []
    original = LLMClient._backoff_s

    def spy(self, attempt, retry_after_s, *, throttled=False):
        waits.append((attempt, retry_after_s, throttled))
        return original(self, attempt, retry_after_s, throttled=throttled)

    monkeypatch.setattr(LLMClient, "_backoff_s", spy)
    server = start_server(sequence(fixed(FakeReply(status=503)), fixed(FakeReply(status=429)),
                                   fixed(FakeReply(status=429, headers={"Retry-After": "0"})),
                                   fixed(FakeReply(content=ANSWER))))
    [result] = client(max_retries=3).complete_many(fake_model(server), requests_for(1))
    assert (result.status, result.attempts) == ("ok", 4)
    assert waits == [(1, None, False), (2, None, True), (3, 0.0, True)]


def test_results_keep_input_order_and_progress_is_reported(start_server):
    def echo(body, index):  # later requests answer sooner
        content = body["messages"][0]["content"]
        return FakeReply(content=content, delay_s=0.01 * (5 - int(content.split()[-1])))

    server = start_server(echo)
    progress = []
    results = client().complete_many(fake_model(server), requests_for(5),
                                     progress=lambda done, total: progress.append((done, total)))
    assert [r.request_id for r in results] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r.text for r in results] == [f"audit batch {i}" for i in range(5)]
    assert progress == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_complete_many_works_inside_a_running_event_loop(start_server):
    server = start_server()

    async def caller():  # e.g. a notebook cell or an async Dagster op
        return client().complete_many(fake_model(server), requests_for(2))

    assert [r.status for r in asyncio.run(caller())] == ["ok", "ok"]
    assert server.n_requests == 2


def test_api_key_never_leaks_into_results_errors_or_logs(start_server, caplog):
    caplog.set_level(logging.DEBUG)
    echoing = f"Incorrect API key provided: {SECRET}"
    server = start_server(sequence(fixed(FakeReply(status=401, error_message=echoing)),
                                   fixed(FakeReply(status=503, error_message=echoing))))
    model = fake_model(server)
    results = client(max_retries=1).complete_many(model, requests_for(2))
    assert server.auth_headers == [f"Bearer {SECRET}"] * 3  # the key did reach the server
    assert all(r.status == "error" and "***" in r.error for r in results)
    assert "Incorrect API key provided" in results[0].error
    for text in (*(json.dumps(r.to_dict()) for r in results), *(repr(r) for r in results),
                 repr(model), caplog.text):
        assert SECRET not in text


def test_unavailable_model_makes_no_request(start_server, monkeypatch):
    server = start_server()
    monkeypatch.delenv(KEY_ENV)
    [result] = client().complete_many(fake_model(server), requests_for(1))
    assert result.status == "error" and result.attempts == 0
    assert result.error == f"skipped: environment variable {KEY_ENV} is not set"
    assert server.n_requests == 0


def test_keyless_endpoint_gets_a_placeholder_not_another_providers_key(start_server, monkeypatch):
    server = start_server()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-openai-key-1234")
    monkeypatch.delenv(KEY_ENV)
    client().complete_many(fake_model(server, required_env=()), requests_for(1))
    assert server.auth_headers == ["Bearer no-key-configured"]


# --- model registry ---------------------------------------------------------------------------

def test_registry_file_has_the_expected_candidates():
    models = {m.id: m for m in load_model_registry()}
    assert models["reference_auditor"].kind == "rule_based"
    assert models["gpt-4o"].required_env == ("OPENAI_API_KEY",)
    assert models["claude-opus-bedrock"].litellm_model.startswith("bedrock/")
    assert set(models["claude-opus-bedrock"].required_env) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION_NAME"}
    assert models["gemini-1.5-pro"].litellm_model.startswith("gemini/")
    assert models["groq-llama-3.3-70b"].api_key_env == "GROQ_API_KEY"
    assert models["ollama-llama3.1"].api_base_env == "OLLAMA_API_BASE"
    assert all(m.temperature == 0 for m in models.values())


def test_availability_reasons():
    models = {m.id: m for m in load_model_registry()}
    assert model_availability(models["gpt-4o"], {}) == (
        False, "skipped: environment variable OPENAI_API_KEY is not set")
    assert model_availability(models["gpt-4o"], {"OPENAI_API_KEY": "sk-x"}) == (True, "available")
    bedrock = model_availability(models["claude-opus-bedrock"], {"AWS_REGION_NAME": "us-east-1"})
    assert bedrock == (False, "skipped: environment variables AWS_ACCESS_KEY_ID, "
                              "AWS_SECRET_ACCESS_KEY are not set")
    assert model_availability(models["ollama-llama3.1"], {})[0] is False
    assert model_availability(models["openai-compatible"], {}) == (
        False, "skipped: environment variable GXPLAB_OPENAI_COMPAT_BASE is not set")
    assert model_availability(models["reference_auditor"], {})[0] is True
    disabled = CandidateModel(id="x", kind="litellm", litellm_model="openai/x", enabled=False)
    assert model_availability(disabled, {})[0] is False


def test_openai_compatible_entry_resolves_from_environment():
    model = {m.id: m for m in load_model_registry()}["openai-compatible"]
    environ = {"GXPLAB_OPENAI_COMPAT_BASE": "http://10.0.0.5:8000/v1",
               "GXPLAB_OPENAI_COMPAT_MODEL": "qwen2.5-7b"}
    assert resolve_litellm_model(model, environ) == "openai/qwen2.5-7b"
    assert resolve_litellm_model(model, {}) == "openai/local-model"
    assert resolve_api_base(model, environ) == "http://10.0.0.5:8000/v1"


def test_enabled_candidates_filter_and_name_unknown_ids():
    registry = [CandidateModel(id="a", kind="local", benchmarks=("rag",)),
                CandidateModel(id="b", kind="local", benchmarks=("rag",), enabled=False),
                CandidateModel(id="c", kind="litellm", litellm_model="openai/c",
                               benchmarks=("amr_judge",))]
    assert [m.id for m in enabled_candidates("rag", registry=registry)] == ["a"]
    assert [m.id for m in enabled_candidates("rag", ["a"], registry=registry)] == ["a"]
    with pytest.raises(ValueError, match=r"config field 'models': \['b'\] are not enabled rag"):
        enabled_candidates("rag", ["b"], registry=registry)
    with pytest.raises(ValueError, match=r"only local models can be amr_judge candidates.*\['c'\]"):
        enabled_candidates("amr_judge", kinds=("local",), registry=registry)
    rag = [m.id for m in enabled_candidates("rag")]  # configs/models.yaml
    assert rag[0] == "embedded-base" and "embedded-rag-sft-dpo" in rag


def write_registry(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(f"models:\n{entries}", encoding="utf-8")
    return path


@pytest.mark.parametrize(("entries", "message"), [
    ("  - {id: a, kind: litellm, litellm_model: openai/a}\n"
     "  - {id: a, kind: litellm, litellm_model: openai/b}\n",
     r"models\[1\] field 'id': duplicate id 'a' \(first used by models\[0\]\)"),
    ("  - {id: Bad Id, kind: litellm}\n", r"models\[0\] field 'id'"),
    ("  - {id: a, kind: api}\n", r"models\[0\] \(id 'a'\) field 'kind'"),
    ("  - {id: a, kind: litellm}\n", r"\(id 'a'\) field 'litellm_model': required"),
    ("  - {id: a, kind: litellm, litellm_model: openai/a, response_format: xml}\n",
     r"\(id 'a'\) field 'response_format'"),
    ("  - {id: a, kind: litellm, litellm_model: openai/a, max_tokens: -5}\n",
     r"\(id 'a'\) field 'max_tokens'"),
    ("  - {id: a, kind: litellm, litellm_model: openai/a, temprature: 0}\n",
     r"\(id 'a'\): unknown field\(s\) \['temprature'\]"),
])
def test_bad_registry_entries_are_named(tmp_path, entries, message):
    path = write_registry(tmp_path, entries)
    with pytest.raises(ValueError, match=message) as error:
        load_model_registry(path)
    assert str(path) in str(error.value)


def test_a_secret_pasted_as_env_name_is_rejected_without_echoing_it(tmp_path):
    path = write_registry(tmp_path, "  - {id: a, kind: litellm, litellm_model: openai/a, "
                                    "required_env: [sk-live-abc123secret]}\n")
    with pytest.raises(ValueError, match="environment variable NAMES") as error:
        load_model_registry(path)
    assert "sk-live-abc123secret" not in str(error.value)
