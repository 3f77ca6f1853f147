"""Data contracts of the GxP benchmark: the record schema, label manifest and predictions columns.

One place for these names; the generator, the reference auditor, the scorer, the prompt builder and
the file validators all import them. DESIGN.md ("Data contracts") describes them for users.
"""

from __future__ import annotations

# Fields of one executed batch-record step, in written order. This is what a model sees.
RECORD_FIELDS: tuple[str, ...] = (
    "record_id",
    "batch_id",
    "product_code",
    "unit_procedure",
    "operation",
    "phase",
    "step_seq",
    "material_id",
    "material_lot",
    "qty_actual",
    "uom",
    "equipment_id",
    "operator_id",
    "verifier_id",
    "start_ts",
    "end_ts",
    "recorded_ts",
    "status",
    "parameters",
    "environment",
    "comments",
    "audit_trail",
)

# Keys of `parameters`: each maps to {"value": float, "low": float, "high": float, "unit": str}.
PARAMETER_KEYS: tuple[str, ...] = ("temperature_c", "duration_min")
# Keys every `environment` dict must hold.
ENVIRONMENT_KEYS: tuple[str, ...] = (
    "room_temp_c",
    "relative_humidity_pct",
    "differential_pressure_pa",
)
# Keys of one audit-trail entry.
AUDIT_TRAIL_KEYS: tuple[str, ...] = (
    "field",
    "old_value",
    "new_value",
    "changed_by",
    "changed_ts",
    "reason",
)
TIMESTAMP_FIELDS: tuple[str, ...] = ("start_ts", "end_ts", "recorded_ts")

# Label manifest: one row per injected deviation; never shown to a model.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "record_id",
    "batch_id",
    "deviation_type",
    "field",
    "alcoa_principles",
    "why",
    "injected_value",
    "original_value",
    "prompt_injection",
)

# Predictions: one row per finding, plus one row with record_id and deviation_type null for every
# audited batch that has no finding, so that each audited batch and its validity are on file.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "model_id",
    "split",
    "batch_id",
    "record_id",
    "deviation_type",
    "field",
    "evidence",
    "valid_output",
)
# Optional prediction column: True on the one row of a batch whose model call failed (after its
# retries). Such a batch has no answer: scoring leaves it out of recall and attack success and
# counts it against coverage. Its row also has valid_output False, so a reader that does not know
# this column still sees no usable answer. Absent means False.
CALL_FAILED = "call_failed"

SPLITS: tuple[str, ...] = ("benchmark", "control_clean", "control_faulty", "adversarial", "train")
