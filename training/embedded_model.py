"""The embedded base model: a tiny Llama causal LM with its own BPE tokenizer, pretrained locally.

Everything runs on a CPU in float32 with no download: `build_embedded_base_model` builds the corpus
(training/corpus.py), trains a byte-level BPE tokenizer with a chat template, initialises a seeded
`LlamaForCausalLM` and pretrains it with a plain torch loop, then saves model, tokenizer, a model
card and `gxplab_model.json`. `load_base_model` loads that folder, another local path or a hub id
through the same `from_pretrained` path that later runs on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import is_offline_mode
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from training.corpus import BOS, EOS, PAD, ROLE_MARKERS, SPECIAL_TOKENS, UNK, build_corpus
from training.corpus import corpus_sha256 as compute_corpus_sha256
from training.settings import from_mapping

CONFIG_PATH = Path(__file__).resolve().parent.parent / "configs" / "base_model.yaml"
PROFILES = ("embedded", "hf")
# Renders what training.corpus.render_chat writes, after <s>. `generation` marks the assistant reply
# and its </s> (the model must learn to stop) for TRL's assistant_only_loss / assistant masks.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role'] + '; use system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
ProgressCallback = Callable[[int, int, float], None]
_OPTIONAL = frozenset({"max_documents", "torch_threads"})


@dataclass(frozen=True)
class EmbeddedModelConfig:
    """Sizes and pretraining settings of the embedded model (base_model.yaml `embedded:`)."""

    vocab_size: int = 4096
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    pretrain_steps: int = 200
    batch_size: int = 8
    sequence_length: int = 256
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    heldout_fraction: float = 0.1
    eval_max_blocks: int = 64
    max_documents: int | None = None
    # Intra-op CPU threads while pretraining (None: torch's default, one per core). 1 by default:
    # on a 2-core box that runs other work, a second thread waiting for a core stalls every op
    # (a 250-step build measured 79 s on 1 thread vs 329 s on 2 while other processes ran).
    torch_threads: int | None = 1
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "pretrain_steps", "batch_size", "sequence_length", "eval_max_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.sequence_length > self.max_position_embeddings:
            raise ValueError("sequence_length must be <= max_position_embeddings")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be between 0 and 1")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str = "<mapping>") -> EmbeddedModelConfig:
        """Build from a mapping; unknown or mistyped fields name the source and the field."""
        return from_mapping(cls, raw, source=source, prefix="embedded.", optional=_OPTIONAL)


@dataclass(frozen=True)
class BaseModelSettings:
    """configs/base_model.yaml: which profile, the embedded sizes and the hf example."""

    profile: str
    embedded: EmbeddedModelConfig
    hf_model_id: str | None
    hf_trust_remote_code: bool


def load_base_model_settings(path: str | Path | None = None) -> BaseModelSettings:
    """Read and check configs/base_model.yaml (or another file of the same shape)."""
    path = Path(path) if path else CONFIG_PATH
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with profile, embedded, hf")
    profile = raw.get("profile", "embedded")
    if profile not in PROFILES:
        raise ValueError(f"{path}: field 'profile': {profile!r} is not one of "
                         f"{', '.join(PROFILES)}")
    hf = raw.get("hf") or {}
    return BaseModelSettings(
        profile=profile,
        embedded=EmbeddedModelConfig.from_mapping(raw.get("embedded") or {}, str(path)),
        hf_model_id=hf.get("model_id"),
        hf_trust_remote_code=bool(hf.get("trust_remote_code", False)),
    )


def train_tokenizer(corpus: Sequence[str], vocab_size: int,
                    extra_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `corpus` with <s> </s> <pad> <unk>, role markers and the chat template;
    each of `extra_tokens` is added as one (non-special) token, after the BPE vocabulary."""
    backend = Tokenizer(models.BPE(unk_token=UNK))
    # Byte-level: every byte has a token, so no text is ever <unk>; no prefix space: JSON exact.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    # Llama convention: encode() prepends <s>; the chat template writes its own <s> and
    # apply_chat_template encodes without special tokens, so chats get exactly one.
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, backend.token_to_id(BOS))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=list(ROLE_MARKERS),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
    return tokenizer


def audit_answer_tokens() -> list[str]:
    """The record audit's answer pieces and the 30 deviation slugs (scoring/record_audit.py): one
    token each, so a fine-tuned model answers a record in 1-3 tokens and learns each type as one
    output (split into BPE pieces, every slug would share its first pieces with others)."""
    from scoring.record_audit import answer_tokens
    from synthetic.catalog import load_catalog

    return answer_tokens(load_catalog())


def build_model(config: EmbeddedModelConfig,
                tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised (seeded) Llama causal LM sized by `config`, embeddings tied."""
    llama_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(llama_config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@dataclass
class PretrainResult:
    """What pretraining did: per-step loss, throughput and held-out perplexity before/after."""

    losses: list[float]
    tokens_seen: int
    wall_s: float
    tokens_per_s: float
    initial_perplexity: float
    final_perplexity: float
    train_tokens: int
    heldout_tokens: int


def pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, corpus: Sequence[str],
             config: EmbeddedModelConfig,
             progress: ProgressCallback | None = None) -> PretrainResult:
    """Causal-LM pretraining (AdamW, warmup + cosine) on 90% of the documents, float32 on CPU."""
    with _intra_op_threads(config.torch_threads):
        return _pretrain(model, tokenizer, corpus, config, progress)


def _pretrain(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, corpus: Sequence[str],
              config: EmbeddedModelConfig, progress: ProgressCallback | None) -> PretrainResult:
    train_docs, heldout_docs = _split_documents(corpus, config)
    train_ids = _token_stream(tokenizer, train_docs)
    heldout_ids = _token_stream(tokenizer, heldout_docs)
    length = config.sequence_length
    n_blocks = train_ids.numel() // length
    if n_blocks < 1:
        raise ValueError(f"pretrain: {train_ids.numel()} training tokens are fewer than one "
                         f"sequence of sequence_length={length}; use a larger corpus")
    train_blocks = train_ids[: n_blocks * length].view(n_blocks, length)
    eval_blocks = _eval_blocks(heldout_ids, length, config.eval_max_blocks)

    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _cosine_with_warmup(config.warmup_steps, config.pretrain_steps))
    initial_perplexity = perplexity(model, eval_blocks)
    model.train()
    losses: list[float] = []
    order = torch.randperm(n_blocks, generator=generator)
    cursor = 0
    started = time.perf_counter()
    for step in range(1, config.pretrain_steps + 1):
        if cursor + config.batch_size > n_blocks:  # next epoch: a fresh seeded permutation
            order, cursor = torch.randperm(n_blocks, generator=generator), 0
        batch = train_blocks[order[cursor: cursor + config.batch_size]]
        cursor += config.batch_size
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step, config.pretrain_steps, losses[-1])
    train_s = time.perf_counter() - started
    tokens_seen = config.pretrain_steps * int(batch.shape[0]) * length
    return PretrainResult(
        losses=losses, tokens_seen=tokens_seen, wall_s=train_s,
        tokens_per_s=tokens_seen / train_s if train_s > 0 else 0.0,
        initial_perplexity=initial_perplexity, final_perplexity=perplexity(model, eval_blocks),
        train_tokens=int(train_ids.numel()), heldout_tokens=int(heldout_ids.numel()),
    )


@torch.no_grad()
def perplexity(model: LlamaForCausalLM, blocks: Sequence[torch.Tensor]) -> float:
    """exp(mean next-token negative log-likelihood) over the tokens of `blocks`."""
    was_training = model.training
    model.eval()
    total_nll, count = 0.0, 0
    for block in blocks:
        logits = model(input_ids=block.unsqueeze(0)).logits[0, :-1]
        total_nll += torch.nn.functional.cross_entropy(logits, block[1:], reduction="sum").item()
        count += block.numel() - 1
    model.train(was_training)
    return math.exp(total_nll / count)


def _split_documents(corpus: Sequence[str],
                     config: EmbeddedModelConfig) -> tuple[list[str], list[str]]:
    if len(corpus) < 2:
        raise ValueError(f"pretrain: need at least 2 documents for a held-out split, "
                         f"got {len(corpus)}")
    order = list(range(len(corpus)))
    random.Random(config.seed).shuffle(order)
    n_heldout = max(1, round(config.heldout_fraction * len(corpus)))
    heldout = set(order[:n_heldout])
    return ([d for i, d in enumerate(corpus) if i not in heldout],
            [d for i, d in enumerate(corpus) if i in heldout])


def _token_stream(tokenizer: PreTrainedTokenizerFast, documents: Sequence[str]) -> torch.Tensor:
    """Documents packed back to back as <s> text </s> (chat documents already end in </s>)."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    # The backend encodes without the model_max_length warning: documents are packed, not truncated.
    for encoding in tokenizer.backend_tokenizer.encode_batch(list(documents)):
        encoded = encoding.ids
        ids.extend(encoded)
        if encoded[-1] != eos:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _eval_blocks(ids: torch.Tensor, length: int, max_blocks: int) -> list[torch.Tensor]:
    blocks = [ids[start: start + length] for start in range(0, ids.numel(), length)]
    blocks = [b for b in blocks if b.numel() >= 2][:max_blocks]
    if not blocks:
        raise ValueError("pretrain: the held-out documents hold fewer than 2 tokens")
    return blocks


@contextmanager
def _intra_op_threads(n_threads: int | None) -> Iterator[None]:
    """torch.set_num_threads(n_threads) for the block, then back to the previous count."""
    previous = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cosine_with_warmup(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class EmbeddedModelInfo:
    """A built embedded model: where it is and the numbers in gxplab_model.json."""

    output_dir: Path
    config: EmbeddedModelConfig
    corpus_sha256: str
    n_documents: int
    parameter_count: int
    size_bytes: int
    pretrain: PretrainResult
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def build_embedded_base_model(output_dir: str | Path, config: EmbeddedModelConfig | None = None,
                              progress: ProgressCallback | None = None) -> EmbeddedModelInfo:
    """Corpus -> tokenizer -> model -> pretraining -> `save_pretrained` into `output_dir`."""
    config = config or load_base_model_settings().embedded
    output_dir = Path(output_dir)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    corpus = build_corpus(config.seed, config.max_documents)
    lap("corpus_s")
    tokenizer = train_tokenizer(corpus, config.vocab_size, audit_answer_tokens())
    tokenizer.model_max_length = config.max_position_embeddings
    lap("tokenizer_s")
    model = build_model(config, tokenizer)
    result = pretrain(model, tokenizer, corpus, config, progress)
    lap("pretrain_s")
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    lap("save_s")
    timings["total_s"] = sum(timings.values())
    info = EmbeddedModelInfo(
        output_dir=output_dir, config=config, corpus_sha256=compute_corpus_sha256(corpus),
        n_documents=len(corpus), parameter_count=sum(p.numel() for p in model.parameters()),
        size_bytes=sum(p.stat().st_size for p in output_dir.rglob("*") if p.is_file()),
        pretrain=result, timings_s=timings,
    )
    (output_dir / "gxplab_model.json").write_text(json.dumps(info.to_json(), indent=2) + "\n",
                                                  encoding="utf-8")
    (output_dir / "model_card.md").write_text(model_card(info), encoding="utf-8")
    return info


def model_card(info: EmbeddedModelInfo) -> str:
    """A short markdown model card."""
    c, r = info.config, info.pretrain
    return (
        "# GxPLab embedded base model\n\n"
        "A tiny Llama-architecture causal LM with its own byte-level BPE tokenizer and chat "
        "template, pretrained from scratch on GxPLab's synthetic corpora (batch records, deviation "
        "catalog, audit prompt, chat Q/A). It lets the platform run on a CPU with no download; "
        "it is not a useful language model.\n\n"
        "| field | value |\n|---|---|\n"
        f"| parameters | {info.parameter_count:,} |\n"
        f"| layers / hidden / heads (kv) | {c.num_hidden_layers} / {c.hidden_size} / "
        f"{c.num_attention_heads} ({c.num_key_value_heads}) |\n"
        f"| vocabulary | {c.vocab_size} |\n"
        f"| corpus | {info.n_documents} documents, sha256 {info.corpus_sha256} |\n"
        f"| pretraining | {c.pretrain_steps} steps x {c.batch_size} x {c.sequence_length} tokens, "
        f"lr {c.learning_rate}, seed {c.seed} |\n"
        f"| held-out perplexity | {r.initial_perplexity:.1f} -> {r.final_perplexity:.2f} |\n"
        f"| throughput | {r.tokens_per_s:,.0f} tokens/s (CPU, float32) |\n"
        f"| size on disk | {info.size_bytes / 1e6:.2f} MB |\n"
        f"| build time | {info.timings_s.get('total_s', 0.0):.1f} s |\n"
    )


class BaseModelOfflineError(OSError):
    """A hub model id was asked for while the hub is unreachable by configuration (offline)."""


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) was set when huggingface_hub loaded."""
    return is_offline_mode()


def load_base_model(path_or_id: str | Path, *, trust_remote_code: bool = False,
                    dtype: torch.dtype | str | None = None, device_map: str | dict | None = None,
                    ) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """(model, tokenizer) from a local folder or a hub id via the Auto classes."""
    source = str(path_or_id)
    local = Path(source).expanduser()
    looks_like_path = isinstance(path_or_id, Path) or source.startswith(("/", ".", "~")) \
        or source.count("/") > 1
    if looks_like_path and not local.is_dir():
        raise FileNotFoundError(f"base model path {source!r} is not a folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, trust_remote_code=trust_remote_code, dtype=dtype, device_map=device_map)
    except OSError as err:
        raise_if_offline(source, err)
        raise
    return model, tokenizer


def raise_if_offline(source: str, err: OSError) -> None:
    """Raise BaseModelOfflineError (from `err`) when `source` is a hub id that could not load
    because the hub is offline by configuration; return otherwise (the caller re-raises)."""
    if Path(source).expanduser().is_dir() or not hub_offline():
        return
    raise BaseModelOfflineError(
        f"base model {source!r} is neither a local folder nor in the Hugging Face cache, and "
        "the hub is offline (HF_HUB_OFFLINE=1), so it cannot be downloaded. The embedded "
        "profile (profile: embedded in configs/base_model.yaml) is the local default; or give "
        "a local path to a saved model."
    ) from err
