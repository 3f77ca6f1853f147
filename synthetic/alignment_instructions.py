"""A small alignment-instructions sample built from the deviation catalog (offline fallback).

Same columns as the hub dataset `Vaibhaav/alignment-instructions` (`Prompt`, `Accepted Response`,
`Rejected Response`, `Instruction generated`; whole Human:/Assistant: dialogues), so that the loader
and trainers run unchanged when the hub is out of reach. The content is GxP data-integrity Q/A: the
accepted answer explains the deviation with its ALCOA+ principles and the fix the site rules
require; the rejected one shrugs it off. Deterministic.
"""

from __future__ import annotations

from synthetic.catalog import DeviationCatalog, load_catalog

# (question, how the accepted answer opens)
QUESTIONS = (
    ("During batch record review I found this: {rule} Is that a problem, and what should I do?",
     "Yes, it is a problem."),
    ("A colleague says a record where {rule_lower} is fine to release. Do you agree?",
     "No, I do not agree."),
)
REJECTED = (
    "That is not a real issue. Records like this happen all the time; release the batch and "
    "tidy the entry up later if someone asks.",
    "I agree with your colleague. Nobody checks that field, so you can leave it as it is.",
)
# Columns a dataset must have (those the preference pairs are read from); `Instruction generated`,
# the hub's fourth column, is kept when present.
REQUIRED_COLUMNS = ("Prompt", "Accepted Response", "Rejected Response")
INSTRUCTION = "Explain whether the batch-record entry violates GxP data integrity and what to do."


def _dialogue(human: str, assistant: str) -> str:
    return f"\n\nHuman: {human}\n\nAssistant: {assistant}"


def build_alignment_sample(catalog: DeviationCatalog | None = None) -> list[dict[str, str]]:
    """Two rows per deviation type (60 for the 30 types)."""
    catalog = catalog or load_catalog()
    rows = []
    for deviation in catalog.types:
        principles = ", ".join(deviation.alcoa_principles)
        explanation = (
            f"This is a '{deviation.name}' deviation: {deviation.why} It violates the ALCOA+ "
            f"principle(s) {principles}. Do not release on this record: raise a deviation, have "
            f"the responsible person correct or justify the entry with a dated, attributable "
            f"reason in the audit trail, and have QA review it before batch disposition."
        )
        rule = deviation.rule.rstrip(".")
        for (question, opener), rejected in zip(QUESTIONS, REJECTED, strict=True):
            human = question.format(rule=deviation.rule, rule_lower=rule[0].lower() + rule[1:])
            accepted = f"{opener} {explanation}"
            rows.append({
                "Prompt": _dialogue(human, "").rstrip(),
                "Accepted Response": _dialogue(human, accepted),
                "Rejected Response": _dialogue(human, rejected),
                "Instruction generated": INSTRUCTION,
            })
    return rows


def _turns(dialogue: str) -> list[tuple[str, str]]:
    """[(speaker, text)] of a Human:/Assistant: dialogue."""
    turns: list[tuple[str, str]] = []
    for chunk in dialogue.split("\n\n"):
        for speaker in ("Human", "Assistant"):
            if chunk.startswith(f"{speaker}:"):
                turns.append((speaker, chunk[len(speaker) + 1:].strip()))
                break
        else:
            if turns and chunk.strip():  # a paragraph inside the previous turn
                speaker, text = turns[-1]
                turns[-1] = (speaker, f"{text}\n\n{chunk.strip()}")
    return turns


def check_columns(rows: list[dict], source: str) -> None:
    """ValueError naming `source`, the missing column(s) and the columns present when the rows
    lack one of REQUIRED_COLUMNS (an empty row set is left to the caller)."""
    present = sorted({column for row in rows for column in row})
    missing = [column for column in REQUIRED_COLUMNS if rows and column not in present]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(map(repr, missing))} "
                         f"(alignment-instructions needs {', '.join(REQUIRED_COLUMNS)}); "
                         f"the rows have columns {present}")


def preference_pairs(rows: list[dict]) -> list[dict[str, str]]:
    """{"prompt", "chosen", "rejected"} per row: the first Human turn of `Prompt` (or of the
    accepted dialogue) and the last Assistant turn of each response. Rows without them are left
    out (the caller reports how many)."""
    pairs = []
    for row in rows:
        source = row.get("Prompt") or row.get("Accepted Response") or ""
        humans = [text for speaker, text in _turns(source) if speaker == "Human"]
        chosen = [t for s, t in _turns(row.get("Accepted Response") or "") if s == "Assistant"]
        rejected = [t for s, t in _turns(row.get("Rejected Response") or "") if s == "Assistant"]
        if humans and chosen and rejected and chosen[-1] and rejected[-1]:
            pairs.append({"prompt": humans[0], "chosen": chosen[-1], "rejected": rejected[-1]})
    return pairs
