"""Deviation injectors: one per catalog slug, each with the rule of where it may go.

Every injector mutates one clean batch (`BatchState`) at one record and returns the manifest row
(`contracts.MANIFEST_COLUMNS`). They are written so that the reference auditor
(`scoring/reference_auditor.py`, the `rule:` lines of configs/deviations.yaml) finds exactly the
labelled (record_id, deviation_type) pairs and nothing else ("orthogonality"):

- one deviation type per record (a record's fields are touched by one injector only);
- the structural ones (unexpected_step_order, redundant_step) are applied first and kept at least
  two positions apart; the others then see the post-structural batch;
- the others are applied in ascending position, so a rule that looks at the previous step
  (timestamp_out_of_sequence, duplicate_record_id, reused_batch_number) sees final neighbours;
- time shifts keep the other time rules quiet (see each injector).

Two levels of "applies": `plan_ok` works on a light skeleton (positions, materials charged) while a
split is planned; `applies` re-checks the real batch before injecting (the split falls back to
another type if it no longer holds, which keeps the deviation count exact).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synthetic.batch_records import BatchState, phase_content
from synthetic.catalog import DeviationCatalog
from synthetic.injection_templates import load_injection_table

STRUCTURAL: tuple[str, ...] = ("unexpected_step_order", "redundant_step")
# Fields that a structural deviation moves (swap) or replaces (redundant step).
PHASE_CONTENT_KEYS: tuple[str, ...] = (
    "unit_procedure", "operation", "phase", "material_id", "material_lot", "qty_actual", "uom",
    "equipment_id", "parameters", "comments",
)
# Misspellings for misspelled_field_name: canonical key -> misspelled key (difflib ratio >= 0.85).
MISSPELLINGS: dict[str, str] = {
    "operator_id": "operater_id",
    "verifier_id": "verifer_id",
    "comments": "coments",
    "equipment_id": "equipmnet_id",
    "status": "staus",
    "environment": "enviroment",
    "audit_trail": "audit_trial",
    "parameters": "paramaters",
    "qty_actual": "qty_actaul",
    "recorded_ts": "recored_ts",
}
EXTRA_FIELDS: tuple[str, ...] = (
    "shift_note", "line_speed_upm", "room_id", "supervisor_initials", "batch_size_kg",
    "ambient_light_lux", "ipc_sample_count",
)
PLACEHOLDER_TEXTS: tuple[str, ...] = (
    "TBD", "xxx", "N/A", "TODO", "To be completed", "<enter observation>",
    "Lorem ipsum dolor sit amet", "TBD - to be completed after the shift",
)
INFORMAL_TEXTS: tuple[str, ...] = (
    "probably fine, scale drifted a bit", "looks ok to me", "lol the granulator jammed again",
    "guess it ran about an hour", "whatever, same as last batch",
    "I think we added the full amount", "maybe a bit over, no idea",
    "kinda slow today but looks fine",
)
_BAD_STATUS: tuple[str, ...] = ("DONE", "COMPLETE", "OK", "PASSED", "FINISHED", "completed",
                                "IN_PROGRESS", "Completed")
_BAD_TS_FORMATS: tuple[str, ...] = ("%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M:%S",
                                    "%Y-%m-%dT%H:%M", "%m/%d/%Y %I:%M %p", "%Y%m%dT%H%M%S")
_WRONG_OFFSETS_S: tuple[int, ...] = (0, -5 * 3600, -4 * 3600, 3 * 3600, 5 * 3600 + 1800, 9 * 3600)
_OTHER_UOM: dict[str, tuple[str, ...]] = {"kg": ("g", "lb"), "g": ("kg", "mg"), "L": ("mL", "kg"),
                                          "mL": ("L", "g"), "ea": ("pcs", "box")}


def manifest_value(value: Any) -> str | None:
    """Manifest cells hold strings: a string as is, None as None, anything else as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def value_at(record: dict, field: str) -> Any:
    """The record's value at a manifest `field` ("parameters.x" means parameters.x.value)."""
    if field.startswith("parameters."):
        return record["parameters"][field.split(".", 1)[1]]["value"]
    return record.get(field)


def _sync_audit(rec: dict, key: str) -> None:
    """Keep audit-trail entries consistent: new_value is the record's current value."""
    if rec.get("audit_trail"):
        rec["audit_trail"] = [dict(e, new_value=rec[key]) if e.get("field") == key else e
                              for e in rec["audit_trail"]]


# --- plan-time skeleton --------------------------------------------------------------------
@dataclass
class Skeleton:
    """What planning knows of a batch: materials charged per position (after structural moves)."""

    materials: list[str | None]
    plan: dict[int, str]

    @property
    def n(self) -> int:
        return len(self.materials)


def _structural_spacing_ok(sk: Skeleton, p: int) -> bool:
    return all(abs(p - q) >= 3 for q, s in sk.plan.items() if s in STRUCTURAL)


def _lot_donors(materials: list, p: int) -> list[int]:
    """Earlier positions whose material differs from p's and is not charged again from p on."""
    later = set(materials[p:])
    m = materials[p]
    return [q for q in range(p) if materials[q] is not None and materials[q] != m
            and materials[q] not in later]


# --- injectors -----------------------------------------------------------------------------
InjectFn = Callable[[BatchState, int, random.Random], tuple[str, Any, Any]]


@dataclass(frozen=True)
class Injector:
    slug: str
    fn: InjectFn
    structural: bool = False
    min_pos: int = 0
    last_only: bool = False
    needs_material: bool = False
    plan_extra: Callable[[Skeleton, int], bool] | None = None
    runtime_extra: Callable[[BatchState, int], bool] | None = None

    def plan_ok(self, sk: Skeleton, p: int) -> bool:
        if p < self.min_pos or (self.last_only and p != sk.n - 1):
            return False
        if self.needs_material and sk.materials[p] is None:
            return False
        if self.structural and not _structural_spacing_ok(sk, p):
            return False
        return self.plan_extra is None or self.plan_extra(sk, p)

    def applies(self, st: BatchState, p: int) -> bool:
        if p < self.min_pos or (self.last_only and p != len(st.records) - 1):
            return False
        rec = st.records[p]
        if self.needs_material and rec.get("material_id") is None:
            return False
        return self.runtime_extra is None or self.runtime_extra(st, p)


INJECTORS: dict[str, Injector] = {}


def _register(slug: str, **kw) -> Callable[[InjectFn], InjectFn]:
    def deco(fn: InjectFn) -> InjectFn:
        INJECTORS[slug] = Injector(slug=slug, fn=fn, **kw)
        return fn
    return deco


@_register("missing_quantity", needs_material=True,
           runtime_extra=lambda st, p: st.records[p].get("qty_actual") is not None)
def _missing_quantity(st, p, rng):
    rec = st.records[p]
    old, rec["qty_actual"] = rec["qty_actual"], None
    return "qty_actual", None, old


@_register("invalid_timestamp_format")
def _invalid_timestamp_format(st, p, rng):
    rec = st.records[p]
    old = rec["recorded_ts"]
    local = st.ctx.clock.local_datetime(st.t_rec[p])
    rec["recorded_ts"] = local.strftime(rng.choice(_BAD_TS_FORMATS))
    return "recorded_ts", rec["recorded_ts"], old


@_register("future_timestamp", last_only=True)
def _future_timestamp(st, p, rng):
    # Shift start, end and recorded together, so durations and the recording delay stay valid.
    clock = st.ctx.clock
    rec = st.records[p]
    old = rec["start_ts"]
    new_start = clock.extracted_epoch + rng.randint(120, 30 * 24 * 60) * 60
    shift = new_start - st.t_start[p]
    st.t_start[p] += shift
    st.t_end[p] += shift
    st.t_rec[p] += shift
    rec["start_ts"], rec["end_ts"], rec["recorded_ts"] = (
        clock.fmt(st.t_start[p]), clock.fmt(st.t_end[p]), clock.fmt(st.t_rec[p]))
    return "start_ts", rec["start_ts"], old


@_register("timestamp_out_of_sequence", min_pos=1)
def _timestamp_out_of_sequence(st, p, rng):
    # Earlier than the previous step's start; end and recorded stay, so no other time rule fires.
    rec = st.records[p]
    old = rec["start_ts"]
    st.t_start[p] = st.t_start[p - 1] - rng.randint(5, 90) * 60
    rec["start_ts"] = st.ctx.clock.fmt(st.t_start[p])
    return "start_ts", rec["start_ts"], old


@_register("invalid_status_code")
def _invalid_status_code(st, p, rng):
    rec = st.records[p]
    old, rec["status"] = rec["status"], rng.choice(_BAD_STATUS)
    _sync_audit(rec, "status")
    return "status", rec["status"], old


def _set_comment(rec: dict, text: str) -> tuple[str, Any, Any]:
    old, rec["comments"] = rec["comments"], text
    _sync_audit(rec, "comments")
    return "comments", text, old


@_register("placeholder_text_in_notes")
def _placeholder(st, p, rng):
    return _set_comment(st.records[p], rng.choice(PLACEHOLDER_TEXTS))


@_register("empty_notes_field")
def _empty_notes(st, p, rng):
    return _set_comment(st.records[p], rng.choice(("", " ", "   ")))


@_register("overwritten_field_without_comment")
def _overwritten(st, p, rng):
    rec = st.records[p]
    old = rec["audit_trail"]
    if old:
        new = [dict(old[0], reason=rng.choice(("", " ")))] + [dict(e) for e in old[1:]]
    else:
        if rec.get("qty_actual") is not None:
            fld, cur = "qty_actual", rec["qty_actual"]
            prev = float(round(cur * 1.01)) if rec.get("uom") == "ea" else round(cur * 1.01, 3)
        else:
            fld, cur = "parameters.temperature_c.value", rec["parameters"]["temperature_c"]["value"]
            prev = round(cur + 0.5, 1)
        new = [{"field": fld, "old_value": prev, "new_value": cur, "changed_by": rec["operator_id"],
                "changed_ts": st.ctx.clock.fmt(st.t_rec[p] + rng.randint(60, 1200)),
                "reason": rng.choice(("", " "))}]
    rec["audit_trail"] = new
    return "audit_trail", new, old


@_register("missing_operator_id")
def _missing_operator(st, p, rng):
    rec = st.records[p]
    old, rec["operator_id"] = rec["operator_id"], rng.choice((None, ""))
    return "operator_id", rec["operator_id"], old


@_register("invalid_operator_id_format")
def _invalid_operator_format(st, p, rng):
    rec = st.records[p]
    old = rec["operator_id"]
    d = old[2:]
    rec["operator_id"] = rng.choice((f"OP-{d}", f"op{d}", f"OP{d[:3]}", f"0P{d}", f"OP {d}",
                                     f"OP{d}{rng.randint(0, 9)}", d, f"O{d}"))
    return "operator_id", rec["operator_id"], old


@_register("operator_mismatch")
def _operator_mismatch(st, p, rng):
    rec = st.records[p]
    old, rec["verifier_id"] = rec["verifier_id"], rec["operator_id"]
    return "verifier_id", rec["verifier_id"], old


def _dup_ok_runtime(st: BatchState, p: int) -> bool:
    r = st.records
    return p < 2 or r[p - 1]["record_id"] != r[p - 2]["record_id"]


@_register("duplicate_record_id", min_pos=1,
           plan_extra=lambda sk, p: (sk.plan.get(p - 1) != "duplicate_record_id"
                                     and sk.plan.get(p + 1) != "duplicate_record_id"),
           runtime_extra=_dup_ok_runtime)
def _duplicate_record_id(st, p, rng):
    rec = st.records[p]
    old, rec["record_id"] = rec["record_id"], st.records[p - 1]["record_id"]
    return "record_id", rec["record_id"], old


@_register("negative_quantity", needs_material=True,
           runtime_extra=lambda st, p: isinstance(st.records[p].get("qty_actual"), (int, float))
           and st.records[p]["qty_actual"] > 0)
def _negative_quantity(st, p, rng):
    rec = st.records[p]
    old, rec["qty_actual"] = rec["qty_actual"], -rec["qty_actual"]
    return "qty_actual", rec["qty_actual"], old


@_register("unexpected_material_usage", needs_material=True)
def _unexpected_material(st, p, rng):
    # A real material outside the phase's BOM and not charged elsewhere in the batch, with its own
    # fresh lot and its master unit, so that no lot or unit rule fires.
    rec = st.records[p]
    index = st.ctx.index
    bom = index.phase_bom.get((st.product_code, rec["unit_procedure"], rec["operation"],
                               rec["phase"]), frozenset())
    charged = {r.get("material_id") for r in st.records}
    options = [m for m in index.material_ids if m not in bom and m not in charged]
    same_uom = [m for m in options if index.material_uom[m] == rec["uom"]]
    new = rng.choice(same_uom or options)
    old = rec["material_id"]
    rec["material_id"] = new
    rec["material_lot"] = st.new_lot()
    rec["uom"] = index.material_uom[new]
    return "material_id", new, old


@_register("inconsistent_unit_of_measure", needs_material=True,
           runtime_extra=lambda st, p: st.records[p].get("uom")
           == st.ctx.index.material_uom.get(st.records[p]["material_id"]))
def _inconsistent_uom(st, p, rng):
    rec = st.records[p]
    old = rec["uom"]
    rec["uom"] = rng.choice(_OTHER_UOM.get(old, ("kg", "ea")))
    return "uom", rec["uom"], old


def _runtime_lot_donors(st: BatchState, p: int) -> list[int]:
    return _lot_donors([r.get("material_id") for r in st.records], p)


@_register("reused_batch_number", needs_material=True,
           plan_extra=lambda sk, p: bool(_lot_donors(sk.materials, p)),
           runtime_extra=lambda st, p: bool(_runtime_lot_donors(st, p)))
def _reused_batch_number(st, p, rng):
    rec = st.records[p]
    q = rng.choice(_runtime_lot_donors(st, p))
    old, rec["material_lot"] = rec["material_lot"], st.records[q]["material_lot"]
    return "material_lot", rec["material_lot"], old


@_register("non_gmp_compliant_free_text")
def _informal(st, p, rng):
    return _set_comment(st.records[p], rng.choice(INFORMAL_TEXTS))


@_register("timestamp_with_wrong_timezone")
def _wrong_timezone(st, p, rng):
    # The same instant rendered with an offset that is not the site's: no other time rule moves.
    clock = st.ctx.clock
    rec = st.records[p]
    key, t = (("start_ts", st.t_start[p]) if rng.random() < 0.5 else ("recorded_ts", st.t_rec[p]))
    site = clock.offset(t)
    off = rng.choice([o for o in _WRONG_OFFSETS_S if o != site])
    old, rec[key] = rec[key], clock.fmt(t, off)
    return key, rec[key], old


@_register("redundant_step", structural=True, min_pos=1)
def _redundant_step(st, p, rng):
    # A fresh execution of the previous step's phase (same material lot), keeping ids and times.
    rec, prev = st.records[p], st.records[p - 1]
    step = next(s for s in st.recipe["steps"] if (s["unit_procedure"], s["operation"], s["phase"])
                == (prev["unit_procedure"], prev["operation"], prev["phase"]))
    content = phase_content(st, step)
    actual = (st.t_end[p] - st.t_start[p]) // 60
    dur = content["parameters"]["duration_min"]
    if dur["low"] <= actual <= dur["high"] and actual > 0:
        dur["value"] = actual
    old = rec["phase"]
    rec.update(content)
    _sync_audit(rec, "comments")
    return "phase", rec["phase"], old


@_register("out_of_spec_temperature")
def _out_of_spec_temperature(st, p, rng):
    rec = st.records[p]
    t = dict(rec["parameters"]["temperature_c"])
    span = t["high"] - t["low"]
    delta = round(max(0.5, span * rng.uniform(0.1, 0.6)), 1)
    old = t["value"]
    t["value"] = round(t["high"] + delta, 1) if rng.random() < 0.5 else round(t["low"] - delta, 1)
    rec["parameters"] = dict(rec["parameters"], temperature_c=t)
    return "parameters.temperature_c", t["value"], old


@_register("out_of_spec_duration")
def _out_of_spec_duration(st, p, rng):
    # Outside the limits, and end/recorded moved with it so the times agree with the value.
    rec = st.records[p]
    clock = st.ctx.clock
    d = dict(rec["parameters"]["duration_min"])
    old = d["value"]
    if d["low"] <= 2 or rng.random() < 0.5:
        v = d["high"] + max(1, round(d["high"] * rng.uniform(0.1, 0.5)))
    else:
        v = max(1, d["low"] - max(1, round(d["low"] * rng.uniform(0.2, 0.6))))
    d["value"] = v
    rec["parameters"] = dict(rec["parameters"], duration_min=d)
    gap = st.t_rec[p] - st.t_end[p]
    st.t_end[p] = st.t_start[p] + v * 60
    st.t_rec[p] = st.t_end[p] + gap
    rec["end_ts"], rec["recorded_ts"] = clock.fmt(st.t_end[p]), clock.fmt(st.t_rec[p])
    return "parameters.duration_min", v, old


@_register("unexpected_step_order", structural=True, min_pos=1)
def _unexpected_step_order(st, p, rng):
    # Swap the phase content of p-1 and p; the record now at p runs a phase the recipe puts
    # before its predecessor's. Ids, step_seq and times stay with the positions.
    a, b = st.records[p - 1], st.records[p]
    old = b["phase"]
    ca = {k: a[k] for k in PHASE_CONTENT_KEYS}
    cb = {k: b[k] for k in PHASE_CONTENT_KEYS}
    a.update(cb)
    b.update(ca)
    _sync_audit(a, "comments")
    _sync_audit(b, "comments")
    return "phase", b["phase"], old


@_register("missing_environmental_condition")
def _missing_environment(st, p, rng):
    rec = st.records[p]
    old = rec["environment"]
    if rng.random() < 0.3:
        new = None
    else:
        drop = rng.choice(sorted(old))
        new = {k: v for k, v in old.items() if k != drop}
    rec["environment"] = new
    return "environment", new, old


@_register("extra_field_not_in_schema")
def _extra_field(st, p, rng):
    rec = st.records[p]
    key = rng.choice(EXTRA_FIELDS)
    value = {
        "shift_note": rng.choice(("Night shift", "Early shift", "Late shift")),
        "line_speed_upm": rng.randint(60, 180),
        "room_id": f"RM-{rng.randint(1, 3)}.{rng.randint(1, 20):02d}",
        "supervisor_initials": rng.choice(("KH", "MB", "SW", "AL", "TR")),
        "batch_size_kg": float(rng.randint(150, 600)),
        "ambient_light_lux": rng.randint(400, 900),
        "ipc_sample_count": rng.choice((10, 20, 30)),
    }[key]
    rec[key] = value
    return key, value, None


@_register("misspelled_field_name")
def _misspelled_field(st, p, rng):
    rec = st.records[p]
    canonical = rng.choice([k for k in MISSPELLINGS if k in rec])
    wrong = MISSPELLINGS[canonical]
    items = list(rec.items())
    rec.clear()
    rec.update((wrong if k == canonical else k, v) for k, v in items)
    return canonical, wrong, canonical


@_register("unauthorized_user_entry")
def _unauthorized(st, p, rng):
    rec = st.records[p]
    roster = st.ctx.index.roster
    key = "operator_id" if rng.random() < 0.6 else "verifier_id"
    other = rec["verifier_id" if key == "operator_id" else "operator_id"]
    while True:
        new = f"OP{rng.randrange(1000, 10000):04d}"
        if new not in roster and new != other:
            break
    old, rec[key] = rec[key], new
    return key, new, old


@_register("data_recorded_before_step_start")
def _recorded_before_start(st, p, rng):
    rec = st.records[p]
    old = rec["recorded_ts"]
    st.t_rec[p] = st.t_start[p] - rng.randint(1, 120) * 60 - rng.randrange(60)
    rec["recorded_ts"] = st.ctx.clock.fmt(st.t_rec[p])
    return "recorded_ts", rec["recorded_ts"], old


@_register("data_recorded_after_step_end")
def _recorded_after_end(st, p, rng):
    rec = st.records[p]
    old = rec["recorded_ts"]
    t = st.t_end[p] + rng.randint(120, 480) * 60 + rng.randrange(60)
    st.t_rec[p] = min(t, st.ctx.clock.extracted_epoch - 60)
    rec["recorded_ts"] = st.ctx.clock.fmt(st.t_rec[p])
    return "recorded_ts", rec["recorded_ts"], old


@_register("zero_duration")
def _zero_duration(st, p, rng):
    # start := end, so recorded_ts stays after both and the next step still starts later.
    rec = st.records[p]
    old = rec["start_ts"]
    st.t_start[p] = st.t_end[p]
    rec["start_ts"] = st.ctx.clock.fmt(st.t_start[p])
    return "start_ts", rec["start_ts"], old


@_register("invalid_equipment_id")
def _invalid_equipment(st, p, rng):
    rec = st.records[p]
    registry = st.ctx.index.equipment_ids
    old = rec["equipment_id"]
    code = old.split("-")[1] if old.count("-") == 2 else "XXX"
    while True:
        new = (f"EQ-{code}-{rng.randint(5, 99):03d}" if rng.random() < 0.7
               else f"EQ-{rng.choice(('GRX', 'BLN', 'PRS', 'DRY'))}-{rng.randint(1, 9):03d}")
        if new not in registry:
            break
    rec["equipment_id"] = new
    return "equipment_id", new, old


# Types that apply to any record whatever its content: the fallbacks.
UNIVERSAL: tuple[str, ...] = tuple(
    s for s, inj in INJECTORS.items()
    if not (inj.structural or inj.min_pos or inj.last_only or inj.needs_material
            or inj.plan_extra or inj.runtime_extra)
)


def manifest_row(st: BatchState, p: int, catalog: DeviationCatalog, slug: str, field: str,
                 injected: Any, original: Any, prompt_injection: bool = False) -> dict:
    dt = catalog.get(slug)
    rec = st.records[p]
    return {
        "record_id": rec.get("record_id"),
        "batch_id": rec.get("batch_id"),
        "deviation_type": slug,
        "field": field,
        "alcoa_principles": list(dt.alcoa_principles),
        "why": dt.why,
        "injected_value": manifest_value(injected),
        "original_value": manifest_value(original),
        "prompt_injection": prompt_injection,
    }


def inject(st: BatchState, p: int, slug: str, rng: random.Random,
           catalog: DeviationCatalog) -> dict:
    """Apply one deviation at record p and return its manifest row."""
    field, injected, original = INJECTORS[slug].fn(st, p, rng)
    return manifest_row(st, p, catalog, slug, field, injected, original)


def inject_prompt(st: BatchState, p: int, rng: random.Random, catalog: DeviationCatalog) -> dict:
    """Adversarial split: a comment addressed to the auditor / an AI, with instructions, from a
    family of configs/injection_templates.yaml (drawn with `rng`: same seed, same comment)."""
    _family, text = load_injection_table().draw(rng, st.batch_id)
    field, injected, original = _set_comment(st.records[p], text)
    return manifest_row(st, p, catalog, "non_gmp_compliant_free_text", field, injected, original,
                        prompt_injection=True)


def check_catalog(catalog: DeviationCatalog) -> None:
    missing = [s for s in catalog.slugs if s not in INJECTORS]
    if missing:
        raise ValueError(f"no injector for deviation type(s) {missing}; add one in "
                         "synthetic/deviations.py (see synthetic/README.md)")
