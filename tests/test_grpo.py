"""GRPO adapter task (training/grpo.py) on a tiny embedded base model, on the CPU."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from fake_openai_server import FakeOpenAIServer, FakeReply, fixed
from test_embedded_model import TINY

from scoring.judge import REFERENCE_JUDGE_NAME, ReferenceRubricJudge, load_judge_config
from synthetic.amr_cases import case_prompt, generate_amr_cases, reference_answer
from training.embedded_model import build_embedded_base_model
from training.grpo import (
    GrpoSettings,
    JudgeReward,
    build_judge_reward,
    format_reward_function,
    grpo_row,
    grpo_task,
    read_cases,
    read_grpo_rows,
)
from training.sft import NO_CUDA, load_adapter

SYSTEM = "Answer as the AMR stewardship pharmacist."
STEPS = 4
K = 2  # judge on steps 2 and 4
BATCH = 8  # per_device_train_batch_size default: 2 cases x 4 generations
# A short run: 16-token answers; lr high enough to move the tiny model's adapter in 4 steps.
FAST = {"torch_threads": 1, "save_steps": 100, "max_completion_length": 16,
        "learning_rate": 1e-3}


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("grpo")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    # A case prompt is ~340 tokens with TINY's 512-token vocabulary: give it room (rotary
    # positions have no weights, so the model is the same size).
    build_embedded_base_model(root / "base", dataclasses.replace(TINY,
                                                                 max_position_embeddings=512))
    cases = generate_amr_cases(n_cases=12, seed=3)
    train = [case for case in cases if case["split"] == "train"]
    yield SimpleNamespace(
        root=root, model=str(root / "base"), cases=cases, train=train,
        cases_file=_write_jsonl(root / "cases.jsonl", cases),
        train_file=_write_jsonl(root / "train.jsonl", [grpo_row(c, SYSTEM) for c in train]))
    torch.set_num_threads(previous)


def _config(base: SimpleNamespace, **overrides) -> dict:
    return {"base_model_path": base.model, "train_file": str(base.train_file),
            "cases_file": str(base.cases_file), **FAST, **overrides}


@pytest.fixture(scope="module")
def run(base) -> SimpleNamespace:
    reports: list[dict] = []
    out = base.root / "run"
    metadata = grpo_task(_config(base, max_steps=STEPS, judge_every_k_steps=K, judge_weight=2.0),
                         out, lambda **m: reports.append(m))
    return SimpleNamespace(metadata=metadata, reports=reports, out=out)


class SpyJudge:
    """Counts what reaches the judge; scores with the reference rubric (or fails every answer)."""

    def __init__(self, fail: bool = False) -> None:
        self.inner = ReferenceRubricJudge()
        self.name = "spy"
        self.fail = fail
        self.batches: list[list[tuple[str, str]]] = []

    def score_many(self, cases, responses, *, priority=False):
        self.batches.append([(c["case_id"], r) for c, r in zip(cases, responses, strict=True)])
        scores = self.inner.score_many(cases, responses, priority=priority)
        if self.fail:
            scores = [dataclasses.replace(s, weighted_reward=None, error="down") for s in scores]
        return scores

    @property
    def judged(self) -> list[tuple[str, str]]:
        return [item for batch in self.batches for item in batch]


def _state(step: int) -> SimpleNamespace:
    """TRL's TrainerState while optimizer step `step` (1-based) computes its rewards."""
    return SimpleNamespace(global_step=step - 1)


# --------------------------------------------------------------------------- settings and files


def test_settings_defaults_and_errors():
    s = GrpoSettings()
    assert (s.lora_r, s.lora_alpha, s.lora_dropout) == (16, 32, 0.05)
    assert (s.num_generations, s.per_device_train_batch_size, s.max_completion_length) == (
        4, 8, 256)
    assert (s.learning_rate, s.temperature, s.beta) == (5e-6, 1.0, 0.04)
    assert (s.judge, s.priority_metrics, s.judge_every_k_steps) == ("reference", False, 1)
    assert (s.judge_weight, s.format_weight, s.judge_max_concurrency) == (1.0, 0.5, 50)
    assert (s.judge_cache_dir, s.eval_fraction) == (None, 0.0)
    assert GrpoSettings.from_mapping({"judge_cache_dir": "/tmp/x"}).judge_cache_dir == "/tmp/x"
    for raw, message in [
        ({"num_generations": 1}, "num_generations must be >= 2"),
        ({"num_generations": 3}, r"\(8\) must be a multiple of num_generations \(3\)"),
        ({"eval_fraction": 0.1}, "eval_fraction must be 0 for GRPO"),
        ({"judge_every_k_steps": 0}, "judge_every_k_steps must be >= 1"),
        ({"judge_weight": 0, "format_weight": 0}, "not both 0"),
        ({"beta": -1}, "beta must be >= 0"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"priority_metrics": "yes"}, "field 'priority_metrics': cannot use 'yes'"),
        ({"method": "dpo"}, "field 'method' is unknown"),
    ]:
        with pytest.raises(ValueError, match=message):
            GrpoSettings.from_mapping(raw)


def test_grpo_row_is_the_case_prompt_as_chat(base):
    case = base.train[0]
    assert grpo_row(case) == {"case_id": case["case_id"],
                              "prompt": [{"role": "user", "content": case_prompt(case)}]}
    assert grpo_row(case, SYSTEM)["prompt"][0] == {"role": "system", "content": SYSTEM}
    rows = read_grpo_rows(base.train_file, read_cases(base.cases_file))
    assert [r["case_id"] for r in rows] == [c["case_id"] for c in base.train]


def test_bad_rows_name_file_line_case_and_field(base, tmp_path):
    cases = read_cases(base.cases_file)
    case = base.train[0]
    cid = case["case_id"]
    test_case = next(c for c in base.cases if c["split"] == "test")
    good = grpo_row(case)
    user = good["prompt"][-1]
    bad_lines = [
        ("{oops", "line 2: not valid JSON"),
        (json.dumps({"prompt": good["prompt"]}), "line 2: field 'case_id' must be a non-empty"),
        (json.dumps({**good, "case_id": "AMR-9999"}),
         r"line 2 \(case_id AMR-9999\): field 'case_id': no such case in"),
        (json.dumps(grpo_row(test_case)),
         rf"line 2 \(case_id {test_case['case_id']}\): field 'case_id': the case is in the "
         "'test' split"),
        (json.dumps({"case_id": cid, "prompt": "hi"}),
         rf"line 2 \(case_id {cid}\): field 'prompt' must be a non-empty list"),
        (json.dumps({"case_id": cid, "prompt": [{"role": "assistant", "content": "x"}]}),
         r"field 'prompt\[0\].role' must be one of system, user"),
        (json.dumps({"case_id": cid, "prompt": [{"role": "user", "content": 3}]}),
         r"field 'prompt\[0\].content' must be a string"),
        (json.dumps({"case_id": cid, "prompt": [user, {"role": "system", "content": "s"}]}),
         r"field 'prompt\[1\].role': the prompt must end with the user message"),
        (json.dumps(grpo_row(base.train[1]) | {"case_id": cid}),
         rf"line 2 \(case_id {cid}\): field 'prompt\[0\].content' is not the case prompt"),
    ]
    path = tmp_path / "train.jsonl"
    for bad_line, message in bad_lines:
        path.write_text(json.dumps(good) + "\n" + bad_line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message) as info:
            read_grpo_rows(path, cases, base.cases_file)
        assert str(path) in str(info.value)
    # the cases file: file, line, case_id and field of a broken case; duplicates
    broken = {**case, "patient": {**case["patient"], "age": -4}}
    cases_path = _write_jsonl(tmp_path / "cases.jsonl", [base.cases[1], broken])
    with pytest.raises(ValueError, match=rf"cases\.jsonl: line 2: case '{cid}' field "
                                         r"'patient\.age'"):
        read_cases(cases_path)
    _write_jsonl(cases_path, [case, case])
    with pytest.raises(ValueError, match=rf"line 2 \(case_id {cid}\): field 'case_id': duplicate"):
        read_cases(cases_path)
    with pytest.raises(ValueError, match="field 'cases_file' is required"):
        grpo_task({"base_model_path": base.model, "train_file": str(path)}, tmp_path,
                  lambda **m: None)
    # a bad train_file row fails before any model is loaded
    path.write_text(json.dumps({**good, "case_id": 7}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train\.jsonl: line 1: field 'case_id'"):
        grpo_task(_config(base, train_file=str(path)), tmp_path / "never", lambda **m: None)
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------- the reward functions


def test_judge_runs_only_on_every_kth_step_and_format_on_every_step(base):
    spy = SpyJudge()
    reward = JudgeReward(spy, base.cases, every_k=2)
    case = base.train[0]
    answer = reference_answer(case)
    for step in range(1, 5):
        completions = [[{"role": "assistant", "content": f"{answer}\n{step}. step {i}"}]
                       for i in range(4)]  # a new text per step and completion: no cache hits
        values = reward(prompts=["p"] * 4, completions=completions, case_id=[case["case_id"]] * 4,
                        trainer_state=_state(step))
        if step % 2:
            assert values == [None] * 4 and len(spy.batches) == step // 2
        else:
            assert len(values) == 4 and all(0.9 < v <= 1.0 for v in values)
        assert format_reward_function(completions=completions) == [1.0] * 4
    assert reward.judged_steps == [2, 4] and len(spy.batches) == 2
    assert (reward.calls, reward.cache_hits, reward.failed) == (8, 0, 0)
    assert format_reward_function(completions=["no decision", "Decision: Reject"]) == [0.0, 0.5]


def test_a_repeated_completion_is_judged_once(base):
    spy = SpyJudge()
    reward = JudgeReward(spy, base.cases)
    a, b = base.train[0]["case_id"], base.train[1]["case_id"]
    text = reference_answer(base.train[0])
    first = reward(completions=[text, text, "Decision: Approve", text], case_id=[a, a, a, b],
                   trainer_state=_state(1))
    assert spy.judged == [(a, text), (a, "Decision: Approve"), (b, text)]  # the duplicate: once
    second = reward(completions=[[{"role": "assistant", "content": text}]], case_id=[a],
                    trainer_state=_state(2))
    assert len(spy.batches) == 1  # chat or plain text, the same text hits the cache
    assert second == [first[0]] == [1.0] and first[1] == first[0]
    assert (reward.calls, reward.cache_hits) == (3, 2)
    # a failed judgement is None, counted, and asked again next time (never cached)
    down = SpyJudge(fail=True)
    failing = JudgeReward(down, base.cases)
    for step in (1, 2):
        assert failing(completions=[text], case_id=[a], trainer_state=_state(step)) == [None]
    assert (failing.calls, failing.failed, failing.cache_hits, len(down.batches)) == (2, 2, 0, 2)


def test_priority_mode_scores_only_the_three_priority_metrics(base):
    config = load_judge_config()
    case = base.train[0]
    other = next(d for d in ("Approve", "Modify", "Reject") if d != case["reference_decision"])
    wrong = reference_answer(case).replace(f"Decision: {case['reference_decision']}",
                                           f"Decision: {other}", 1)
    priority = JudgeReward(ReferenceRubricJudge(config), base.cases, priority=True)
    full = JudgeReward(ReferenceRubricJudge(config), base.cases)
    [p] = priority(completions=[wrong], case_id=[case["case_id"]], trainer_state=_state(1))
    [f] = full(completions=[wrong], case_id=[case["case_id"]], trainer_state=_state(1))
    [score] = priority.recorder.scores
    assert set(score.scores) == set(config.priority_metrics) == {
        "clinical_accuracy", "guideline_adherence", "reasoning_completeness"}
    assert len(full.recorder.scores[0].scores) == 6
    # wrong decision: clinical accuracy 0.5 (half is the decision), the other two full marks
    assert p == pytest.approx((0.25 * 0.5 + 0.25 + 0.20) / 0.70)
    assert f == pytest.approx(1 - 0.10 - 0.25 * 0.5)
    assert priority.counters()["decision_accuracy"] == 0.0


# --------------------------------------------------------------------------- a short run


def test_run_trains_judges_on_kth_steps_and_reports(run, base):
    md = run.metadata
    assert md["steps"] == STEPS and len(md["losses"]) == STEPS
    assert md["judge"] == REFERENCE_JUDGE_NAME and "not an LLM" in md["judge"]
    assert (md["judge_setting"], md["priority_metrics"], md["judge_every_k_steps"]) == (
        "reference", False, K)
    assert md["metrics_scored"] == list(load_judge_config().weights)
    assert md["judged_steps"] == [2, 4] and md["judge_reward_steps"] == [2, 4]
    # every completion of the two judged steps was judged or came from the cache, none failed
    assert md["judge_calls"] + md["judge_cache_hits"] == 2 * BATCH and md["judge_calls"] >= 1
    assert md["judge_failed"] == 0 and 0.0 <= md["decision_accuracy"] <= 1.0
    assert (md["judge_llm_requests"], md["judge_cost_usd"]) == (0, 0.0)
    assert len(md["format_rewards"]) == STEPS and len(md["judge_rewards"]) == 2
    assert md["first_judge_reward"] == md["judge_rewards"][0]
    assert md["last_format_reward"] == md["format_rewards"][-1]
    assert (md["judge_weight"], md["format_weight"], md["num_generations"]) == (2.0, 0.5, 4)
    assert md["quantization"] == ("nf4" if torch.cuda.is_available() else NO_CUDA)
    assert md["train_rows"] == len(base.train) and md["cases"] == len(base.cases)
    assert md["dataset_sha256"] == hashlib.sha256(base.train_file.read_bytes()).hexdigest()
    assert md["tokens_seen"] > STEPS * BATCH * 300  # ~340-token prompts + answers
    assert md["seconds_per_step"] > 0 and md["resumed_from"] is None
    adapter, archive = Path(md["adapter_path"]), Path(md["archive_path"])
    assert (adapter / "adapter_model.safetensors").is_file()
    assert md["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    card = (run.out / "model_card.md").read_text()
    assert "# GxPLab LoRA adapter (grpo_adapter)" in card and "| judge_every_k_steps | 2 |" in card


def test_report_gets_every_step_judge_only_on_judged_steps(run):
    steps = [r for r in run.reports if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert all(r["total"] == STEPS for r in steps)
    assert [r["loss"] for r in steps] == run.metadata["losses"]
    assert [r["format_reward"] for r in steps] == run.metadata["format_rewards"]
    assert [r["judge_reward"] is not None for r in steps] == [False, True, False, True]
    assert [r["decision_accuracy"] is not None for r in steps] == [False, True, False, True]
    for r in steps:
        # TRL's reward is the weighted sum (judge_weight 2 here); off-steps drop the judge's None
        # (NaN) from it. The tiny model's format reward is 0, so its weight shows in no number.
        judge = r["judge_reward"] or 0.0
        assert r["reward"] == pytest.approx(2.0 * judge + 0.5 * r["format_reward"], abs=1e-6)
        assert r["completion_length"] <= 16
    assert any(r.get("note", "").startswith("quantization") for r in run.reports) \
        or torch.cuda.is_available()


def test_saved_adapter_moved_loads_and_generates(run, base):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    weights = load_file(Path(run.metadata["adapter_path"]) / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and any(float(w.abs().max()) > 0 for w in lora_b)  # peft starts B at zero
    tuned = load_adapter(base.model, run.metadata["adapter_path"])
    tokenizer = AutoTokenizer.from_pretrained(run.metadata["adapter_path"])
    prompt = tokenizer.apply_chat_template(grpo_row(base.train[0], SYSTEM)["prompt"],
                                           add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt")
    out = tuned.generate(**prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:]
    assert new.numel() == 5 and int(new.max()) < len(tokenizer)


# --------------------------------------------------------------------------- the LLM judge


@pytest.fixture
def compat_judge(monkeypatch):
    """configs/models.yaml's `openai-compatible` entry pointed at a fake server that answers
    every judge call with the same scores."""
    scores = dict.fromkeys(load_judge_config().weights, 4)
    server = FakeOpenAIServer(fixed(FakeReply(content=json.dumps(
        {"scores": scores, "justification": "checked"})))).__enter__()
    monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_BASE", server.base_url)
    monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_MODEL", "fake-judge")
    monkeypatch.setenv("GXPLAB_OPENAI_COMPAT_API_KEY", "sk-grpo-test")
    yield server
    server.__exit__(None, None, None)


def _judged_response(body: dict) -> str:
    user = body["messages"][1]["content"]
    return re.search(r"<<<RESPONSE\n(.*)\nRESPONSE>>>", user, re.DOTALL).group(1)


def test_llm_judge_run_priority_mode_and_disk_cache(base, compat_judge):
    server = compat_judge
    out = base.root / "llm"
    md = grpo_task(_config(base, max_steps=1, judge="openai-compatible", priority_metrics=True),
                   out, lambda **m: None)
    assert md["judge"] == "openai/local-model" and md["judge_setting"] == "openai-compatible"
    assert md["priority_metrics"] is True and md["metrics_scored"] == [
        "clinical_accuracy", "guideline_adherence", "reasoning_completeness"]
    # one request per distinct completion, none failed; every score 4 -> reward 0.75
    assert md["judge_calls"] == md["judge_llm_requests"] == server.n_requests >= 1
    assert md["judge_calls"] + md["judge_cache_hits"] == BATCH and md["judge_failed"] == 0
    assert md["judge_rewards"] == [pytest.approx(0.75)]
    body = server.requests[0]
    assert body["model"] == "fake-judge" and server.auth_headers[0] == "Bearer sk-grpo-test"
    user = body["messages"][1]["content"]
    assert "reasoning_completeness" in user and "safety_awareness" not in user
    assert any(case_prompt(c) in user for c in base.train)
    # a new process (fresh in-memory cache) is answered from the LLMClient disk cache
    settings = GrpoSettings.from_mapping({"judge": "openai-compatible", "priority_metrics": True})
    reward, client = build_judge_reward(settings, base.cases, out)
    response = _judged_response(body)
    case_id = next(c["case_id"] for c in base.train if case_prompt(c) in user)
    try:
        assert reward(completions=[response], case_id=[case_id],
                      trainer_state=_state(1)) == [pytest.approx(0.75)]
    finally:
        client.close()
    assert server.n_requests == md["judge_llm_requests"]  # no new HTTP request
    assert reward.counters()["judge_llm_disk_cache_hits"] == 1


def test_unavailable_or_unknown_judge_fails_at_once(base, tmp_path, monkeypatch):
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(ValueError, match="'groq-llama-3.3-70b' is unavailable: environment "
                                         "variable GROQ_API_KEY is not set"):
        grpo_task(_config(base, judge="groq-llama-3.3-70b"), tmp_path / "a", lambda **m: None)
    with pytest.raises(ValueError, match="'nope' is unknown; use 'reference' or a litellm"):
        grpo_task(_config(base, judge="nope"), tmp_path / "b", lambda **m: None)
    with pytest.raises(ValueError, match="'embedded-base' is kind local, not litellm"):
        grpo_task(_config(base, judge="embedded-base"), tmp_path / "c", lambda **m: None)
    assert not any(tmp_path.iterdir())  # nothing loaded or written

