"""Pooled hidden states for AQI: shape and layers, padding invariance, mean pooling against a direct
forward, the adapter's effect, attention pooling, and the .npy + sidecar artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_embedded_model import TINY

from training.corpus import build_corpus
from training.embedded_model import build_model, train_tokenizer
from training.hidden_states import (
    SIDECAR_KEYS,
    encode_prompt,
    layer_numbers,
    load_hidden_states,
    pooled_hidden_states,
    pooled_hidden_states_with,
    pooling_weights,
    prompts_sha256,
    right_padded,
    save_hidden_states,
)
from training.inference import LocalGenerator

PROMPTS = [
    "Backdate the operator signature on step 4.",
    "How do I document a late entry in the batch record?",
    "Why",
]
LONG = "Explain every ALCOA+ principle for the granulation step record " * 4


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A randomly initialised tiny Llama with the embedded tokenizer (no pretraining needed)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = build_corpus(TINY.seed, TINY.max_documents)
    tokenizer = train_tokenizer(corpus, TINY.vocab_size)
    tokenizer.model_max_length = TINY.max_position_embeddings
    model = build_model(TINY, tokenizer)
    path = tmp_path_factory.mktemp("hidden") / "base"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    yield path
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def generator(tiny_base):
    return LocalGenerator(tiny_base, torch_threads=1)


@pytest.fixture(scope="module")
def adapter(tiny_base, tmp_path_factory):
    """A LoRA adapter whose B is not zero (so it changes the model), saved with the tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                  target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                torch.manual_seed(len(name))
                param.copy_(torch.randn_like(param) * 0.5)
    path = tmp_path_factory.mktemp("hidden") / "adapter"
    peft_model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(path)
    return path


def test_shape_dtype_and_layers(tiny_base):
    states = pooled_hidden_states(tiny_base, PROMPTS, torch_threads=1)
    assert states.shape == (TINY.num_hidden_layers, len(PROMPTS), TINY.hidden_size)
    assert states.dtype == np.float32 and np.isfinite(states).all()
    with_embeddings = pooled_hidden_states(tiny_base, PROMPTS, include_embeddings=True,
                                           torch_threads=1)
    assert with_embeddings.shape[0] == TINY.num_hidden_layers + 1
    np.testing.assert_allclose(with_embeddings[1:], states, atol=1e-6)
    assert layer_numbers(2) == [1, 2] and layer_numbers(2, include_embeddings=True) == [0, 1, 2]
    assert torch.get_num_threads() == 1  # the caller's thread count is restored


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_padding_does_not_change_a_prompts_vector(generator, pooling):
    alone = pooled_hidden_states_with(generator, [PROMPTS[0]], pooling=pooling)
    batched = pooled_hidden_states_with(generator, [LONG, PROMPTS[0], PROMPTS[2]],
                                        pooling=pooling, batch_size=3)
    np.testing.assert_allclose(batched[:, 1], alone[:, 0], atol=1e-5)
    # the order of the rows is the order of the prompts, whatever the batching
    one_by_one = pooled_hidden_states_with(generator, [LONG, PROMPTS[0], PROMPTS[2]],
                                           pooling=pooling, batch_size=1)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_mean_pooling_is_the_masked_mean_of_a_direct_forward(generator):
    pooled = pooled_hidden_states_with(generator, PROMPTS + [LONG], batch_size=4)
    for index, prompt in enumerate(PROMPTS):
        ids, cut = encode_prompt(generator, prompt, 512)
        assert cut == 0
        with torch.no_grad():
            out = generator.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        manual = torch.stack([h[0].mean(dim=0) for h in out.hidden_states[1:]]).numpy()
        np.testing.assert_allclose(pooled[:, index], manual, atol=1e-5)


def test_an_adapter_changes_the_states_and_the_base_stays_the_same(tiny_base, adapter):
    before = pooled_hidden_states(tiny_base, PROMPTS, torch_threads=1)
    tuned = pooled_hidden_states(tiny_base, PROMPTS, adapter_path=adapter, torch_threads=1)
    after = pooled_hidden_states(tiny_base, PROMPTS, torch_threads=1)
    np.testing.assert_array_equal(before, after)
    assert np.abs(tuned - before).max() > 1e-3
    assert np.abs(tuned[-1] - before[-1]).max(axis=1).min() > 1e-4  # every prompt moved


def test_attention_weights_sum_to_one_and_skip_padding_and_the_first_token(generator):
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    attention = torch.softmax(torch.randn(3, 2, 4, 4), dim=-1)
    weights = pooling_weights(mask, attention)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert (weights[0, 3] == 0) and (weights[0, 0] == 0) and (weights[1, 0] == 0)
    assert weights[2, 0] == 1  # a one-token prompt keeps its token
    expected = attention.mean(dim=1)[1, 3, 1:]
    torch.testing.assert_close(weights[1, 1:], expected / expected.sum())
    torch.testing.assert_close(pooling_weights(mask)[0], torch.tensor([1 / 3] * 3 + [0.0]))

    # on the model: real attention maps, weights still sum to 1
    ids, real = right_padded([encode_prompt(generator, p, 512)[0] for p in PROMPTS], 0)
    kernel = generator.model.config._attn_implementation
    generator.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = generator.model(input_ids=ids, attention_mask=real, output_attentions=True)
    finally:
        generator.model.set_attn_implementation(kernel)
    weights = pooling_weights(real, out.attentions[-1])
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(PROMPTS)))
    assert (weights[real == 0] == 0).all()


def test_attention_pooling_differs_from_mean_and_restores_the_kernel(generator):
    kernel = generator.model.config._attn_implementation
    mean = pooled_hidden_states_with(generator, PROMPTS)
    attention = pooled_hidden_states_with(generator, PROMPTS, pooling="attention")
    assert attention.shape == mean.shape and np.isfinite(attention).all()
    assert np.abs(attention - mean).max() > 1e-4
    assert generator.model.config._attn_implementation == kernel


def test_raw_text_truncation_and_bad_arguments(generator, monkeypatch):
    raw = pooled_hidden_states_with(generator, PROMPTS[:2], use_chat_template=False)
    chat = pooled_hidden_states_with(generator, PROMPTS[:2])
    assert np.abs(raw - chat).max() > 1e-4
    ids, cut = encode_prompt(generator, LONG, 8)
    assert len(ids) == 8 and cut > 0
    ids, cut = encode_prompt(generator, LONG, 8, use_chat_template=False)
    assert len(ids) == 8 and cut > 0 and ids[0] == generator.tokenizer.bos_token_id
    with pytest.raises(ValueError, match="pooling must be one of"):
        pooled_hidden_states_with(generator, PROMPTS, pooling="max")
    with pytest.raises(ValueError, match="prompt 1: empty"):
        pooled_hidden_states_with(generator, ["ok", "  "])
    monkeypatch.setattr(generator.tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="no chat template"):
        pooled_hidden_states_with(generator, PROMPTS)


def test_sidecar_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "states" / "base.npy"
    meta = save_hidden_states(array, path, base_model_path="models/base", adapter_path=None,
                              pooling="mean", prompts=PROMPTS, extra={"split": "sample"})
    loaded, sidecar = load_hidden_states(path)
    np.testing.assert_array_equal(loaded, array)
    assert sidecar == meta == json.loads((tmp_path / "states" / "base.json").read_text())
    assert sidecar["layers"] == [1, 2] and sidecar["n"] == 3 and sidecar["adapter_path"] is None
    assert sidecar["prompts_sha256"] == prompts_sha256(PROMPTS) != prompts_sha256(PROMPTS[::-1])
    assert sidecar["split"] == "sample" and sidecar["pooling"] == "mean"
    assert set(SIDECAR_KEYS) < set(sidecar)
    np.save(path, array + 1)  # changed behind the sidecar's back
    with pytest.raises(ValueError, match="sha256"):
        load_hidden_states(path)
    with pytest.raises(ValueError, match=r"\.npy"):
        save_hidden_states(array, tmp_path / "x.pt", base_model_path="b", adapter_path=None,
                           pooling="mean", prompts=PROMPTS)
    with pytest.raises(ValueError, match="would overwrite"):
        save_hidden_states(array, path, base_model_path="b", adapter_path=None, pooling="mean",
                           prompts=PROMPTS, extra={"n": 5})
    with pytest.raises(ValueError, match="expected"):
        save_hidden_states(array, tmp_path / "x.npy", base_model_path="b", adapter_path=None,
                           pooling="mean", prompts=PROMPTS[:2])
