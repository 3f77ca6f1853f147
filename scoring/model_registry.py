"""The candidate-model registry (configs/models.yaml): one entry per model the benchmark can run.

The registry holds environment variable NAMES only. Secret values are read from the environment at
call time by the LLM client and never stored in a `CandidateModel`, so its repr is safe to log.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from synthetic.contracts import SPLITS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
KINDS = ("rule_based", "litellm", "local", "served")
# The benchmarks a model can be a candidate in: the GxP batch-record audit (gxp_predictions,
# gxp_scores, the leaderboard) and the AMR prescription validation scored by the judge
# (judge_evaluations), and grounded answering over the RAG index (rag_eval). Defaults by kind:
# the reference auditor and the local models audit only; an API model audits and judges.
BENCHMARKS = ("gxp_audit", "amr_judge", "rag")
GXP_AUDIT, AMR_JUDGE, RAG = BENCHMARKS
DEFAULT_BENCHMARKS = {"rule_based": (GXP_AUDIT,), "local": (GXP_AUDIT,),
                      "served": (GXP_AUDIT,), "litellm": (GXP_AUDIT, AMR_JUDGE)}
RESPONSE_FORMATS = ("json_schema", "json_object", "none")
ID_PATTERN = re.compile(r"^[a-z0-9_.-]+$")
ENV_NAME_PATTERN = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_ENV_FIELDS = ("api_base_env", "api_key_env", "model_name_env")
_FIELDS = frozenset({"id", "kind", "litellm_model", "required_env", "api_base", "description",
                     "response_format", "temperature", "max_tokens", "timeout_s", "max_concurrency",
                     "rpm", "enabled", "adapter", "batch_size", "splits", "benchmarks",
                     "served_model", "top_logprobs", *_ENV_FIELDS})
# Fields a `served` entry may set: a local model of this registry (`served_model`) answered by the
# GxPLab server (serving/) through litellm as `openai/<served_model>`. `api_base_env` names a
# running server (`make serve`); when it is unset the evaluation starts one on loopback.
_SERVED_FIELDS = frozenset({"id", "kind", "served_model", "description", "enabled", "splits",
                            "benchmarks", "max_tokens", "max_concurrency", "timeout_s",
                            "api_base_env", "api_key_env"})
SERVED_DEFAULT_SPLITS = ("benchmark",)
# Fields a `local` entry may set (it runs training/inference.py on the base_model asset, plus the
# adapter asset named by `adapter`).
_LOCAL_FIELDS = frozenset({"id", "kind", "adapter", "description", "enabled", "temperature",
                           "max_tokens", "batch_size", "splits", "benchmarks"})
# A local model's default evaluation splits: all but `train`, which gxp_audit_adapter is trained on
# (scoring a model on its own training data measures memory, not auditing).
LOCAL_DEFAULT_SPLITS = ("benchmark", "control_clean", "control_faulty", "adversarial")


@dataclass(frozen=True)
class CandidateModel:
    """One candidate model of the benchmark."""

    id: str
    kind: str
    litellm_model: str | None = None
    required_env: tuple[str, ...] = ()
    api_base: str | None = None
    api_base_env: str | None = None
    api_key_env: str | None = None
    model_name_env: str | None = None
    response_format: str = "json_object"
    temperature: float = 0.0
    max_tokens: int = 4096
    timeout_s: float | None = None
    max_concurrency: int | None = None
    rpm: float | None = None
    description: str = ""
    enabled: bool = True
    adapter: str | None = None  # local/served kind: the adapter asset (None: the base alone)
    served_model: str | None = None  # served kind: the local model the server answers as
    splits: tuple[str, ...] | None = None  # splits the benchmark and the sensor run (None: all)
    batch_size: int = 32  # local kind: chats generated together
    benchmarks: tuple[str, ...] = (GXP_AUDIT,)  # the benchmarks it is a candidate in
    top_logprobs: int | None = None  # litellm kind: ask for logprobs (judges: G-Eval scores)

    @property
    def model_assets(self) -> tuple[str, ...]:
        """Assets a local model is built from (base_model, then its adapter if any)."""
        if self.kind not in ("local", "served"):
            return ()
        return ("base_model", self.adapter) if self.adapter else ("base_model",)


def load_model_registry(path: Path | str | None = None, *,
                        benchmark: str | None = None) -> list[CandidateModel]:
    """Load and check configs/models.yaml (or another registry file); with `benchmark`, only the
    models that are candidates in it (BENCHMARKS)."""
    if benchmark is not None and benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark {benchmark!r} is not one of {BENCHMARKS}")
    path = Path(path) if path else CONFIG_DIR / "models.yaml"
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list) or not raw["models"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'models' list")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - _FIELDS:
        raise ValueError(f"{path}: 'defaults' must be a mapping of entry fields, "
                         f"unknown: {sorted(set(defaults) - _FIELDS)}")
    models: list[CandidateModel] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw["models"]):
        model = parse_model_entry(entry, defaults, f"{path}: models[{index}]")
        if model.id in seen:
            raise ValueError(f"{path}: models[{index}] field 'id': duplicate id {model.id!r} "
                             f"(first used by models[{seen[model.id]}])")
        seen[model.id] = index
        models.append(model)
    models = [_resolve_served(m, models, path) if m.kind == "served" else m for m in models]
    return [m for m in models if benchmark is None or benchmark in m.benchmarks]


def enabled_candidates(benchmark: str, only: Sequence[str] | None = None, *,
                       field: str = "models", kinds: Sequence[str] = KINDS,
                       registry: Sequence[CandidateModel] | None = None) -> list[CandidateModel]:
    """The enabled candidates of `benchmark` (registry order), restricted to `only` when given;
    ValueError naming `field` and the unknown ids, or a candidate of a kind not in `kinds`."""
    models = [m for m in (registry if registry is not None
                          else load_model_registry(benchmark=benchmark))
              if m.enabled and benchmark in m.benchmarks]
    other_kinds = [m.id for m in models if m.kind not in kinds]
    if other_kinds:
        raise ValueError(f"only {', '.join(kinds)} models can be {benchmark} candidates so far; "
                         f"configs/models.yaml lists {other_kinds}")
    if only is None:
        return models
    unknown = sorted(set(only) - {m.id for m in models})
    if unknown:
        raise ValueError(f"config field {field!r}: {unknown} are not enabled {benchmark} "
                         f"candidates of configs/models.yaml ({', '.join(m.id for m in models)})")
    return [m for m in models if m.id in set(only)]


def _resolve_served(model: CandidateModel, models: list[CandidateModel],
                    path: Path) -> CandidateModel:
    """A served entry with its local model's adapter and decoding (unless set on the entry)."""
    local = next((m for m in models if m.id == model.served_model and m.kind == "local"), None)
    if local is None:
        raise ValueError(f"{path}: model {model.id!r} field 'served_model': "
                         f"{model.served_model!r} is not a local model of the registry")
    return replace(model, adapter=local.adapter, temperature=local.temperature,
                   max_tokens=model.max_tokens or local.max_tokens)


def parse_model_entry(entry: Any, defaults: Mapping[str, Any], where: str) -> CandidateModel:
    """One registry entry -> CandidateModel; errors name `where`, the id and the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(entry).__name__}")
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not ID_PATTERN.match(model_id):
        raise ValueError(f"{where} field 'id': {model_id!r} must match {ID_PATTERN.pattern}")
    where = f"{where} (id {model_id!r})"
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; allowed {sorted(_FIELDS)}")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where} field 'kind': {kind!r} is not one of {KINDS}")
    source = {**defaults, **entry} if kind == "litellm" else entry  # defaults: litellm only
    benchmarks = _benchmarks(source.get("benchmarks", list(DEFAULT_BENCHMARKS[kind])), where)
    if kind == "rule_based":
        if benchmarks != (GXP_AUDIT,):
            raise ValueError(f"{where} field 'benchmarks': the rule-based auditor runs only "
                             f"{GXP_AUDIT!r}, got {list(benchmarks)}")
        return CandidateModel(id=model_id, kind=kind, description=str(entry.get("description", "")),
                              enabled=_bool(entry.get("enabled", True), where, "enabled"),
                              benchmarks=benchmarks)
    if kind == "local":
        return replace(_local_entry(entry, model_id, where), benchmarks=benchmarks)
    if kind == "served":
        if benchmarks != (GXP_AUDIT,):
            raise ValueError(f"{where} field 'benchmarks': a served model runs only "
                             f"{GXP_AUDIT!r} so far, got {list(benchmarks)}")
        return replace(_served_entry(entry, model_id, where), benchmarks=benchmarks)
    local_only = sorted(set(entry) & {"adapter", "batch_size", "splits"})
    if local_only:
        raise ValueError(f"{where}: field(s) {local_only} apply to kind local only")
    merged = {**defaults, **entry}

    def field(name: str, check: Any, problem: str, default: Any = None) -> Any:
        value = merged.get(name, default)
        if value is not None and not check(value):
            raise ValueError(f"{where} field {name!r}: {value!r} {problem}")
        return value

    litellm_model = field("litellm_model", lambda v: isinstance(v, str) and "/" in v,
                          "must be a '<provider>/<model>' string")
    if litellm_model is None:
        raise ValueError(f"{where} field 'litellm_model': required for kind litellm")
    required_env = field("required_env", lambda v: isinstance(v, list), "must be a list", [])
    for name in (*required_env, *(merged.get(key) for key in _ENV_FIELDS)):
        if name is not None and not (isinstance(name, str) and ENV_NAME_PATTERN.match(name)):
            # Catches a secret pasted where a variable name belongs, without echoing it.
            raise ValueError(f"{where}: required_env/*_env fields must hold environment variable "
                             f"NAMES matching {ENV_NAME_PATTERN.pattern}; got a non-name value")
    return CandidateModel(
        id=model_id, kind=kind, litellm_model=litellm_model, required_env=tuple(required_env),
        api_base=field("api_base", lambda v: isinstance(v, str) and "://" in v, "must be a URL"),
        api_base_env=merged.get("api_base_env"), api_key_env=merged.get("api_key_env"),
        model_name_env=merged.get("model_name_env"),
        response_format=field("response_format", lambda v: v in RESPONSE_FORMATS,
                              f"is not one of {RESPONSE_FORMATS}", "json_object"),
        temperature=float(field("temperature", lambda v: number(v) or v == 0, "must be >= 0", 0)),
        max_tokens=field("max_tokens", lambda v: number(v) and isinstance(v, int),
                         "must be a positive integer", 4096),
        timeout_s=field("timeout_s", number, "must be a positive number"),
        max_concurrency=field("max_concurrency", lambda v: number(v) and isinstance(v, int),
                              "must be a positive integer"),
        rpm=field("rpm", number, "must be a positive number"),
        top_logprobs=field("top_logprobs", lambda v: isinstance(v, int) and not isinstance(
            v, bool) and 1 <= v <= 20, "must be an integer from 1 to 20"),
        description=str(merged.get("description", "")),
        enabled=_bool(merged.get("enabled", True), where, "enabled"),
        benchmarks=benchmarks,
    )


def _local_entry(entry: dict, model_id: str, where: str) -> CandidateModel:
    _only_fields(entry, _LOCAL_FIELDS, "local", where)
    adapter = entry.get("adapter")
    if adapter is not None and not (isinstance(adapter, str) and ID_PATTERN.match(adapter)):
        raise ValueError(f"{where} field 'adapter': {adapter!r} must name an adapter asset")
    temperature = entry.get("temperature", 0)
    if not (number(temperature) or temperature == 0):
        raise ValueError(f"{where} field 'temperature': {temperature!r} must be >= 0")
    for name, default in (("max_tokens", 96), ("batch_size", 32)):
        value = entry.get(name, default)
        if not (number(value) and isinstance(value, int)):
            raise ValueError(f"{where} field {name!r}: {value!r} must be a positive integer")
    splits = _splits(entry, LOCAL_DEFAULT_SPLITS, where)
    return CandidateModel(
        id=model_id, kind="local", adapter=adapter, temperature=float(temperature),
        splits=tuple(splits),
        max_tokens=entry.get("max_tokens", 96), batch_size=entry.get("batch_size", 32),
        response_format="json_object", description=str(entry.get("description", "")),
        enabled=_bool(entry.get("enabled", True), where, "enabled"))


def _only_fields(entry: dict, allowed: frozenset[str], kind: str, where: str) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{where}: field(s) {sorted(unknown)} do not apply to kind {kind}; "
                         f"allowed {sorted(allowed)}")


def _splits(entry: dict, default: tuple[str, ...], where: str) -> list[str]:
    splits = entry.get("splits", list(default))
    if not (isinstance(splits, list) and splits and set(splits) <= set(SPLITS)):
        raise ValueError(f"{where} field 'splits': {splits!r} must be a non-empty list of "
                         f"{', '.join(SPLITS)}")
    return splits


def _served_entry(entry: dict, model_id: str, where: str) -> CandidateModel:
    from serving.settings import serving_token_env  # configs/serving.yaml, read once

    _only_fields(entry, _SERVED_FIELDS, "served", where)
    served = entry.get("served_model")
    if not (isinstance(served, str) and ID_PATTERN.match(served)):
        raise ValueError(f"{where} field 'served_model': {served!r} must name a local model")
    splits = _splits(entry, SERVED_DEFAULT_SPLITS, where)
    for name in ("max_tokens", "max_concurrency"):
        value = entry.get(name)
        if value is not None and not (number(value) and isinstance(value, int)):
            raise ValueError(f"{where} field {name!r}: {value!r} must be a positive integer")
    for name in ("api_base_env", "api_key_env"):
        value = entry.get(name)
        if value is not None and not (isinstance(value, str) and ENV_NAME_PATTERN.match(value)):
            raise ValueError(f"{where} field {name!r}: must be an environment variable NAME")
    return CandidateModel(
        id=model_id, kind="served", served_model=served, litellm_model=f"openai/{served}",
        splits=tuple(splits), max_tokens=entry.get("max_tokens", 0),
        max_concurrency=entry.get("max_concurrency"), timeout_s=entry.get("timeout_s"),
        api_base_env=entry.get("api_base_env"),
        api_key_env=entry.get("api_key_env") or serving_token_env(),
        # The server constrains the answer to the schema the caller sends (the record audit's),
        # as the in-process local model is: the same answers, parsed the same way.
        response_format="json_schema", description=str(entry.get("description", "")),
        enabled=_bool(entry.get("enabled", True), where, "enabled"))


def model_availability(model: CandidateModel,
                       environ: Mapping[str, str] = os.environ) -> tuple[bool, str]:
    """Whether `model` can run with this environment, and why not (e.g. a missing key)."""
    if not model.enabled:
        return False, "skipped: disabled in the model registry (enabled: false)"
    if model.kind == "rule_based":
        return True, "available: rule-based, runs locally"
    if model.kind == "local":
        return True, f"available: local model ({' + '.join(model.model_assets)})"
    if model.kind == "served":
        where = (f"the server at ${model.api_base_env}"
                 if model.api_base_env and environ.get(model.api_base_env, "").strip()
                 else "a GxPLab server started on loopback")
        return True, f"available: {model.served_model} answered by {where}"
    needed = list(model.required_env)
    if model.api_base_env and not model.api_base and model.api_base_env not in needed:
        needed.append(model.api_base_env)
    missing = [name for name in needed if not environ.get(name, "").strip()]
    if len(missing) == 1:
        return False, f"skipped: environment variable {missing[0]} is not set"
    if missing:
        return False, f"skipped: environment variables {', '.join(missing)} are not set"
    return True, "available"


def resolve_litellm_model(model: CandidateModel, environ: Mapping[str, str] = os.environ) -> str:
    """The litellm model string, with the model name from `model_name_env` when that is set."""
    if model.litellm_model is None:
        raise ValueError(f"model {model.id!r} (kind {model.kind}) has no litellm_model")
    name = environ.get(model.model_name_env, "").strip() if model.model_name_env else ""
    if not name:
        return model.litellm_model
    provider = model.litellm_model.split("/", 1)[0]
    return name if name.startswith(f"{provider}/") else f"{provider}/{name}"


def resolve_api_base(model: CandidateModel, environ: Mapping[str, str] = os.environ) -> str | None:
    """The API base URL: `api_base_env`'s value when set, else `api_base`."""
    from_env = environ.get(model.api_base_env, "").strip() if model.api_base_env else ""
    return from_env or model.api_base


def number(value: Any) -> bool:
    """A positive int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _benchmarks(value: Any, where: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and set(value) <= set(BENCHMARKS)
            and len(set(value)) == len(value)):
        raise ValueError(f"{where} field 'benchmarks': {value!r} must be a non-empty list of "
                         f"distinct names from {', '.join(BENCHMARKS)}")
    return tuple(value)


def _bool(value: Any, where: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} field {name!r}: {value!r} must be true or false")
    return value
