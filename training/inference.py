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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.constrained import GrammarCache, TokenLogprob

Progress = Callable[[int, int], None]
JsonSchema = Mapping[str, Any]


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
    and lost that many tokens from its start (the system prompt is kept whole). `constrained`:
    generated under a JSON schema's grammar. `finish_reason`: "stop" (end of sequence or a stop
    string) or "length" (`max_new_tokens` reached: a constrained answer may then be cut short).
    `logprobs`: per generated token, when asked for."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    truncated_prompt_tokens: int = 0
    constrained: bool = False
    finish_reason: str = "stop"
    logprobs: tuple[TokenLogprob, ...] | None = None


class LocalGenerator:
    """A causal LM (plus adapter) ready to answer chats: `generate(chats)` -> `Generation`s."""

    def __init__(self, base_model_path: str | Path, adapter_path: str | Path | None = None, *,
                 torch_threads: int | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from training.model_folders import generator_paths

        # a fully fine-tuned "adapter" (a whole model, e.g. gxp_audit_adapter's method full)
        # is loaded as the model itself
        self.base_model_path, self.adapter_path = generator_paths(base_model_path, adapter_path)
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
        self._grammars: GrammarCache | None = None

    @property
    def grammars(self) -> GrammarCache:
        """Compiled JSON-schema grammars for this model's tokenizer (built on first use)."""
        if self._grammars is None:
            from training.constrained import GrammarCache

            vocab = int(getattr(self.model.config, "vocab_size", 0)) or len(self.tokenizer)
            self._grammars = GrammarCache(self.tokenizer, vocab)
        return self._grammars

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
                 progress: Progress | None = None,
                 json_schemas: Sequence[JsonSchema | None] | None = None,
                 logprobs: bool = False, top_logprobs: int = 0) -> list[Generation]:
        """Answers for every chat, in input order.

        `json_schemas`: one entry per chat, a JSON schema its answer is constrained to (compact
        JSON, valid unless `max_new_tokens` cuts it: see `Generation.finish_reason`) or None for
        free generation; constrained and free chats share batches. `logprobs`: per-token
        log-probabilities (under a schema renormalised over the tokens it allows), with the
        `top_logprobs` most likely alternatives at each step."""
        import torch

        decoding = decoding or DecodingSettings()
        schemas = self._check_schemas(chats, json_schemas)
        if top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {top_logprobs}")
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
            processors, recorder = self.processors([schemas[i] for i in indices],
                                                   logprobs, top_logprobs)
            began = time.perf_counter()
            with torch.inference_mode():
                output = self.model.generate(**batch, **kwargs, logits_processor=processors)
            latency = (time.perf_counter() - began) / len(indices)
            width = batch["input_ids"].shape[1]
            for row, i in enumerate(indices):
                results[i] = self.finish(output[row, width:].tolist(), decoding, latency,
                                         prompt=encoded[i], constrained=schemas[i] is not None,
                                         recorder=recorder, row=row)
            done += len(indices)
            if progress:
                progress(done, len(order))
        return [r for r in results if r is not None]

    @staticmethod
    def _check_schemas(chats: Sequence[Any], json_schemas: Sequence[JsonSchema | None] | None
                       ) -> list[JsonSchema | None]:
        if json_schemas is None:
            return [None] * len(chats)
        if len(json_schemas) != len(chats):
            raise ValueError(f"json_schemas: {len(json_schemas)} entries for {len(chats)} chats "
                             "(one per chat, None for free generation)")
        for i, schema in enumerate(json_schemas):
            if schema is not None and not isinstance(schema, Mapping):
                raise ValueError(f"json_schemas[{i}]: must be a JSON schema object or None, got "
                                 f"{type(schema).__name__}")
        return list(json_schemas)

    def processors(self, schemas: Sequence[JsonSchema | None], logprobs: bool,
                   top_logprobs: int) -> tuple[list[Any], Any]:
        """The logits processors of one generate() call (a grammar mask when a row has a schema,
        then a log-probability recorder when asked for) and the recorder (or None)."""
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList()
        if any(s is not None for s in schemas):
            from training.constrained import grammar_processor_class

            grammars = [self.grammars.compile(s) if s is not None else None for s in schemas]
            processors.append(grammar_processor_class()(grammars))
        recorder = None
        if logprobs:
            from training.constrained import recorder_class

            recorder = recorder_class()(top_logprobs)
            processors.append(recorder)
        return processors, recorder

    def finish(self, new: list[int], decoding: DecodingSettings, latency_s: float, *,
               prompt: tuple[list[int], int], constrained: bool, recorder: Any = None,
               row: int = 0) -> Generation:
        """The Generation of one row's generated ids `new` (padding included)."""
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        stopped = eos in new or any(s and s in text for s in decoding.stop_strings)
        entries = None
        if recorder is not None:
            from training.constrained import token_logprobs

            ended = new.index(eos) if eos in new else len(new)
            entries = token_logprobs(
                recorder, row, new[:ended], lambda i: self.tokenizer.decode([i]),
                self.grammars.token_bytes, frozenset(x for x in (pad, eos) if x is not None))
        return Generation(text=_cut_at_stop(text, decoding.stop_strings),
                          prompt_tokens=len(prompt[0]),
                          completion_tokens=sum(1 for t in new if t != pad),
                          latency_s=latency_s, truncated_prompt_tokens=prompt[1],
                          constrained=constrained, finish_reason="stop" if stopped else "length",
                          logprobs=entries)

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
