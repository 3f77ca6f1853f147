"""The one prompt-injection detector: used by the reference auditor (record comments) and by the
server's guardrail (user messages, retrieved chunks). Plain Python, no dagster: rules first, then
for what they let pass a small scikit-learn classifier trained at first use
(synthetic/injection_model.py; `prepare` builds it ahead of time).

It looks for concepts, not for the benchmark's wording:

1. normalise: Unicode NFKC (full-width letters), invisible characters removed (zero-width,
   bidi controls: category Cf), case folded; then variants of the text are screened too:
   look-alike letters folded to Latin (confusable-homoglyphs' table), leetspeak undone, spaced
   letters and words split by hyphens, dots or underscores joined, URL escapes, HTML entities
   and \\u escapes undone, base64 / base32 / hex runs decoded, ROT13 and reversed text
   (synthetic/injection_normalise.py).
2. split into segments: lines, and the string values of a line that is a JSON object (a batch
   record), so cues of different fields or of a long prompt are never added up.
3. cues per segment. Strong cues decide alone (chat-template or role tokens, "ignore the previous
   instructions", role-play, asking for the system prompt). Weak cues need a second weak cue of
   another kind in the same segment: addressed to an AI / model / auditor / reviewer, an order
   to suppress findings, a claimed authority, a claimed test or maintenance mode, a fake answer
   or tool call (a verdict disguised as JSON, XML, YAML, a table or tool output), a reset of the
   task, a claim that the record was already verified. Each cue has forms in English and in
   many other languages (synthetic/injection_cues.py lists them).
4. the classifier (character and word n-grams of the normalised readings, logistic regression)
   scores the segments the rules did not flag; at or over its threshold, the text is flagged.

What it misses is measured, not guessed: bench/bench_injection_detection.py prints the rates per
family (held-out families included) and on benign batch-record comments (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from synthetic.injection_cues import CUE_NAMES, MODEL_CUE, STRONG_CUES, WEAK_CUES
from synthetic.injection_normalise import (
    ENCODED_HINT,
    normalise,
    variants,
    word_count,
)

__all__ = ["CUE_NAMES", "MODEL_CUE", "STRONG_CUES", "WEAK_CUES", "InjectionVerdict", "clear_caches",
           "flag_texts", "is_injection", "model_segments", "normalise", "prepare", "rule_cues",
           "screen_text", "segment_cues", "segments", "variants", "word_count"]

_DAN = re.compile(r"\bDAN\b")  # case-sensitive: "Dan" is a name
WHOLE_TEXT_CHARS = 1000  # up to this length a text is also screened whole, not only by line


def _json_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _record(line: str) -> list[str] | None:
    """The string values of the batch record a line holds (a JSON object with a record_id), else
    None (also for JSON too deep to walk: the line is then screened as text)."""
    stripped = line.strip()
    if not (stripped.startswith("{") and stripped.endswith("}") and "record_id" in stripped):
        return None
    try:
        value = json.loads(stripped)
        if not (isinstance(value, dict) and "record_id" in value):
            return None
        return _json_strings(value)
    except (ValueError, RecursionError):
        return None


def segments(text: str) -> list[str]:
    """Lines, a record line field by field (its string values), and a short text without records
    also whole (an attack split over lines); cues are never added up across a long prompt."""
    lines = text.splitlines() or [text]
    out: list[str] = []
    records = 0
    for line in lines:
        record = _record(line)
        if record is None:
            out.append(line)
        else:
            records += 1
            out += record
    if len(lines) > 1 and not records and len(text) <= WHOLE_TEXT_CHARS:
        out.append(text)
    return out


# --- the verdict -------------------------------------------------------------------------------
@dataclass(frozen=True)
class InjectionVerdict:
    """Whether a text carries an injection, and the cues of the segments that decided it."""

    flagged: bool
    cues: tuple[str, ...] = ()


def segment_cues(segment: str) -> tuple[str, ...]:
    """The cues one segment (already normalised) matches, strong ones first, in table order."""
    cues = [name for name, rx in STRONG_CUES.items() if rx.search(segment)]
    return (*cues, *(name for name, rx in WEAK_CUES.items() if rx.search(segment)))


# Weak cues that say what to do (to whom); the others only set a scene (a mode, an authority, a
# claimed result, pressure, a boundary). Two scene cues alone never decide.
ACTION_CUES = frozenset({"addressed_to_model", "suppress_findings", "fake_answer_or_tool",
                         "output_directive", "task_reset"})
_ACTION_ORDER = tuple(name for name in WEAK_CUES if name in ACTION_CUES)


def _reading_cues(reading: str) -> tuple[str, ...]:
    """segment_cues, lazily: the scene cues are only looked for when an action cue was found (two
    scene cues alone never decide), so an ordinary text costs about half the patterns."""
    cues = [name for name, rx in STRONG_CUES.items() if rx.search(reading)]
    actions = [name for name in _ACTION_ORDER if WEAK_CUES[name].search(reading)]
    if not actions:
        return tuple(cues)
    return (*cues, *(n for n, rx in WEAK_CUES.items() if n in actions or (
        n not in ACTION_CUES and rx.search(reading))))


def _decides(cues: tuple[str, ...]) -> bool:
    """A strong cue; or two weak cues of different kinds, one of them an action cue, where a
    stated "no deviations" does not count next to a mere mention of a reviewer or an AI."""
    if any(c in STRONG_CUES for c in cues):
        return True
    weak = [c for c in cues if c in WEAK_CUES]
    if "claimed_no_findings" in weak and not ACTION_CUES.intersection(weak) - {
            "addressed_to_model"}:
        weak.remove("claimed_no_findings")
    return len(weak) >= 2 and any(c in ACTION_CUES for c in weak)


@lru_cache(maxsize=65536)  # record fields and comments repeat across records and chunks
def _deciding_cues(segment: str) -> tuple[str, ...]:
    """The cues of one segment if they decide, else (). A short segment of one or two words (an
    id, a status, a unit) without an encoded run can only carry a token: role and tool-call
    tokens are all it is checked for."""
    if word_count(segment) < 3 and len(segment) < 40 and not ENCODED_HINT.search(segment):
        base = normalise(segment)
        return tuple(n for n in ("role_tokens", "tool_call_markup") if STRONG_CUES[n].search(base))
    found: list[str] = []
    dan = bool(_DAN.search(segment))
    for reading in variants(segment):
        cues = _reading_cues(reading)
        if dan and "role_play" not in cues:
            cues = ("role_play", *cues)
        if _decides(cues):
            found += [c for c in cues if c not in found]
    return tuple(found)


@lru_cache(maxsize=65536)  # the auditor meets the same comments in every chunk of a split
def rule_cues(text: str) -> tuple[str, ...]:
    """The cues of the segments of `text` that the rules flag (empty: the rules let it pass)."""
    found: list[str] = []
    for segment in segments(text):
        found += [c for c in _deciding_cues(segment) if c not in found]
    return tuple(sorted(found, key=CUE_NAMES.index))


def clear_caches() -> None:
    """Forget the rules' verdicts on the texts seen so far (for timing a first screen)."""
    rule_cues.cache_clear()
    _deciding_cues.cache_clear()


def screen_text(text: str, *, use_model: bool = True) -> InjectionVerdict:
    """Screen one text (a record comment, a chat message, a retrieved chunk): the rules, then
    (`use_model`) the classifier of synthetic/injection_model.py on the segments they let pass."""
    if not isinstance(text, str) or not text.strip():
        return InjectionVerdict(False)
    cues = rule_cues(text)
    if not cues and use_model and _model_flags([text])[0]:
        cues = (MODEL_CUE,)
    return InjectionVerdict(bool(cues), cues)


def model_segments(text: str) -> list[str]:
    """What the classifier reads: a short text without records whole; otherwise only the string
    values of its record lines. It learnt comment- and message-sized texts, so the lines of a
    long prompt (which quote answer formats) are left to the rules."""
    lines = text.splitlines() or [text]
    records = [r for r in map(_record, lines) if r is not None]
    if not records:
        return [text] if len(text) <= WHOLE_TEXT_CHARS else []
    return [v for r in records for v in r]


def _model_flags(texts: Sequence[str]) -> list[bool]:
    """The classifier's verdict per text (any of its segments at or over the threshold), with
    one prediction call for all of them."""
    from synthetic.injection_model import THRESHOLD, probabilities

    parts = [model_segments(t) for t in texts]
    proba = iter(probabilities([s for p in parts for s in p]))
    return [any([next(proba) >= THRESHOLD for _ in p]) for p in parts]


def flag_texts(values: Sequence[object]) -> list[bool]:
    """is_injection for many values at once (one classifier call): the reference auditor's
    non_gmp_compliant_free_text check over the distinct comments of a split."""
    flags = [isinstance(v, str) and bool(v.strip()) and bool(rule_cues(v)) for v in values]
    rest = [i for i, v in enumerate(values) if isinstance(v, str) and v.strip() and not flags[i]]
    for i, flagged in zip(rest, _model_flags([values[i] for i in rest]), strict=True):
        flags[i] = flagged
    return flags


def prepare() -> None:
    """Train the classifier now (a few seconds, once per process) instead of in the first screen:
    the server and the inbox sensor call it before they take work."""
    from synthetic.injection_model import train

    train()


def is_injection(text: object) -> bool:
    """True if `text` is a string the detector flags."""
    return isinstance(text, str) and screen_text(text).flagged
