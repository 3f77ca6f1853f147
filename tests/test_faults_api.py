"""Faults: an API provider failing 20% of calls (429, 5xx, timeouts) still gives a complete run in
which every item is scored or explicitly marked failed, through the judge and the GxP audit path."""

import json

import pytest
from fake_openai_server import FakeOpenAIServer, FakeReply, fixed, with_faults

from resources.clients.llm import LLMClient
from scoring.judge import LLMJudge, load_judge_config, summarize_scores
from scoring.model_registry import CandidateModel
from synthetic.amr_cases import generate_amr_cases, reference_answer

KEY_ENV = "GXPLAB_TEST_FLAKY_KEY"
TIMEOUT_S = 2.0  # generous: an answer on time must not time out on a loaded CI machine


def flaky(ok_content: str, failure_rate: float = 0.2, seed: int = 7):
    """A provider where each request fails with probability `failure_rate`: a 429 with
    Retry-After, a 503 or an answer slower than the client's timeout, in equal parts."""
    failures = (FakeReply(status=429, headers={"Retry-After": "0"}),
                FakeReply(status=503),
                FakeReply(content=ok_content, delay_s=TIMEOUT_S * 3))
    return with_faults(fixed(FakeReply(content=ok_content)), failures, failure_rate, seed)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test-flaky-not-a-secret")


def _model(server, **overrides) -> CandidateModel:
    return CandidateModel(**{"id": "flaky", "kind": "litellm", "litellm_model": "openai/flaky",
                             "api_base": server.base_url, "api_key_env": KEY_ENV,
                             "required_env": (KEY_ENV,), "response_format": "json_object",
                             "max_tokens": 256, "timeout_s": TIMEOUT_S, **overrides})


def _client(max_retries: int) -> LLMClient:
    return LLMClient(max_retries=max_retries, backoff_base_s=0.01, backoff_max_s=0.05,
                     timeout_s=TIMEOUT_S, pricing={}, max_concurrency=16)


@pytest.mark.parametrize("max_retries", [0, 3])
def test_judge_run_is_complete_under_a_20_percent_failure_rate(max_retries):
    names = [metric.name for metric in load_judge_config().metrics]
    verdict = json.dumps({"scores": dict.fromkeys(names, 4), "justification": "ok"})
    cases = generate_amr_cases(60)
    answers = [reference_answer(case) for case in cases]
    with FakeOpenAIServer(flaky(verdict)) as server:
        client = _client(max_retries)
        scores = LLMJudge(client, _model(server)).score_many(cases, answers)
        client.close()
    summary = summarize_scores(scores)
    # HTTP attempts per judgement, as the client counted them (the server's own count misses
    # requests still sleeping past the client's timeout when the server stops)
    attempts = [call["attempts"] for score in scores for call in score.calls]
    assert len(scores) == len(cases)  # nothing lost
    assert summary["n_judged"] + summary["n_failed"] == len(cases)
    for score in scores:  # each item scored, or failed with its reason: never a silent 0
        assert (score.weighted_reward is not None) != (score.error is not None)
        if score.error:
            assert "judge call failed" in score.error and score.scores == {}
    if max_retries == 0:
        # without retries, about one call in five fails and is reported as failed
        assert 0 < summary["n_failed"] < len(cases) / 2
        assert attempts == [1] * len(cases)
    else:
        # retries (429 honours Retry-After, 5xx and timeouts back off) recover nearly all
        assert summary["n_failed"] <= 2
        assert max(attempts) >= 2 and sum(attempts) > len(cases)  # failed attempts were retried
    assert all(s.weighted_reward == pytest.approx(0.75) for s in scores if s.error is None)


def test_audit_calls_are_all_answered_or_failed_under_a_20_percent_failure_rate():
    answer = json.dumps({"summary": "no deviations", "findings": []})
    requests = [(f"batch-{i}", [{"role": "user", "content": f"audit batch {i}"}], f"k{i}")
                for i in range(80)]
    with FakeOpenAIServer(flaky(answer, seed=11)) as server:
        client = _client(max_retries=3)
        results = client.complete_many(_model(server), requests)
        client.close()
    assert [r.request_id for r in results] == [r[0] for r in requests]  # all, in order
    failed = [r for r in results if r.status != "ok"]
    assert all(r.error and r.text is None for r in failed)
    assert all(r.text == answer for r in results if r.status == "ok")
    assert len(failed) <= 2
    assert max(r.attempts for r in results) >= 2  # some calls needed a retry
