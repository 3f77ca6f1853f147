"""Full fine-tuning of a small causal LM on record-audit chats, with a language-model loss on the
record tokens as well as the answer (the `gxp_audit_adapter` task's `method: full`).

Why not TRL's SFTTrainer: it trains on the answer tokens only (or on everything with one weight).
An answer here is one to three tokens, so the answer-only loss gives a tiny model almost no signal
about the record, and it settles on the prior answer "no findings" (measured: record F1 0.000 on
the benchmark with 50% deviating training data). Adding `lm_loss_weight` x the next-token loss on
the prompt (system, record, instruction) makes it model the record's text, where the deviations
are, and it then learns the answers. So this is a plain torch loop: AdamW, warmup + one cosine
cycle, every weight trained, warm-started from the base model. It writes a whole model folder
(`adapter/`, with config.json and no adapter_config.json), which training/model_folders.py
loads in place of base + LoRA. Plain Python: no Dagster.
"""

from __future__ import annotations

import json
import random
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.settings import from_mapping
from training.sft import file_sha256, read_sft_rows, task_inputs, torch_threads

METHODS = ("full", "lora")


@dataclass(frozen=True)
class AuditSftSettings:
    """The full fine-tuning settings (task config keys; gxp_audit_task's defaults)."""

    max_steps: int = 300  # about 150 s on an idle 2-core machine (docs/training.md)
    per_device_train_batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    lm_loss_weight: float = 0.3
    max_length: int = 512
    seed: int = 42
    # None: one per core. The graph's training steps run one at a time, so the cores are free:
    # 2 threads trained 1.74x faster than 1 on the 2-core machines (6,857 vs 3,935 tokens/s).
    torch_threads: int | None = None
    eval_batch_size: int = 64
    max_new_tokens: int = 12
    # Share of records with a deviation where the model audits (the train split's); when set,
    # the answer "no findings" gets the prior-shift bias (training/answer_prior.py).
    use_deviation_rate: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_steps", "per_device_train_batch_size", "max_length",
                     "eval_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"task config: field {name!r} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.use_deviation_rate is not None and not 0 < self.use_deviation_rate < 1:
            raise ValueError("task config: field 'use_deviation_rate' must be in (0, 1), got "
                             f"{self.use_deviation_rate}")
        if self.learning_rate < 0 or self.lm_loss_weight < 0:
            raise ValueError("task config: fields 'learning_rate' and 'lm_loss_weight' must be "
                             ">= 0")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> AuditSftSettings:
        return from_mapping(cls, raw, source="task config",
                            optional=frozenset({"torch_threads", "use_deviation_rate"}),
                            converters={"use_deviation_rate": lambda v: None if v is None
                                        else float(v)})


@dataclass
class Example:
    """One tokenized chat: ids, and which positions are the answer (label weights)."""

    ids: list[int]
    prompt_length: int


def encode_rows(tokenizer: Any, rows: Sequence[Mapping[str, Any]], max_length: int,
                source: str = "train rows") -> list[Example]:
    """Each chat as ids (the chat template) with the length of its prompt; a chat longer than
    `max_length` is cut from the record's end, keeping the answer."""
    examples = []
    for i, row in enumerate(rows):
        messages = [dict(m) for m in row["messages"]]
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{source}: row {i + 1}: the last message must be the assistant's")
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
        answer = list(full[len(prompt):])
        if list(full[:len(prompt)]) != list(prompt) or not answer:
            raise ValueError(f"{source}: row {i + 1}: the chat template does not render the "
                             "prompt as a prefix of the whole chat")
        prompt = list(prompt)[:max(1, max_length - len(answer))]
        examples.append(Example(ids=prompt + answer, prompt_length=len(prompt)))
    return examples


def batch_tensors(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded input ids, attention mask and the answer / prompt label masks."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    answer = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        attention[row, :n] = 1
        answer[row, example.prompt_length:n] = True
    prompt = attention.bool() & ~answer
    return {"input_ids": ids, "attention_mask": attention, "answer": answer, "prompt": prompt}


def audit_loss(model: Any, batch: Mapping[str, Any], lm_loss_weight: float
               ) -> tuple[Any, float, float]:
    """(answer loss + lm_loss_weight x prompt LM loss, answer loss, LM loss): mean next-token
    cross-entropy over the answer tokens and over the prompt tokens (after the first)."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["input_ids"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), targets,
                                            reduction="none")
    answer_mask = batch["answer"][:, 1:].float()
    prompt_mask = batch["prompt"][:, 1:].float()
    answer_loss = (nll * answer_mask).sum() / answer_mask.sum().clamp(min=1)
    lm_loss = (nll * prompt_mask).sum() / prompt_mask.sum().clamp(min=1)
    loss = answer_loss + lm_loss_weight * lm_loss if lm_loss_weight else answer_loss
    return loss, float(answer_loss.detach()), float(lm_loss.detach())


def train_full(model: Any, tokenizer: Any, examples: Sequence[Example],
               settings: AuditSftSettings, report: Any = None) -> dict[str, Any]:
    """Train every weight of `model` for settings.max_steps steps; the losses and throughput."""
    import torch

    from training.embedded_model import _cosine_with_warmup

    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                  betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _cosine_with_warmup(settings.warmup_steps, settings.max_steps))
    model.train()
    order: list[int] = []
    losses, answer_losses = [], []
    tokens = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    size = min(settings.per_device_train_batch_size, len(examples))
    for step in range(1, settings.max_steps + 1):
        if len(order) < size:  # a fresh seeded permutation per epoch
            order = list(range(len(examples)))
            rng.shuffle(order)
        chosen, order = order[:size], order[size:]
        batch = batch_tensors([examples[i] for i in chosen], tokenizer.pad_token_id)
        loss, answer_loss, lm_loss = audit_loss(model, batch, settings.lm_loss_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss.detach()))
        answer_losses.append(answer_loss)
        if report is not None and (step % 10 == 0 or step == settings.max_steps):
            report(step=step, total=settings.max_steps, loss=losses[-1],
                   answer_loss=answer_loss, lm_loss=lm_loss)
    wall = time.perf_counter() - started
    # CPU seconds of this process: on a shared machine, closer than the wall clock to what the
    # run takes on an idle one (one torch thread)
    cpu = time.process_time() - cpu_started
    model.eval()
    tail = max(1, len(losses) // 10)
    return {"steps": settings.max_steps, "losses": losses, "wall_s": wall, "cpu_s": cpu,
            "train_loss": sum(losses[-tail:]) / tail,
            "answer_loss": sum(answer_losses[-tail:]) / tail,
            "tokens_per_s": tokens / wall if wall > 0 else 0.0,
            "steps_per_s": settings.max_steps / wall if wall > 0 else 0.0}


def generate_answers(model: Any, tokenizer: Any, chats: Sequence[Sequence[Mapping[str, str]]],
                     max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers (left-padded batches, shortest prompts first), in input order."""
    import torch

    encoded = [tokenizer.apply_chat_template([dict(m) for m in chat], add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for chat in chats]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers = [""] * len(encoded)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]},
                                  return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
            width = batch["input_ids"].shape[1]
            for row, i in enumerate(indices):
                answers[i] = tokenizer.decode(out[row, width:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return answers


def save_full_model(model: Any, tokenizer: Any, output_dir: Path) -> dict[str, Any]:
    """Save the model and tokenizer to `output_dir/adapter` (the folder every adapter task
    names), archive it, and return paths, sha256 and sizes."""
    folder = Path(output_dir) / "adapter"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    archive = folder.parent / f"adapter-{stamp}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="adapter")
    n_params = sum(p.numel() for p in model.parameters())
    return {"adapter_path": str(folder), "archive_path": str(archive),
            "archive_sha256": file_sha256(archive), "trainable_params": n_params,
            "total_params": n_params,
            "adapter_size_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())}


def full_finetune_task(config: dict, output_dir: Path, report: Any) -> dict[str, Any]:
    """Fully fine-tune the base model on `train_file`'s chats; with `heldout_file` (record rows
    with their labels, from training data generation), per-type recall on held-out records."""
    from training.embedded_model import load_base_model

    config = dict(config)
    heldout_file = config.pop("heldout_file", None)
    config.pop("method", None)
    base_model_path, train_file, overrides = task_inputs(config)
    settings = AuditSftSettings.from_mapping(overrides)
    rows = read_sft_rows(train_file)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with torch_threads(settings.torch_threads):
        model, tokenizer = load_base_model(base_model_path)
        model = model.float()
        context = int(getattr(model.config, "max_position_embeddings", settings.max_length))
        examples = encode_rows(tokenizer, rows, min(settings.max_length, context),
                               str(train_file))
        print(f"gxp_audit_adapter: full fine-tuning on {len(examples)} chats, "
              f"{settings.max_steps} steps", file=sys.stderr)
        metrics = train_full(model, tokenizer, examples, settings, report)
        # held out: generated records at the training mix, so measured before the correction
        evaluation = (evaluate_heldout(model, tokenizer, Path(heldout_file), settings)
                      if heldout_file else {})
        correction = _prior_correction(model, tokenizer, rows, settings)
    metadata: dict[str, Any] = {
        **save_full_model(model, tokenizer, output_dir), **metrics, **evaluation,
        "answer_prior_correction": correction,
        "method": "full", "lm_loss_weight": settings.lm_loss_weight,
        "learning_rate": settings.learning_rate, "train_rows": len(examples),
        "dataset_sha256": file_sha256(train_file), "quantization": "none",
        "mean_train_tokens": sum(len(e.ids) for e in examples) / len(examples),
    }
    (output_dir / "adapter" / "model_card.md").write_text(_card(base_model_path, metadata),
                                                           encoding="utf-8")
    return metadata


def _prior_correction(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]],
                      settings: AuditSftSettings) -> dict[str, Any]:
    """The "no findings" prior-shift bias put into the model's generation config, if asked."""
    from scoring.record_audit import ANSWER_NONE
    from training.answer_prior import apply_correction, prior_correction

    if settings.use_deviation_rate is None:
        return {"applied": False, "why": "use_deviation_rate not set"}
    correction = prior_correction(tokenizer, rows, ANSWER_NONE, settings.use_deviation_rate)
    apply_correction(model, correction)
    return correction


def evaluate_heldout(model: Any, tokenizer: Any, path: Path,
                     settings: AuditSftSettings) -> dict[str, Any]:
    """Answer the held-out records (rows {"record": ..., "labels": [...]}) and measure them."""
    from scoring.record_audit import load_record_prompt, record_messages
    from training.audit_eval import record_metrics

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    prompt = load_record_prompt()
    answers = generate_answers(model, tokenizer,
                               [record_messages(prompt, row["record"]) for row in rows],
                               settings.max_new_tokens, settings.eval_batch_size)
    metrics = record_metrics([row["labels"] for row in rows], answers)
    return {f"heldout_{key}": value for key, value in metrics.items()}


def _card(base_model_path: str, metadata: Mapping[str, Any]) -> str:
    lines = ["# GxPLab record-audit model (gxp_audit_adapter, full fine-tuning)", "",
             f"- base model: `{base_model_path}` (every weight trained, warm start)",
             f"- dataset sha256: `{metadata['dataset_sha256']}` ({metadata['train_rows']} chats)",
             f"- loss: answer + {metadata['lm_loss_weight']} x LM loss on the prompt tokens",
             f"- steps: {metadata['steps']} in {metadata['wall_s']:.0f} s "
             f"({metadata['tokens_per_s']:,.0f} tokens/s)"]
    if "heldout_record_f1" in metadata:
        lines.append(f"- held-out generated records: record F1 "
                     f"{metadata['heldout_record_f1']:.3f}")
    return "\n".join(lines) + "\n"
