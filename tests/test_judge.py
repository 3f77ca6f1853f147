"""The AMR judge: weighted reward, format reward, the reference rubric, G-Eval, the LLM path."""

import json
import math

import pytest
import yaml
from fake_openai_server import (
    FakeOpenAIServer,
    FakeReply,
    LogprobClient,
    ScriptedResult,
    fixed,
    sequence,
)

from scoring.judge import (
    METRICS_PATH,
    REFERENCE_JUDGE_NAME,
    LLMJudge,
    ReferenceRubricJudge,
    check_llm_judge,
    format_reward,
    geval_score,
    judge_responses,
    judge_reward_function,
    judge_with_retries,
    litellm_judge_model,
    load_judge_config,
    parse_decision,
    summarize_scores,
    weighted_reward,
)
from scoring.model_registry import parse_model_entry
from synthetic.amr_cases import (
    assess_prescription,
    case_prompt,
    generate_amr_cases,
    load_guidelines,
    prescription_dict,
    reference_answer,
)

KEY_ENV = "GXPLAB_TEST_JUDGE_KEY"
# hand-computed: normalised 1, .75, .5, .25, 0, 1 ->
# .25*1 + .25*.75 + .20*.5 + .15*.25 + .10*0 + .05*1 = 0.625
SCORES = {"clinical_accuracy": 5, "guideline_adherence": 4, "reasoning_completeness": 3,
          "safety_awareness": 2, "decision_appropriateness": 1, "reference_accuracy": 5}
REWARD = 0.625
PRIORITY_REWARD = (0.25 * 1 + 0.25 * 0.75 + 0.20 * 0.5) / 0.70  # 0.767857...


@pytest.fixture(scope="module")
def config():
    return load_judge_config()


@pytest.fixture(scope="module")
def cases():
    return generate_amr_cases(n_cases=60, seed=3)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-judge-test-key")


def make_case(syndrome, patient, prescription, case_id="HAND-1"):
    """A case built by hand (independent of the generator's draws)."""
    guidelines = load_guidelines()
    result = assess_prescription(guidelines, patient, syndrome, prescription)
    return {"case_id": case_id, "split": "test", "patient": patient,
            "diagnosis": {"syndrome": syndrome,
                          "name": guidelines.syndromes[syndrome].name},
            "prescription": prescription, "reference_decision": result.decision,
            "reference_reasoning": list(result.reasoning), "guideline": result.facts}


def low_dose_cap_case():
    patient = {"age": 60, "sex": "male", "weight_kg": 80, "comorbidities": [], "allergies": [],
               "egfr_ml_min": 90, "pregnant": False}
    return make_case("community_acquired_pneumonia", patient,
                     {"drug": "amoxicillin", "dose_mg": 500, "route": "oral",
                      "frequency": "every 8 h", "duration_days": 5})


# --------------------------------------------------------------------------- configuration


def test_config_has_the_six_weighted_metrics_and_priority(config):
    assert config.weights == {"clinical_accuracy": 0.25, "guideline_adherence": 0.25,
                              "reasoning_completeness": 0.20, "safety_awareness": 0.15,
                              "decision_appropriateness": 0.10, "reference_accuracy": 0.05}
    assert config.priority_metrics == ("clinical_accuracy", "guideline_adherence",
                                       "reasoning_completeness")
    assert config.prompt_version == "amr-judge-v1"
    assert all({1, 3, 5} <= set(metric.rubric) for metric in config.metrics)


def test_config_errors_name_file_and_field(tmp_path):
    raw = yaml.safe_load(METRICS_PATH.read_text(encoding="utf-8"))
    raw["metrics"]["clinical_accuracy"]["weight"] = 0.5
    path = tmp_path / "judge.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match=r"judge\.yaml: field 'metrics\.\*\.weight'.*sum to 1\.25"):
        load_judge_config(path)
    raw["metrics"]["clinical_accuracy"]["weight"] = 0.25
    raw["priority_metrics"] = ["clinical_accuracy", "fluency"]
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match=r"field 'priority_metrics'.*fluency"):
        load_judge_config(path)


# --------------------------------------------------------------------------- rewards


def test_weighted_reward_hand_computed(config):
    assert weighted_reward(SCORES, config) == pytest.approx(REWARD, abs=1e-12)
    assert weighted_reward(SCORES, config, priority=True) == pytest.approx(0.5375 / 0.7)
    assert weighted_reward(dict.fromkeys(SCORES, 5), config) == pytest.approx(1.0)
    assert weighted_reward(dict.fromkeys(SCORES, 1), config) == 0.0
    # priority mode ignores the other metrics entirely
    only_three = {k: SCORES[k] for k in config.priority_metrics}
    assert weighted_reward(only_three, config, priority=True) == pytest.approx(PRIORITY_REWARD)
    with pytest.raises(ValueError, match="safety_awareness"):
        weighted_reward(only_three, config)
    with pytest.raises(ValueError, match="clinical_accuracy"):
        weighted_reward({**SCORES, "clinical_accuracy": 6}, config)


@pytest.mark.parametrize(("text", "decision", "reward"), [
    ("Decision: Modify\nReasoning:\n1. Dose too low.\n2. Give 1000 mg.", "Modify", 1.0),
    ("**Decision:** reject\n**Reasoning:**\n1) Allergy.\n2) Stop it.", "Reject", 1.0),
    ("Decision: Approve\nReasoning:\n1. Fine.", "Approve", 0.5),  # one step only
    ("Decision: Approve\nLooks fine to me.", "Approve", 0.5),  # no reasoning section
    ("I think so.\nDecision: Reject\nReasoning:\n1. a\n2. b", "Reject", 0.0),  # not first line
    ("Decision: Maybe\nReasoning:\n1. a\n2. b", None, 0.0),
    ("", None, 0.0),
])
def test_format_reward_and_decision_parsing(text, decision, reward):
    assert parse_decision(text) == decision
    assert format_reward(text) == reward


def test_geval_score_hand_computed():
    top = {"4": math.log(0.6), "5": math.log(0.3), "3": math.log(0.05),
           "a": math.log(0.04), "2": math.log(0.005)}  # 'a' is no digit, '2' is under 1%
    expected = (4 * 0.6 + 5 * 0.3 + 3 * 0.05) / (0.6 + 0.3 + 0.05)  # 4.2631...
    assert geval_score(top) == pytest.approx(expected)
    as_list = [{"token": token, "logprob": lp} for token, lp in top.items()]
    assert geval_score(as_list) == pytest.approx(expected)
    assert geval_score({" 5": 0.0}) == 5.0
    with pytest.raises(ValueError, match="no score token"):
        geval_score({"x": 0.0, "9": 0.0})


# --------------------------------------------------------------------------- reference rubric


def test_reference_judge_is_named_not_an_llm(config):
    assert ReferenceRubricJudge(config).name == REFERENCE_JUDGE_NAME
    assert "not an LLM" in REFERENCE_JUDGE_NAME


def test_reference_answer_scores_one_and_empty_scores_zero(config, cases):
    judge = ReferenceRubricJudge(config)
    perfect = judge_responses(judge, cases, [reference_answer(case) for case in cases])
    assert [score.weighted_reward for score in perfect] == [1.0] * len(cases)
    assert all(score.decision_correct and score.format_reward == 1.0 for score in perfect)
    empty = judge_responses(judge, cases, [""] * len(cases))
    assert [score.weighted_reward for score in empty] == [0.0] * len(cases)
    assert all(score.scores == dict.fromkeys(config.weights, 1.0) for score in empty)
    summary = summarize_scores(perfect + empty)
    assert (summary["n_failed"], summary["decision_accuracy"]) == (0, 0.5)
    assert summary["mean_weighted_reward"] == pytest.approx(0.5)


def test_wrong_decision_scores_lower_by_hand_computed_amount(config, cases):
    judge = ReferenceRubricJudge(config)
    for case in cases[:12]:
        right = reference_answer(case)
        other = next(d for d in ("Approve", "Modify", "Reject") if d != case["reference_decision"])
        wrong = right.replace(f"Decision: {case['reference_decision']}", f"Decision: {other}", 1)
        [good, bad] = judge_responses(judge, [case, case], [right, wrong])
        assert bad.decision == other and not bad.decision_correct
        # decision_appropriateness 5 -> 1 and clinical_accuracy 5 -> 3 (half of it is the decision)
        assert bad.weighted_reward == pytest.approx(1 - 0.10 - 0.25 * 0.5)
        assert bad.weighted_reward < good.weighted_reward
        [priority] = judge_responses(judge, [case], [wrong], priority=True)
        assert set(priority.scores) == set(config.priority_metrics)
        assert priority.weighted_reward == pytest.approx((0.25 * 0.5 + 0.25 + 0.20) / 0.70)


def test_reference_judge_partial_answer_hand_computed(config):
    case = low_dose_cap_case()  # amoxicillin 500 mg for mild CAP: Modify to 1000 mg
    assert case["reference_decision"] == "Modify"
    [score] = judge_responses(ReferenceRubricJudge(config), [case], ["Decision: Modify"])
    # clinical: 0.5 (decision) + 0.5 x 0/1 (the 1000 mg dose is not named) -> 3
    # reasoning: only step 7 shares words ('decision', 'modify': 2 of its 11 content words),
    #            mean over 7 steps = 2/77
    # guideline, safety, reference accuracy: nothing named -> 1; decision -> 5
    assert score.scores["clinical_accuracy"] == pytest.approx(3.0)
    assert score.scores["reasoning_completeness"] == pytest.approx(1 + 4 * 2 / 77)
    assert score.scores["guideline_adherence"] == 1.0
    assert score.scores["decision_appropriateness"] == 5.0
    assert score.weighted_reward == pytest.approx(0.25 * 0.5 + 0.20 * 2 / 77 + 0.10)
    assert score.format_reward == 0.5


# --------------------------------------------------------------------------- LLM judge


def judge_model(server):
    return parse_model_entry({
        "id": "fake-judge", "kind": "litellm", "litellm_model": "openai/fake-judge",
        "api_base": server.base_url, "api_key_env": KEY_ENV, "required_env": [KEY_ENV],
        "response_format": "json_object", "max_tokens": 256}, {}, "judge config")


def llm_client(tmp_path=None):
    from resources.clients.llm import LLMClient

    return LLMClient(cache_dir=tmp_path, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.02,
                     timeout_s=10, pricing={})


def judgement(scores=SCORES, justification="Dose checked against the guideline."):
    return json.dumps({"scores": scores, "justification": justification})


@pytest.fixture
def start_server():
    servers = []

    def start(responder):
        server = FakeOpenAIServer(responder).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def test_llm_judge_parses_scores_and_reward(start_server, config, tmp_path):
    server = start_server(fixed(FakeReply(content=judgement())))
    case = low_dose_cap_case()
    answer = reference_answer(case)
    client = llm_client(tmp_path)
    judge = LLMJudge(client, judge_model(server), config)
    assert judge.name == "openai/fake-judge"
    [score] = judge_responses(judge, [case], [answer])
    assert score.error is None
    assert score.scores == {name: float(value) for name, value in SCORES.items()}
    assert score.weighted_reward == pytest.approx(REWARD)
    assert (score.decision, score.decision_correct) == ("Modify", True)
    assert score.justification == "Dose checked against the guideline."
    assert len(score.calls) == 1 and score.calls[0]["status"] == "ok"
    body = server.requests[0]
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert system["role"] == "system" and "JSON" in system["content"]
    assert f"<<<RESPONSE\n{answer}\nRESPONSE>>>" in user["content"]
    assert case_prompt(case) in user["content"] and "safety_awareness" in user["content"]
    # priority mode asks for (and uses) only the three priority metrics
    [priority] = judge_responses(judge, [case], [answer], priority=True)
    assert set(priority.scores) == set(config.priority_metrics)
    assert priority.weighted_reward == pytest.approx(PRIORITY_REWARD)
    assert "safety_awareness" not in server.requests[1]["messages"][1]["content"]
    # a re-run is served from the disk cache: no new request
    [again] = judge_responses(judge, [case], [answer])
    assert again.weighted_reward == pytest.approx(REWARD) and again.calls[0]["cached"]
    assert server.n_requests == 2
    client.close()


def test_garbage_answer_is_retried_then_a_failed_score(start_server, config):
    server = start_server(fixed(FakeReply(content="Great answer, 10/10!")))
    judge = LLMJudge(llm_client(), judge_model(server), config, max_attempts=2)
    case = low_dose_cap_case()
    [score] = judge_responses(judge, [case], [reference_answer(case)])
    assert score.weighted_reward is None and score.scores == {}
    assert "unusable judge answer (attempt 2)" in score.error and "not a JSON object" in score.error
    assert server.n_requests == 2 and len(score.calls) == 2
    retry_messages = server.requests[1]["messages"]
    assert retry_messages[-1]["role"] == "user" and "could not be used" in retry_messages[-1][
        "content"]
    summary = summarize_scores([score])
    assert (summary["n_failed"], summary["mean_weighted_reward"], summary["n_calls"]) == (
        1, None, 2)


def test_garbage_then_valid_answer_succeeds_on_retry(start_server, config):
    missing = {k: v for k, v in SCORES.items() if k != "safety_awareness"}
    server = start_server(sequence(fixed(FakeReply(content=judgement(missing))),
                                   fixed(FakeReply(content="```json\n" + judgement() + "\n```"))))
    judge = LLMJudge(llm_client(), judge_model(server), config)
    [score] = judge_responses(judge, [low_dose_cap_case()], ["Decision: Modify"])
    assert score.error is None and score.weighted_reward == pytest.approx(REWARD)
    assert "scores.safety_awareness" in server.requests[1]["messages"][-1]["content"]


def test_failed_call_is_a_failed_score_not_zero(start_server, config):
    server = start_server(fixed(FakeReply(status=400, error_message="bad request")))
    judge = LLMJudge(llm_client(), judge_model(server), config)
    [score] = judge_responses(judge, [low_dose_cap_case()], ["Decision: Modify"])
    assert score.weighted_reward is None
    assert score.error.startswith("judge call failed") and server.n_requests == 1
    reward = judge_reward_function(judge, [low_dose_cap_case()])
    assert reward(prompts=["p"], completions=["Decision: Modify"], case_id=["HAND-1"]) == [None]


def test_logprobs_give_the_geval_score(config):
    model = parse_model_entry({"id": "groq-judge", "kind": "litellm",
                               "litellm_model": "groq/llama-3.3-70b-versatile",
                               "api_key_env": "GROQ_API_KEY"}, {}, "judge config")
    top = {"4": math.log(0.5), "5": math.log(0.5)}  # G-Eval 4.5 instead of the integer 5
    judge = LLMJudge(LogprobClient(judgement(), {"clinical_accuracy": top}), model, config)
    [score] = judge_responses(judge, [low_dose_cap_case()], ["Decision: Modify"])
    assert score.judge == "groq/llama-3.3-70b-versatile"
    assert score.scores["clinical_accuracy"] == pytest.approx(4.5)
    assert score.weighted_reward == pytest.approx(REWARD - 0.25 * 0.5 / 4)



class _ScriptedClient:
    """A protocol-compatible client answering each request id from its own list of replies
    (text, or None for a failed call), recording every request."""

    def __init__(self, replies):
        self.replies = {key: list(texts) for key, texts in replies.items()}
        self.requests = []

    def complete_many(self, model, requests, progress=None):
        self.requests.append([(rid, [m["content"] for m in messages], key)
                              for rid, messages, key in requests])
        texts = [self.replies[rid].pop(0) for rid, _, _ in requests]
        return [ScriptedResult(text=t or "", status="ok" if t is not None else "error",
                               error=None if t is not None else "HTTP 500")
                for t in texts]


def test_judge_with_retries_asks_again_only_the_unusable_answers():
    def parse(i, text, logprobs):
        if not text.isdigit():
            raise ValueError(f"conversation {i}: {text!r} is not a number")
        return int(text)

    client = _ScriptedClient({"a": ["7"], "b": ["x", "8"], "c": [None], "d": ["y", "z"]})
    messages = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    model = parse_model_entry({"id": "j", "kind": "litellm", "litellm_model": "openai/j"}, {},
                              "judge config")
    outcomes, calls = judge_with_retries(client, model, messages, ["a", "b", "c", "d"],
                                         lambda i, attempt: f"k{i}-{attempt}", parse,
                                         max_attempts=2)
    assert outcomes[:3] == [7, 8, "judge call failed: HTTP 500"]
    assert outcomes[3] == "unusable judge answer (attempt 2): conversation 3: 'z' is not a number"
    assert [len(c) for c in calls] == [1, 2, 1, 2]
    # the second round asks b and d only, each with its answer and the problem appended
    assert [(rid, key) for rid, _, key in client.requests[1]] == [("b", "k1-2"), ("d", "k3-2")]
    b_retry = client.requests[1][0][1]
    assert b_retry[:2] == ["q1", "x"] and "could not be used: conversation 1" in b_retry[2]
    assert messages[1] == [{"role": "user", "content": "q1"}]  # the caller's list is unchanged
    assert judge_with_retries(client, model, [], [], str, parse, max_attempts=2) == ([], [])
    with pytest.raises(ValueError, match="2 conversations but 1 request ids"):
        judge_with_retries(client, model, messages[:2], ["a"], str, parse, max_attempts=1)


def test_litellm_judge_model_and_judge_checks_name_the_field(monkeypatch):
    models = [parse_model_entry(entry, {}, "registry") for entry in (
        {"id": "groq-judge", "kind": "litellm", "litellm_model": "groq/llama-3.3-70b-versatile",
         "api_key_env": KEY_ENV, "required_env": [KEY_ENV]},
        {"id": "auditor", "kind": "rule_based"})]
    assert litellm_judge_model("groq-judge", "cfg field 'judge'", models) is models[0]
    with pytest.raises(ValueError, match="^cfg field 'judge': 'nope' is unknown; use 'reference' "
                                         "or a litellm model of configs/models.yaml: groq-judge$"):
        litellm_judge_model("nope", "cfg field 'judge'", models)
    with pytest.raises(ValueError, match="^cfg field 'judge': 'auditor' is kind rule_based, not "
                                         "litellm"):
        litellm_judge_model("auditor", "cfg field 'judge'", models)
    with pytest.raises(ValueError, match="kind must be 'litellm'"):
        check_llm_judge(models[1], 2)
    with pytest.raises(ValueError, match="max_attempts must be >= 1"):
        check_llm_judge(models[0], 0)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ValueError, match=f"^cfg field 'judge': judge model 'groq-judge' is "
                                         f"unavailable: environment variable {KEY_ENV}"):
        litellm_judge_model("groq-judge", "cfg field 'judge'", models)


# --------------------------------------------------------------------------- entry points


def test_reward_function_for_grpo(config, cases):
    reward = judge_reward_function(ReferenceRubricJudge(config), cases, priority=True)
    chosen = cases[:3]
    completions = [[{"role": "assistant", "content": reference_answer(case)}] for case in chosen]
    values = reward(prompts=[case_prompt(c) for c in chosen], completions=completions,
                    case_id=[c["case_id"] for c in chosen], trainer_state=None)
    assert values == [1.0, 1.0, 1.0]
    assert reward(completions=[""], case_id=[chosen[0]["case_id"]]) == [0.0]
    with pytest.raises(ValueError, match="case_id.*NOPE"):
        reward(completions=["x"], case_id=["NOPE"])


def test_judge_responses_checks_lengths_and_case_fields(config, cases):
    with pytest.raises(ValueError, match="2 cases but 1 responses"):
        judge_responses(ReferenceRubricJudge(config), cases[:2], ["x"])
    broken = {**cases[0], "guideline": None}
    with pytest.raises(ValueError, match=f"case '{cases[0]['case_id']}' field 'guideline'"):
        judge_responses(ReferenceRubricJudge(config), [broken], ["x"])


def test_generated_prescription_round_trips(cases):
    from synthetic.amr_cases import prescription_regimen

    for case in cases:
        assert prescription_dict(prescription_regimen(case["prescription"])) == case[
            "prescription"]
