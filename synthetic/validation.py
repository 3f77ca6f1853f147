"""Structural checks of a generated split: schema, deviation rate, manifest consistency.

Used by the data asset checks; plain Python so scripts can run them too. Deviations that change a
record's keys (extra or misspelled fields) are expected exactly where the manifest says so.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter

from synthetic.contracts import RECORD_FIELDS, TIMESTAMP_FIELDS

KEY_CHANGING_TYPES = frozenset({"extra_field_not_in_schema", "misspelled_field_name"})
_EXPECTED_TYPES: dict[str, tuple[type, ...]] = {
    "record_id": (str,),
    "batch_id": (str,),
    "product_code": (str,),
    "step_seq": (int,),
    "parameters": (dict,),
    "audit_trail": (list,),
}
# Fields that hold an identifier or code: text or null (a documented deviation may blank them),
# never a number or a list, and never an invisible control or bidirectional-override character
# (U+0000, U+202E, ...) that makes two different values print alike.
_ID_FIELDS: tuple[str, ...] = (
    "product_code", "unit_procedure", "operation", "phase", "material_id", "material_lot", "uom",
    "equipment_id", "operator_id", "verifier_id", "status", *TIMESTAMP_FIELDS,
)
# A recorded quantity beyond this magnitude is not a measurement in any unit of the catalog, and
# arithmetic on it (tolerances, unit conversion) overflows to inf.
MAX_QUANTITY = 1e9
_HIDDEN = frozenset({"Cc", "Cf"})  # Unicode control and format characters


def schema_problems(records: list[dict], manifest: list[dict]) -> list[str]:
    """Problems with the record schema that the manifest does not explain (empty list = valid)."""
    allowed_key_changes = {
        row["record_id"] for row in manifest if row["deviation_type"] in KEY_CHANGING_TYPES
    }
    expected_keys = set(RECORD_FIELDS)
    problems: list[str] = []
    for line, record in enumerate(records, start=1):
        record_id = record.get("record_id", "?")
        keys = set(record)
        if keys != expected_keys and record_id not in allowed_key_changes:
            missing, extra = sorted(expected_keys - keys), sorted(keys - expected_keys)
            problems.append(
                f"line {line} (record_id {record_id}): missing {missing}, extra {extra}"
            )
        for field, types in _EXPECTED_TYPES.items():
            if field in record and not isinstance(record[field], types):
                problems.append(
                    f"line {line} (record_id {record_id}): field {field!r} has type "
                    f"{type(record[field]).__name__}, expected {types[0].__name__}"
                )
        problems += [f"line {line} (record_id {record_id}): {p}" for p in value_problems(record)]
    return problems


def value_problems(record: dict) -> list[str]:
    """Values that no record of the contract holds, deviation or not: a quantity that is not a
    finite number (or null) within MAX_QUANTITY, an identifier that is not text (or null) or that
    holds a control or format character."""
    problems: list[str] = []
    qty = record.get("qty_actual")
    if qty is not None:
        if isinstance(qty, bool) or not isinstance(qty, (int, float)):
            problems.append(f"field 'qty_actual' has type {type(qty).__name__}, expected a number "
                            "or null")
        elif (isinstance(qty, float) and not math.isfinite(qty)) or abs(qty) > MAX_QUANTITY:
            shown = repr(qty) if len(repr(qty)) <= 24 else f"{repr(qty)[:20]}..."
            problems.append(f"field 'qty_actual' is {shown}, not a finite quantity within "
                            f"+/-{MAX_QUANTITY:g}")
    for field in _ID_FIELDS:
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"field {field!r} has type {type(value).__name__}, expected text or "
                            "null")
            continue
        if value.isprintable():  # the common case, in C; spaces other than ' ' are not printable
            continue
        hidden = sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in _HIDDEN})
        if hidden:
            problems.append(f"field {field!r} contains control or format character(s) "
                            f"{', '.join(hidden)}")
    return problems


def deviating_record_share(records: list[dict], manifest: list[dict]) -> float:
    """Share of distinct record ids that carry at least one ordinary (non-injection) deviation."""
    record_ids = {record["record_id"] for record in records}
    flagged = {row["record_id"] for row in manifest if not row.get("prompt_injection")}
    return len(flagged & record_ids) / len(record_ids) if record_ids else 0.0


def manifest_problems(
    records: list[dict], manifest: list[dict], slugs: tuple[str, ...]
) -> list[str]:
    """Manifest rows that do not point at a record of the split, or name an unknown type."""
    batch_of = {record["record_id"]: record["batch_id"] for record in records}
    known = set(slugs)
    problems: list[str] = []
    for line, row in enumerate(manifest, start=1):
        record_id = row.get("record_id")
        if record_id not in batch_of:
            problems.append(f"manifest line {line}: record_id {record_id!r} is not in the records")
        elif batch_of[record_id] != row.get("batch_id"):
            problems.append(
                f"manifest line {line} (record_id {record_id}): field 'batch_id' is "
                f"{row.get('batch_id')!r}, the record says {batch_of[record_id]!r}"
            )
        if row.get("deviation_type") not in known:
            problems.append(
                f"manifest line {line} (record_id {record_id}): field 'deviation_type' "
                f"{row.get('deviation_type')!r} is not in configs/deviations.yaml"
            )
    return problems


def type_counts(manifest: list[dict]) -> Counter[str]:
    return Counter(row["deviation_type"] for row in manifest)
