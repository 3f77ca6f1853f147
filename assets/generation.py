"""Local generation for the evaluation assets, run like training: in its own process.

`generate_in_task` writes the chats as a prompts file, runs the `generate` task
(training/generate_task.py) through the compute resource (a Pipes subprocess locally, a GPU pod
with the Kubernetes backend; `python -m resources.pipes_entry generate ...`), and reads the
completions back as `Completion`s, which carry the fields of `training.inference.Generation`. The
Dagster run worker never imports torch or transformers for generation; the task's progress lines
(items done, items/s, time left) arrive in the run's logs through Pipes.

`hidden_states_in_task` does the same for the AQI hidden states (the `hidden_states` task): every
model of one call in one process, the base model loaded once per entry.

Each call starts one process (a Python and torch import, a few seconds): give a call all the chats
of one model, and `generate_models_in_task` the same chats for several models (the base model and
its adapters) in one process.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from resources.compute import ComputeResource
from synthetic.jsonl import iter_jsonl_lines, parse_json_line

Progress = Callable[[int, int], Any]
COMPLETION_FIELDS = ("text", "prompt_tokens", "completion_tokens", "latency_s",
                     "truncated_prompt_tokens")


@dataclass(frozen=True)
class Completion:
    """One chat's answer from the generate task: the fields of `training.inference.Generation`,
    plus finish_reason (`stop` or `length`) and whether it was JSON-schema constrained."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    truncated_prompt_tokens: int = 0
    finish_reason: str | None = None
    constrained: bool = False
    logprobs: list[dict[str, Any]] | None = None  # OpenAI `logprobs.content` entries, if asked


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "generate"


def task_folder(compute: ComputeResource, context: dg.AssetExecutionContext, task: str,
                label: str) -> Path:
    """A new folder for one task call under the compute resource's run-scoped `task` folder (on
    the models volume with the Kubernetes backend, so the pod and the worker both reach it)."""
    folder = compute.output_dir(task, context.run.run_id) / f"{_slug(label)}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_prompts(path: Path, chats: Sequence[Sequence[Mapping[str, str]]],
                  json_schemas: Sequence[Mapping[str, Any] | None] | None = None) -> list[str]:
    """The generate task's prompts file (one row per chat: id, messages, json_schema); the ids."""
    if json_schemas is not None and len(json_schemas) != len(chats):
        raise ValueError(f"json_schemas has {len(json_schemas)} entries for {len(chats)} chats")
    ids = [f"{index:06d}" for index in range(len(chats))]
    with path.open("w", encoding="utf-8") as out:
        for index, chat in enumerate(chats):
            schema = json_schemas[index] if json_schemas is not None else None
            out.write(json.dumps({"id": ids[index], "messages": [dict(m) for m in chat],
                                  "json_schema": dict(schema) if schema is not None else None},
                                 ensure_ascii=False) + "\n")
    return ids


def read_completions(path: Path, ids: Sequence[str]) -> list[Completion]:
    """The completions file in the order of `ids`; a missing, extra or bad row is an error
    naming the file, line and field."""
    by_id: dict[str, Completion] = {}
    for line, raw in iter_jsonl_lines(path):
        row = parse_json_line(raw, path=path, line=line)
        for field in ("id", *COMPLETION_FIELDS):
            if field not in row:
                raise ValueError(f"{path}: line {line}: field '{field}' is missing")
        by_id[row["id"]] = Completion(
            text=row["text"], prompt_tokens=int(row["prompt_tokens"]),
            completion_tokens=int(row["completion_tokens"]), latency_s=float(row["latency_s"]),
            truncated_prompt_tokens=int(row["truncated_prompt_tokens"]),
            finish_reason=row.get("finish_reason"), constrained=bool(row.get("constrained")),
            logprobs=row.get("logprobs"))
    missing = [i for i in ids if i not in by_id]
    if missing or len(by_id) != len(ids):
        raise ValueError(f"{path}: {len(by_id)} completions for {len(ids)} prompts "
                         f"(missing ids: {missing[:5]})")
    return [by_id[i] for i in ids]


def _generate_config(base_model_path: str, prompts_file: Path, decoding: Any, batch_size: int,
                     label: str, torch_threads: int | None) -> dict[str, Any]:
    raw = dict(decoding) if isinstance(decoding, Mapping) else dataclasses.asdict(decoding)
    config: dict[str, Any] = {
        "base_model_path": str(base_model_path), "prompts_file": str(prompts_file),
        "decoding": {k: list(v) if isinstance(v, tuple) else v for k, v in raw.items()},
        "batch_size": batch_size, "label": label}
    if torch_threads:
        config["torch_threads"] = torch_threads
    return config


def generate_in_task(context: dg.AssetExecutionContext, compute: ComputeResource, *,
                     base_model_path: str, adapter_path: str | None,
                     chats: Sequence[Sequence[Mapping[str, str]]], decoding: Any,
                     batch_size: int = 32, label: str = "generate",
                     json_schemas: Sequence[Mapping[str, Any] | None] | None = None,
                     torch_threads: int | None = None,
                     progress: Progress | None = None) -> list[Completion]:
    """Answers for every chat, in input order, generated by the `generate` task in its own
    process. `decoding`: a `training.inference.DecodingSettings` (or a mapping of its fields).
    `progress(done, total)` is called once, when the task is done (the task's own progress
    lines stream into the run's logs while it runs)."""
    if not chats:
        return []
    folder = task_folder(compute, context, "generate", label)
    ids = write_prompts(folder / "prompts.jsonl", chats, json_schemas)
    config = _generate_config(base_model_path, folder / "prompts.jsonl", decoding, batch_size,
                              label, torch_threads)
    config["adapter_path"] = str(adapter_path) if adapter_path else None
    metadata = compute.run_step(context, "generate", config, folder)
    completions = read_completions(folder / "completions.jsonl", ids)
    context.log.info(f"{label}: {len(completions)} completions by {metadata.get('model')} on "
                     f"{metadata.get('device')} in a {compute.backend} task (model load "
                     f"{metadata.get('load_s')} s, generation {metadata.get('generate_s')} s)")
    if progress is not None:
        progress(len(completions), len(completions))
    return completions


def generate_models_in_task(context: dg.AssetExecutionContext, compute: ComputeResource, *,
                            base_model_path: str, adapters: Mapping[str, str | None],
                            chats: Sequence[Sequence[Mapping[str, str]]], decoding: Any,
                            batch_size: int = 32, label: str = "generate",
                            torch_threads: int | None = None) -> dict[str, list[Completion]]:
    """{name: answers in input order} of every model of `adapters` ({name: adapter path or None
    for the base model alone}) to the same chats, in ONE `generate` task: one process start for
    all, the models loaded one after another."""
    folder = task_folder(compute, context, "generate", label)
    ids = write_prompts(folder / "prompts.jsonl", chats)
    config = _generate_config(base_model_path, folder / "prompts.jsonl", decoding, batch_size,
                              label, torch_threads)
    config["models"] = [{"name": name, "adapter_path": str(path) if path else None}
                        for name, path in adapters.items()]
    metadata = compute.run_step(context, "generate", config, folder)
    context.log.info(f"{label}: {len(adapters)} models x {len(ids)} completions on "
                     f"{metadata.get('device')} in one {compute.backend} task (model loads "
                     f"{metadata.get('load_s')} s, generation {metadata.get('generate_s')} s)")
    return {name: read_completions(folder / name / "completions.jsonl", ids)
            for name in adapters}


def hidden_states_in_task(context: dg.AssetExecutionContext, compute: ComputeResource, *,
                          base_model_path: str, models: Mapping[str, str | None],
                          prompts: Sequence[tuple[str, str]], out_dir: Path,
                          settings: Mapping[str, Any], label: str = "hidden_states"
                          ) -> dict[str, str]:
    """Pooled hidden states of `prompts` ((id, text) pairs) for each model of `models`
    ({name: adapter path or None}) by the `hidden_states` task, in one process; writes
    `<name>.npy` + sidecar under `out_dir`. `settings`: pooling, batch_size, max_length, extra,
    torch_threads. Returns {name: .npy path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts_file = out_dir / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"id": i, "prompt": p}, ensure_ascii=False) + "\n"
                                    for i, p in prompts), encoding="utf-8")
    config = {"base_model_path": str(base_model_path), "prompts_file": str(prompts_file),
              "models": [{"name": name, "adapter_path": str(path) if path else None}
                         for name, path in models.items()],
              "label": label, **settings}
    compute.run_step(context, "hidden_states", config, out_dir)
    files = {name: out_dir / f"{name}.npy" for name in models}
    absent = [str(path) for path in files.values() if not path.exists()]
    if absent:
        raise dg.Failure(f"{label}: the hidden_states task wrote no {', '.join(absent)}")
    return {name: str(path) for name, path in files.items()}
