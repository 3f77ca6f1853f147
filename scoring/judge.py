"""The AMR prescription-validation judge: six weighted 1-5 metrics -> a reward in [0, 1].

One entry point, `judge_responses(judge, cases, responses, priority=...)`, serves both the
`judge_evaluations` asset and GRPO's reward (`judge_reward_function` wraps it for TRL); there is
no second copy of the scoring. Two judges share its interface:

- `ReferenceRubricJudge`, the offline default: NOT an LLM. A deterministic keyword rubric that
  compares the answer with the case's reference decision, reasoning and guideline facts.
- `LLMJudge`: an LLM (e.g. groq/llama-3.3-70b-versatile) called through an injected completion
  client (resources/clients/llm.py:LLMClient: async, bounded concurrency, disk cache, retries, rpm
  limits, cost) with the versioned rubric prompt of configs/judge_metrics.yaml. A failed call or an
  unusable answer gives a failed JudgeScore (weighted_reward None, error set), never a silent 0.

Metrics, weights and the prompt live in configs/judge_metrics.yaml (`load_judge_config`).
Plain Python: no dagster import, never imports resources/.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from scoring.audit_prompt import check_delimited
from scoring.geval import answer_schema_for, judge_answer_schema
from synthetic.amr_cases import DECISIONS, case_prompt, reference_answer
from synthetic.config_yaml import read_versioned_mapping

if TYPE_CHECKING:  # annotations only: importing candidate_runner pulls in pandas
    from scoring.candidate_runner import CompletionClient, Progress
    from scoring.model_registry import CandidateModel
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
METRICS_PATH = CONFIG_DIR / "judge_metrics.yaml"
TEMPLATE_FIELDS = frozenset({"case", "reference", "facts", "response", "rubric", "metric_names"})
RESPONSE_OPEN = "<<<RESPONSE"
RESPONSE_CLOSE = "RESPONSE>>>"
REFERENCE_JUDGE_NAME = "reference-rubric (not an LLM)"
REFERENCE_JUDGE_ID = "reference"  # the config value naming the non-LLM judge, not a model id
SCORE_MIN, SCORE_MAX = 1, 5
GEVAL_MIN_PROB = 0.01  # G-Eval drops score tokens under 1% probability (METHODS.md)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Metric:
    """One judge metric: weight in the reward, description and 1/3/5 rubric."""

    name: str
    weight: float
    description: str
    rubric: dict[int, str]


@dataclass(frozen=True)
class JudgeConfig:
    """configs/judge_metrics.yaml, checked."""

    version: str
    metrics: tuple[Metric, ...]
    priority_metrics: tuple[str, ...]
    prompt_version: str
    system: str
    user_template: str
    path: str

    @property
    def weights(self) -> dict[str, float]:
        return {metric.name: metric.weight for metric in self.metrics}

    def metric_names(self, priority: bool = False) -> tuple[str, ...]:
        """The metrics scored: all six, or the priority ones in priority mode."""
        return self.priority_metrics if priority else tuple(m.name for m in self.metrics)


def load_judge_config(path: Path | str | None = None) -> JudgeConfig:
    """Load and check the judge configuration; errors name the file and the field."""
    path = Path(path) if path else METRICS_PATH
    raw, where, version = read_versioned_mapping(path, "version, metrics, priority_metrics, prompt")
    raw_metrics = raw.get("metrics")
    if not isinstance(raw_metrics, dict) or not raw_metrics:
        raise ValueError(f"{where}: field 'metrics' must be a non-empty mapping")
    metrics = tuple(_parse_metric(name, entry, where) for name, entry in raw_metrics.items())
    total = sum(metric.weight for metric in metrics)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ValueError(f"{where}: field 'metrics.*.weight': weights sum to {total:g}, not 1")
    priority = raw.get("priority_metrics")
    if not isinstance(priority, list) or not priority or len(set(priority)) != len(priority):
        raise ValueError(f"{where}: field 'priority_metrics' must be a non-empty list without "
                         "duplicates")
    unknown = [name for name in priority if name not in raw_metrics]
    if unknown:
        raise ValueError(f"{where}: field 'priority_metrics': unknown metric(s) {unknown}")
    prompt = raw.get("prompt")
    if not isinstance(prompt, dict):
        raise ValueError(f"{where}: field 'prompt' must be a mapping with version, system, "
                         "user_template")
    for key in ("version", "system", "user_template"):
        if not isinstance(prompt.get(key), str) or not prompt[key].strip():
            raise ValueError(f"{where}: field 'prompt.{key}' must be a non-empty string")
    _check_template(prompt["user_template"], where)
    return JudgeConfig(version=version, metrics=metrics, priority_metrics=tuple(priority),
                       prompt_version=prompt["version"], system=prompt["system"],
                       user_template=prompt["user_template"], path=where)


def _parse_metric(name: Any, entry: Any, where: str) -> Metric:
    at = f"{where}: field 'metrics.{name}"
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"{at}': metric names must be snake_case")
    if not isinstance(entry, dict):
        raise ValueError(f"{at}': expected a mapping with weight, description, rubric")
    weight = entry.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        raise ValueError(f"{at}.weight': {weight!r} must be a number > 0")
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"{at}.description': must be a non-empty string")
    rubric = check_rubric(entry.get("rubric"), at)
    return Metric(name=name, weight=float(weight), description=description.strip(),
                  rubric={score: text.strip() for score, text in rubric.items()})


def check_rubric(rubric: Any, at: str) -> dict[int, str]:
    """A 1-5 rubric {score: text} checked (scores 1, 3 and 5 at least, non-empty texts) and sorted
    by score, texts as given. `at` locates the entry, "<file>: field '<path>" (the error adds
    ".rubric'")."""
    if not isinstance(rubric, dict) or {1, 3, 5} - set(rubric):
        raise ValueError(f"{at}.rubric': must describe at least scores 1, 3 and 5")
    for score, text in rubric.items():
        if score not in range(SCORE_MIN, SCORE_MAX + 1) or not isinstance(text, str) \
                or not text.strip():
            raise ValueError(f"{at}.rubric.{score}': scores 1-5 with a non-empty text")
    return {int(score): text for score, text in sorted(rubric.items())}


def _check_template(text: str, where: str) -> None:
    template = Template(text)
    if not template.is_valid():
        raise ValueError(f"{where}: field 'prompt.user_template' has a malformed $-placeholder")
    names = set(template.get_identifiers())
    if names != TEMPLATE_FIELDS:
        raise ValueError(f"{where}: field 'prompt.user_template': placeholders {sorted(names)}; "
                         f"expected exactly {sorted(TEMPLATE_FIELDS)}")
    check_delimited(text, "response", RESPONSE_OPEN, RESPONSE_CLOSE,
                    f"{where}: field 'prompt.user_template'")


# --------------------------------------------------------------------------- reward and format


def weighted_reward(scores: Mapping[str, float], config: JudgeConfig,
                    priority: bool = False) -> float:
    """sum_m w_m (s_m - 1) / 4 over the metrics, in [0, 1].

    Priority mode uses only the priority metrics, their weights renormalised to sum to 1.
    Every metric used must have a score in [1, 5]; scores of other metrics are ignored.
    """
    names = config.metric_names(priority)
    weights = config.weights
    total = sum(weights[name] for name in names)
    reward = 0.0
    for name in names:
        score = scores.get(name)
        if isinstance(score, bool) or not isinstance(score, int | float) \
                or not SCORE_MIN <= score <= SCORE_MAX:
            raise ValueError(f"score of metric {name!r}: {score!r} must be a number in "
                             f"[{SCORE_MIN}, {SCORE_MAX}]")
        reward += weights[name] / total * (score - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)
    return min(1.0, max(0.0, reward))


_DECISION_LINE = re.compile(r"^decision\s*:\s*(approve|modify|reject)\b", re.IGNORECASE)
_REASONING_LINE = re.compile(r"^reasoning\s*:", re.IGNORECASE)
_NUMBERED_STEP = re.compile(r"^\d+\s*[.)]\s*\S")


def _plain_line(line: str) -> str:
    """A line without markdown emphasis/heading/quote marks around it."""
    return line.strip().lstrip("#>").replace("*", "").replace("_", " ").strip()


def parse_decision(text: str | None) -> str | None:
    """The decision of the first line reading 'Decision: Approve|Modify|Reject' (any case,
    markdown emphasis ignored), as 'Approve' | 'Modify' | 'Reject'; None when there is none."""
    for line in (text or "").splitlines():
        match = _DECISION_LINE.match(_plain_line(line))
        if match:
            return match.group(1).capitalize()
    return None


def format_reward(text: str | None) -> float:
    """How well an answer follows the required format.

    1.0: the first non-empty line is a valid 'Decision: Approve|Modify|Reject' line, a later line
         starts 'Reasoning:', and at least 2 numbered steps ('1.' or '1)') follow it.
    0.5: a valid decision first line without such a reasoning section.
    0.0: otherwise (no decision, or not on the first line).
    """
    lines = [_plain_line(line) for line in (text or "").splitlines() if line.strip()]
    if not lines or not _DECISION_LINE.match(lines[0]):
        return 0.0
    for index, line in enumerate(lines[1:], start=1):
        if _REASONING_LINE.match(line):
            steps = sum(bool(_NUMBERED_STEP.match(rest)) for rest in lines[index + 1:])
            return 1.0 if steps >= 2 else 0.5
    return 0.5


def geval_score(top_logprobs: Mapping[str, float] | Iterable[Mapping[str, Any]]) -> float:
    """G-Eval probability-weighted score from the top log-probabilities at the score token.

    score = sum_s s * p(s) / sum_s p(s) over s in 1..5, p = exp(logprob); tokens that are not a
    digit 1-5 (after stripping spaces) and tokens under 1% probability are dropped. Accepts
    {token: logprob} or OpenAI-style [{"token": ..., "logprob": ...}]. Returns a 1-5 score.
    """
    if isinstance(top_logprobs, Mapping):
        pairs = list(top_logprobs.items())
    else:
        pairs = [(item["token"], item["logprob"]) for item in top_logprobs]
    mass: dict[int, float] = {}
    for token, logprob in pairs:
        text = str(token).strip()
        probability = math.exp(float(logprob))
        if text.isdigit() and SCORE_MIN <= int(text) <= SCORE_MAX \
                and probability >= GEVAL_MIN_PROB:
            mass[int(text)] = mass.get(int(text), 0.0) + probability
    if not mass:
        raise ValueError("geval_score: no score token 1-5 with probability >= 1% in the top "
                         "logprobs")
    return sum(score * p for score, p in mass.items()) / sum(mass.values())


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class JudgeScore:
    """The judgement of one answer. weighted_reward None (with `error`) means the judge failed."""

    case_id: str
    scores: dict[str, float]
    weighted_reward: float | None
    decision: str | None
    decision_correct: bool
    justification: str
    judge: str
    error: str | None = None
    priority: bool = False
    format_reward: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)  # LLM calls made (cost, cache)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Judge(Protocol):
    name: str

    def score_many(self, cases: Sequence[Mapping[str, Any]], responses: Sequence[str],
                   *, priority: bool = False) -> list[JudgeScore]: ...


def judge_responses(judge: Judge, cases: Sequence[Mapping[str, Any]],
                    responses: Sequence[str | None], *, priority: bool = False,
                    ) -> list[JudgeScore]:
    """Score each response against its case: THE judge entry point (evaluation and GRPO)."""
    if len(cases) != len(responses):
        raise ValueError(f"judge_responses: {len(cases)} cases but {len(responses)} responses")
    texts = []
    for case, response in zip(cases, responses, strict=True):
        if response is not None and not isinstance(response, str):
            raise ValueError(f"judge_responses: case {case.get('case_id')!r} field 'response': "
                             f"expected text, got {type(response).__name__}")
        texts.append(response or "")
    return judge.score_many(cases, texts, priority=priority)


def judge_reward_function(judge: Judge, cases: Sequence[Mapping[str, Any]], *,
                          priority: bool = False) -> Callable[..., list[float | None]]:
    """A TRL GRPO reward function over `judge_responses`.

    The training dataset needs a `case_id` column; completions may be text or chat messages.
    A failed judgement returns None, which TRL treats as unscorable (never a silent 0).
    """
    by_id = {str(case["case_id"]): case for case in cases}

    def amr_judge_reward(prompts: Sequence[Any] | None = None,
                         completions: Sequence[Any] | None = None,
                         case_id: Sequence[str] | None = None,
                         **_kwargs: Any) -> list[float | None]:
        if completions is None or case_id is None:
            raise ValueError("amr_judge_reward: needs completions and a case_id column")
        unknown = [cid for cid in case_id if str(cid) not in by_id]
        if unknown:
            raise ValueError(f"amr_judge_reward: field 'case_id': unknown case(s) {unknown[:5]}")
        chosen = [by_id[str(cid)] for cid in case_id]
        texts = [_completion_text(completion) for completion in completions]
        return [score.weighted_reward
                for score in judge_responses(judge, chosen, texts, priority=priority)]

    return amr_judge_reward


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and all(isinstance(m, Mapping) for m in completion):
        return "".join(str(m.get("content") or "") for m in completion
                       if m.get("role", "assistant") == "assistant")
    raise ValueError(f"completion: expected text or chat messages, got {type(completion).__name__}")


def summarize_scores(scores: Sequence[JudgeScore]) -> dict[str, Any]:
    """Run totals: judged/failed counts, decision accuracy, mean reward and per-metric means,
    LLM calls, cached calls and the cost spent (None when a fresh call was unpriced)."""
    ok = [score for score in scores if score.weighted_reward is not None]
    calls = [call for score in scores for call in score.calls]
    fresh = [call for call in calls if call.get("status") == "ok" and not call.get("cached")]
    unpriced = sum(call.get("cost_usd") is None for call in fresh)
    names = sorted({name for score in ok for name in score.scores})
    return {
        "n_responses": len(scores),
        "n_judged": len(ok),
        "n_failed": len(scores) - len(ok),
        "decision_accuracy": (sum(s.decision_correct for s in scores) / len(scores)
                              if scores else None),
        "mean_weighted_reward": sum(s.weighted_reward for s in ok) / len(ok) if ok else None,
        "mean_format_reward": (sum(s.format_reward for s in scores) / len(scores)
                               if scores else None),
        "metric_means": {name: _mean([s.scores[name] for s in ok if name in s.scores])
                         for name in names},
        "n_calls": len(calls),
        "n_cached": sum(bool(call.get("cached")) for call in calls),
        "cost_usd": None if unpriced else float(sum(call["cost_usd"] for call in fresh)),
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------- reference rubric

_Group = tuple[str, ...]  # satisfied when any of its terms occurs in the answer
_STOPWORDS = frozenset({"a", "an", "the", "is", "are", "of", "for", "and", "or", "to", "in",
                        "on", "at", "with", "by", "as", "be", "it", "this", "while", "needs",
                        "give", "s"})


_CASE_FIELDS = ("case_id", "patient", "prescription", "reference_decision", "reference_reasoning",
                "guideline")


class ReferenceRubricJudge:
    """Offline default judge. NOT an LLM: a deterministic keyword rubric against the reference.

    Each metric is 1 + 4 x a fraction in [0, 1] (so 1-5, not rounded):
    - decision_appropriateness: 1 if the answer's decision equals the reference decision, else 0.
    - clinical_accuracy: 0.5 x decision correct + 0.5 x share of the case's clinical findings
      named (allergy class, pregnancy, eGFR/avoid, Watch vs Access, the right dose/interval/
      duration, 'not indicated'; for a clean prescription: the drug and that it matches).
    - guideline_adherence: share of {a guideline first-choice drug (or 'no antibiotic'), the
      prescribed drug's AWaRe group, the recommended drug when the decision is not Approve}.
    - reasoning_completeness: mean over the reference steps of the share of each step's content
      words found in the answer (keyword overlap).
    - safety_awareness: share of {an allergy check, each allergy class the patient has, a renal
      check, the eGFR value when renal function matters, pregnancy when pregnant}.
    - reference_accuracy: share of the guideline regimen's numbers quoted (dose, interval,
      duration of the recommended or expected regimen).
    The reference answer scores 1.0, an empty answer 0.0.
    """

    name = REFERENCE_JUDGE_NAME

    def __init__(self, config: JudgeConfig | None = None) -> None:
        self.config = config or load_judge_config()

    def score_many(self, cases: Sequence[Mapping[str, Any]], responses: Sequence[str], *,
                   priority: bool = False) -> list[JudgeScore]:
        return [self.score(case, response, priority=priority)
                for case, response in zip(cases, responses, strict=True)]

    def score(self, case: Mapping[str, Any], response: str, *,
              priority: bool = False) -> JudgeScore:
        for name in _CASE_FIELDS:
            if not case.get(name):
                raise ValueError(f"case {case.get('case_id')!r} field {name!r}: missing or empty; "
                                 "the reference rubric needs synthetic/amr_cases.py's fields")
        decision = parse_decision(response)
        correct = decision is not None and decision == case["reference_decision"]
        text = _normalise(response)
        words = _words(response)
        fractions = {
            "clinical_accuracy": 0.5 * correct + 0.5 * _share(_clinical_groups(case), text),
            "guideline_adherence": _share(_guideline_groups(case), text),
            "reasoning_completeness": _step_coverage(case["reference_reasoning"], words),
            "safety_awareness": _share(_safety_groups(case), text),
            "decision_appropriateness": float(correct),
            "reference_accuracy": _share(_reference_groups(case), text),
        }
        names = self.config.metric_names(priority)
        scores = {name: SCORE_MIN + (SCORE_MAX - SCORE_MIN) * fractions[name] for name in names}
        reward = weighted_reward(scores, self.config, priority=priority)
        return JudgeScore(case_id=str(case["case_id"]), scores=scores, weighted_reward=reward,
                          decision=decision, decision_correct=correct,
                          justification=_rubric_note(fractions, names), judge=self.name,
                          priority=priority, format_reward=format_reward(response))


def _rubric_note(fractions: Mapping[str, float], names: Sequence[str]) -> str:
    return "reference rubric coverage: " + ", ".join(f"{n} {fractions[n]:.2f}" for n in names)


def _normalise(text: str | None) -> str:
    return " ".join((text or "").lower().split())


def _words(text: str | None) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", (text or "").lower()))


def _term_found(term: str, text: str) -> bool:
    """`term` occurs in `text` at word boundaries; a trailing '*' makes it a prefix."""
    stem = term.endswith("*")
    pattern = r"(?<![a-z0-9])" + re.escape(term.rstrip("*").lower()) + \
        ("" if stem else r"(?![a-z0-9])")
    return re.search(pattern, text) is not None


def _share(groups: Sequence[_Group], text: str) -> float:
    if not groups:
        return 1.0
    return sum(any(_term_found(term, text) for term in group) for group in groups) / len(groups)


def _step_coverage(steps: Sequence[str], words: set[str]) -> float:
    shares = []
    for step in steps:
        content = _words(re.sub(r"^\s*\d+\s*[.)]\s*", "", step)) - _STOPWORDS
        if content:
            shares.append(len(content & words) / len(content))
    return sum(shares) / len(shares) if shares else 0.0


def _num(value: float) -> str:
    return f"{value:g}"


def _dose_terms(dose_mg: float) -> _Group:
    terms = [f"{_num(dose_mg)} mg", f"{_num(dose_mg)}mg"]
    if dose_mg >= 1000:
        terms += [f"{_num(dose_mg / 1000)} g", f"{_num(dose_mg / 1000)}g"]
    return tuple(terms)


def _interval_terms(hours: int) -> _Group:
    return (f"every {hours} h*", f"q{hours}h", f"q {hours} h", f"q{hours} h", f"{hours}-hour*",
            f"{hours} hour*", f"{hours}-hourly", f"{hours} hourly")


def _duration_terms(days: int) -> _Group:
    return (f"{days} day*", f"{days}-day*")


_RENAL_TERMS: _Group = ("egfr", "renal*", "kidney*", "creatinine clearance")


def _clinical_groups(case: Mapping[str, Any]) -> list[_Group]:
    facts, patient = case["guideline"], case["patient"]
    drug = facts["drug"]
    expected, recommended = facts.get("expected_regimen"), facts.get("recommended_regimen")
    groups: list[_Group] = []
    for finding in facts["findings"]:
        if finding == "not_indicated":
            groups += [(drug,), ("not indicated", "not recommended", "wrong spectrum",
                                 "inappropriate", "no antibiotic", "not active")]
        elif finding == "allergy":
            groups.append(("allerg*",))
            groups += [(label,) for label in patient["allergies"]
                       if label in facts["drug_allergy_classes"]]
        elif finding == "pregnancy":
            groups.append(("pregnan*",))
        elif finding == "age":
            groups.append(("age",))
        elif finding == "renal_avoid":
            groups += [_RENAL_TERMS, ("avoid*", "contraindicat*")]
        elif finding == "watch_over_access":
            groups += [("watch",), (recommended["drug"],) if recommended else ("access",)]
        elif finding == "renal_adjustment_missed":
            groups += [_RENAL_TERMS, _dose_terms(expected["dose_mg"]) if expected["dose_mg"]
                       != case["prescription"]["dose_mg"] else _interval_terms(
                           expected["interval_h"])]
        elif finding == "wrong_dose":
            groups.append(_dose_terms(expected["dose_mg"]))
        elif finding == "wrong_frequency":
            groups.append(_interval_terms(expected["interval_h"]))
        elif finding == "wrong_route":
            groups.append((expected["route"].lower(),))
        elif finding == "wrong_duration":
            groups.append(_duration_terms(expected["duration_days"]))
    if not groups:  # a clean prescription: name it and say it fits the guideline
        groups = [(drug,), ("match*", "appropriate", "correct", "consistent with",
                            "in line with", "adheres")]
    return groups


def _guideline_groups(case: Mapping[str, Any]) -> list[_Group]:
    facts = case["guideline"]
    first: _Group = ("no antibiotic",) if facts["no_antibiotic"] else tuple(
        regimen["drug"] for regimen in facts["first_choice"])
    groups = [first, (facts["drug_aware"].lower(),)]
    recommended = facts.get("recommended_regimen")
    if case["reference_decision"] != "Approve" and recommended:
        groups.append((recommended["drug"],))
    return groups


def _safety_groups(case: Mapping[str, Any]) -> list[_Group]:
    facts, patient = case["guideline"], case["patient"]
    groups: list[_Group] = [("allerg*",)]
    groups += [(label,) for label in patient["allergies"]]
    groups.append(_RENAL_TERMS)
    rule = facts.get("renal_rule")
    egfr = patient["egfr_ml_min"]
    if egfr < 60 or (rule and egfr < rule["egfr_below"]):
        groups.append((_num(egfr),))
    if patient["pregnant"]:
        groups.append(("pregnan*",))
    return groups


def _reference_groups(case: Mapping[str, Any]) -> list[_Group]:
    facts = case["guideline"]
    regimen = (facts.get("recommended_regimen") if case["reference_decision"] != "Approve"
               else facts.get("expected_regimen"))
    if regimen is None:
        return [("no antibiotic",)] if facts["no_antibiotic"] else [("specialist",)]
    return [_dose_terms(regimen["dose_mg"]), _interval_terms(regimen["interval_h"]),
            _duration_terms(regimen["duration_days"])]


# --------------------------------------------------------------------------- LLM judge calls
# Shared by this module's LLMJudge and scoring/behavioral.py's LLMBehaviourJudge.

Outcome = TypeVar("Outcome")


def check_llm_judge(model: CandidateModel, max_attempts: int) -> None:
    """ValueError unless `model` is a litellm model with a litellm_model and max_attempts >= 1."""
    if model.kind != "litellm" or not model.litellm_model:
        raise ValueError(f"judge model {model.id!r}: kind must be 'litellm' with a "
                         "litellm_model")
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")


def litellm_judge_model(judge_id: str, field: str,
                        models: Sequence[CandidateModel] | None = None) -> CandidateModel:
    """The litellm model `judge_id` of the registry (`models`, default configs/models.yaml), if it
    can be called now. ValueError starting with `field` (e.g. "task config: field 'judge'") for an
    unknown id, a model that is not litellm (both listing the litellm ids), or an unavailable one
    (e.g. its key variable unset)."""
    from scoring.model_registry import load_model_registry, model_availability

    registry = {model.id: model for model in (models if models is not None
                                               else load_model_registry())}
    model = registry.get(judge_id)
    if model is None or model.kind != "litellm":
        known = ", ".join(m.id for m in registry.values() if m.kind == "litellm")
        what = "unknown" if model is None else f"kind {model.kind}, not litellm"
        raise ValueError(f"{field}: {judge_id!r} is {what}; use {REFERENCE_JUDGE_ID!r} or a "
                         f"litellm model of configs/models.yaml: {known}")
    available, reason = model_availability(model)
    if not available:
        raise ValueError(f"{field}: judge model {judge_id!r} is unavailable: "
                         f"{reason.removeprefix('skipped: ')}")
    return model


def judge_with_retries(client: CompletionClient, model: CandidateModel,
                       messages: Sequence[list[dict[str, str]]], request_ids: Sequence[str],
                       cache_key: Callable[[int, int], str],
                       parse: Callable[[int, str | None, Any], Outcome], *,
                       max_attempts: int, progress: Progress | None = None,
                       json_schema: Mapping[str, Any] | None = None,
                       ) -> tuple[list[Outcome | str], list[list[dict[str, Any]]]]:
    """One judge call per conversation `messages[i]`, asked again while the answer is unusable.

    `parse(i, text, logprobs)` turns the answer to conversation i into its outcome or raises
    ValueError; then the answer and the problem ("That answer could not be used: ...") are added
    to the conversation and it is asked again (cache key `cache_key(i, attempt)`, attempt from 1),
    `max_attempts` calls in all. A failed call is final (the client has already retried transient
    errors). Returns (per conversation: the outcome, or the error text; the calls made, as
    `result.to_dict()`). The caller's `messages` are not changed. `json_schema` (the answer's
    schema) is passed to the client only when given.
    """
    if len(request_ids) != len(messages):
        raise ValueError(f"judge_with_retries: {len(messages)} conversations but "
                         f"{len(request_ids)} request ids")
    conversations = list(messages)
    outcomes: list[Outcome | str] = ["not judged"] * len(conversations)
    calls: list[list[dict[str, Any]]] = [[] for _ in conversations]
    pending = list(range(len(conversations)))
    for attempt in range(1, max_attempts + 1):
        if not pending:
            break
        requests = [(request_ids[i], conversations[i], cache_key(i, attempt)) for i in pending]
        extra = {"json_schema": json_schema} if json_schema is not None else {}
        results = client.complete_many(model, requests, progress=progress, **extra)
        retry = []
        for i, result in zip(pending, results, strict=True):
            calls[i].append(result.to_dict())
            if result.status != "ok":
                outcomes[i] = f"judge call failed: {result.error}"
                continue
            try:
                outcomes[i] = parse(i, result.text, getattr(result, "logprobs", None))
            except ValueError as exc:
                outcomes[i] = f"unusable judge answer (attempt {attempt}): {exc}"
                conversations[i] = [*conversations[i],
                                    {"role": "assistant", "content": result.text or ""},
                                    {"role": "user", "content": f"That answer could not be "
                                     f"used: {exc}. Answer again with the JSON object only."}]
                retry.append(i)
        pending = retry
    return outcomes, calls


# --------------------------------------------------------------------------- LLM judge


class LLMJudge:
    """An LLM judge through an injected completion client (LLMClient or the same protocol).

    Each answer gets one call with the versioned rubric prompt; the judge must answer
    {"scores": {metric: 1-5}, "justification": str}. An unusable answer is asked again (with the
    problem stated) up to `max_attempts` times in all, then counted as failed. When a call result
    carries `logprobs` (a mapping metric -> top logprobs at that metric's score token; LLMClient
    gives them for a model with `top_logprobs`), that metric's score is the G-Eval
    probability-weighted score (`geval_score`) instead of the integer.
    """

    def __init__(self, client: CompletionClient, model: CandidateModel,
                 config: JudgeConfig | None = None, *, max_attempts: int = 2,
                 progress: Progress | None = None) -> None:
        check_llm_judge(model, max_attempts)
        self.client = client
        self.model = model
        self.config = config or load_judge_config()
        self.max_attempts = max_attempts
        self.progress = progress
        self.name = model.litellm_model

    def build_messages(self, case: Mapping[str, Any], response: str,
                       priority: bool = False) -> list[dict[str, str]]:
        """System + user messages judging one answer."""
        names = self.config.metric_names(priority)
        by_name = {metric.name: metric for metric in self.config.metrics}
        rubric = "\n".join(
            f"- {name}: {by_name[name].description} "
            + " ".join(f"{score} = {text}" for score, text in by_name[name].rubric.items())
            for name in names)
        # The response cannot close its block early and pose as instructions.
        safe_response = response.replace(RESPONSE_CLOSE, "RESPONSE> >>").replace(
            RESPONSE_OPEN, "<< <RESPONSE")
        user = Template(self.config.user_template).substitute(
            case=case_prompt(case), reference=reference_answer(case),
            facts=json.dumps(case["guideline"], ensure_ascii=False, sort_keys=True),
            response=safe_response, rubric=rubric, metric_names=", ".join(names))
        return [{"role": "system", "content": self.config.system},
                {"role": "user", "content": user}]

    def score_many(self, cases: Sequence[Mapping[str, Any]], responses: Sequence[str], *,
                   priority: bool = False) -> list[JudgeScore]:
        names = self.config.metric_names(priority)
        outcomes, calls = judge_with_retries(
            self.client, self.model,
            [self.build_messages(case, response, priority)
             for case, response in zip(cases, responses, strict=True)],
            [str(case["case_id"]) for case in cases],
            lambda i, attempt: self._cache_key(cases[i], responses[i], priority, attempt),
            lambda i, text, logprobs: parse_judgement(text, names, logprobs),
            max_attempts=self.max_attempts, progress=self.progress,
            json_schema=answer_schema_for(self.model, judge_answer_schema(names)))
        return [self._score(case, response, outcome, call_list, priority)
                for case, response, outcome, call_list in zip(cases, responses, outcomes, calls,
                                                              strict=True)]

    def _score(self, case: Mapping[str, Any], response: str,
               outcome: tuple[dict[str, float], str] | str,
               calls: list[dict[str, Any]], priority: bool) -> JudgeScore:
        decision = parse_decision(response)
        base = {"case_id": str(case["case_id"]), "decision": decision,
                "decision_correct": decision is not None
                and decision == case["reference_decision"],
                "judge": self.name, "priority": priority,
                "format_reward": format_reward(response), "calls": calls}
        if isinstance(outcome, str):
            return JudgeScore(**base, scores={}, weighted_reward=None, justification="",
                              error=outcome)
        scores, justification = outcome
        return JudgeScore(**base, scores=scores, justification=justification,
                          weighted_reward=weighted_reward(scores, self.config, priority))

    def _cache_key(self, case: Mapping[str, Any], response: str, priority: bool,
                   attempt: int) -> str:
        digest = hashlib.sha256(response.encode("utf-8")).hexdigest()[:16]
        mode = "priority" if priority else "all"
        return (f"{self.model.id}|{self.config.prompt_version}|{mode}|{case['case_id']}|"
                f"{digest}|attempt{attempt}")


def parse_judgement(text: str | None, metric_names: Sequence[str],
                    logprobs: Mapping[str, Any] | None = None,
                    ) -> tuple[dict[str, float], str]:
    """({metric: score 1-5}, justification) from a judge's JSON answer; ValueError if unusable.

    Code fences and text around the JSON object are tolerated. Every metric in `metric_names`
    needs a number in [1, 5]; other keys are ignored. With `logprobs[metric]` (top logprobs at
    that metric's score token) the metric's score is `geval_score` of them.
    """
    if text is None or not text.strip():
        raise ValueError("empty answer")
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        try:
            parsed = json.loads(body[start:end + 1]) if 0 <= start < end else None
        except json.JSONDecodeError:
            parsed = None
        if parsed is None:
            raise ValueError(f"not a JSON object: {text[:80]!r}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("scores"), dict):
        raise ValueError("field 'scores': missing or not an object")
    scores: dict[str, float] = {}
    for name in metric_names:
        if logprobs and logprobs.get(name) is not None:
            scores[name] = geval_score(logprobs[name])
            continue
        value = parsed["scores"].get(name)
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not SCORE_MIN <= value <= SCORE_MAX:
            raise ValueError(f"field 'scores.{name}': {value!r} must be a number in "
                             f"[{SCORE_MIN}, {SCORE_MAX}]")
        scores[name] = float(value)
    justification = parsed.get("justification", "")
    return scores, justification if isinstance(justification, str) else json.dumps(justification)


__all__ = [
    "DECISIONS", "REFERENCE_JUDGE_ID", "JudgeConfig", "JudgeScore", "LLMJudge", "Metric",
    "ReferenceRubricJudge", "check_llm_judge", "check_rubric", "format_reward", "geval_score",
    "judge_responses", "judge_reward_function", "judge_with_retries", "litellm_judge_model",
    "load_judge_config", "parse_decision", "parse_judgement", "summarize_scores",
    "weighted_reward",
]
