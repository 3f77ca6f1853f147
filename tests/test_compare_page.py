"""The RAG comparison (serving/compare.py) on a real uvicorn: a rag_index Parquet file of part of
the real corpus embedded with the packaged MiniLM, the tiny embedded model served under the three
names of configs/rag.yaml comparison.models (the base, and the base with two different LoRA
adapters), and scripted engines for the citation, tool-call and markup paths. The page is driven
in headless Debian Chromium (selenium with /usr/bin/chromium and /usr/bin/chromedriver: `bash
scripts/ensure_chromium.sh`; skipped without them unless $CI is set). With
GXPLAB_UPDATE_SCREENSHOTS=1 it rewrites docs/rag-compare.png and docs/rag-compare-scripted.png;
otherwise it saves them in its tmp_path and checks the docs' copies are untouched."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from headless_chromium import Screenshots, headless_chromium
from test_embedded_model import TINY
from test_serving import ScriptedEngine, base_settings, running, wait_ready

from retrieval.answering import build_rag_messages
from retrieval.chunking import chunk_documents
from retrieval.index import (
    HybridIndex,
    chunk_passage,
    hybrid_index_from_table,
    load_hybrid_index_file,
    minilm_embedder,
    read_index_table,
)
from retrieval.settings import load_rag_settings
from serving.__main__ import main as serving_main
from serving.app import create_app
from serving.catalog import ServedModel
from serving.compare import load_rag_comparison
from serving.guardrails import redact_phi
from synthetic.amr_cases import load_guidelines
from synthetic.rag_corpus import build_rag_corpus
from training.inference import DecodingSettings, LocalGenerator

TOKEN = "test-compare-token-0123456789"
NAMES = load_rag_settings().comparison_models
QUESTION = "Within how many hours of admission must medication reconciliation be completed?"
INVENTED = "sop-invented#000"
MARKUP = '<img src=x onerror="document.title=\'pwned\'"> <b>not JSON</b>'
MAX_TOKENS = 16


def _compare(url: str, body: object, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/rag/compare", content=content, timeout=120,
                      headers={"Content-Type": "application/json", **kwargs.pop("headers", {})},
                      **kwargs)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rag_files(tmp_path_factory):
    """Ten documents of the real corpus, chunked and embedded as the rag_index asset does, in a
    Parquet file as the IO manager stores it; and an index built from the same chunks now."""
    settings = load_rag_settings()
    documents = build_rag_corpus(settings.seed)
    by_kind = {kind: [d for d in documents if d.doc_id.startswith(f"{kind}-")]
               for kind in ("sop", "amr", "brsop")}
    chosen = by_kind["sop"][:5] + by_kind["amr"][:3] + by_kind["brsop"][:2]
    assert "sop-medication-reconciliation" in {d.doc_id for d in chosen}
    chunks = chunk_documents(chosen, max_words=settings.max_words,
                             overlap_words=settings.overlap_words)
    embed = minilm_embedder()
    vectors = embed([chunk_passage(chunk) for chunk in chunks])
    frame = pd.DataFrame({
        "chunk_id": [c.chunk_id for c in chunks], "doc_id": [c.doc_id for c in chunks],
        "title": [c.title for c in chunks], "text": [c.text for c in chunks],
        "embedding": [row.astype("float32").tolist() for row in vectors]})
    path = tmp_path_factory.mktemp("rag_index") / "all.parquet"
    frame.to_parquet(path, index=False)
    return SimpleNamespace(path=path, embed=embed, settings=settings, chunks=chunks,
                           fresh=HybridIndex(chunks, embed, vectors=vectors))


@pytest.fixture(scope="module")
def tiny_catalog(tmp_path_factory) -> list[ServedModel]:
    """The tiny model as the base, and two random (not no-op) LoRA adapters on it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.embedded_model import build_embedded_base_model

    root = tmp_path_factory.mktemp("compare_models")
    base = root / "base"
    build_embedded_base_model(base, TINY)
    adapters = []
    for seed, name in ((1, "sft"), (2, "dpo")):
        torch.manual_seed(seed)
        lora = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                          init_lora_weights=False, task_type="CAUSAL_LM")
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(
            root / name)
        AutoTokenizer.from_pretrained(base).save_pretrained(root / name)
        adapters.append(str(root / name))
    return [ServedModel(NAMES[0], str(base), None, "tiny base"),
            ServedModel(NAMES[1], str(base), adapters[0], "tiny base + LoRA 1"),
            ServedModel(NAMES[2], str(base), adapters[1], "tiny base + LoRA 2")]


@pytest.fixture(scope="module")
def served(rag_files, tiny_catalog) -> Iterator[SimpleNamespace]:
    """The three tiny models with the comparison, behind a bearer token."""
    comparison = load_rag_comparison(rag_files.path, NAMES, embed=rag_files.embed,
                                     max_tokens=MAX_TOKENS)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GXPLAB_SERVE_TOKEN", TOKEN)
        app = create_app(tiny_catalog, base_settings(), rag=comparison)
    with running(app) as url:
        wait_ready(url)
        yield SimpleNamespace(url=url, comparison=comparison, catalog=tiny_catalog,
                              auth={"Authorization": f"Bearer {TOKEN}"})


def _chunk_ids(chat) -> list[str]:
    """The chunk ids of the sources block of a RAG prompt, in order."""
    sources = next(m["content"] for m in chat if "<<<SOURCES" in m["content"])
    return re.findall(r"^<<<CHUNK (\S+)$", sources, re.M)


def _scripted(name: str) -> ScriptedEngine:
    """NAMES[0] cites the first chunk and an invented id (with a phone number in its answer);
    NAMES[1] calls the dose tool, then answers from its result; NAMES[2] answers markup."""
    drug = next(iter(load_guidelines().drugs))

    def cites(chat) -> str:
        return json.dumps({"answer": "Within 24 hours; questions to QA at 555-867-5309.",
                           "citations": [_chunk_ids(chat)[0], INVENTED], "confidence": 0.9})

    def tool(chat) -> str:
        last = chat[-1]["content"]
        if "<<<TOOL_RESULT" not in last:
            return json.dumps({"tool_call": {"name": "drug_dose_lookup",
                                             "arguments": {"drug": drug}}})
        result_id = re.search(r"## Tool result (\S+)", last).group(1)
        return json.dumps({"answer": f"See the {drug} regimen.", "citations": [result_id],
                           "confidence": 0.8})

    return ScriptedEngine({NAMES[0]: cites, NAMES[1]: tool,
                           NAMES[2]: lambda chat: MARKUP}[name])


@pytest.fixture(scope="module")
def scripted(rag_files) -> Iterator[SimpleNamespace]:
    """The comparison over scripted engines, without a token (loopback, auth off)."""
    engines = {name: _scripted(name) for name in NAMES}
    comparison = load_rag_comparison(rag_files.path, NAMES, embed=rag_files.embed,
                                     max_tokens=32)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("GXPLAB_SERVE_TOKEN", raising=False)
        app = create_app([ServedModel(name, "unused") for name in NAMES], base_settings(),
                         engine_factory=lambda model: engines[model.name], rag=comparison)
    with running(app) as url:
        wait_ready(url)
        yield SimpleNamespace(url=url, engines=engines)


# --- the API on the real models ------------------------------------------------------------------

def test_each_model_answers_from_the_chunks_hybrid_search_returns(served, rag_files):
    reply = _compare(served.url, {"question": QUESTION}, headers=served.auth)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    s = rag_files.settings
    hits = rag_files.fresh.search(QUESTION, k=s.k, mode="hybrid", depth=s.depth, rrf_k=s.rrf_k)
    assert [c["chunk_id"] for c in body["retrieved"]] == [h.chunk.chunk_id for h in hits]
    assert [c["text"] for c in body["retrieved"]] == [h.chunk.text for h in hits]
    assert body["retrieved"][0]["doc_id"] == "sop-medication-reconciliation"
    assert list(body["answers"]) == list(NAMES)
    for name, answer in body["answers"].items():
        assert "error" not in answer, (name, answer)
        assert answer["replies"] and all(isinstance(r, str) for r in answer["replies"])
        assert answer["latency_s"] > 0 and isinstance(answer["json_valid"], bool)
        shown = {c["chunk_id"] for c in body["retrieved"]} | {
            call["result_id"] for call in answer["tool_calls"] if call["result_id"]}
        assert {c["id"] for c in answer["citations"] if c["in_sources"]} <= shown
        assert not {c["id"] for c in answer["citations"] if not c["in_sources"]} & shown
        assert (answer["answer"] is None) == (answer["reply_kind"] != "answer")
    # The server's first reply is the in-process model's greedy answer to the same RAG prompt.
    messages = build_rag_messages(QUESTION, [], hits, prompt=served.comparison.prompt)
    expected = LocalGenerator(served.catalog[0].base_model_path).generate(
        [messages], DecodingSettings(max_new_tokens=MAX_TOKENS))[0].text
    assert body["answers"][NAMES[0]]["replies"][0] == redact_phi(expected).text
    assert body["answers"][NAMES[0]]["replies"][0] != body["answers"][NAMES[1]]["replies"][0]
    # A subset, in the order asked: the same greedy replies (from the response cache).
    subset = _compare(served.url, {"question": QUESTION, "models": [NAMES[2], NAMES[0]]},
                      headers=served.auth).json()
    assert list(subset["answers"]) == [NAMES[2], NAMES[0]]
    for name in subset["answers"]:
        assert subset["answers"][name]["replies"] == body["answers"][name]["replies"]


def test_bad_requests_are_refused_like_the_api(served):
    assert _compare(served.url, {"question": QUESTION}).status_code == 401
    wrong = _compare(served.url, {"question": QUESTION},
                     headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and TOKEN not in wrong.text
    cases = {"body": b"{nope", "question": {"question": "   "},
             "models[0]": {"question": QUESTION, "models": ["gpt-4o"]},
             "models": {"question": QUESTION, "models": []},
             "history": {"question": QUESTION, "history": []}}
    for param, body in cases.items():
        reply = _compare(served.url, body, headers=served.auth)
        assert reply.status_code == 400, (param, reply.text)
        assert reply.json()["error"]["param"] == param
    long = _compare(served.url, {"question": "x" * 2500}, headers=served.auth)
    assert long.status_code == 400 and "at most 2000 characters" in long.text
    assert "must be a non-empty string" in _compare(
        served.url, {"question": ""}, headers=served.auth).json()["error"]["message"]
    too_big = _compare(served.url, {"question": "x" * 5000}, headers=served.auth)
    assert too_big.status_code == 413
    page = httpx.get(f"{served.url}/compare")  # the page holds no data: no token needed
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    assert all(name in page.text for name in NAMES) and "innerHTML" not in page.text
    assert '"auth": true' in page.text


def test_without_an_index_the_routes_say_how_to_enable_them():
    with pytest.MonkeyPatch.context() as env:
        env.delenv("GXPLAB_SERVE_TOKEN", raising=False)
        app = create_app([ServedModel("m", "unused")], base_settings(),
                         engine_factory=lambda _model: ScriptedEngine(lambda chat: "ok"))
    with running(app) as url:
        page = httpx.get(f"{url}/compare")
        assert page.status_code == 404 and "--rag-index" in page.text
        api = _compare(url, {"question": QUESTION})
        assert api.status_code == 404 and "--rag-index" in api.json()["error"]["message"]
        assert api.json()["error"]["code"] == "rag_comparison_not_enabled"


# --- the answer paths on scripted engines --------------------------------------------------------

def test_citations_tool_calls_and_invalid_replies(scripted, rag_files):
    body = _compare(scripted.url, {"question": QUESTION}).json()
    retrieved = {c["chunk_id"]: c for c in body["retrieved"]}
    first = body["retrieved"][0]
    cites, tool, markup = (body["answers"][name] for name in NAMES)
    assert cites["json_valid"] and cites["reply_kind"] == "answer"
    assert "555-867-5309" not in json.dumps(cites) and "[REDACTED:phone]" in cites["answer"]
    assert cites["citations"] == [
        {"id": first["chunk_id"], "kind": "chunk", "title": first["title"],
         "text": first["text"], "in_sources": True},
        {"id": INVENTED, "kind": "unknown", "title": "", "text": "", "in_sources": False}]
    assert INVENTED not in retrieved and any(INVENTED in e for e in cites["reply_errors"])
    (call,) = tool["tool_calls"]
    assert call["call"]["name"] == "drug_dose_lookup" and not call["errors"]
    assert call["result_id"] == "tool:drug_dose_lookup#1" and call["result"]["regimen"]
    assert len(tool["replies"]) == 2 and tool["json_valid"]
    assert [(c["id"], c["kind"], c["in_sources"]) for c in tool["citations"]] == \
        [("tool:drug_dose_lookup#1", "tool_result", True)]
    assert json.loads(tool["citations"][0]["text"]) == call["result"]
    assert not markup["json_valid"] and markup["answer"] is None and markup["reply_errors"]
    assert markup["replies"] == [MARKUP]
    # Every model was shown the same retrieved chunks, in order, escaped as data.
    for engine in scripted.engines.values():
        assert _chunk_ids(engine.calls[0][0][0]) == list(retrieved)


# --- loading, settings, the command line ---------------------------------------------------------

def test_the_index_file_and_the_table_are_checked(rag_files, tmp_path):
    index = load_hybrid_index_file(rag_files.path, rag_files.embed)
    assert np.array_equal(index.vectors, rag_files.fresh.vectors)
    rows = read_index_table(rag_files.path)
    with pytest.raises(ValueError, match=r"t: row 1: field 'embedding' is missing"):
        hybrid_index_from_table([rows[0], {k: v for k, v in rows[1].items()
                                           if k != "embedding"}], rag_files.embed, source="t")
    with pytest.raises(ValueError, match=r"row 1 \(.*\): field 'embedding' has 3 dimensions"):
        hybrid_index_from_table([rows[0], {**rows[1], "embedding": [0.1, 0.2, 0.3]}],
                                rag_files.embed)
    with pytest.raises(ValueError, match="appears twice"):
        hybrid_index_from_table([rows[0], rows[0]], rag_files.embed)
    with pytest.raises(ValueError, match="another embedder"):
        hybrid_index_from_table(rows[:2], lambda texts: np.zeros((len(texts), 5)))
    no_vectors = tmp_path / "no_vectors.parquet"
    pd.DataFrame(rows).drop(columns=["embedding"]).to_parquet(no_vectors)
    with pytest.raises(ValueError, match=r"no_vectors.parquet: column 'embedding' is missing"):
        read_index_table(no_vectors)
    with pytest.raises(ValueError, match="no such rag_index Parquet file"):
        read_index_table(tmp_path / "absent.parquet")


def test_the_comparison_section_is_checked(tmp_path):
    from retrieval.settings import RAG_CONFIG

    text = RAG_CONFIG.read_text()
    line = "  models: [embedded-base, embedded-rag-sft, embedded-rag-sft-dpo]"
    assert line in text
    for models, message in (("[]", "models' must be a non-empty list"),
                            ("[Base Model]", r"models\[0\]"),
                            ("[a, b, a]", r"models\[2\].*appears twice")):
        path = tmp_path / "rag.yaml"
        path.write_text(text.replace(line, f"  models: {models}"))
        with pytest.raises(ValueError, match=f"rag.yaml: field 'comparison.{message}"):
            load_rag_settings(path)


def test_the_command_line_checks_the_compared_names(rag_files, capsys):
    assert serving_main(["--model", "a=/nowhere", "--rag-index", str(rag_files.path),
                         "--compare-models", "a,b"]) == 2
    assert "--compare-models: 'b' is not served; served models: a" in capsys.readouterr().err
    assert serving_main(["--model", "a=/nowhere", "--compare-models", "a"]) == 2
    assert "needs --rag-index" in capsys.readouterr().err
    settings = replace(base_settings(), max_tokens=8, default_max_tokens=8)
    comparison = load_rag_comparison(rag_files.path, ["a"], embed=rag_files.embed)
    with pytest.raises(ValueError, match=r"comparison.max_tokens \(160\) exceeds"):
        create_app([ServedModel("a", "unused")], settings, rag=comparison)


def test_gxplab_serve_passes_the_latest_rag_index(rag_files, tiny_catalog, monkeypatch,
                                                  capsys):
    """`gxplab serve` gives the server the rag_index file the IO manager recorded and the
    compared models it serves; without a materialized rag_index it serves no comparison."""
    import dagster as dg

    from jobs import cli
    from resources.clients import local_server

    commands: list[list[str]] = []
    monkeypatch.setattr(local_server, "run_server",
                        lambda command, env: commands.append(command) or 0)
    base = dg.AssetMaterialization("base_model",
                                   metadata={"model_path": tiny_catalog[0].base_model_path})
    index = dg.AssetMaterialization("rag_index", metadata={
        "artifact_uri": dg.MetadataValue.url(rag_files.path.as_uri())})
    for events in ([base, index], [base]):
        with dg.instance_for_test() as instance:
            for event in events:
                instance.report_runless_asset_event(event)
            monkeypatch.setattr(dg.DagsterInstance, "get", staticmethod(lambda: instance))
            assert cli.main(["serve", "--port", "8123"]) == 0
    with_index, without = commands
    assert with_index[with_index.index("--rag-index") + 1] == str(rag_files.path)
    assert with_index[with_index.index("--compare-models") + 1] == NAMES[0]
    assert with_index[-2:] == ["--port", "8123"] and "--rag-index" not in without
    out = capsys.readouterr().out
    assert f"RAG comparison of {NAMES[0]}: http://127.0.0.1:8123/compare" in out
    assert f"RAG comparison: not compared: {NAMES[1]} (" in out
    assert "RAG comparison: off (rag_index is not materialized" in out


# --- the page in a browser ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a 1400x1100 viewport."""
    with headless_chromium((1400, 1100), "the comparison page test") as driver:
        yield driver


def _ask(browser, url: str, question: str | None = None, token: str | None = None):
    """Open the page, fill it in (an example question when `question` is None), compare, and
    return the model columns once none is pending."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(f"{url}/compare")
    assert browser.title == "GxPLab RAG comparison"
    token_field = browser.find_element(By.ID, "token")
    assert token_field.is_displayed() == (token is not None)
    if token is not None:
        token_field.send_keys(token)
    box = browser.find_element(By.ID, "question")
    if question is None:
        examples = Select(browser.find_element(By.ID, "examples"))
        assert len(examples.options) > 3
        examples.select_by_index(1)
        assert box.get_attribute("value") == examples.options[1].get_attribute("value")
    else:
        box.send_keys(question)
    browser.find_element(By.ID, "go").click()
    columns = "#columns section.model"
    WebDriverWait(browser, 90, poll_frequency=0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, columns)) == len(NAMES) and not
        d.find_elements(By.CSS_SELECTOR, columns + "[data-state=pending]"),
        "the model columns never filled in")
    return browser.find_elements(By.CSS_SELECTOR, columns)


def test_the_page_compares_the_models_in_the_browser(browser, served, scripted, tmp_path):
    from selenium.webdriver.common.by import By

    shots = Screenshots(tmp_path, ("rag-compare.png", "rag-compare-scripted.png"))

    sections = _ask(browser, served.url, token=TOKEN)
    status = browser.find_element(By.ID, "status").text
    assert status.startswith("Answered in"), status
    assert len(browser.find_elements(By.CSS_SELECTOR, "#retrieved li.retrieved-chunk")) == \
        served.comparison.k
    for name, section in zip(NAMES, sections, strict=True):
        assert section.find_element(By.CSS_SELECTOR, "h2").text == name
        shown = section.find_elements(By.CSS_SELECTOR, ".answer, .error")
        assert shown and shown[0].text.strip(), (name, section.text)
        section.find_element(By.CSS_SELECTOR, "details.replies > summary").click()
    browser.find_element(By.CSS_SELECTOR, "#retrieved li.retrieved-chunk summary").click()
    browser.save_screenshot(shots.path("rag-compare.png"))

    # Model output is text, never markup; a citation the model was not shown is flagged.
    cites, tool, markup = _ask(browser, scripted.url, question=QUESTION)
    assert not browser.find_elements(By.CSS_SELECTOR, "#columns img, #columns b")
    assert browser.title == "GxPLab RAG comparison"
    markup.find_element(By.CSS_SELECTOR, "details.replies > summary").click()
    assert markup.find_element(By.CSS_SELECTOR, "pre.reply").text == MARKUP
    flagged = cites.find_element(By.CSS_SELECTOR, "li.citation[data-in-sources=false]")
    assert INVENTED in flagged.text and "not in the sources" in flagged.text
    assert "[REDACTED:phone]" in cites.find_element(By.CSS_SELECTOR, ".answer").text
    assert "drug_dose_lookup" in tool.find_element(By.CSS_SELECTOR, "pre.tool-call").text
    # scripted replies (a cited answer, a tool call, markup): what the page shows of valid ones
    browser.save_screenshot(shots.path("rag-compare-scripted.png"))
    shots.check_docs_untouched()
