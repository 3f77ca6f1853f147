"""Benchmark: tokens/s of every adapter training method as a ratio to plain TRL LoRA SFT.

CPU, embedded base model (configs/base_model.yaml `embedded:`, built once here; --pretrain-steps
shortens its pretraining, which does not change throughput). Every task of training/tasks.py's
TASKS whose name ends in `_adapter` and has a data builder below (BUILDERS) runs in this process
through `TASKS[name](config, out_dir, report)` on its own kind of training file:

    qlora_adapter      plain TRL SFTTrainer + peft LoRA (AdamW): the baseline, ratio 1.000
    grit_adapter       the same SFT, the same rows, with the GRIT optimizer (training/grit.py)
    gxp_audit_adapter  SFT on record-audit chats (scoring/record_audit.py; ~600-token prompts)
    batchqa_adapter    SFT on batch-record Q&A chats (synthetic/batch_record_qa.py)
    dpo_adapter        TRL DPOTrainer on preference pairs (reference = adapter disabled)
    orpo_adapter       TRL ORPOTrainer on the same pairs (no reference model)
    grpo_adapter       TRL GRPOTrainer on AMR cases (training/grpo.py), reference rubric judge

A registered `_adapter` task without a builder is skipped with a note (add it to BUILDERS); a
builder whose task is not registered in TASKS yet is skipped too. Every run gets the same optimizer
steps (--steps, as max_steps), batch (--batch, no gradient accumulation), torch threads
(--threads), LoRA r 16 on q/k/v/o/gate/up/down (the tasks' default), max_length (--max-length, for
every method that has one: GRPO has none, its prompts go in whole and answers stop at
max_completion_length), no held-out rows (eval_fraction 0, so no evaluation) and save_steps so
large that no checkpoint is written mid-run (the Trainer still saves one at the last step, inside
the timed region, for every method alike). Activation checkpointing is off for all (GRIT needs it
off; on this model it only slows); --gradient-checkpointing turns it on for all but GRIT.

Measured per run, from the task's returned metadata: tokens_per_s (the Trainer's
`num_input_tokens_seen` over the wall time of `trainer.train()`), wall_s, steps, peak_memory_mb
(the process's peak RSS during that run: the high-water mark is reset through
/proc/self/clear_refs before each run, so it includes this process's libraries, ~0.5-1 GB) and
trainable_params. s/step = wall_s / steps, so it includes the Trainer's start-up and the final
checkpoint. One untimed warm-up run of qlora_adapter (--warmup-steps) pays the one-time costs of
the first `trainer.train()` in the process. With --repeats N the methods are run in turn N times
(the order reversed on every other round, so drift hits all alike); the table shows medians, and
the ratios are the medians of each round's ratio to that round's qlora_adapter run.

What a token is differs between methods (TRL 1.16, transformers 5):
- SFT tasks: the attention-mask sum of each batch (include_num_input_tokens_seen="non_padding"):
  prompt and reply tokens, although the loss is on the reply only.
- DPO: trl/trainer/dpo_trainer.py's DataCollatorForPreference stacks prompt+chosen and
  prompt+rejected into one `input_ids` batch of 2 x batch rows; the Trainer's
  `_track_num_input_tokens` sums that batch's attention mask, so DPO counts chosen AND rejected
  sequences (the prompt twice). Per optimizer step DPO also runs a no-grad reference forward over
  those 2 x batch rows (peft: the adapter disabled), which the token count does not show.
- ORPO: training/preference.py's TokenCountingORPOTrainer counts chosen_ + rejected_ attention
  masks: the same two sequences per pair as DPO, with no reference pass.
- GRPO: trl/trainer/grpo_trainer.py adds prompt tokens (one copy per generation) plus generated
  completion tokens, and its wall time is mostly token-by-token sampling: not comparable with the
  others at all.
So a preference method's ratio is not "the same work per token": it is the rate at which TRL's
counter moves. Only grit_adapter trains exactly qlora_adapter's rows and batches, so its
step-time ratio is the GRIT optimizer's overhead (goal: at most 15%). The SFT tasks on other data
(gxp_audit, batchqa) differ in tokens per step (shown), which changes s/step but not much tokens/s.

    .venv/bin/python bench/bench_training_methods.py [--steps 20] [--repeats 1] [--batch 4]
        [--threads 1] [--pretrain-steps 20] [--methods qlora_adapter,grit_adapter,...]
        [--work-dir DIR] [--base-model DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASELINE = "qlora_adapter"
GRIT = "grit_adapter"
GRIT_GOAL = 0.15  # issue 3: GRIT step time at most 15% above plain LoRA
NO_SAVE_STEPS = 10**9  # no checkpoint (nor evaluation) before the last step
METRIC_KEYS = ("tokens_per_s", "wall_s", "steps", "tokens_seen", "peak_memory_mb",
               "trainable_params", "total_params", "train_loss", "optimizer")


# --------------------------------------------------------------------------- data builders


@dataclass(frozen=True)
class BuildContext:
    """What a data builder gets: its folder, how many rows a run consumes, the CLI options."""

    data_dir: Path
    rows_needed: int  # steps x batch (fewer rows are fine: the Trainer starts another epoch)
    args: argparse.Namespace


Builder = Callable[[BuildContext], dict[str, Any]]  # -> task config fields (train_file, ...)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _alignment_pairs() -> list[dict[str, str]]:
    from synthetic.alignment_instructions import build_alignment_sample, preference_pairs

    return preference_pairs(build_alignment_sample())


def sft_alignment(ctx: BuildContext) -> dict[str, Any]:
    """Chat rows user = prompt, assistant = chosen answer (assets/models.py's qlora/grit rows)."""
    rows = [{"messages": [{"role": "user", "content": p["prompt"]},
                          {"role": "assistant", "content": p["chosen"]}]}
            for p in _alignment_pairs()]
    return {"train_file": str(_write_jsonl(ctx.data_dir / "sft_alignment.jsonl", rows))}


def preference_alignment(ctx: BuildContext) -> dict[str, Any]:
    """{"prompt", "chosen", "rejected"} pairs of the same sample (assets/adapters.py's rows)."""
    path = _write_jsonl(ctx.data_dir / "preference_pairs.jsonl", _alignment_pairs())
    return {"train_file": str(path)}


def gxp_audit_chats(ctx: BuildContext) -> dict[str, Any]:
    """Record-audit chats of a small `train` split: every deviating record plus one clean record
    per deviating one (assets/models.py's gxp_audit_adapter selection)."""
    import dataclasses

    from scoring.record_audit import load_record_prompt, select_training_records, training_rows
    from synthetic.master_data import build_site_master
    from synthetic.splits import generate_split, load_dataset_config

    cfg = load_dataset_config()
    spec = cfg.splits["train"]
    # 2% of records deviate; 20 records a batch: ~0.4 deviating record per batch, 2 rows each
    n_batches = max(10, math.ceil(ctx.rows_needed / 0.8))
    spec = dataclasses.replace(spec, n_batches=min(n_batches, spec.n_batches))
    generated = generate_split(spec, build_site_master(cfg.site_master, cfg.seed), cfg.seed)
    chosen = select_training_records(generated.records, generated.manifest,
                                     clean_per_deviating=1.0, max_records=ctx.rows_needed, seed=42)
    rows = training_rows(chosen, generated.manifest, load_record_prompt())
    return {"train_file": str(_write_jsonl(ctx.data_dir / "gxp_audit.jsonl", rows))}


def batchqa_chats(ctx: BuildContext) -> dict[str, Any]:
    """Seed 002's chats (configs/training.yaml system prompt and end token) of the train split."""
    from synthetic.batch_record_qa import batchqa_messages, generate_batch_record_qa
    from training.presets import load_training_preset, split_preset

    _, extras = split_preset(load_training_preset("batchqa_adapter"))
    # 6-10 questions a batch, 80% of batches in the train split
    qa = generate_batch_record_qa(n_batches=max(5, math.ceil(ctx.rows_needed / 6 / 0.8)))
    rows = [batchqa_messages(row, extras["system_prompt"], extras["end_token"])
            for row in qa if row["split"] == "train"]
    return {"train_file": str(_write_jsonl(ctx.data_dir / "batchqa.jsonl", rows))}


def grpo_cases(ctx: BuildContext) -> dict[str, Any]:
    """training/grpo.py's inputs: a train_file of `grpo_row` rows ({"case_id", "prompt"}) for
    the train-split cases and a cases_file of the full case dicts (generate_amr_cases)."""
    from synthetic.amr_cases import generate_amr_cases
    from training.grpo import grpo_row  # ImportError: skipped with a note

    generations = ctx.args.grpo_generations
    prompts = max(1, math.ceil(ctx.rows_needed / generations))
    cases = generate_amr_cases(n_cases=max(6, math.ceil(prompts / 0.8) + 3))
    rows = [grpo_row(case) for case in cases if case["split"] == "train"]
    config: dict[str, Any] = {
        "train_file": str(_write_jsonl(ctx.data_dir / "grpo_train.jsonl", rows)),
        "cases_file": str(_write_jsonl(ctx.data_dir / "amr_cases.jsonl", cases)),
        "num_generations": generations,
        "judge": "reference",  # offline keyword rubric: no LLM calls
    }
    if ctx.args.grpo_completion_length:
        config["max_completion_length"] = ctx.args.grpo_completion_length
    return config


# task -> (what it trains, data builder). A task registered in TASKS but missing here is skipped.
BUILDERS: dict[str, tuple[str, Builder]] = {
    "qlora_adapter": ("LoRA SFT, AdamW (TRL SFTTrainer): alignment chosen answers", sft_alignment),
    "grit_adapter": ("the same SFT rows with the GRIT optimizer", sft_alignment),
    "gxp_audit_adapter": ("LoRA SFT on record-audit chats", gxp_audit_chats),
    "batchqa_adapter": ("LoRA SFT on batch-record Q&A chats", batchqa_chats),
    "dpo_adapter": ("DPO on alignment pairs (+ reference forward) [pref]",
                    preference_alignment),
    "orpo_adapter": ("ORPO on alignment pairs [pref]", preference_alignment),
    "grpo_adapter": ("GRPO on AMR cases: sample, judge, update [gen]", grpo_cases),
}
NO_MAX_LENGTH = frozenset({"grpo_adapter"})  # no max_length (max_completion_length instead)


# --------------------------------------------------------------------------- running


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM, and with it getrusage's ru_maxrss) on Linux."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _quiet_report(**_metrics: Any) -> None:
    """The tasks' progress callback: the benchmark prints its own line per run."""


def build_base_model(args: argparse.Namespace, work_dir: Path) -> tuple[str, dict[str, Any]]:
    """(path, description) of the base model: --base-model, or the embedded one built here."""
    if args.base_model:
        return args.base_model, {"path": args.base_model, "built_here": False}
    import dataclasses

    from training.embedded_model import build_embedded_base_model, load_base_model_settings

    config = load_base_model_settings().embedded
    if args.pretrain_steps is not None:
        config = dataclasses.replace(config, pretrain_steps=args.pretrain_steps,
                                     warmup_steps=min(config.warmup_steps, args.pretrain_steps))
    path = work_dir / "base_model"
    start = time.perf_counter()
    info = build_embedded_base_model(path, config)
    print(f"base model: embedded, {info.parameter_count:,} parameters, "
          f"{config.pretrain_steps} pretraining steps, "
          f"built in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return str(path), {"path": str(path), "built_here": True,
                       "parameter_count": info.parameter_count,
                       "pretrain_steps": config.pretrain_steps,
                       "final_perplexity": info.pretrain.final_perplexity}


def method_config(name: str, base: str, data: dict[str, Any], args: argparse.Namespace,
                  steps: int) -> dict[str, Any]:
    """The task config of one run: the same schedule and sizes for every method."""
    config: dict[str, Any] = {
        "base_model_path": base,
        **data,
        "max_steps": steps,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "torch_threads": args.threads,
        "eval_fraction": 0.0,
        "save_steps": NO_SAVE_STEPS,
        "save_total_limit": 1,
        "logging_steps": 1,
    }
    if name not in NO_MAX_LENGTH:
        config["max_length"] = args.max_length
    # GRIT's activation hooks must not see recomputed forwards: it stays off for GRIT
    config["gradient_checkpointing"] = bool(args.gradient_checkpointing) and name != GRIT
    if name == GRIT and args.grit_preset:
        config["grit_preset"] = args.grit_preset
    return config


def run_once(task: Callable[..., dict], config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """One run of a task; the metrics the table needs (and GRIT's own) from its metadata."""
    gc.collect()
    rss_reset = _reset_peak_rss()
    start = time.perf_counter()
    metadata = task(config, out_dir, _quiet_report)
    total_s = time.perf_counter() - start
    result = {key: metadata.get(key) for key in METRIC_KEYS}
    result.update({k: v for k, v in metadata.items()
                   if k.startswith("grit_") and not isinstance(v, list | dict)})
    result["task_total_s"] = total_s  # with model load, tokenization, adapter save
    result["peak_rss_reset"] = rss_reset
    return result


def plan_methods(args: argparse.Namespace, tasks: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(methods to run, baseline first; notes on what is skipped and why). Candidates: --methods,
    else every `_adapter` task of TASKS, then every builder whose task is not registered."""
    registered = [name for name in tasks if name.endswith("_adapter")]
    if args.methods:
        candidates = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        candidates = registered + [name for name in BUILDERS if name not in registered]
    if BASELINE not in candidates:
        candidates.insert(0, BASELINE)  # every ratio is to it
    methods, notes = [], []
    for name in dict.fromkeys(candidates):
        if name not in registered:
            has = "it has a data builder" if name in BUILDERS else "nor has it a data builder"
            notes.append(f"{name}: not registered in training/tasks.py TASKS (yet; {has}); "
                         "skipped")
        elif name not in BUILDERS:
            notes.append(f"{name}: registered in TASKS but this benchmark has no data builder "
                         "for it (add one to BUILDERS); skipped")
        else:
            methods.append(name)
    if BASELINE not in methods:
        raise SystemExit(f"{BASELINE} (the baseline of every ratio) cannot run: {notes}")
    methods.sort(key=lambda m: m != BASELINE)
    return methods, notes


def summarize(methods: list[str], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per method: medians over repeats, and the medians of each round's ratio to qlora."""
    base_runs = runs.get(BASELINE, [])
    summary: dict[str, Any] = {}
    for name in methods:
        done = runs.get(name, [])
        if not done:
            continue
        s_per_step = [r["wall_s"] / r["steps"] for r in done if r["steps"]]
        tok_per_step = [r["tokens_seen"] / r["steps"] for r in done if r["steps"]]
        ratios, step_ratios = [], []
        for i, r in enumerate(done):
            if i < len(base_runs) and base_runs[i]["tokens_per_s"] and r["steps"]:
                b = base_runs[i]
                ratios.append(r["tokens_per_s"] / b["tokens_per_s"])
                step_ratios.append((r["wall_s"] / r["steps"]) / (b["wall_s"] / b["steps"]))
        summary[name] = {
            "repeats": len(done),
            "steps": statistics.median(r["steps"] for r in done),
            "tokens_per_step": statistics.median(tok_per_step) if tok_per_step else None,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in done),
            "ratio_to_lora_sft": statistics.median(ratios) if ratios else None,
            "s_per_step": statistics.median(s_per_step) if s_per_step else None,
            "step_time_ratio": statistics.median(step_ratios) if step_ratios else None,
            "peak_memory_mb": statistics.median(r["peak_memory_mb"] for r in done),
            "trainable_params": done[0]["trainable_params"],
        }
        summary[name].update({k: v for k, v in done[0].items() if k.startswith("grit_")})
    return summary


# --------------------------------------------------------------------------- output


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _command() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    return f"{exe} {shlex.join(sys.argv)}"


def markdown(methods: list[str], summary: dict[str, Any], args: argparse.Namespace,
             base: dict[str, Any], versions: dict[str, str], notes: list[str]) -> str:
    model = (f"embedded base model ({base['parameter_count']:,} parameters, "
             f"{base['pretrain_steps']} pretraining steps)" if base.get("built_here")
             else f"base model {base['path']}")
    lines = [
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPU cores "
        f"({platform.machine()}), torch {versions['torch']}, transformers "
        f"{versions['transformers']}, trl {versions['trl']}, peft {versions['peft']}; "
        f"{args.threads} torch thread(s); {model}; batch {args.batch}, {args.steps} optimizer "
        f"steps, max_length {args.max_length}, LoRA r 16; {args.repeats} repeat(s), medians:",
        "",
        "```bash",
        _command(),
        "```",
        "",
        "| method | what it trains | steps | tokens/step | tokens/s | ratio to LoRA SFT "
        "| s/step | step-time ratio | peak MB | trainable params |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in methods:
        s = summary.get(name)
        if s is None:
            continue
        ratio = _fmt(s["ratio_to_lora_sft"], ".3f")
        step_ratio = _fmt(s["step_time_ratio"], ".3f")
        if name == GRIT:
            step_ratio = f"**{step_ratio}**"
        lines.append(
            f"| {name} | {BUILDERS[name][0]} | {s['steps']:.0f} | "
            f"{_fmt(s['tokens_per_step'], ',.0f')} | {s['tokens_per_s']:,.0f} | {ratio} | "
            f"{_fmt(s['s_per_step'], '.4f')} | {step_ratio} | "
            f"{_fmt(s['peak_memory_mb'], ',.0f')} | {_fmt(s['trainable_params'], ',')} |")
    lines.append("")
    grit = summary.get(GRIT)
    if grit and grit["step_time_ratio"] is not None:
        overhead = grit["step_time_ratio"] - 1
        verdict = "met" if overhead <= GRIT_GOAL else "NOT met"
        lines.append(f"GRIT step-time overhead over plain LoRA SFT (same rows and batches): "
                     f"**{overhead:+.1%}** (goal at most {GRIT_GOAL:.0%}: {verdict}); preset "
                     f"{args.grit_preset or 'default (factors every step)'}, "
                     f"{grit['grit_preconditioned_steps']} preconditioned steps, "
                     f"{grit['grit_reprojections']} reprojection(s) per run.")
    if any(BUILDERS[name][0].endswith("[pref]") for name in summary):
        lines.append(
            "[pref]: tokens/s counts chosen + rejected sequences as TRL counts them (DPO: the "
            "attention mask of the stacked 2 x batch rows, the prompt in each; ORPO: chosen_ + "
            "rejected_ masks); DPO also runs a no-grad reference forward over them that the "
            "count does not show. Their ratio is not the same work per token as SFT.")
    if any(BUILDERS[name][0].endswith("[gen]") for name in summary):
        lines.append(
            "[gen]: GRPO counts prompt (once per generation) + sampled tokens, and its time is "
            "mostly token-by-token sampling: not comparable with the others.")
    lines.append(
        "tokens/s: TRL's num_input_tokens_seen over the wall time of trainer.train() (prompt "
        "tokens included); s/step: that wall time / steps (start-up and the final checkpoint "
        "included); step-time ratio: s/step over qlora_adapter's, a method overhead only where "
        "the rows are the same (GRIT); peak MB: the process's peak RSS during the run "
        "(libraries included).")
    lines += [f"Note: {note}" for note in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20,
                        help="optimizer steps per run, every method (default 20)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per method, interleaved; medians reported (default 1)")
    parser.add_argument("--batch", type=int, default=4,
                        help="per-device batch, no gradient accumulation (default 4; a multiple "
                             "of --grpo-generations for GRPO)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in every run (default 1)")
    parser.add_argument("--max-length", type=int, default=1024,
                        help="max_length of every method that has one (default 1024: the "
                             "embedded model's positions and gxp_audit_adapter's default)")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="activation checkpointing on for every method but GRIT (default off)")
    parser.add_argument("--grit-preset", choices=("default", "periodic"), default=None,
                        help="GRIT preset (default: the task's, factors every step)")
    parser.add_argument("--grpo-generations", type=int, default=4,
                        help="GRPO num_generations (default 4)")
    parser.add_argument("--grpo-completion-length", type=int, default=None,
                        help="GRPO max_completion_length (default: the task's, 256)")
    parser.add_argument("--warmup-steps", type=int, default=2,
                        help="steps of the untimed warm-up run of qlora_adapter (0: none)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated tasks to run (default: every registered "
                             "`_adapter` task with a builder); qlora_adapter always runs")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="pretraining steps of the embedded base model (default: "
                             "configs/base_model.yaml's; e.g. 20: throughput does not depend "
                             "on it)")
    parser.add_argument("--base-model", default=None,
                        help="an already built base model folder (skips the build)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where model, data and adapters go (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every run's metrics and the summary here")
    args = parser.parse_args(argv)
    for name in ("steps", "repeats", "batch", "threads", "max_length", "grpo_generations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import peft
    import torch
    import transformers
    import trl

    from training.tasks import TASKS

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "trl": trl.__version__, "peft": peft.__version__}
    methods, notes = plan_methods(args, TASKS)
    if "grpo_adapter" in methods and args.batch % args.grpo_generations:
        methods.remove("grpo_adapter")
        notes.append(f"grpo_adapter: --batch {args.batch} is not a multiple of "
                     f"--grpo-generations {args.grpo_generations}; skipped")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="bench_training_methods-") as tmp:
        work_dir = args.work_dir or Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        base_path, base = build_base_model(args, work_dir)
        ctx = BuildContext(work_dir / "data", args.steps * args.batch, args)
        data: dict[str, dict[str, Any]] = {}
        for name in list(methods):
            try:
                data[name] = BUILDERS[name][1](ctx)
            except (ImportError, NotImplementedError) as err:
                methods.remove(name)
                notes.append(f"{name}: data builder unavailable ({err}); skipped")
                print(f"note: {notes[-1]}", file=sys.stderr)

        if args.warmup_steps:
            start = time.perf_counter()
            run_once(TASKS[BASELINE],
                     method_config(BASELINE, base_path, data[BASELINE], args, args.warmup_steps),
                     work_dir / "runs" / "warmup")
            print(f"warm-up: {BASELINE}, {args.warmup_steps} steps, "
                  f"{time.perf_counter() - start:.1f} s (not counted)", file=sys.stderr)

        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
        for repeat in range(args.repeats):
            order = methods if repeat % 2 == 0 else methods[::-1]
            for name in order:
                config = method_config(name, base_path, data[name], args, args.steps)
                result = run_once(TASKS[name], config, work_dir / "runs" / f"{name}-{repeat}")
                runs[name].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {name}: {result['steps']} steps, "
                      f"{result['wall_s']:.2f} s, {result['tokens_per_s']:,.0f} tokens/s, "
                      f"peak {result['peak_memory_mb']:,.0f} MB "
                      f"(task {result['task_total_s']:.1f} s)", file=sys.stderr)
        summary = summarize(methods, runs)
        if not all(r["peak_rss_reset"] for done in runs.values() for r in done):
            notes.append("/proc/self/clear_refs could not reset the peak RSS: peak MB is the "
                         "process's running maximum, in run order")

    print(markdown(methods, summary, args, base, versions, notes))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": _command(), "date": datetime.now(UTC).isoformat(),
            "cpu_count": os.cpu_count(), "versions": versions, "threads": args.threads,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "base_model": base, "methods": methods, "notes": notes,
            "summary": summary, "runs": runs,
        }, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
