"""Pooled hidden states of prompts, per transformer layer, for AQI (safe vs unsafe clusters).

`pooled_hidden_states(base_model_path, prompts, adapter_path=None, ...)` loads the model exactly as
local inference does (`training.inference.LocalGenerator`: the adapter folder's tokenizer, bf16 on
CUDA and fp32 on CPU, the adapter merged), encodes every prompt as a one-turn user chat with the
generation prompt (the state the model answers from; `use_chat_template=False` encodes the raw
text with the tokenizer's special tokens), runs forward passes with `output_hidden_states=True`
and pools each layer's token states into one vector per prompt.

Result: float32 array of shape (layers, n_prompts, hidden), rows in prompt order.
- Layers: the outputs of transformer blocks 1..L (index i = block i+1; the last one after the
  final norm, the Hugging Face convention). The embedding layer is left out unless
  `include_embeddings=True`, which prepends it as index 0 (then index i = layer i).
  `layer_numbers(...)` gives the labels; the sidecar records them.
- Padding: prompts are sorted by length, batched and padded on the right. A causal model's real
  tokens never attend to right padding, and pooling masks it out, so a prompt's vector does not
  depend on its batch (up to float rounding).
- pooling="mean": the mean over the prompt's real tokens (attention mask 1), every token including
  BOS and the chat markers.
- pooling="attention": the weighted mean with weights = the final prompt token's attention over
  the prompt's tokens in the LAST transformer layer, averaged over heads, with the first token left
  out and the rest renormalised to sum 1. Learning-free. The first token is left out because causal
  LMs park most attention there (the "attention sink", Xiao et al. 2023) and its state is the same
  for every prompt. The same weights pool every layer. Needs the eager attention kernel (switched
  for the call); attention maps cost layers x batch x heads x tokens^2 memory, so use a smaller
  batch on big models. A one-token prompt keeps its single token.
- Prompts longer than `max_length` tokens (or the context) lose tokens from the start, the first
  token kept (as `LocalGenerator.encode_chat` cuts); a warning says how many prompts were cut.

`save_hidden_states(array, path, ...)` writes `path` (.npy) and a JSON sidecar (`path` with .json)
holding the model, adapter, pooling, n, layers, the prompts' sha256 and the .npy's sha256;
`load_hidden_states(path)` returns both. Files are artifacts, never database blobs.

Plain Python, no Dagster. Torch is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from training.inference import LocalGenerator

log = logging.getLogger(__name__)

POOLINGS = ("mean", "attention")
SIDECAR_FORMAT = "gxplab.hidden_states/1"
SIDECAR_KEYS = ("format", "file", "sha256", "base_model_path", "adapter_path", "pooling", "n",
                "hidden_size", "layers", "include_embeddings", "prompts_sha256", "dtype")


def pooled_hidden_states(base_model_path: str | Path, prompts: Sequence[str],
                         adapter_path: str | Path | None = None, *, pooling: str = "mean",
                         batch_size: int = 16, max_length: int = 512,
                         use_chat_template: bool = True, include_embeddings: bool = False,
                         torch_threads: int | None = None, device: str | None = None) -> np.ndarray:
    """(layers, len(prompts), hidden) float32 pooled states of `prompts` (module docstring)."""
    import torch

    from training.inference import LocalGenerator

    _check_args(prompts, pooling, batch_size, max_length)
    previous = torch.get_num_threads()
    try:
        generator = LocalGenerator(base_model_path, adapter_path, torch_threads=torch_threads,
                                   device=device)
        return pooled_hidden_states_with(
            generator, prompts, pooling=pooling, batch_size=batch_size, max_length=max_length,
            use_chat_template=use_chat_template, include_embeddings=include_embeddings)
    finally:
        torch.set_num_threads(previous)


def pooled_hidden_states_with(generator: LocalGenerator, prompts: Sequence[str], *,
                              pooling: str = "mean", batch_size: int = 16, max_length: int = 512,
                              use_chat_template: bool = True,
                              include_embeddings: bool = False,
                              progress: Callable[[int, int], Any] | None = None) -> np.ndarray:
    """The same, with a model already loaded (`LocalGenerator`): load once, pool several sets.
    `progress(done, total)` is called after each batch (training/progress.py's ProgressLog)."""
    import torch

    _check_args(prompts, pooling, batch_size, max_length)
    model, tokenizer = generator.model, generator.tokenizer
    encoded = [encode_prompt(generator, p, max_length, use_chat_template) for p in prompts]
    cut = sum(1 for _, n in encoded if n)
    if cut:
        log.warning("%d of %d prompts were longer than %d tokens and lost tokens from the start",
                    cut, len(encoded), max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: np.ndarray | None = None  # sized from the first batch's outputs
    previous_attention = _attention_implementation(model)
    if pooling == "attention":
        model.set_attn_implementation("eager")
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            ids, mask = right_padded([encoded[i][0] for i in indices], pad_id)
            ids, mask = ids.to(generator.device), mask.to(generator.device)
            with torch.inference_mode():
                output = model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                               output_attentions=pooling == "attention", use_cache=False)
            states = output.hidden_states if include_embeddings else output.hidden_states[1:]
            weights = pooling_weights(mask, output.attentions[-1] if pooling == "attention"
                                      else None)
            if out is None:
                out = np.zeros((len(states), len(encoded), states[0].shape[-1]), np.float32)
            for layer, hidden in enumerate(states):
                pooled = weighted_mean(hidden, weights)
                out[layer, indices] = pooled.float().cpu().numpy()
            if progress is not None:
                progress(start + len(indices), len(order))
    finally:
        if pooling == "attention" and previous_attention:
            model.set_attn_implementation(previous_attention)
    assert out is not None  # prompts is not empty
    return out


def encode_prompt(generator: LocalGenerator, prompt: str, max_length: int,
                  use_chat_template: bool = True) -> tuple[list[int], int]:
    """Token ids of one prompt (a user turn + generation prompt, or the raw text) cut to
    `max_length` (and the context), and how many tokens were cut from the start."""
    tokenizer = generator.tokenizer
    if use_chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{generator.name}: the tokenizer has no chat template; pass "
                             "use_chat_template=False to pool the raw prompt text")
        # encode_chat keeps context_length - max_new_tokens tokens
        return generator.encode_chat([{"role": "user", "content": prompt}],
                                     max(0, generator.context_length - max_length))
    ids = list(tokenizer(prompt)["input_ids"])
    budget = min(max_length, generator.context_length)
    cut = max(0, len(ids) - budget)
    return (ids[:1] + ids[1 + cut:], cut) if cut else (ids, 0)


def right_padded(sequences: Sequence[Sequence[int]], pad_id: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (batch, longest), padded on the right."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def pooling_weights(attention_mask: torch.Tensor,
                    last_layer_attention: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, seq) float32 token weights, each row summing to 1 over the real tokens, 0 on padding.

    Without attentions: uniform over real tokens (mean pooling). With the last layer's attention
    maps (batch, heads, seq, seq): the final real token's attention row, averaged over heads, the
    first token dropped and the rest renormalised (module docstring); rows with a single token
    keep it.
    """
    import torch

    real = attention_mask.bool()
    if last_layer_attention is None:
        weights = real.float()
    else:
        last = real.long().sum(dim=1) - 1  # index of the final real token (right padding)
        rows = torch.arange(real.shape[0], device=real.device)
        weights = last_layer_attention.float().mean(dim=1)[rows, last]  # (batch, seq)
        weights = torch.where(real, weights, torch.zeros_like(weights))
        sink = torch.zeros_like(real)
        sink[:, 0] = last > 0  # leave the first token out unless it is the only one
        weights = torch.where(sink, torch.zeros_like(weights), weights)
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)


def weighted_mean(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(batch, hidden) sum over tokens of weights x states; padding (weight 0) never enters, even
    if its states are not finite."""
    import torch

    hidden = hidden.float()
    keep = (weights > 0).unsqueeze(-1)
    hidden = torch.where(keep, hidden, torch.zeros_like(hidden))
    return (hidden * weights.unsqueeze(-1)).sum(dim=1)


def layer_numbers(n_layers: int, include_embeddings: bool = False) -> list[int]:
    """The layer each index of the array holds, for a model of `n_layers` transformer blocks:
    0 = embeddings, i = output of block i."""
    return list(range(0 if include_embeddings else 1, n_layers + 1))


def prompts_sha256(prompts: Sequence[str]) -> str:
    """sha256 of the prompts in order (compact JSON list, UTF-8): the same for base and tuned."""
    text = json.dumps(list(prompts), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_args(prompts: Sequence[str], pooling: str, batch_size: int, max_length: int) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompt {index}: empty or not text ({prompt!r})")


def _attention_implementation(model: Any) -> str | None:
    return getattr(model.config, "_attn_implementation", None)


# --- artifacts --------------------------------------------------------------------------------

def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_hidden_states(array: np.ndarray, path: str | Path, *, base_model_path: str | Path,
                       adapter_path: str | Path | None, pooling: str, prompts: Sequence[str],
                       include_embeddings: bool = False,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write `array` to `path` (.npy) and its sidecar JSON; returns the sidecar dict."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: hidden states are saved as .npy")
    if array.ndim != 3 or array.shape[1] != len(prompts):
        raise ValueError(f"{path}: expected (layers, {len(prompts)}, hidden), got {array.shape}")
    clash = sorted(set(SIDECAR_KEYS) & set(extra or {}))
    if clash:
        raise ValueError(f"{path}: extra sidecar keys {clash} would overwrite the recorded ones")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    meta = {
        "format": SIDECAR_FORMAT,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "base_model_path": str(base_model_path),
        "adapter_path": str(adapter_path) if adapter_path else None,
        "pooling": pooling,
        "n": int(array.shape[1]),
        "hidden_size": int(array.shape[2]),
        "layers": layer_numbers(array.shape[0] - int(include_embeddings), include_embeddings),
        "include_embeddings": include_embeddings,
        "prompts_sha256": prompts_sha256(prompts),
        "dtype": "float32",
    }
    meta.update(extra or {})
    sidecar_path(path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def load_hidden_states(path: str | Path, *, verify: bool = True
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """(array, sidecar) of `save_hidden_states`; with `verify`, the .npy must match its sha256
    and the sidecar's shape."""
    path = Path(path)
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != meta.get("sha256"):
            raise ValueError(f"{path}: sha256 {digest} differs from its sidecar's "
                             f"{meta.get('sha256')}")
    array = np.load(path, allow_pickle=False)
    if verify and array.shape != (len(meta["layers"]), meta["n"], meta["hidden_size"]):
        raise ValueError(f"{path}: shape {array.shape} differs from its sidecar (layers "
                         f"{len(meta['layers'])}, n {meta['n']}, hidden {meta['hidden_size']})")
    return array, meta
