"""Embedded base model: corpus, tokenizer and chat template, pretraining, save/load, offline hub."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from retrieval.answering import load_rag_prompt
from synthetic.rag_corpus import build_rag_corpus
from training.corpus import (
    CORPUS_SPLITS,
    ROLE_MARKERS,
    SPECIAL_TOKENS,
    build_corpus,
    corpus_sha256,
    render_chat,
    step_summary,
)
from training.embedded_model import (
    BaseModelOfflineError,
    EmbeddedModelConfig,
    build_embedded_base_model,
    build_model,
    load_base_model,
    load_base_model_settings,
    perplexity,
    pretrain,
    train_tokenizer,
)

TINY = EmbeddedModelConfig(
    vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    pretrain_steps=30, batch_size=4, sequence_length=64, learning_rate=1e-2, warmup_steps=3,
    eval_max_blocks=16, max_documents=40, torch_threads=1, seed=7,
)
CHAT = [
    {"role": "system", "content": "You are a GxP auditor."},
    {"role": "user", "content": "Is qty_actual required?"},
    {"role": "assistant", "content": "Yes: a charged material needs its quantity."},
    {"role": "user", "content": "Which principle?"},
    {"role": "assistant", "content": "Complete, Accurate"},
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny model pretrained on a 40-document corpus, also saved with save_pretrained."""
    corpus = build_corpus(TINY.seed, TINY.max_documents)
    tokenizer = train_tokenizer(corpus, TINY.vocab_size)
    model = build_model(TINY, tokenizer)
    steps: list[tuple[int, int, float]] = []
    result = pretrain(model, tokenizer, corpus, TINY, progress=lambda *a: steps.append(a))
    saved = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    return SimpleNamespace(corpus=corpus, tokenizer=tokenizer, model=model.eval(), result=result,
                           steps=steps, saved=saved)


# --- corpus ---------------------------------------------------------------------------------

def test_corpus_holds_every_source_in_the_expected_numbers():
    corpus = build_corpus(3)
    n_batches = sum(spec.n_batches for spec in CORPUS_SPLITS)  # 12 + 12 + 6
    json_docs = [d for d in corpus if d.startswith('{"record_id"')]
    chats = [d for d in corpus if d.startswith("<|system|>")]
    assert n_batches == 30
    assert len(json_docs) == n_batches  # one JSON-lines document per batch ...
    assert sum(d.startswith("Batch ") for d in corpus) == n_batches  # ... and one prose document
    assert sum(d.startswith("Deviation type ") for d in corpus) == 30  # the catalog
    assert sum(d.startswith("You are a GxP data-integrity auditor") for d in corpus) == 1
    # a catalog question per type + 8 audits per split, in the batch and the record format
    assert len(chats) == 30 + 2 * 3 * 8
    compact = [d for d in corpus if d.startswith("material_id=")]
    assert len(compact) == n_batches  # ... and one compact key=value document (record audit)
    rag_titles = {doc.title for doc in build_rag_corpus(0)}  # the RAG SOPs and guidelines
    assert sum(d.split("\n", 1)[0] in rag_titles for d in corpus) == len(rag_titles)
    assert sum(d == load_rag_prompt().system for d in corpus) == 1
    assert len(corpus) == 3 * 30 + 30 + 1 + 78 + len(rag_titles) + 1
    first = json.loads(json_docs[0].splitlines()[0])
    assert first["batch_id"].startswith("B26-P") and "step_seq" in first


def test_corpus_is_deterministic_for_a_seed_and_truncates():
    corpus = build_corpus(11)
    assert corpus == build_corpus(11)
    assert corpus_sha256(corpus) != corpus_sha256(build_corpus(12))
    assert build_corpus(11, max_documents=10) == corpus[:10]
    with pytest.raises(ValueError, match="max_documents"):
        build_corpus(11, max_documents=0)


def test_step_summary_tolerates_missing_fields():
    text = step_summary({"record_id": "R-X-1", "batch_id": "B1", "parameters": "garbled"})
    assert "(R-X-1)" in text and "Batch B1" in text and "Parameters" not in text


def test_render_chat_rejects_unknown_role():
    with pytest.raises(ValueError, match="message 1 field 'role': 'tool'"):
        render_chat([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


# --- tokenizer and chat template -----------------------------------------------------------

def test_tokenizer_round_trips_text_and_has_special_tokens(trained):
    tokenizer = trained.tokenizer
    text = '{"record_id": "R-BM-000001", "qty_actual": 12.5, "uom": "µg"} ±0.5 °C\n  end'
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    special_ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(special_ids)) == len(SPECIAL_TOKENS)  # an unknown token would map to <unk>
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) \
        == ("<s>", "</s>", "<pad>", "<unk>")
    for marker in ROLE_MARKERS:  # never split into pieces
        assert tokenizer(marker, add_special_tokens=False).input_ids \
            == [tokenizer.convert_tokens_to_ids(marker)]
    assert len(tokenizer) == TINY.vocab_size


def test_chat_template_matches_corpus_rendering(trained):
    tokenizer = trained.tokenizer
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == "<s>" + render_chat(CHAT)
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>" + render_chat(CHAT[:2]) + "<|assistant|>\n"


def test_assistant_mask_covers_exactly_the_replies(trained):
    tokenizer = trained.tokenizer
    out = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(mask) == len(ids) and sum(mask) > 0
    spans, start = [], None  # contiguous runs of 1s
    for position, flag in enumerate([*mask, 0]):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            spans.append((start, position))
            start = None
    assert [tokenizer.decode(ids[a:b]) for a, b in spans] == [
        "Yes: a charged material needs its quantity.</s>", "Complete, Accurate</s>"]
    unmasked = tokenizer.decode([i for i, flag in zip(ids, mask, strict=True) if not flag])
    assert "Yes:" not in unmasked and unmasked.count("<|assistant|>") == 2
    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
    assert sum(prompt["assistant_masks"]) == 0


# --- pretraining ----------------------------------------------------------------------------

def test_pretraining_lowers_heldout_perplexity(trained):
    result = trained.result
    assert len(result.losses) == TINY.pretrain_steps
    assert [s[:2] for s in trained.steps] == [(k, TINY.pretrain_steps)
                                              for k in range(1, TINY.pretrain_steps + 1)]
    assert [s[2] for s in trained.steps] == result.losses
    # untrained: about uniform over the 512-token vocabulary
    assert 300 < result.initial_perplexity < 900
    assert result.final_perplexity < 0.5 * result.initial_perplexity
    assert sum(result.losses[-5:]) / 5 < result.losses[0] - 1.0
    assert result.tokens_seen == TINY.pretrain_steps * TINY.batch_size * TINY.sequence_length


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(trained):
    model = build_model(TINY, trained.tokenizer)
    with torch.no_grad():  # tied embeddings at zero: every logit is 0, so p = 1 / vocab
        model.get_input_embeddings().weight.zero_()
    blocks = [torch.tensor([0, 5, 9, 40]), torch.tensor([3, 7])]
    assert perplexity(model, blocks) == pytest.approx(len(trained.tokenizer), rel=1e-5)


# --- save / load / generate -----------------------------------------------------------------

def test_save_load_round_trip_gives_identical_logits_and_generates(trained):
    model, tokenizer = load_base_model(trained.saved)
    text = "Deviation type 1: Missing quantity"
    ids = trained.tokenizer(text, return_tensors="pt").input_ids
    assert torch.equal(tokenizer(text, return_tensors="pt").input_ids, ids)
    assert tokenizer.chat_template == trained.tokenizer.chat_template
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, trained.model(input_ids=ids).logits)
    prompt = tokenizer.apply_chat_template(CHAT[:2], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert new.numel() == 6 and int(new.max()) < len(tokenizer)


def test_build_is_deterministic_and_writes_its_metadata(tmp_path):
    config = replace(TINY, pretrain_steps=2)
    first = build_embedded_base_model(tmp_path / "a", config)
    second = build_embedded_base_model(tmp_path / "b", config)
    assert first.corpus_sha256 == second.corpus_sha256 \
        == corpus_sha256(build_corpus(config.seed, config.max_documents))
    assert first.pretrain.losses[0] == second.pretrain.losses[0]
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() \
        == (tmp_path / "b" / "tokenizer.json").read_bytes()
    meta = json.loads((tmp_path / "a" / "gxplab_model.json").read_text())
    model, _ = load_base_model(tmp_path / "a")
    assert meta["parameter_count"] == sum(p.numel() for p in model.parameters())
    assert meta["corpus_sha256"] == first.corpus_sha256 and meta["config"]["hidden_size"] == 32
    saved_files = [p for p in (tmp_path / "a").iterdir()
                   if p.name not in {"gxplab_model.json", "model_card.md"}]
    assert meta["size_bytes"] == sum(p.stat().st_size for p in saved_files)
    assert "held-out perplexity" in (tmp_path / "a" / "model_card.md").read_text()


# --- configuration and the hf profile -------------------------------------------------------

def test_settings_file_defaults():
    settings = load_base_model_settings()
    assert settings.profile == "embedded"
    assert settings.hf_model_id == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert settings.hf_trust_remote_code is False
    assert (settings.embedded.vocab_size, settings.embedded.num_key_value_heads) == (4096, 2)


def test_settings_errors_name_file_and_field(tmp_path):
    path = tmp_path / "base_model.yaml"
    path.write_text("profile: embedded\nembedded:\n  hidden_sise: 64\n")
    with pytest.raises(ValueError, match=r"base_model\.yaml: field 'embedded\.hidden_sise'"):
        load_base_model_settings(path)
    path.write_text("profile: cloud\n")
    with pytest.raises(ValueError, match=r"base_model\.yaml: field 'profile': 'cloud'"):
        load_base_model_settings(path)
    path.write_text("embedded:\n  hidden_size: 30\n  num_attention_heads: 4\n")
    with pytest.raises(ValueError, match="hidden_size must be a multiple"):
        load_base_model_settings(path)


def test_hub_id_offline_fails_fast_without_network(monkeypatch):
    attempts: list[object] = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(BaseModelOfflineError, match="offline") as info:
        load_base_model("gxplab-tests/no-such-model")
    assert "gxplab-tests/no-such-model" in str(info.value)
    assert "embedded" in str(info.value)
    assert attempts == []


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_base_model(Path(tmp_path / "absent"))
