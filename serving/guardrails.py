"""Guardrails as pure functions, for the server and for retrieval/: PHI redaction, prompt-injection
detection, and JSON enforcement of a model's answer.

What they do and do not do is said in serving/README.md: the PHI patterns are regular expressions,
so they catch the listed formats, not PHI in general (no names, addresses); prompt injection is the
shared detector of synthetic/injection_screen.py, measured on held-out attack families.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from synthetic.injection_screen import CUE_NAMES, screen_text

REDACTION = "[REDACTED:{name}]"


def _nhs_check(digits: str) -> bool:
    """NHS number modulus-11 check digit (weights 10..2 on the first nine digits)."""
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


@dataclass(frozen=True)
class PhiPattern:
    """One PHI format: a regex, and optionally a check on the match's digits."""

    name: str
    regex: re.Pattern[str]
    check: Callable[[str], bool] | None = None

    def accepts(self, match: re.Match[str]) -> bool:
        return self.check is None or self.check(re.sub(r"\D", "", match.group(0)))


_DATE = (r"(?:\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{4}-\d{2}-\d{2}|"
         r"\d{1,2}\s+[A-Za-z]{3,9}\.?\s+\d{4}|[A-Za-z]{3,9}\.?\s+\d{1,2},?\s+\d{4})")
# Order matters: a span redacted by one pattern is not seen by the later ones (an NHS number
# with a valid check digit is not also a phone number).
PHI_PATTERNS: tuple[PhiPattern, ...] = (
    PhiPattern("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    PhiPattern("date_of_birth", re.compile(
        r"\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|born(?:\s+on)?)\s*[:#=]?\s*" + _DATE,
        re.IGNORECASE)),
    PhiPattern("mrn", re.compile(
        r"\b(?:MRN|medical\s+record\s+(?:number|no\.?|#))\s*[:#=]?\s*[A-Z]{0,3}-?\d{5,12}\b",
        re.IGNORECASE)),
    PhiPattern("us_ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")),
    PhiPattern("nhs_number", re.compile(r"\b\d{3}[ -]?\d{3}[ -]?\d{4}\b"), _nhs_check),
    PhiPattern("phone", re.compile(
        r"(?:(?<![\w+])\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|(?<![\w-])\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
        r"|(?<![\w+])\+\d{2,3}[\s.-]?\d{2,4}[\s.-]\d{3,4}[\s.-]\d{3,4}\b")),
)
PHI_PATTERN_NAMES = tuple(p.name for p in PHI_PATTERNS)


@dataclass(frozen=True)
class Redaction:
    """Text with its PHI replaced by `[REDACTED:<pattern>]`, and the count per pattern."""

    text: str
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def redact_phi(text: str, patterns: Iterable[PhiPattern] = PHI_PATTERNS) -> Redaction:
    """Replace every match of the PHI patterns, in order, and count them."""
    counts: Counter[str] = Counter()
    for pattern in patterns:
        def replace(match: re.Match[str], pattern: PhiPattern = pattern) -> str:
            if not pattern.accepts(match):
                return match.group(0)
            counts[pattern.name] += 1
            return REDACTION.format(name=pattern.name)

        text = pattern.regex.sub(replace, text)
    return Redaction(text, dict(counts))


def redact_json_value(value: Any, counts: Counter[str] | None = None) -> tuple[Any, Counter[str]]:
    """`value` (parsed JSON) with PHI redacted in every string, and in integers whose digits are
    PHI (they become the redaction string); the counts per pattern."""
    counts = Counter() if counts is None else counts
    if isinstance(value, str):
        redaction = redact_phi(value)
        counts.update(redaction.counts)
        return redaction.text, counts
    if isinstance(value, int) and not isinstance(value, bool):
        redaction = redact_phi(str(value))
        if redaction.total:
            counts.update(redaction.counts)
            return redaction.text, counts
        return value, counts
    if isinstance(value, list):
        return [redact_json_value(v, counts)[0] for v in value], counts
    if isinstance(value, dict):
        return {k: redact_json_value(v, counts)[0] for k, v in value.items()}, counts
    return value, counts


# --- prompt injection ------------------------------------------------------------------------

# One detector for the server and the reference auditor: synthetic/injection_screen.py (concept
# cues after normalisation; its families, held-out detection rate and false-positive rate are in
# serving/README.md). The rule names it reports are its cue names.
INJECTION_RULES: tuple[str, ...] = CUE_NAMES


@dataclass(frozen=True)
class InjectionScreen:
    """The injection rules one text matched (empty: nothing found)."""

    rules: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.rules)


def detect_injection(text: str) -> InjectionScreen:
    """The cues of the shared injection detector that flag `text` (empty: not flagged)."""
    verdict = screen_text(text)
    return InjectionScreen(verdict.cues if verdict.flagged else ())


def screen_retrieved(texts: Iterable[str]) -> list[InjectionScreen]:
    """One screen per retrieved text (chunks, tool results): retrieved data must never carry
    instructions, so any match is an attack on whoever reads it next."""
    return [detect_injection(text) for text in texts]


# --- JSON enforcement ------------------------------------------------------------------------


class InvalidSchemaError(ValueError):
    """The JSON schema a caller asked for is not a valid JSON schema."""


def check_schema(schema: Any) -> None:
    """Raise InvalidSchemaError unless `schema` is a valid JSON schema (its own meta-schema)."""
    if not isinstance(schema, dict):
        raise InvalidSchemaError(f"a JSON schema must be an object, got {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        raise InvalidSchemaError(f"invalid JSON schema: {err.message}") from None


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object that parses, starting at some `{` of `text`; None if there is none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def schema_error(value: Any, schema: Mapping[str, Any]) -> str | None:
    """Why `value` does not validate against `schema` (a checked schema); None if it does."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"the JSON object does not match the schema at {where}: {error.message}"


@dataclass(frozen=True)
class JsonCheck:
    """The clean JSON object of an answer (or why there is none), and the PHI redacted in it."""

    value: dict[str, Any] | None
    error: str | None = None
    redactions: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None


def enforce_json(text: str, schema: Mapping[str, Any] | None = None, *,
                 redact: bool = False) -> JsonCheck:
    """The first JSON object in `text`, with PHI redacted in its values if `redact`, valid against
    `schema` if one is given (after redaction: what is returned is what was validated)."""
    value = first_json_object(text)
    if value is None:
        return JsonCheck(None, "the answer holds no JSON object")
    counts: Counter[str] = Counter()
    if redact:
        value, counts = redact_json_value(value)
    error = schema_error(value, schema) if schema is not None else None
    return JsonCheck(None if error else value, error, dict(counts))
