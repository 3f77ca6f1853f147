"""GRPO of a LoRA adapter on AMR prescription-validation cases: the `grpo_adapter` task.

`grpo_task(config, output_dir, report)` runs TRL's `GRPOTrainer` with a peft LoRA config (the
reference model, when `beta` > 0, is the base with the adapter disabled) on the cases of seed 001:
for each prompt it samples `num_generations` answers and rewards them with two functions, summed
with TRL's `reward_weights` (`judge_weight`, `format_weight`):

- `judge`: the AMR judge through `scoring.judge.judge_reward_function` (the same scoring as the
  `judge_evaluations` asset, no second copy). `judge: reference` is the offline
  `ReferenceRubricJudge` (a keyword rubric, NOT an LLM); any other value is the id of a
  `litellm`-kind model of configs/models.yaml, called through `resources.clients.llm.LLMClient`
  (built here, plain Python; keys from the environment only; its disk cache in `judge_cache_dir`).
  `priority_metrics: true` scores only the judge config's three priority metrics (seed 001's
  priority mode). `judge_every_k_steps: k` judges only on optimizer steps that are multiples of k;
  on the other steps the judge returns None for every completion and TRL leaves it out, so the
  format reward alone shapes those steps (seed 001's "eval every k steps").
- `format`: `scoring.judge.format_reward` (Decision line first, then Reasoning with numbered
  steps), on every step.

Judgements are cached in memory by (case_id, sha256 of the completion text, priority mode): a
completion repeated within a group or on a later step is judged once. Failed judgements (an LLM
call or answer that could not be used) are None for TRL, counted, and never cached.

Config: `base_model_path`, `train_file` (JSONL rows `{"case_id", "prompt"}`, see `grpo_row`),
`cases_file` (JSONL of the full case dicts of `synthetic.amr_cases.generate_amr_cases`, which the
judge scores against), plus any `GrpoSettings` field. Quantization, checkpoints and resume, the
adapter archive and the model card are those of the SFT task (training/sft.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from training.settings import from_mapping
from training.sft import (
    LoraSettings,
    TrainingRun,
    _load_model,
    _modules,
    check_chat,
    file_sha256,
    iter_jsonl_rows,
    lora_config,
    model_card,
    save_adapter,
    split_rows,
    start_run,
    torch_threads,
    train_and_measure,
    trainer_arguments,
)

if TYPE_CHECKING:  # training.tasks imports the task modules; torch loads only when a task runs
    from scoring.judge import Judge, JudgeScore
    from training.tasks import Report

TASK = "grpo_adapter"
REFERENCE_JUDGE = "reference"
PROMPT_ROLES = ("system", "user")
# Reward function names: TRL logs each function's batch mean under rewards/<name>/mean.
JUDGE_REWARD, FORMAT_REWARD = "judge", "format"
JUDGE_KEY, FORMAT_KEY = f"rewards/{JUDGE_REWARD}/mean", f"rewards/{FORMAT_REWARD}/mean"
DECISION_KEY = "judge/decision_accuracy"  # logged through TRL's log_metric on judged steps


@dataclass(frozen=True)
class GrpoSettings(LoraSettings):
    """LoRA (r 16, alpha 32, dropout 0.05, q/k/v/o/gate/up/down) and GRPO settings.

    learning_rate is seed 001's 5e-6 for a real (SFT'd) model. GRPO only learns where some sampled
    answers already score: on the tests' tiny model, warm-started on the answer format, lr 1e-3
    moved the format reward (noisily) and 2e-3 or more collapsed it to 0 within a few steps;
    the untuned embedded base model never writes a Decision line, so no lr helps it (zero reward
    variance, zero advantage). Run the SFT task first and start GRPO from its model."""

    learning_rate: float = 5e-6
    # Completions per optimizer step; TRL needs a multiple of num_generations: two cases x 4.
    per_device_train_batch_size: int = 8
    # Held-out prompts would make TRL generate and judge on every evaluation: evaluate the adapter
    # with the judge_evaluations asset instead. Only 0 is accepted.
    eval_fraction: float = 0.0
    num_generations: int = 4
    # Tokens per answer: a reference answer (decision + 7 steps) has 450-620 characters, about 150
    # tokens with a real tokenizer; 256 leaves room for a longer answer and fits the embedded
    # model's 512 positions after its prompt. Seed 001 allows 1024 on a real model.
    max_completion_length: int = 256
    temperature: float = 1.0  # sampling: a group of identical answers has no advantage to learn
    # KL weight against the base model (the adapter disabled: no second copy in memory); 0.04 is
    # the GRPO paper's value and keeps the policy from drifting into keyword lists that game the
    # reference rubric.
    beta: float = 0.04
    judge: str = REFERENCE_JUDGE  # "reference" or the id of a litellm model of configs/models.yaml
    # Seed 001's priority mode: score only the judge config's priority metrics (clinical accuracy,
    # guideline adherence, reasoning completeness), their weights renormalised. Seed 001 advises
    # priority mode with judge_every_k_steps 10 for an LLM judge (about 95% fewer calls); the
    # offline reference judge is free, so the defaults judge all six metrics on every step.
    priority_metrics: bool = False
    judge_every_k_steps: int = 1
    judge_weight: float = 1.0  # TRL reward_weights: [judge_weight, format_weight]
    format_weight: float = 0.5
    # LLM judge only: concurrent calls (a registry entry's max_concurrency wins, e.g. Groq's 4) and
    # the LLMClient disk cache (None: output_dir/judge_cache, so a re-run reuses the answers).
    judge_max_concurrency: int = 50
    judge_cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_fraction != 0:
            raise ValueError("eval_fraction must be 0 for GRPO (evaluate the adapter with the "
                             f"judge_evaluations asset), got {self.eval_fraction}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (GRPO compares answers within a "
                             f"group), got {self.num_generations}")
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(f"per_device_train_batch_size x gradient_accumulation_steps ({batch}) "
                             f"must be a multiple of num_generations ({self.num_generations})")
        for name in ("max_completion_length", "judge_every_k_steps", "judge_max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (GRPO samples), got {self.temperature}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if min(self.judge_weight, self.format_weight) < 0 \
                or self.judge_weight + self.format_weight <= 0:
            raise ValueError("judge_weight and format_weight must be >= 0, not both 0; got "
                             f"{self.judge_weight} and {self.format_weight}")
        if not self.judge.strip():
            raise ValueError("judge must be 'reference' or the id of a litellm model")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str = "task config") -> Self:
        return from_mapping(
            cls, raw, source=source,
            optional=frozenset({"max_steps", "torch_threads", "judge_cache_dir"}),
            converters={"target_modules": _modules,
                        "judge_cache_dir": lambda v: None if v is None else str(v)},
        )


# --------------------------------------------------------------------------- input files


def grpo_row(case: Mapping[str, Any], system: str | None = None) -> dict[str, Any]:
    """The train_file row of one case: its case_id and the chat prompt (an optional system
    message, then the user message `synthetic.amr_cases.case_prompt(case)`)."""
    from synthetic.amr_cases import case_prompt

    prompt = [{"role": "system", "content": system}] if system else []
    prompt.append({"role": "user", "content": case_prompt(case)})
    return {"case_id": str(case["case_id"]), "prompt": prompt}


def read_cases(path: Path) -> dict[str, dict[str, Any]]:
    """case_id -> case of a JSONL cases file, each case checked by `validate_amr_cases` (fields
    and a reference decision that follows from the guideline table); ids must be unique."""
    from synthetic.amr_cases import load_guidelines, validate_amr_cases

    guidelines = load_guidelines()
    cases: dict[str, dict[str, Any]] = {}
    for where, row in iter_jsonl_rows(path):
        case_id = row.get("case_id")
        if not isinstance(case_id, str) or not case_id.strip():
            raise ValueError(f"{where}: field 'case_id' must be a non-empty string")
        if case_id in cases:
            raise ValueError(f"{where} (case_id {case_id}): field 'case_id': duplicate")
        validate_amr_cases([row], guidelines, source=where)  # "...: case 'X' field 'f': ..."
        cases[case_id] = row
    if not cases:
        raise ValueError(f"{path}: no cases")
    return cases


def read_grpo_rows(path: Path, cases: Mapping[str, Mapping[str, Any]],
                   cases_file: Path | str = "cases_file") -> list[dict[str, Any]]:
    """Rows of a JSONL train_file, each `{"case_id": str, "prompt": [messages]}` (`grpo_row`).

    The prompt holds system/user messages and ends with the user message, which must be the case
    prompt of that case in `cases` (so the judge scores against the case the model saw). The case
    must be in the train split. Other fields are ignored. Errors name file, line, case_id, field."""
    from synthetic.amr_cases import case_prompt

    rows: list[dict[str, Any]] = []
    for where, row in iter_jsonl_rows(path):
        case_id = row.get("case_id")
        if not isinstance(case_id, str) or not case_id.strip():
            raise ValueError(f"{where}: field 'case_id' must be a non-empty string")
        where = f"{where} (case_id {case_id})"
        case = cases.get(case_id)
        if case is None:
            raise ValueError(f"{where}: field 'case_id': no such case in {cases_file}")
        if case.get("split") != "train":
            raise ValueError(f"{where}: field 'case_id': the case is in the {case.get('split')!r} "
                             f"split of {cases_file}; train on train cases only")
        prompt = row.get("prompt")
        check_chat(prompt, where, "prompt", PROMPT_ROLES)
        last = len(prompt) - 1
        if prompt[-1]["role"] != "user":
            raise ValueError(f"{where}: field 'prompt[{last}].role': the prompt must end with the "
                             "user message")
        if prompt[-1]["content"] != case_prompt(case):
            raise ValueError(f"{where}: field 'prompt[{last}].content' is not the case prompt of "
                             f"case {case_id} in {cases_file} (build rows with "
                             "training.grpo.grpo_row)")
        rows.append({"case_id": case_id,
                     "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt]})
    if not rows:
        raise ValueError(f"{path}: no training rows")
    return rows


def grpo_inputs(config: Mapping[str, Any]) -> tuple[str, Path, Path, dict[str, Any]]:
    """(base_model_path, train_file, cases_file, the remaining settings overrides)."""
    config = dict(config)
    missing = [k for k in ("base_model_path", "train_file", "cases_file") if not config.get(k)]
    if missing:
        raise ValueError(f"task config: field {missing[0]!r} is required")
    return (str(config.pop("base_model_path")), Path(config.pop("train_file")),
            Path(config.pop("cases_file")), config)


# --------------------------------------------------------------------------- rewards


class _RecordingJudge:
    """A Judge that forwards to another and keeps every JudgeScore it returns."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.name = judge.name
        self.scores: list[JudgeScore] = []

    def score_many(self, cases: Sequence[Mapping[str, Any]], responses: Sequence[str], *,
                   priority: bool = False) -> list[JudgeScore]:
        scores = self.judge.score_many(cases, responses, priority=priority)
        self.scores.extend(scores)
        return scores


class JudgeReward:
    """TRL reward function: `judge_reward_function(judge, cases, priority=...)` behind a step gate
    (`every_k`) and an in-memory cache keyed by (case_id, sha256 of the text, priority).

    The step is the optimizer step being trained, `trainer_state.global_step + 1` (TRL passes its
    TrainerState to reward functions as `trainer_state`; global_step counts finished steps).
    Off-steps return None for every completion. TRL (trl/trainer/grpo_trainer.py,
    `_calculate_rewards`) turns None into NaN; `_generate_and_score_completions` then sums the
    weighted rewards with `nansum`, so the judge drops out and the format reward alone makes the
    advantages; `rewards/judge/mean` is NaN for the batch and `log()` writes None for it. Only a
    completion for which EVERY reward function is None is unscorable (advantage 0), which cannot
    happen here because the format reward always answers.
    """

    def __init__(self, judge: Judge, cases: Sequence[Mapping[str, Any]], *,
                 priority: bool = False, every_k: int = 1) -> None:
        from scoring.judge import judge_reward_function

        if every_k < 1:
            raise ValueError(f"judge_every_k_steps must be >= 1, got {every_k}")
        self.__name__ = JUDGE_REWARD  # TRL names the function's logs after it
        self.recorder = _RecordingJudge(judge)
        self.reward = judge_reward_function(self.recorder, cases, priority=priority)
        self.priority = priority
        self.every_k = every_k
        self.cache: dict[tuple[str, str, bool], tuple[float, bool]] = {}
        self.judged_steps: list[int] = []
        self.calls = 0  # judgements made (completions sent to the judge)
        self.cache_hits = 0  # completions on judged steps answered from the cache
        self.failed = 0  # judgements without a reward (LLM call or answer unusable)
        self.decisions: list[bool] = []  # decision correct, per judged completion

    @property
    def name(self) -> str:
        return self.recorder.name

    def __call__(self, prompts: Sequence[Any] | None = None,
                 completions: Sequence[Any] | None = None,
                 case_id: Sequence[str] | None = None, trainer_state: Any = None,
                 log_metric: Any = None, **kwargs: Any) -> list[float | None]:
        from scoring.judge import _completion_text  # the text judge_reward_function scores

        if completions is None or case_id is None:
            raise ValueError("judge reward: needs completions and a case_id column")
        step = (trainer_state.global_step if trainer_state is not None else 0) + 1
        if step % self.every_k:
            return [None] * len(completions)
        self.judged_steps.append(step)
        texts = [_completion_text(c) for c in completions]
        keys = [(str(cid), hashlib.sha256(text.encode("utf-8")).hexdigest(), self.priority)
                for cid, text in zip(case_id, texts, strict=True)]
        # One judgement per distinct (case, text) not yet cached; a group often repeats answers.
        todo = {key: text for key, text in zip(keys, texts, strict=True) if key not in self.cache}
        self.cache_hits += len(keys) - len(todo)
        fresh: dict[tuple[str, str, bool], tuple[float, bool] | None] = {}
        if todo:
            before = len(self.recorder.scores)
            rewards = self.reward(completions=list(todo.values()),
                                  case_id=[key[0] for key in todo])
            scores = self.recorder.scores[before:]
            self.calls += len(todo)
            for key, reward, score in zip(todo, rewards, scores, strict=True):
                if reward is None:
                    self.failed += 1
                    fresh[key] = None
                else:
                    fresh[key] = self.cache[key] = (float(reward), score.decision_correct)
        out: list[float | None] = []
        correct: list[bool] = []
        for key in keys:
            entry = self.cache.get(key) if key not in fresh else fresh[key]
            out.append(None if entry is None else entry[0])
            if entry is not None:
                correct.append(entry[1])
        self.decisions.extend(correct)
        if log_metric is not None and correct:
            log_metric(DECISION_KEY, sum(correct) / len(correct))
        return out

    def counters(self) -> dict[str, Any]:
        """judged_steps, judge_calls, judge_cache_hits, judge_failed, decision_accuracy and the LLM
        requests, disk-cache hits and cost of the judgements made (summarize_scores)."""
        from scoring.judge import summarize_scores

        summary = summarize_scores(self.recorder.scores)
        return {
            "judged_steps": list(self.judged_steps),
            "judge_calls": self.calls,
            "judge_cache_hits": self.cache_hits,
            "judge_failed": self.failed,
            "decision_accuracy": (sum(self.decisions) / len(self.decisions)
                                  if self.decisions else None),
            "judge_llm_requests": summary["n_calls"],
            "judge_llm_disk_cache_hits": summary["n_cached"],
            "judge_cost_usd": summary["cost_usd"],
        }


def format_reward_function(completions: Sequence[Any] | None = None,
                           **_kwargs: Any) -> list[float]:
    """TRL reward function: `scoring.judge.format_reward` of each completion."""
    from scoring.judge import _completion_text, format_reward

    return [format_reward(_completion_text(c)) for c in completions or []]


format_reward_function.__name__ = FORMAT_REWARD


def build_judge(judge: str, cache_dir: Path | str | None = None,
                max_concurrency: int = 50, client: Any | None = None) -> tuple[Judge, Any]:
    """(judge, LLMClient to close or None): the reference rubric for "reference", else an
    LLMJudge on the litellm model of configs/models.yaml with that id, calling through `client`
    (the caller's LLMClient, which the caller closes) or a new LLMClient on `cache_dir`. An
    unknown id, a model that is not litellm or an unavailable one (e.g. its key variable unset)
    raises at once."""
    from scoring.judge import (
        LLMJudge,
        ReferenceRubricJudge,
        litellm_judge_model,
        load_judge_config,
    )

    config = load_judge_config()
    if judge == REFERENCE_JUDGE:
        return ReferenceRubricJudge(config), None
    model = litellm_judge_model(judge, "task config: field 'judge'")
    if client is not None:
        return LLMJudge(client, model, config), None
    from resources.clients.llm import LLMClient

    client = LLMClient(cache_dir=cache_dir, max_concurrency=max_concurrency)
    return LLMJudge(client, model, config), client


def build_judge_reward(settings: GrpoSettings, cases: Sequence[Mapping[str, Any]],
                       output_dir: Path) -> tuple[JudgeReward, Any]:
    """The task's judge reward (and the LLMClient to close, or None) for `settings`."""
    cache_dir = settings.judge_cache_dir or Path(output_dir) / "judge_cache"
    judge, client = build_judge(settings.judge, cache_dir, settings.judge_max_concurrency)
    return JudgeReward(judge, cases, priority=settings.priority_metrics,
                       every_k=settings.judge_every_k_steps), client


# --------------------------------------------------------------------------- the task


def grpo_task(config: dict, output_dir: Path, report: Report) -> dict:
    """Train a GRPO LoRA adapter on the train_file's cases over `config["base_model_path"]`."""
    base_model_path, train_file, cases_file, overrides = grpo_inputs(config)
    settings = GrpoSettings.from_mapping(overrides)
    cases = read_cases(cases_file)
    rows = read_grpo_rows(train_file, cases, cases_file)
    output_dir = Path(output_dir)
    judge_reward, client = build_judge_reward(settings, list(cases.values()), output_dir)
    try:
        run = start_run(output_dir, settings.quantization, TASK, report)
        with torch_threads(settings.torch_threads):
            trainer = _build_trainer(base_model_path, rows, settings, run, judge_reward, report)
            metrics = train_and_measure(trainer, run)
    finally:
        if client is not None:
            client.close()
    metadata: dict[str, Any] = {
        **save_adapter(trainer, run.output_dir), **metrics,
        "seconds_per_step": metrics["wall_s"] / max(1, metrics["steps"] - _resumed_steps(run)),
        "judge": judge_reward.name,
        "judge_setting": settings.judge,
        "priority_metrics": settings.priority_metrics,
        "metrics_scored": list(judge_reward.recorder.judge.config.metric_names(
            settings.priority_metrics)),
        "judge_every_k_steps": settings.judge_every_k_steps,
        **judge_reward.counters(),
        **reward_metrics(trainer.state.log_history),
        "num_generations": settings.num_generations,
        "judge_weight": settings.judge_weight,
        "format_weight": settings.format_weight,
        "train_rows": len(trainer.train_dataset),
        "cases": len(cases),
        "dataset_sha256": file_sha256(train_file),
        "cases_sha256": file_sha256(cases_file),
    }
    (run.output_dir / "model_card.md").write_text(
        model_card(base_model_path, settings, metadata, task=TASK), encoding="utf-8")
    return metadata


def _resumed_steps(run: TrainingRun) -> int:
    """Optimizer steps done before this run (the checkpoint it resumed from), 0 for a fresh one."""
    return int(Path(run.resume).name.rsplit("-", 1)[-1]) if run.resume else 0


def reward_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per logging step: the format reward (`format_rewards`) and, where the judge ran, the judge
    reward (`judge_rewards`, with `judge_reward_steps`); their first and last values."""
    train = [e for e in log_history if "loss" in e]
    judged = [e for e in train if e.get(JUDGE_KEY) is not None]
    formats = [float(e[FORMAT_KEY]) for e in train if e.get(FORMAT_KEY) is not None]
    judges = [float(e[JUDGE_KEY]) for e in judged]
    return {
        "format_rewards": formats,
        "judge_rewards": judges,
        "judge_reward_steps": [int(e["step"]) for e in judged],
        "first_format_reward": formats[0] if formats else None,
        "last_format_reward": formats[-1] if formats else None,
        "first_judge_reward": judges[0] if judges else None,
        "last_judge_reward": judges[-1] if judges else None,
    }


def _build_trainer(base_model_path: str, rows: list[dict[str, Any]], settings: GrpoSettings,
                   run: TrainingRun, judge_reward: JudgeReward, report: Report) -> Any:
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = _load_model(base_model_path, run.quantization)
    dataset, _ = split_rows(rows, settings)  # eval_fraction is 0: no held-out prompts
    common = trainer_arguments(settings, run.checkpoints, run.quantization, has_eval=False)
    # GRPOConfig has no max_length: prompts go in whole, answers up to max_completion_length
    del common["max_length"]
    args = GRPOConfig(
        **{**common,
           # GRPO counts prompt + completion tokens itself; the Trainer's count looks for
           # input_ids, which GRPO batches do not have, and would warn on every step.
           "include_num_input_tokens_seen": "no"},
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        reward_weights=[settings.judge_weight, settings.format_weight],
        log_completions=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[judge_reward, format_reward_function],
                          args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=lora_config(settings),
                          callbacks=[_report_callback(report)])
    # The printer writes Python dicts to stdout, where a standalone task prints JSON lines.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _report_callback(report: Report) -> Any:
    """A TrainerCallback reporting each training log: step, total, loss, learning rate, reward
    (TRL's weighted sum), judge_reward (None on steps the judge skipped), format_reward, the
    judged completions' decision accuracy, KL and mean completion length."""
    from transformers import TrainerCallback

    optional = {JUDGE_KEY: "judge_reward", FORMAT_KEY: "format_reward",
                DECISION_KEY: "decision_accuracy", "kl": "kl",
                "completions/mean_length": "completion_length"}

    class GrpoReportCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            more = {name: None if logs.get(key) is None else float(logs[key])
                    for key, name in optional.items()}
            report(step=state.global_step, total=state.max_steps, loss=float(logs["loss"]),
                   learning_rate=float(logs.get("learning_rate", 0.0)),
                   reward=None if logs.get("reward") is None else float(logs["reward"]), **more)

    return GrpoReportCallback()
