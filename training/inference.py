"""Local inference: batched chat generation with a base model, optionally with a LoRA adapter.

`LocalGenerator` is what the `local` provider of the model registry runs (the embedded base model
and the adapters trained here): it loads the model once, then generates for many chats in padded
batches, shortest prompts first so that a batch wastes little padding. Plain Python: no Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DecodingSettings:
    """Generation settings. temperature 0 is greedy decoding (the benchmark's default)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    no_repeat_ngram_size: int | None = None
    stop_strings: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str = "decoding") -> DecodingSettings:
        from training.settings import from_mapping

        return from_mapping(cls, raw, source=source,
                            optional=frozenset({"top_p", "top_k", "no_repeat_ngram_size"}),
                            converters={"stop_strings": tuple})


@dataclass(frozen=True)
class Generation:
    """One chat's answer. `truncated_prompt_tokens` > 0 means the prompt did not fit the context
    and lost that many tokens from its start (the system prompt is kept whole)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    truncated_prompt_tokens: int = 0


class LocalGenerator:
    """A causal LM (plus adapter) ready to answer chats: `generate(chats)` -> `Generation`s."""

    def __init__(self, base_model_path: str | Path, adapter_path: str | Path | None = None, *,
                 torch_threads: int | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.base_model_path = str(base_model_path)
        self.adapter_path = str(adapter_path) if adapter_path else None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        # The adapter folder carries the tokenizer it was trained with (same as the base's).
        self.tokenizer = AutoTokenizer.from_pretrained(self.adapter_path or self.base_model_path)
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left for generation
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(self.base_model_path, dtype=dtype)
        if self.adapter_path:
            from peft import PeftModel

            # Merged once: generation then runs at the base model's speed.
            model = PeftModel.from_pretrained(model, self.adapter_path).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.context_length = int(getattr(model.config, "max_position_embeddings", 2048))

    @property
    def name(self) -> str:
        return f"{self.base_model_path} + {self.adapter_path}" if self.adapter_path \
            else self.base_model_path

    def encode_chat(self, messages: Sequence[Mapping[str, str]], max_new_tokens: int
                    ) -> tuple[list[int], int]:
        """Token ids of the chat with the generation prompt, cut to fit the context with room for
        `max_new_tokens`, and how many tokens were cut (from the start of the non-system part)."""
        ids = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=True,
            return_dict=False)
        budget = self.context_length - max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in "
                             f"the model's context of {self.context_length} tokens")
        cut = max(0, len(ids) - budget)
        if cut:
            system = [m for m in messages if m["role"] == "system"]
            keep = len(self.tokenizer.apply_chat_template(
                [dict(m) for m in system], tokenize=True, return_dict=False)) if system else 1
            keep = min(keep, budget // 2)
            ids = ids[:keep] + ids[keep + cut:]
        return list(ids), cut

    def generate(self, chats: Sequence[Sequence[Mapping[str, str]]],
                 decoding: DecodingSettings | None = None, *, batch_size: int = 32,
                 progress: Progress | None = None) -> list[Generation]:
        """Answers for every chat, in input order."""
        import torch

        decoding = decoding or DecodingSettings()
        encoded = [self.encode_chat(chat, decoding.max_new_tokens) for chat in chats]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        results: list[Generation | None] = [None] * len(encoded)
        kwargs = self._generate_kwargs(decoding)
        torch.manual_seed(decoding.seed)
        done = 0
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = self.tokenizer.pad({"input_ids": [encoded[i][0] for i in indices]},
                                       return_tensors="pt").to(self.device)
            began = time.perf_counter()
            with torch.inference_mode():
                output = self.model.generate(**batch, **kwargs)
            latency = (time.perf_counter() - began) / len(indices)
            width = batch["input_ids"].shape[1]
            for row, i in enumerate(indices):
                new = output[row, width:]
                n_new = int((new != self.tokenizer.pad_token_id).sum())
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                results[i] = Generation(text=_cut_at_stop(text, decoding.stop_strings),
                                        prompt_tokens=len(encoded[i][0]),
                                        completion_tokens=n_new, latency_s=latency,
                                        truncated_prompt_tokens=encoded[i][1])
            done += len(indices)
            if progress:
                progress(done, len(order))
        return [r for r in results if r is not None]

    def _generate_kwargs(self, decoding: DecodingSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if decoding.temperature > 0:
            kwargs.update(do_sample=True, temperature=decoding.temperature)
            if decoding.top_p is not None:
                kwargs["top_p"] = decoding.top_p
            if decoding.top_k is not None:
                kwargs["top_k"] = decoding.top_k
        else:
            kwargs["do_sample"] = False
        if decoding.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = decoding.no_repeat_ngram_size
        if decoding.stop_strings:
            kwargs.update(stop_strings=list(decoding.stop_strings), tokenizer=self.tokenizer)
        return kwargs


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """The text before the first stop string (generation stops after it, the answer excludes it)."""
    cuts = [text.find(s) for s in stop_strings if s and s in text]
    return text[:min(cuts)] if cuts else text
