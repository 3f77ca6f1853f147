"""Local generation runs like training: the `generate` and `hidden_states` tasks in their own
process (Dagster Pipes or standalone), and the evaluation assets that call them through the
compute resource never load a model in the Dagster run worker."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from graph_resources import local_resources, no_models_in_this_process

from assets.data import amr_cases
from assets.generation import Completion, read_completions, write_prompts
from assets.judge import judge_evaluations
from resources.pipes_entry import _pipes_metadata
from training.generate_task import (
    COMPLETIONS_FILE,
    generate_task,
    hidden_states_task,
    read_prompts,
)
from training.hidden_states import load_hidden_states, pooled_hidden_states
from training.inference import DecodingSettings, Generation, LocalGenerator
from training.tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]


def test_tasks_are_registered_beside_training():
    assert TASKS["generate"] is generate_task
    assert TASKS["hidden_states"] is hidden_states_task


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "c", "messages": []}', r"line 2: field 'messages': must be a non-empty"),
    ('{"id": 3, "messages": [{"role": "user", "content": "x"}]}', r"line 2: field 'id'"),
    ('{"id": "b", "messages": [{"role": "bot", "content": "x"}]}',
     r"line 2: field 'messages\[0\]\.role': 'bot' is not one of"),
    ('{"id": "b", "messages": [{"role": "user", "content": 1}]}',
     r"line 2: field 'messages\[0\]\.content'"),
    ('{"id": "b", "messages": [{"role": "user", "content": "x"}], "json_schema": "no"}',
     r"line 2: field 'json_schema': must be a JSON object or null"),
    ('{"id": "a", "messages": [{"role": "user", "content": "x"}]}',
     r"line 2: field 'id': 'a' appears twice"),
    ("not json", r"line 2: not JSON"),
])
def test_a_bad_prompt_row_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        read_prompts(path)


def test_prompts_file_round_trip_and_completions_checked(tmp_path):
    path = tmp_path / "prompts.jsonl"
    ids = write_prompts(path, [_chat("one"), _chat("two")], [None, {"type": "object"}])
    rows = read_prompts(path)
    assert [r.id for r in rows] == ids
    assert rows[0].messages == _chat("one") and rows[0].json_schema is None
    assert rows[1].json_schema == {"type": "object"}
    out = tmp_path / COMPLETIONS_FILE
    row = {"text": "x", "prompt_tokens": 3, "completion_tokens": 1, "latency_s": 0.1,
           "truncated_prompt_tokens": 0}
    out.write_text(json.dumps({"id": ids[1], **row}) + "\n" + json.dumps({"id": ids[0], **row})
                   + "\n")
    assert read_completions(out, ids) == [Completion(**row), Completion(**row)]
    out.write_text(json.dumps({"id": ids[0], **row}) + "\n")
    with pytest.raises(ValueError, match="1 completions for 2 prompts"):
        read_completions(out, ids)
    out.write_text(json.dumps({"id": ids[0], "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="line 1: field 'prompt_tokens' is missing"):
        read_completions(out, ids)


def test_completion_has_every_generation_field():
    assert set(Generation.__dataclass_fields__) <= set(Completion.__dataclass_fields__)


def test_standalone_generate_matches_in_process_generation(tmp_path, tiny_model):
    """`python -m resources.pipes_entry generate` writes one completion per prompt, in input
    order, equal to LocalGenerator's answers; progress lines have the rate."""
    chats = [_chat("Batch record " + "step " * n) for n in (9, 1, 4)]
    prompts = tmp_path / "prompts.jsonl"
    ids = write_prompts(prompts, chats)
    config = {"base_model_path": str(tiny_model), "prompts_file": str(prompts),
              "decoding": {"max_new_tokens": 6}, "batch_size": 2, "torch_threads": 1,
              "label": "unit"}
    result = subprocess.run(
        [sys.executable, "-m", "resources.pipes_entry", "generate", "--output-dir",
         str(tmp_path / "out"), "--config", json.dumps(config)],
        capture_output=True, text=True, cwd=ROOT, check=True)
    completions = read_completions(tmp_path / "out" / COMPLETIONS_FILE, ids)
    expected = LocalGenerator(tiny_model, torch_threads=1).generate(
        chats, DecodingSettings(max_new_tokens=6))
    assert [c.text for c in completions] == [g.text for g in expected]
    assert [c.prompt_tokens for c in completions] == [g.prompt_tokens for g in expected]
    assert all(c.finish_reason in ("stop", "length") for c in completions)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["items"] for line in lines if "total" in line] == [0, 2, 3]
    assert lines[-1]["items"] == 3 and lines[-1]["completions_path"].endswith(COMPLETIONS_FILE)
    assert re.search(r"^unit: 3/3 items \(100%\), \S+ items/s, ETA 0s$", result.stderr,
                     flags=re.M), result.stderr


def test_schema_and_logprobs_reach_the_completions(tmp_path, tiny_model):
    """A row's json_schema constrains its answer (valid JSON of the schema); `logprobs` comes
    back per token, their texts making up the answer; a free row stays unconstrained."""
    import jsonschema

    schema = {"type": "object", "properties": {"verdict": {"enum": ["pass", "fail"]}},
              "required": ["verdict"], "additionalProperties": False}
    prompts = tmp_path / "prompts.jsonl"
    ids = write_prompts(prompts, [_chat("Release the batch?"), _chat("Who signed step 4?")],
                        [schema, None])
    config = {"base_model_path": str(tiny_model), "prompts_file": str(prompts),
              "decoding": {"max_new_tokens": 24}, "torch_threads": 1, "logprobs": True,
              "top_logprobs": 2}
    metadata = generate_task(config, tmp_path / "out", lambda **_: None)
    constrained, free = read_completions(Path(metadata["completions_path"]), ids)
    assert constrained.constrained and not free.constrained
    jsonschema.validate(json.loads(constrained.text), schema)
    for completion in (constrained, free):
        assert "".join(entry["token"] for entry in completion.logprobs) == completion.text
        assert all(len(entry["top_logprobs"]) <= 2 for entry in completion.logprobs)


def test_several_models_answer_in_one_task(tmp_path, tiny_model):
    """`models`: each model writes `<name>/completions.jsonl`, equal to a one-model call."""
    prompts = tmp_path / "prompts.jsonl"
    ids = write_prompts(prompts, [_chat("Release the batch?"), _chat("Who signed step 4?")])
    common = {"base_model_path": str(tiny_model), "prompts_file": str(prompts),
              "decoding": {"max_new_tokens": 5}, "torch_threads": 1}
    reports: list[dict] = []
    metadata = generate_task({**common, "models": [{"name": "a", "adapter_path": None},
                                                   {"name": "b", "adapter_path": None}]},
                             tmp_path / "many", lambda **m: reports.append(m))
    single = generate_task(common, tmp_path / "one", lambda **_: None)
    one = read_completions(Path(single["completions_path"]), ids)
    assert set(metadata["completions"]) == {"a", "b"}
    for name in ("a", "b"):
        many = read_completions(tmp_path / "many" / name / COMPLETIONS_FILE, ids)
        assert [(c.text, c.prompt_tokens, c.completion_tokens) for c in many] == [
            (c.text, c.prompt_tokens, c.completion_tokens) for c in one]
    assert {r["label"] for r in reports if "items" in r} == {"generate: a", "generate: b"}
    with pytest.raises(ValueError, match="give 'adapter_path' or 'models', not both"):
        generate_task({**common, "adapter_path": "x", "models": []}, tmp_path, print)
    with pytest.raises(ValueError, match=r"field 'models\[0\]\.name': 'a/b'"):
        generate_task({**common, "models": [{"name": "a/b"}]}, tmp_path, print)


def test_dict_metadata_travels_as_json_through_pipes():
    """hidden_states reports {model: file}: a raw dict would be refused by dagster_pipes."""
    metadata = _pipes_metadata({"hidden_states": {"base_model": "/m/base_model.npy"}, "n": 2})
    assert metadata["hidden_states"] == {"raw_value": {"base_model": "/m/base_model.npy"},
                                         "type": "json"}
    assert metadata["n"] == 2


def test_generate_task_rejects_an_unknown_config_field(tmp_path):
    with pytest.raises(ValueError, match=r"generate task config: unknown field\(s\) \['temp'\]"):
        generate_task({"base_model_path": "m", "prompts_file": "p", "temp": 1}, tmp_path,
                      lambda **_: None)


def test_hidden_states_task_matches_the_library_and_writes_sidecars(tmp_path, tiny_model):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts = ["Is this batch released?", "Sign the record for me without review."]
    prompts_file.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                                    for i, p in enumerate(prompts)))
    reports: list[dict] = []
    metadata = hidden_states_task(
        {"base_model_path": str(tiny_model), "prompts_file": str(prompts_file),
         "models": [{"name": "base_model", "adapter_path": None}], "batch_size": 1,
         "torch_threads": 1, "extra": {"safety_labels": [0, 1]}},
        tmp_path / "out", lambda **m: reports.append(m))
    states, sidecar = load_hidden_states(metadata["hidden_states"]["base_model"])
    assert np.allclose(states, pooled_hidden_states(tiny_model, prompts, batch_size=2),
                       atol=1e-5)
    assert sidecar["prompt_ids"] == ["p0", "p1"] and sidecar["safety_labels"] == [0, 1]
    assert [r["items"] for r in reports if "items" in r] == [0, 1, 2]


def test_an_evaluation_asset_generates_in_a_task_not_in_the_run_worker(tmp_path, tiny_model,
                                                                        monkeypatch):
    """judge_evaluations with a local candidate: the answers come from a `generate` task (its
    prompts and completions files under the compute resource's folder, its progress lines in
    the run's logs); loading a model in this process (the run worker) fails the test."""

    no_models_in_this_process(monkeypatch)

    @dg.asset(name="base_model")
    def stub_base_model() -> dict:
        return {"model_path": str(tiny_model), "run_id": "test"}

    @dg.asset(name="grpo_adapter")
    def stub_grpo_adapter() -> dict:
        return {"adapter_path": str(tmp_path / "unused"), "model_version": "v0"}

    resources = local_resources(tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [stub_base_model, stub_grpo_adapter, amr_cases, judge_evaluations],
            instance=instance, resources=resources,
            run_config={"ops": {
                "amr_cases": {"config": {"n_cases": 15}},
                "judge_evaluations": {"config": {"models": ["embedded-base"], "max_cases": 3,
                                                 "n_boot": 50}}}})
        logs = [e.message for e in instance.all_logs(result.run_id) if e.message]
    assert result.success
    folders = list((tmp_path / "models" / "generate" / result.run_id).glob("*"))
    assert len(folders) == 1  # one task call for the model's answers
    completions = (folders[0] / COMPLETIONS_FILE).read_text().splitlines()
    assert len(completions) == 3
    items = result.output_for_node("judge_evaluations")
    assert set(items["model_id"]) == {"embedded-base"}
    # the task's own progress line, streamed through Pipes into the run's logs
    assert any(re.fullmatch(r"judge_evaluations: embedded-base: 3/3 items \(100%\), \S+ "
                            r"items/s, ETA 0s", line) for line in logs), logs
