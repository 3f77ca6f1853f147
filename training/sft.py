"""SFT of a LoRA adapter (QLoRA on CUDA) with TRL's `SFTTrainer` and peft: the `qlora_adapter` task.

`sft_task(config, output_dir, report)` trains on a JSONL file of chat rows (`{"messages": [...]}`,
loss on the assistant replies only) or prompt/completion rows (loss on the completion). With CUDA
the base model is loaded 4-bit NF4 (double quantization, bf16 compute); without CUDA it trains plain
LoRA in float32 and says so. Checkpoints go to `output_dir/checkpoints` and a re-run resumes from
the last one; the adapter, a timestamped `.tar.gz` of it and a model card go to `output_dir`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import resource
import sys
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from training.settings import from_mapping

if TYPE_CHECKING:  # training.tasks imports this module; torch loads only when a task runs
    from training.tasks import Report

QUANTIZATIONS = ("auto", "nf4", "none")
ROLES = frozenset({"system", "user", "assistant"})
NO_CUDA = "none (no CUDA)"


SAMPLING_STRATEGIES = ("random", "sequential")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA and trainer settings every adapter task shares (project defaults); any field can be
    overridden by the config. Subclasses change defaults and add their method's fields."""

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj")
    # Modules trained in full beside the LoRA layers and saved with the adapter (peft
    # `modules_to_save`), e.g. ("embed_tokens",): a tiny base model whose embeddings barely know
    # the task's words learns far faster with them trainable (tied output embeddings stay tied).
    modules_to_save: tuple[str, ...] = ()
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    gradient_checkpointing: bool = True
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int | None = None  # overrides num_train_epochs when set
    max_length: int = 512
    eval_fraction: float = 0.1
    seed: int = 42
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    quantization: str = "auto"
    # Intra-op CPU threads (None: torch's default); see EmbeddedModelConfig.torch_threads for why.
    torch_threads: int | None = None
    # "random" (shuffled batches) or "sequential": rows in file order, for a curriculum whose
    # stages follow each other (the held-out rows are then drawn without reordering the rest).
    train_sampling_strategy: str = "random"

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, "
                             f"got {self.quantization!r}")
        for name in ("lora_r", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "max_length", "logging_steps", "save_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if not 0 <= self.eval_fraction < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("eval_fraction and warmup_ratio must be in [0, 1)")
        if self.train_sampling_strategy not in SAMPLING_STRATEGIES:
            raise ValueError(f"train_sampling_strategy must be one of "
                             f"{', '.join(SAMPLING_STRATEGIES)}, got "
                             f"{self.train_sampling_strategy!r}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str = "task config") -> Self:
        """Build from a mapping; an unknown or mistyped field names the source and the field."""
        return from_mapping(
            cls, raw, source=source,
            optional=frozenset({"max_steps", "torch_threads", "grit_reproject_every"}),
            converters={"target_modules": _modules, "modules_to_save": _modules},
        )


GRIT_PRESETS = ("default", "periodic", "seed003")  # seed003: the earlier name of periodic


@dataclass(frozen=True)
class SftSettings(LoraSettings):
    """SFT settings: the shared LoRA settings plus the optimizer choice (plain AdamW or GRIT)."""

    # "adamw" (plain LoRA/QLoRA) or "grit" (training/grit.py: K-FAC preconditioning inside the
    # optimizer step, Fisher-guided reprojection); grit_preset "default" (factors every step,
    # reprojection every 40) or "periodic" (factors every 20 steps: nothing happens in a run
    # shorter than that, such as the embedded default's 14 steps; "seed003" is its earlier name).
    optimizer: str = "adamw"
    grit_preset: str = "default"
    # True: the loss covers every token of a row (system prompt, user turn and reply), not only
    # the reply: a language-model loss on the prompt, which teaches a tiny base model to read the
    # prompt's kind of text (it learnt to answer from the question only with it; see
    # configs/training.yaml). Losses (eval_loss, base_eval_loss) then average over all tokens.
    prompt_loss: bool = False
    # Overrides of the GRIT preset's reprojection interval (optimizer steps; None: the preset's).
    grit_reproject_every: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in ("adamw", "grit"):
            raise ValueError(f"optimizer must be adamw or grit, got {self.optimizer!r}")
        if self.grit_preset not in GRIT_PRESETS:
            raise ValueError(f"grit_preset must be periodic or default, got {self.grit_preset!r}")
        if self.grit_reproject_every is not None and self.grit_reproject_every < 1:
            raise ValueError(f"grit_reproject_every must be >= 1 or None, got "
                             f"{self.grit_reproject_every}")


def _modules(value: Any) -> tuple[str, ...]:
    return tuple(value.split(",")) if isinstance(value, str) else tuple(value)


def iter_jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) per non-blank line of a JSONL file; `where` names the file, the line and the
    row's record_id when it has one. A line that is not a JSON object raises ValueError."""
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            if "record_id" in row:
                where += f" (record_id {row['record_id']})"
            yield where, row


def read_sft_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL training file, all chat (`messages`) or all `prompt`/`completion`."""
    rows: list[dict[str, Any]] = []
    kind: str | None = None
    for where, row in iter_jsonl_rows(path):
        row_kind = "messages" if "messages" in row else "prompt_completion"
        if kind is not None and row_kind != kind:
            raise ValueError(f"{where}: mixes {row_kind} with {kind} rows of earlier lines")
        kind = row_kind
        rows.append(_check_messages(row, where) if row_kind == "messages"
                    else _check_prompt_completion(row, where))
    if not rows:
        raise ValueError(f"{path}: no training rows")
    return rows


def check_chat(messages: Any, where: str, field: str, roles: Any) -> None:
    """A non-empty list of {role in `roles`, content: str} messages, else a ValueError naming
    `where` and the field (e.g. `messages[2].role`)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: field '{field}' must be a non-empty list of chat messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in roles:
            raise ValueError(f"{where}: field '{field}[{i}].role' must be one of "
                             f"{', '.join(sorted(roles))}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"{where}: field '{field}[{i}].content' must be a string")


def _check_messages(row: dict, where: str) -> dict[str, Any]:
    messages = row["messages"]
    check_chat(messages, where, "messages", ROLES)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: field 'messages' has no assistant message to learn")
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def _check_prompt_completion(row: dict, where: str) -> dict[str, Any]:
    for name in ("prompt", "completion"):
        if not isinstance(row.get(name), str):
            raise ValueError(f"{where}: field {name!r} must be a string (or give 'messages')")
    return {"prompt": row["prompt"], "completion": row["completion"]}


def resolve_quantization(requested: str, cuda: bool) -> str:
    """The quantization actually used: "nf4", "none", or "none (no CUDA)" for auto/nf4 on CPU."""
    if requested == "none":
        return "none"
    return "nf4" if cuda else NO_CUDA


def sft_task(config: dict, output_dir: Path, report: Report, task: str = "qlora_adapter") -> dict:
    """Train a LoRA adapter on `config["train_file"]` over `config["base_model_path"]`; `task`
    names the adapter in logs and in the model card."""
    base_model_path, train_file, overrides = task_inputs(config)
    settings = SftSettings.from_mapping(overrides)
    rows = read_sft_rows(train_file)
    run = start_run(output_dir, settings.quantization, task, report)
    with torch_threads(settings.torch_threads):
        trainer, grit = _build_trainer(base_model_path, rows, settings, run.quantization,
                                       run.checkpoints, report)
        base_eval = base_eval_loss(trainer, run)
        metrics = train_and_measure(trainer, run)
    metadata: dict[str, Any] = {
        **save_adapter(trainer, run.output_dir), **metrics, **base_eval,
        "train_rows": len(trainer.train_dataset),
        "dataset_sha256": file_sha256(train_file),
        "optimizer": settings.optimizer,
    }
    if grit is not None:
        metadata.update({f"grit_{key}": value for key, value in grit.metrics().items()})
    (run.output_dir / "model_card.md").write_text(
        model_card(base_model_path, settings, metadata, task=task), encoding="utf-8")
    return metadata


def base_eval_loss(trainer: Any, run: TrainingRun) -> dict[str, Any]:
    """The base model's loss on the held-out rows, measured before training: LoRA starts as the
    identity (B = 0), so the untrained adapter is the base model. `base_eval_loss` (None when
    resuming a run or with no held-out rows) and `eval_rows`, beside the tuned `eval_loss`."""
    if trainer.eval_dataset is None:
        return {"base_eval_loss": None, "eval_rows": 0}
    loss = None if run.resume else float(trainer.evaluate()["eval_loss"])
    return {"base_eval_loss": loss, "eval_rows": len(trainer.eval_dataset)}


def task_inputs(config: Mapping[str, Any]) -> tuple[str, Path, dict[str, Any]]:
    """(base_model_path, train_file, the remaining settings overrides) of a task config."""
    config = dict(config)
    missing = [k for k in ("base_model_path", "train_file") if not config.get(k)]
    if missing:
        raise ValueError(f"task config: field {missing[0]!r} is required")
    return str(config.pop("base_model_path")), Path(config.pop("train_file")), config


@dataclass(frozen=True)
class TrainingRun:
    """Where an adapter task writes, the checkpoint it resumes from and the quantization used."""

    output_dir: Path
    checkpoints: Path
    resume: str | None
    cuda: bool
    quantization: str


def start_run(output_dir: Path, quantization: str, task: str, report: Report) -> TrainingRun:
    """Resolve the run's folders, last checkpoint and quantization; say so when CUDA is absent."""
    import torch
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    cuda = torch.cuda.is_available()
    used = resolve_quantization(quantization, cuda)
    if used == NO_CUDA:
        print(f"{task}: no CUDA, training plain LoRA in float32", file=sys.stderr)
        report(note="quantization none (no CUDA): plain LoRA in float32")
    return TrainingRun(output_dir, checkpoints, resume, cuda, used)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op CPU threads (None: leave torch's setting)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_and_measure(trainer: Any, run: TrainingRun) -> dict[str, Any]:
    """Train (resuming from the run's last checkpoint) and return the run's metrics: losses,
    final eval loss, steps, tokens, tokens/s, wall time, peak memory, quantization, device."""
    import torch

    tokens_before = _checkpoint_tokens(run.resume)
    if run.cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=run.resume)
    wall_s = time.perf_counter() - start
    eval_loss = _final_eval_loss(trainer)
    state = trainer.state
    tokens_run = state.num_input_tokens_seen - tokens_before
    return {
        "train_loss": result.training_loss,
        "eval_loss": eval_loss,
        "losses": [e["loss"] for e in state.log_history if "loss" in e],
        "steps": state.global_step,
        "tokens_seen": int(state.num_input_tokens_seen),
        "tokens_per_s": tokens_run / wall_s if wall_s > 0 else 0.0,
        "wall_s": wall_s,
        "peak_memory_mb": _peak_memory_mb(run.cuda),
        "quantization": run.quantization,
        "device": "cuda" if run.cuda else "cpu",
        "resumed_from": run.resume,
    }


def save_adapter(trainer: Any, output_dir: Path) -> dict[str, Any]:
    """Save the trained adapter and its tokenizer to `output_dir/adapter`, archive it (.tar.gz)
    and return paths, sha256, sizes and parameter counts."""
    trainable, total = trainer.model.get_nb_trainable_parameters()
    adapter_dir = Path(output_dir) / "adapter"
    if not trainer.is_world_process_zero():  # `accelerate launch`: rank 0 writes the adapter
        return {"adapter_path": str(adapter_dir), "trainable_params": int(trainable),
                "total_params": int(total)}
    trainer.model.save_pretrained(adapter_dir)
    trainer.processing_class.save_pretrained(adapter_dir)  # chat template for inference
    archive = _archive(adapter_dir)
    return {
        "adapter_path": str(adapter_dir),
        "archive_path": str(archive),
        "archive_sha256": file_sha256(archive),
        "trainable_params": int(trainable),
        "total_params": int(total),
        "adapter_size_bytes": sum(p.stat().st_size for p in adapter_dir.rglob("*") if p.is_file()),
    }


def _checkpoint_tokens(checkpoint: str | None) -> int:
    """Input tokens already seen at `checkpoint` (its trainer_state.json), 0 for a fresh run."""
    if checkpoint is None:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("num_input_tokens_seen", 0))


def _build_trainer(base_model_path: str, rows: list[dict[str, Any]], settings: SftSettings,
                   quantization: str, checkpoints: Path, report: Report) -> Any:
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = _load_model(base_model_path, quantization)
    chat = "messages" in rows[0]
    if chat and "{% generation %}" not in str(tokenizer.chat_template or ""):
        # Most hub chat templates lack the markers assistant_only_loss needs: train on the last
        # reply as a conversational completion instead (TRL's completion-only loss).
        rows = [as_prompt_completion(row) for row in rows]
        chat = False
        print("sft: the chat template has no {% generation %} markers; the last assistant reply "
              "of each chat is trained as a completion", file=sys.stderr)
        report(note="chat template without generation markers: completion-only loss on the "
               "last reply")
    dataset, eval_dataset = split_rows(rows, settings)
    args = SFTConfig(
        **trainer_arguments(settings, checkpoints, quantization, eval_dataset is not None),
        # the chat template marks replies with {% generation %}
        assistant_only_loss=chat and not settings.prompt_loss,
        completion_only_loss=not settings.prompt_loss,
        dataset_num_proc=None,
    )
    lora = lora_config(settings)
    grit = None
    extra: dict[str, Any] = {"peft_config": lora}
    if settings.optimizer == "grit":
        # GRIT preconditions inside the optimizer step, so it needs the LoRA layers before the
        # trainer exists, and clipping moves into the optimizer (after preconditioning).
        from peft import get_peft_model

        from training.grit import GritConfig, grit_optimizer

        model = get_peft_model(model, lora)
        every = ({"reproject_every": settings.grit_reproject_every}
                 if settings.grit_reproject_every else {})
        preset = (GritConfig(**every) if settings.grit_preset == "default"
                  else GritConfig.periodic(**every))
        optimizer, grit = grit_optimizer(model, lr=settings.learning_rate, config=preset,
                                         max_grad_norm=args.max_grad_norm or None)
        args.max_grad_norm = 0.0
        extra = {"optimizers": (optimizer, None)}
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                         processing_class=tokenizer, callbacks=[_report_callback(report)],
                         **extra)
    # The printer writes Python dicts to stdout, where a standalone task prints JSON lines; the
    # report callback carries the same numbers.
    trainer.remove_callback(PrinterCallback)
    return trainer, grit


def as_prompt_completion(row: Mapping[str, Any]) -> dict[str, Any]:
    """A chat row as TRL's conversational prompt/completion: every message before the last
    assistant reply is the prompt, that reply the completion (earlier replies get no loss)."""
    messages = list(row["messages"])
    last = max(i for i, message in enumerate(messages) if message["role"] == "assistant")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def lora_config(settings: LoraSettings) -> Any:
    """peft `LoraConfig` for a causal LM from the settings' rank, alpha, dropout and targets."""
    from peft import LoraConfig

    saved = list(settings.modules_to_save) or None
    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout,
                      target_modules=list(settings.target_modules), task_type="CAUSAL_LM",
                      modules_to_save=saved, ensure_weight_tying=saved is not None)


def split_rows(rows: list[dict[str, Any]], settings: LoraSettings) -> tuple[Any, Any]:
    """(train, eval) `datasets.Dataset`s: `eval_fraction` held out with `seed` (eval None when
    the fraction is 0 or there is a single row)."""
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    if settings.eval_fraction > 0 and len(rows) >= 2:
        if settings.train_sampling_strategy == "sequential":
            # A curriculum keeps its order: seeded held-out rows, the rest in file order.
            n_eval = min(len(rows) - 1, max(1, round(len(rows) * settings.eval_fraction)))
            held_out = sorted(random.Random(settings.seed).sample(range(len(rows)), n_eval))
            kept = sorted(set(range(len(rows))) - set(held_out))
            return dataset.select(kept), dataset.select(held_out)
        split = dataset.train_test_split(test_size=settings.eval_fraction, seed=settings.seed)
        return split["train"], split["test"]
    return dataset, None


def trainer_arguments(settings: LoraSettings, checkpoints: Path, quantization: str,
                      has_eval: bool) -> dict[str, Any]:
    """The `TrainingArguments` keywords every TRL adapter task shares (schedule, batch, logging,
    checkpoints, evaluation, token counting, precision); each task adds its config's own."""
    import torch

    on_gpu = quantization != NO_CUDA and torch.cuda.is_available()
    return {
        "output_dir": str(checkpoints),
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": settings.lr_scheduler_type,
        "warmup_steps": settings.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        # transformers 5 names gradient checkpointing `activation_checkpointing`
        "activation_checkpointing": settings.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "num_train_epochs": settings.num_train_epochs,
        "max_steps": settings.max_steps or -1,
        "per_device_train_batch_size": settings.per_device_train_batch_size,
        "per_device_eval_batch_size": settings.per_device_train_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "max_length": settings.max_length,
        "logging_steps": settings.logging_steps,
        "save_strategy": "steps",
        "save_steps": settings.save_steps,
        "save_total_limit": settings.save_total_limit,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": settings.save_steps,
        "include_num_input_tokens_seen": "non_padding",
        "seed": settings.seed,
        "data_seed": settings.seed,
        "train_sampling_strategy": settings.train_sampling_strategy,
        # TRL defaults bf16=True, which fails on a CPU; use_cpu also keeps a GPU-less run off MPS.
        "bf16": on_gpu,
        "use_cpu": not on_gpu,
        "report_to": "none",
        "disable_tqdm": True,
    }


def _local_device() -> dict[str, int]:
    """The device map of this process: its own GPU under `accelerate launch` / torchrun (each rank
    sets LOCAL_RANK), GPU 0 when launched alone."""
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def _load_model(base_model_path: str, quantization: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    if quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                 bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(
            base_model_path, quantization_config=bnb, dtype=torch.bfloat16,
            device_map=_local_device())
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif torch.cuda.is_available() and quantization == "none":
        model = AutoModelForCausalLM.from_pretrained(
            base_model_path, dtype=torch.bfloat16, device_map=_local_device())
    else:
        model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    return model, tokenizer


def _final_eval_loss(trainer: Any) -> float | None:
    """Eval loss after the last step: the logged one when it ran there, else a fresh evaluation."""
    if trainer.eval_dataset is None:
        return None
    last = [e for e in trainer.state.log_history if "eval_loss" in e]
    if last and last[-1].get("step") == trainer.state.global_step:
        return float(last[-1]["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def _report_callback(report: Report, extra: Mapping[str, str] | None = None) -> Any:
    """A TrainerCallback streaming logs to `report`; `extra` maps further log keys (such as TRL's
    "rewards/margins") to the names they are reported under, when a log has them."""
    from transformers import TrainerCallback

    extra = dict(extra or {})

    class ReportCallback(TrainerCallback):
        """Streams every training log (step, loss, lr, extras) and every evaluation to `report`."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                more = {name: float(logs[key]) for key, name in extra.items() if key in logs}
                report(step=state.global_step, total=state.max_steps, loss=float(logs["loss"]),
                       learning_rate=float(logs.get("learning_rate", 0.0)), **more)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and "eval_loss" in metrics:
                report(eval_loss=float(metrics["eval_loss"]), step=state.global_step)

    return ReportCallback()


def _peak_memory_mb(cuda: bool) -> float:
    import torch

    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _archive(adapter_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    archive = adapter_dir.parent / f"adapter-{stamp}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(adapter_dir, arcname="adapter")
    return archive


def model_card(base_model_path: str, settings: LoraSettings, metadata: Mapping[str, Any],
               task: str = "qlora_adapter") -> str:
    """A short markdown card: base model, dataset hash, settings and the run's metrics."""
    lines = [f"# GxPLab LoRA adapter ({task})", "",
             f"- base model: `{base_model_path}`",
             f"- dataset sha256: `{metadata['dataset_sha256']}` "
             f"({metadata['train_rows']} rows trained on, the rest held out)",
             f"- quantization: {metadata['quantization']} on {metadata['device']}", "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in dataclasses.asdict(settings).items()]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in metadata.items()
              if k not in {"losses", "dataset_sha256", "quantization", "device"}]
    return "\n".join(lines) + "\n"


def load_adapter(base_model_path: str | Path, adapter_path: str | Path) -> Any:
    """The base model with the trained adapter (peft `PeftModel`), in eval mode, for inference."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_model_path), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter_path)).eval()
