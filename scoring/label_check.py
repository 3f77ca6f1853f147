"""Do a batch's labels say what the reference auditor finds in its records?

New labelled data (the inbox) trains the audit adapter, so its labels must be true. The reference
auditor (scoring/reference_auditor.py) implements the rule of every deviation type exactly (a
prompt-injection comment excepted: a detector with measured error rates decides it); the
`reference_auditor_recall` check of the generated splits holds it to finding every labelled
deviation and nothing else. Both directions of disagreement therefore count:

- `undocumented`: the auditor finds a deviation (record_id, deviation_type) that no label names.
  Training on it would teach the adapter that this deviation is fine.
- `unconfirmed`: a label names a deviation the auditor does not find in that record (a wrong
  record_id or type, or a record that was changed after it was labelled).

Labels and findings are compared on (record_id, deviation_type), as the recall check does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scoring.reference_auditor import audit_records
from synthetic.catalog import DeviationCatalog

UNDOCUMENTED = "undocumented"
UNCONFIRMED = "unconfirmed"
_MAX_EVIDENCE = 160


def printable(text: str) -> str:
    """`text` with control and format characters escaped (U+202E as \\u202e), so that a report
    line shows what a record holds rather than being reordered or cut by it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else f"\\u{ord(c):04x}" for c in text)


@dataclass(frozen=True)
class Disagreement:
    """One (record_id, deviation_type) on which the labels and the reference auditor differ."""

    kind: str  # UNDOCUMENTED or UNCONFIRMED
    record_id: str | None
    field: str | None
    deviation_type: str
    evidence: str = ""

    def __str__(self) -> str:
        where = f"record_id {printable(str(self.record_id))}, field {self.field!r}"
        if self.kind == UNDOCUMENTED:
            what = (f"the reference auditor finds {self.deviation_type}, which the labels do not "
                    f"document ({printable(self.evidence[:_MAX_EVIDENCE])})")
        else:
            what = (f"labelled {self.deviation_type}, which the reference auditor does not find "
                    "in that record")
        return f"{where}: {what}"

    def as_row(self) -> dict:
        """Plain dict for metadata tables."""
        return {"kind": self.kind, "record_id": self.record_id, "field": self.field,
                "deviation_type": self.deviation_type}


def label_disagreements(records: Sequence[dict], labels: Sequence[dict], master: dict,
                        catalog: DeviationCatalog | None = None) -> list[Disagreement]:
    """Every disagreement between `labels` (label-manifest rows) and the reference auditor's
    findings on `records`, undocumented findings first, each group in record order."""
    findings = audit_records(records, master, catalog)
    labelled = {(row.get("record_id"), row.get("deviation_type")) for row in labels}
    found = {(f.record_id, f.deviation_type) for f in findings}
    out: list[Disagreement] = []
    seen: set[tuple] = set()
    for f in findings:
        key = (f.record_id, f.deviation_type)
        if key not in labelled and key not in seen:
            seen.add(key)
            out.append(Disagreement(UNDOCUMENTED, f.record_id, f.field, f.deviation_type,
                                    f.evidence))
    for row in labels:
        key = (row.get("record_id"), row.get("deviation_type"))
        if key not in found and key not in seen:
            seen.add(key)
            out.append(Disagreement(UNCONFIRMED, key[0], row.get("field"), str(key[1])))
    return out
