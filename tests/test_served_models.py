"""Served registry entries: a local model answered by the GxPLab server (serving/, started as a
subprocess on loopback) through litellm and the LLM client, as the GxP audit calls it."""

import dataclasses

import pytest
import torch
from test_embedded_model import TINY

from resources.clients.llm import LLMClient
from resources.clients.local_server import local_server, served_generate
from scoring.model_registry import load_model_registry, model_availability, parse_model_entry
from scoring.record_audit import record_output_schema
from synthetic.catalog import load_catalog
from training.embedded_model import build_embedded_base_model
from training.inference import DecodingSettings, LocalGenerator

CHATS = [[{"role": "system", "content": "You are a GxP auditor."},
          {"role": "user", "content": f"Record R{i}: is the verifier signature present?"}]
         for i in range(6)]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "base"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    build_embedded_base_model(path, TINY)
    yield str(path)
    torch.set_num_threads(previous)


def test_the_registry_resolves_a_served_entry_from_its_local_model():
    models = {m.id: m for m in load_model_registry()}
    served, local = models["served-gxp-audit"], models["embedded-gxp-audit"]
    assert served.kind == "served" and served.served_model == local.id
    assert served.adapter == local.adapter and served.model_assets == local.model_assets
    assert served.litellm_model == "openai/embedded-gxp-audit"
    # constrained by the server to the schema the caller sends, as the local model is in-process
    assert served.response_format == "json_schema" and served.max_tokens == local.max_tokens
    assert "started on loopback" in model_availability(served, environ={})[1]
    assert "$GXPLAB_SERVE_URL" in model_availability(
        served, environ={"GXPLAB_SERVE_URL": "http://127.0.0.1:1/v1"})[1]
    with pytest.raises(ValueError, match="field 'served_model'"):
        parse_model_entry({"id": "s", "kind": "served"}, {}, "models[0]")
    with pytest.raises(ValueError, match="do not apply to kind served"):
        parse_model_entry({"id": "s", "kind": "served", "served_model": "x", "adapter": "a"},
                          {}, "models[0]")


def test_served_answers_equal_the_in_process_model(tiny_base, tmp_path):
    """Greedy decoding through the server (batched by it), constrained to the record audit's
    schema, gives the in-process constrained answers, and a second call with the same model
    files is answered from the client's cache."""
    schema = record_output_schema(load_catalog())
    model = dataclasses.replace(
        next(m for m in load_model_registry() if m.id == "served-gxp-audit"),
        served_model="tiny", litellm_model="openai/tiny", adapter=None, max_tokens=48,
        api_base_env=None)
    expected = LocalGenerator(tiny_base).generate(CHATS, DecodingSettings(max_new_tokens=48),
                                                  batch_size=1, json_schemas=[schema] * len(CHATS))
    client = LLMClient(cache_dir=tmp_path / "cache", pricing={})
    entry = {"name": "tiny", "base_model_path": tiny_base, "adapter_path": None}
    lines = []
    generate = served_generate(model, entry, client, model_key="base@run1", log=lines.append,
                               json_schema=schema)
    answers = generate(CHATS)
    assert [a.text for a in answers] == [e.text for e in expected]
    assert all(e.constrained for e in expected)
    assert all(a.completion_tokens > 0 and a.prompt_tokens > 0 for a in answers)
    assert any("GxPLab server started on http://127.0.0.1:" in line for line in lines)
    again = generate(CHATS)  # a new server: the cache answers, the text is the same
    assert [a.text for a in again] == [a.text for a in answers]
    # ...and the latency is the model's (the original call), not the cache lookup's
    assert [a.latency_s for a in again] == [a.latency_s for a in answers]
    assert all(a.latency_s > 0.001 for a in again)
    client.close()


def test_a_server_that_cannot_start_says_why(tmp_path):
    bad = [{"name": "broken", "base_model_path": str(tmp_path / "nowhere"), "adapter_path": None}]
    with pytest.raises(RuntimeError, match="GxPLab server"), local_server(bad):
        pass
