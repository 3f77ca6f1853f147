"""Generation and hidden-state tasks: local inference in its own process, run like training.

`generate` answers the chats of a prompts file with `training.inference.LocalGenerator` and
writes the completions; `hidden_states` pools the hidden states of a prompts file for AQI
(training/hidden_states.py) for the base model and each adapter, loaded one after another. Both
are tasks of `training.tasks.TASKS`: `python -m resources.pipes_entry generate ...` runs them under
Dagster Pipes (locally or in a GPU pod) or standalone, so the Dagster run worker never loads a
model. Plain Python: no Dagster import.

generate config:
    base_model_path, adapter_path (optional), prompts_file, decoding (DecodingSettings fields),
    batch_size, label (optional: the name in progress lines), torch_threads (optional),
    logprobs (optional bool) and top_logprobs (optional int, 0-20): per-token log-probabilities;
    or `models` ([{"name": ..., "adapter_path": ... | null}]) instead of adapter_path: every model
    answers the same prompts in this one process, into `<name>/completions.jsonl`
prompts file (JSON Lines, one chat per line):
    {"id": "q1", "messages": [{"role": "user", "content": "..."}], "json_schema": null}
completions file (`completions.jsonl` in the output folder, input order):
    {"id", "text", "prompt_tokens", "completion_tokens", "latency_s",
     "truncated_prompt_tokens", "finish_reason", "constrained",
     "logprobs": null or OpenAI's `logprobs.content` entries}

hidden_states config:
    base_model_path, models ([{"name": ..., "adapter_path": ... | null}]), prompts_file (JSON Lines
    of {"id", "prompt"}), pooling, batch_size, max_length, extra (sidecar fields), label,
    torch_threads
output: `<name>.npy` and its JSON sidecar per model (training/hidden_states.py's format).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Report = Callable[..., None]
COMPLETIONS_FILE = "completions.jsonl"
GENERATE_KEYS = frozenset({"base_model_path", "adapter_path", "models", "prompts_file",
                           "decoding", "batch_size", "label", "torch_threads", "logprobs",
                           "top_logprobs"})
HIDDEN_KEYS = frozenset({"base_model_path", "models", "prompts_file", "pooling", "batch_size",
                         "max_length", "extra", "label", "torch_threads"})
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class PromptRow:
    """One line of a prompts file."""

    id: str
    messages: list[dict[str, str]]
    json_schema: dict[str, Any] | None = None


def _bad(path: Path, line: int, field: str, why: str) -> ValueError:
    return ValueError(f"{path}: line {line}: field '{field}': {why}")


def _id_rows(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line, row, id) of each non-blank line, read by the project's one JSON Lines parser
    (synthetic.jsonl: depth-bounded, duplicate keys refused); ids unique non-empty strings."""
    from synthetic.jsonl import iter_jsonl_lines, parse_json_line

    seen: set[str] = set()
    for line, raw in iter_jsonl_lines(path):
        try:
            row = parse_json_line(raw)
        except ValueError as error:
            raise ValueError(f"{path}: line {line}: not JSON ({error})") from None
        yield line, row, _check_id(path, line, row, seen)


def _check_id(path: Path, line: int, row: Mapping[str, Any], seen: set[str]) -> str:
    if not isinstance(row.get("id"), str) or not row["id"]:
        raise _bad(path, line, "id", f"must be a non-empty string, got {row.get('id')!r}")
    if row["id"] in seen:
        raise _bad(path, line, "id", f"{row['id']!r} appears twice")
    seen.add(row["id"])
    return row["id"]


def _check_messages(path: Path, line: int, messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _bad(path, line, "messages", "must be a non-empty list of chat messages")
    for index, message in enumerate(messages):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _bad(path, line, field, "must be an object with role and content")
        if message.get("role") not in ROLES:
            raise _bad(path, line, f"{field}.role",
                       f"{message.get('role')!r} is not one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise _bad(path, line, f"{field}.content", "must be a string")
    return [dict(m) for m in messages]


def read_prompts(path: str | Path) -> list[PromptRow]:
    """The rows of a generate prompts file; a bad row raises ValueError naming file, line and
    field."""
    path = Path(path)
    rows: list[PromptRow] = []
    for line, row, row_id in _id_rows(path):
        messages = _check_messages(path, line, row.get("messages"))
        schema = row.get("json_schema")
        if schema is not None and not isinstance(schema, dict):
            raise _bad(path, line, "json_schema", "must be a JSON object or null")
        rows.append(PromptRow(row_id, messages, schema))
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def read_text_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(id, prompt) rows of a hidden_states prompts file (file, line and field on a bad row)."""
    path = Path(path)
    rows: list[tuple[str, str]] = []
    for line, row, row_id in _id_rows(path):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise _bad(path, line, "prompt", "must be a non-empty string")
        rows.append((row_id, row["prompt"]))
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def _check_config(config: Mapping[str, Any], known: frozenset[str], required: Sequence[str],
                  task: str) -> None:
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{task} task config: unknown field(s) {unknown}; known: "
                         f"{', '.join(sorted(known))}")
    for key in required:
        if not config.get(key):
            raise ValueError(f"{task} task config: field '{key}' is required")


def item_progress(report: Report, label: str, total: int) -> Callable[[int, int], None]:
    """A `(done, total)` callback that reports `items`, `total` and `label` (the Pipes entry
    turns them into progress lines with the rate and the time left); reports 0 done at once, so
    the rate counts from the start."""
    report(items=0, total=int(total), label=label)

    def progress(done: int, total: int) -> None:
        report(items=int(done), total=int(total), label=label)

    return progress


def _generator(config: Mapping[str, Any], adapter_path: str | None) -> Any:
    from training.inference import LocalGenerator

    return LocalGenerator(config["base_model_path"], adapter_path,
                          torch_threads=config.get("torch_threads"))


def completion_row(row_id: str, generation: Any) -> dict[str, Any]:
    """One completions-file row of a `training.inference.Generation`."""
    logprobs = ([entry.to_openai() for entry in generation.logprobs]
                if generation.logprobs is not None else None)
    return {"id": row_id, "text": generation.text, "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": generation.completion_tokens,
            "latency_s": generation.latency_s,
            "truncated_prompt_tokens": generation.truncated_prompt_tokens,
            "finish_reason": generation.finish_reason,
            "constrained": bool(generation.constrained), "logprobs": logprobs}


def _generate_one(config: Mapping[str, Any], rows: Sequence[PromptRow], decoding: Any,
                  adapter_path: str | None, out: Path, label: str, report: Report
                  ) -> dict[str, Any]:
    """Load one model, answer every row, write its completions file; its metadata."""
    started = time.perf_counter()
    generator = _generator(config, adapter_path)
    load_s = time.perf_counter() - started
    report(note=f"{label}: {generator.name} on {generator.device}, {len(rows)} prompts")
    kwargs: dict[str, Any] = {"logprobs": bool(config.get("logprobs")),
                              "top_logprobs": int(config.get("top_logprobs") or 0)}
    if any(row.json_schema is not None for row in rows):
        # one entry per chat, None for free generation
        kwargs["json_schemas"] = [row.json_schema for row in rows]
    began = time.perf_counter()
    generations = generator.generate([row.messages for row in rows], decoding,
                                     batch_size=int(config.get("batch_size") or 32),
                                     progress=item_progress(report, label, len(rows)),
                                     **kwargs)
    generate_s = time.perf_counter() - began
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(completion_row(row.id, g), ensure_ascii=False)
             for row, g in zip(rows, generations, strict=True)]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"completions_path": str(out), "items": len(rows), "model": generator.name,
            "device": generator.device, "load_s": round(load_s, 3),
            "generate_s": round(generate_s, 3),
            "items_per_s": round(len(rows) / generate_s, 3) if generate_s > 0 else None,
            "prompt_tokens": sum(g.prompt_tokens for g in generations),
            "completion_tokens": sum(g.completion_tokens for g in generations),
            "truncated_prompts": sum(g.truncated_prompt_tokens > 0 for g in generations),
            "constrained_items": sum(row.json_schema is not None for row in rows)}


def generate_task(config: dict, output_dir: Path, report: Report) -> dict:
    """Answer every chat of `prompts_file`; write `completions.jsonl` (module docstring). With
    `models` instead of `adapter_path`, every model answers in turn in this one process (one
    Python and torch start for all), each into `<name>/completions.jsonl`."""
    from training.inference import DecodingSettings

    _check_config(config, GENERATE_KEYS, ("base_model_path", "prompts_file"), "generate")
    if config.get("models") is not None and config.get("adapter_path"):
        raise ValueError("generate task config: give 'adapter_path' or 'models', not both")
    rows = read_prompts(config["prompts_file"])
    decoding = DecodingSettings.from_mapping(config.get("decoding") or {},
                                             source="generate task config: field 'decoding'")
    label = str(config.get("label") or "generate")
    if config.get("models") is None:
        return _generate_one(config, rows, decoding, config.get("adapter_path"),
                             output_dir / COMPLETIONS_FILE, label, report)
    per_model = {}
    for model in _check_models(config["models"], "generate"):
        per_model[model["name"]] = _generate_one(
            config, rows, decoding, model.get("adapter_path"),
            output_dir / model["name"] / COMPLETIONS_FILE, f"{label}: {model['name']}", report)
    return {"completions": {name: m["completions_path"] for name, m in per_model.items()},
            "items": len(rows), "models": len(per_model),
            "load_s": {name: m["load_s"] for name, m in per_model.items()},
            "generate_s": {name: m["generate_s"] for name, m in per_model.items()},
            "device": next(iter(per_model.values()))["device"]}


def _check_models(models: Any, task: str) -> list[dict[str, Any]]:
    if not isinstance(models, list) or not models:
        raise ValueError(f"{task} task config: field 'models' must be a non-empty list of "
                         "{name, adapter_path}")
    names: set[str] = set()
    for index, model in enumerate(models):
        name = model.get("name") if isinstance(model, dict) else None
        if (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name)
                or name in names):
            raise ValueError(f"{task} task config: field 'models[{index}].name': "
                             f"{name!r} is not a new file-safe name")
        names.add(name)
    return models


def hidden_states_task(config: dict, output_dir: Path, report: Report) -> dict:
    """Pooled hidden states of `prompts_file` for each model of `models`, saved as
    `<name>.npy` + sidecar (module docstring); the model is loaded once per entry."""
    from training.hidden_states import pooled_hidden_states_with, save_hidden_states

    _check_config(config, HIDDEN_KEYS, ("base_model_path", "prompts_file"), "hidden_states")
    models = _check_models(config.get("models"), "hidden_states")
    rows = read_text_prompts(config["prompts_file"])
    prompts = [prompt for _, prompt in rows]
    label = str(config.get("label") or "hidden_states")
    files: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    started = time.perf_counter()
    for model in models:
        generator = _generator(config, model.get("adapter_path"))
        states = pooled_hidden_states_with(
            generator, prompts, pooling=config.get("pooling", "mean"),
            batch_size=int(config.get("batch_size") or 16),
            max_length=int(config.get("max_length") or 512),
            progress=item_progress(report, f"{label}: {model['name']}", len(prompts)))
        path = output_dir / f"{model['name']}.npy"
        save_hidden_states(states, path, base_model_path=config["base_model_path"],
                           adapter_path=model.get("adapter_path"),
                           pooling=config.get("pooling", "mean"), prompts=prompts,
                           extra={"prompt_ids": [row_id for row_id, _ in rows],
                                  **(config.get("extra") or {})})
        files[model["name"]], shapes[model["name"]] = str(path), list(states.shape)
        del generator  # one model in memory at a time
    return {"hidden_states": files, "shapes": shapes, "prompts": len(prompts),
            "wall_s": round(time.perf_counter() - started, 3)}
