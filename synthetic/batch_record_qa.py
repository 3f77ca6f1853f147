"""Batch-record QA (seed 002): seeded batch-record summaries and question/answer pairs over them.

A summary is a short text (at most `MAX_SUMMARY_CHARS`, so that summary, question and answer fit
a 512-token context) about one batch: batch number (like "VOY756"), product and product code,
manufacture and expiry dates, batch size, actual yield, status, QA and production managers, the
equipment line and the deviations (ids with one-line descriptions, possibly none). Products,
product codes, people and equipment come from the site master data (configs/datasets.yaml), so
they match the batch records of the rest of the platform; deviation descriptions use the
deviation catalog's names.

Each summary gets 6-10 questions from `TEMPLATES`, each answered by one short sentence stating
the fact ("The product code for batch VOY756 is PRD-AMX500."). A row keeps the summary
(`source`) and the stated facts (`facts`: field -> the exact text that occurs in both the source
and the answer) for grounding checks. Whole batches go to the `test` split, so test questions
are about summaries never trained on.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from synthetic.catalog import load_catalog
from synthetic.master_data import build_site_master, derive_seed
from synthetic.splits import load_dataset_config

MAX_SUMMARY_CHARS = 500
SPLITS = ("train", "test")
QA_FIELDS = ("qa_id", "batch_number", "question_type", "question", "answer", "source", "facts",
             "split")
# status -> (weight, actual yield % range, deviation count range)
STATUSES: dict[str, tuple[float, tuple[float, float], tuple[int, int]]] = {
    "Released": (0.6, (95.0, 100.0), (0, 1)),
    "Quarantine": (0.25, (90.0, 99.0), (1, 2)),
    "Rejected": (0.15, (70.0, 92.0), (1, 2)),
}
_BATCH_SIZES = {"capsules": (100_000, 150_000, 200_000, 250_000, 300_000, 500_000),
                "tablets": (100_000, 150_000, 200_000, 250_000, 300_000, 500_000),
                "vials": (5_000, 8_000, 10_000, 12_000, 20_000)}
_LINE_EQUIPMENT = ("tablet_press", "encapsulator", "filling_machine")
_FIRST_DAY, _LAST_DAY = date(2025, 1, 6), date(2026, 10, 28)  # before the site's extracted_at


@dataclass(frozen=True)
class BatchSummary:
    """The facts of one batch-record summary; `text()` renders it."""

    batch_number: str
    product_code: str
    product_name: str
    manufacture_date: str
    expiry_date: str
    batch_size: str  # with its unit, e.g. "250,000 capsules"
    actual_yield: str  # e.g. "97.4%"
    status: str
    qa_manager: str
    production_manager: str
    equipment_line: str
    deviations: tuple[tuple[str, str], ...]  # (deviation id, one-line description)

    def deviation_list(self) -> str:
        return "; ".join(f"{dev_id} ({text})" for dev_id, text in self.deviations) or "none"

    def text(self) -> str:
        return "\n".join([
            f"Batch Record Summary: batch {self.batch_number}",
            f"Product: {self.product_name}, product code {self.product_code}",
            f"Manufactured: {self.manufacture_date}. Expiry: {self.expiry_date}",
            f"Batch size: {self.batch_size}. Actual yield: {self.actual_yield}",
            f"Status: {self.status}",
            f"QA Manager: {self.qa_manager}. Production Manager: {self.production_manager}",
            f"Equipment line: {self.equipment_line}",
            f"Deviations ({len(self.deviations)}): {self.deviation_list()}",
        ])


QA = tuple[str, str, dict[str, str]]  # question, answer, facts
Template = Callable[[BatchSummary], QA | None]


def _deviation_count(s: BatchSummary) -> QA:
    n = len(s.deviations)
    noun, verb = ("deviation", "was") if n == 1 else ("deviations", "were")
    return (f"How many deviations were reported for batch {s.batch_number}?",
            f"{n} {noun} {verb} reported for batch {s.batch_number}.", {"deviation_count": str(n)})


def _deviation_detail(s: BatchSummary) -> QA | None:
    if not s.deviations:
        return None
    dev_id, text = s.deviations[-1]
    return (f"What was deviation {dev_id} in batch {s.batch_number}?",
            f"Deviation {dev_id} in batch {s.batch_number} was {text}.",
            {"deviation_id": dev_id, "deviation_description": text})


def _deviation_list(s: BatchSummary) -> QA | None:
    if not s.deviations:
        return None
    n = len(s.deviations)
    return (f"What deviations were reported for batch {s.batch_number}?",
            f"Batch {s.batch_number} has {n} deviation{'s' if n > 1 else ''}: "
            f"{s.deviation_list()}.", {"deviations": s.deviation_list()})


def _simple(field: str, question: str, answer: str) -> Template:
    """A template stating one field; `{b}` is the batch number, `{v}` the field's value."""

    def template(s: BatchSummary) -> QA:
        value, batch = getattr(s, field), s.batch_number
        return (question.format(b=batch, v=value, name=s.product_name),
                answer.format(b=batch, v=value, name=s.product_name), {field: value})

    return template


TEMPLATES: dict[str, Template] = {
    "product_code": _simple("product_code", "What is the product code for batch {b}?",
                            "The product code for batch {b} is {v}."),
    "product_name": _simple("product_name", "Which product was manufactured in batch {b}?",
                            "Batch {b} is {v}."),
    "batch_number": _simple("batch_number", "What is the batch number for {name}?",
                            "The batch number for {name} is {v}."),
    "qa_manager": _simple("qa_manager", "Who is the QA Manager for batch {b}?",
                          "The QA Manager for batch {b} is {v}."),
    "production_manager": _simple("production_manager",
                                  "Who is the Production Manager for batch {b}?",
                                  "The Production Manager for batch {b} is {v}."),
    "actual_yield": _simple("actual_yield", "What is the percent yield for batch {b}?",
                            "The actual yield for batch {b} is {v}."),
    "status": _simple("status", "What is the status of batch {b}?",
                      "The status of batch {b} is {v}."),
    "manufacture_date": _simple("manufacture_date", "When was batch {b} manufactured?",
                                "Batch {b} was manufactured on {v}."),
    "expiry_date": _simple("expiry_date", "What is the expiry date of batch {b}?",
                           "The expiry date of batch {b} is {v}."),
    "batch_size": _simple("batch_size", "What is the batch size of batch {b}?",
                          "The batch size of batch {b} is {v}."),
    "equipment_line": _simple("equipment_line", "Which equipment line made batch {b}?",
                              "Batch {b} was made on equipment line {v}."),
    "deviation_count": _deviation_count,
    "deviation_detail": _deviation_detail,
    "deviation_list": _deviation_list,
}


def generate_batch_record_qa(n_batches: int = 60, seed: int | None = None,
                             test_fraction: float = 0.2,
                             master: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Q/A rows over `n_batches` seeded summaries: qa_id, batch_number, question_type, question,
    answer, source (the summary), facts, split. `seed` None: configs/datasets.yaml's seed;
    `master` None: the site master built from that file (as the batch records use)."""
    if n_batches < 1:
        raise ValueError(f"batch_record_qa: n_batches must be >= 1, got {n_batches}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"batch_record_qa: test_fraction must be in [0, 1), got {test_fraction}")
    if seed is None or master is None:
        cfg = load_dataset_config()
        seed = cfg.seed if seed is None else seed
        master = build_site_master(cfg.site_master, cfg.seed) if master is None else master
    rng = random.Random(derive_seed(seed, "batch_record_qa"))
    summaries = _summaries(rng, n_batches, master)
    test = set(rng.sample(range(n_batches), round(n_batches * test_fraction)))
    rows: list[dict[str, Any]] = []
    for index, summary in enumerate(summaries):
        source = summary.text()
        applicable = [(kind, qa) for kind, template in TEMPLATES.items()
                      if (qa := template(summary)) is not None]
        chosen = sorted(rng.sample(range(len(applicable)), rng.randint(6, 10)))
        for number, position in enumerate(chosen, start=1):
            kind, (question, answer, facts) = applicable[position]
            rows.append({"qa_id": f"{summary.batch_number}-Q{number:02d}",
                         "batch_number": summary.batch_number, "question_type": kind,
                         "question": question, "answer": answer, "source": source,
                         "facts": facts, "split": "test" if index in test else "train"})
    validate_batch_record_qa(rows)
    return rows


def _summaries(rng: random.Random, n_batches: int,
               master: Mapping[str, Any]) -> list[BatchSummary]:
    catalog = load_catalog().types
    qa_managers = [o["name"] for o in master["operators"] if o["role"] == "verifier"]
    production_managers = [o["name"] for o in master["operators"] if o["role"] == "operator"]
    equipment: dict[str, list[str]] = {}
    for unit in master["equipment"]:
        equipment.setdefault(unit["equipment_class"], []).append(unit["equipment_id"])
    numbers: set[str] = set()
    deviation_serial = rng.randint(100, 400)
    summaries = []
    for _ in range(n_batches):
        number = _batch_number(rng)
        while number in numbers:
            number = _batch_number(rng)
        numbers.add(number)
        recipe = rng.choice(master["recipes"])
        classes = [step["equipment_class"] for step in recipe["steps"]]
        line = next((c for c in _LINE_EQUIPMENT if c in classes), classes[-1])
        name = recipe["name"]
        unit = ("capsules" if "capsule" in name else "vials" if "injection" in name
                else "tablets")
        status = rng.choices(list(STATUSES), weights=[v[0] for v in STATUSES.values()])[0]
        _weight, (low, high), (fewest, most) = STATUSES[status]
        made = _FIRST_DAY + timedelta(days=rng.randint(0, (_LAST_DAY - _FIRST_DAY).days))
        made = made.replace(day=min(made.day, 28))  # so that made + N years is a valid date
        deviations = []
        for _ in range(rng.randint(fewest, most)):
            deviation_serial += rng.randint(1, 9)
            kind = rng.choice(catalog)
            operation = rng.choice(recipe["steps"])["operation"].split(" ", 1)[1]
            deviations.append((f"DEV-{made.year % 100:02d}-{deviation_serial:04d}",
                               f"{_lower_first(kind.name)} in {_lower_first(operation)}"))
        summaries.append(BatchSummary(
            batch_number=number, product_code=recipe["product_code"], product_name=name,
            manufacture_date=made.isoformat(),
            expiry_date=made.replace(year=made.year + rng.choice((2, 3))).isoformat(),
            batch_size=f"{rng.choice(_BATCH_SIZES[unit]):,} {unit}",
            actual_yield=f"{rng.uniform(low, high):.1f}%", status=status,
            qa_manager=rng.choice(qa_managers),
            production_manager=rng.choice(production_managers),
            equipment_line=rng.choice(equipment[line]), deviations=tuple(deviations)))
    return summaries


def _batch_number(rng: random.Random) -> str:
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
    return f"{letters}{rng.randint(100, 999)}"


def _lower_first(text: str) -> str:
    """"Missing operator ID" -> "missing operator ID" (acronyms keep their case)."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def validate_batch_record_qa(rows: Sequence[Mapping[str, Any]],
                             source: str = "batch_record_qa") -> None:
    """Raise ValueError naming `source`, the qa_id and the field of the first bad row: missing or
    empty fields, a duplicate qa_id, an unknown split, a batch in both splits, a summary over
    `MAX_SUMMARY_CHARS`, or a fact whose text is absent from the summary or the answer."""
    seen: set[str] = set()
    batch_split: dict[str, str] = {}
    for index, row in enumerate(rows):
        qa_id = row.get("qa_id") if isinstance(row, Mapping) else None
        if not isinstance(qa_id, str) or not qa_id:
            raise ValueError(f"{source}: row {index}: field 'qa_id' must be a non-empty string")
        where = f"{source}: qa_id {qa_id}"
        if qa_id in seen:
            raise ValueError(f"{where}: field 'qa_id' is duplicated")
        seen.add(qa_id)
        for name in QA_FIELDS:
            value = row.get(name)
            if name != "facts" and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{where}: field {name!r} must be a non-empty string")
        if row["split"] not in SPLITS:
            raise ValueError(f"{where}: field 'split' must be one of {', '.join(SPLITS)}, "
                             f"got {row['split']!r}")
        if batch_split.setdefault(row["batch_number"], row["split"]) != row["split"]:
            raise ValueError(f"{where}: field 'split': batch {row['batch_number']} is in both "
                             f"splits")
        text = row["source"]
        if len(text) > MAX_SUMMARY_CHARS:
            raise ValueError(f"{where}: field 'source' has {len(text)} characters, more than "
                             f"{MAX_SUMMARY_CHARS}")
        if row["batch_number"] not in text:
            raise ValueError(f"{where}: field 'batch_number' {row['batch_number']!r} is not in "
                             f"the source")
        _check_facts(row.get("facts"), text, row["answer"], where)


def _check_facts(facts: Any, text: str, answer: str, where: str) -> None:
    if not isinstance(facts, Mapping) or not facts:
        raise ValueError(f"{where}: field 'facts' must be a non-empty mapping")
    for key, value in facts.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{where}: field 'facts.{key}' must be a non-empty string")
        for name, body in (("source", text), ("answer", answer)):
            if value not in body:
                raise ValueError(f"{where}: field 'facts.{key}': {value!r} does not occur in "
                                 f"the {name}")


def batchqa_messages(row: Mapping[str, Any], system_prompt: str, end_token: str,
                     with_answer: bool = True) -> dict[str, list[dict[str, str]]]:
    """Chat rows for SFT: the system prompt, the summary and question as the user turn, and the
    answer followed by `end_token` as the assistant turn (left out with `with_answer=False`,
    which is the prompt to generate from)."""
    messages = [{"role": "system", "content": system_prompt},
                {"role": "user", "content": f"{row['source']}\n\nQuestion: {row['question']}"}]
    if with_answer:
        messages.append({"role": "assistant", "content": f"{row['answer']}{end_token}"})
    return {"messages": messages}
