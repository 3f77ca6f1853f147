"""configs/serving.yaml as frozen dataclasses: the one source of the server's settings (no defaults
here: every value comes from the file; tests and the CLI change them with `dataclasses.replace`)."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVING_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "serving.yaml"
INJECTION_POLICIES = ("flag", "block")


@dataclass(frozen=True)
class GuardrailSettings:
    """What the guardrails of serving/guardrails.py do to each request."""

    redact_phi: bool
    injection_policy: str
    json_retries: int

    def __post_init__(self) -> None:
        if self.injection_policy not in INJECTION_POLICIES:
            raise ValueError(f"field 'guardrails.injection_policy': {self.injection_policy!r} is "
                             f"not one of {', '.join(INJECTION_POLICIES)}")
        if self.json_retries < 0:
            raise ValueError(f"field 'guardrails.json_retries' must be >= 0, got "
                             f"{self.json_retries}")


@dataclass(frozen=True)
class ServingSettings:
    """The server's settings; configs/serving.yaml says what each one does."""

    host: str
    port: int
    token_env: str
    batching: bool
    max_batch_size: int
    max_wait_ms: float
    cache_entries: int
    max_request_bytes: int
    rate_limit_per_minute: float
    max_tokens: int
    default_max_tokens: int
    default_temperature: float
    torch_threads: int | None
    guardrails: GuardrailSettings

    def __post_init__(self) -> None:
        positive = {"port": self.port, "max_batch_size": self.max_batch_size,
                    "max_request_bytes": self.max_request_bytes, "max_tokens": self.max_tokens,
                    "default_max_tokens": self.default_max_tokens}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"field {name!r} must be >= 1, got {value}")
        nonnegative = {"max_wait_ms": self.max_wait_ms, "cache_entries": self.cache_entries,
                       "rate_limit_per_minute": self.rate_limit_per_minute,
                       "default_temperature": self.default_temperature}
        for name, value in nonnegative.items():
            if value < 0:
                raise ValueError(f"field {name!r} must be >= 0, got {value}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"field 'default_max_tokens' ({self.default_max_tokens}) exceeds "
                             f"'max_tokens' ({self.max_tokens})")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"field 'torch_threads' must be >= 1 or null, got "
                             f"{self.torch_threads}")

    @property
    def loopback(self) -> bool:
        """Whether `host` only accepts connections from this machine."""
        return is_loopback(self.host)


@dataclass(frozen=True)
class JsonReminders:
    """What the server adds before generating again when a JSON reply is invalid."""

    version: str
    json_object: str
    json_schema: str  # string.Template with ${schema}


def load_json_reminders(path: str | Path | None = None) -> JsonReminders:
    """The `serving_json_reminder` section of configs/prompts.yaml (or another prompt file)."""
    from scoring.audit_prompt import prompt_section

    path, raw = prompt_section(path, "serving_json_reminder",
                               ("version", "json_object", "json_schema"))
    if "${schema}" not in raw["json_schema"]:
        raise ValueError(f"{path}: field 'serving_json_reminder.json_schema' must contain "
                         "${schema}")
    return JsonReminders(raw["version"], raw["json_object"], raw["json_schema"])


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_serving_settings(path: str | Path | None = None) -> ServingSettings:
    """Read and check the settings; a bad field raises ValueError naming the file and the field."""
    path = Path(path) if path else SERVING_CONFIG
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the serving settings: {err}") from None
    return settings_from_mapping(raw, source=str(path))


@functools.cache
def serving_token_env() -> str:
    """configs/serving.yaml `token_env`, read once: the variable holding the server's bearer
    token (the default api_key_env of a served registry entry and of local_server)."""
    return load_serving_settings().token_env


def settings_from_mapping(raw: Any, source: str = "serving settings") -> ServingSettings:
    """`ServingSettings` from a mapping shaped like configs/serving.yaml."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping of settings, got {type(raw).__name__}")
    guardrails = _build(GuardrailSettings, raw.get("guardrails"), source, "guardrails.")
    return _build(ServingSettings, {**raw, "guardrails": guardrails}, source, "")


_CONVERTERS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _build(cls: type, raw: Any, source: str, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: field {prefix.rstrip('.') or 'settings'!r} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ValueError(f"{source}: field {prefix + unknown[0]!r} is unknown; known: "
                         f"{', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        if name not in raw:
            raise ValueError(f"{source}: field {prefix + name!r} is missing")
        value, kind = raw[name], str(spec.type)
        if kind == "GuardrailSettings":
            values[name] = value
            continue
        if value is None and kind.endswith("| None"):
            values[name] = None
            continue
        target = _CONVERTERS[kind.split(" |")[0]]
        bad = (isinstance(value, bool) != (target is bool)
               or (target is str and not isinstance(value, str))
               or (target is int and isinstance(value, float) and not value.is_integer()))
        try:
            if bad:
                raise TypeError
            values[name] = target(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: field {prefix + name!r}: cannot use {value!r} as "
                             f"{target.__name__}") from None
    try:
        return cls(**values)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
