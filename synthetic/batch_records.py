"""Clean synthetic batch records: one record per executed master-recipe phase, in recipe order.

A record is a dict with exactly `contracts.RECORD_FIELDS`, in that order. Timestamps are ISO 8601
with seconds and the site time zone's UTC offset for that instant (DST-correct). The generator keeps
each step's instants (epoch seconds) beside the records (`BatchState.t_start` ...) so that the
deviation injectors can shift times without re-parsing strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from synthetic.master_data import MasterIndex, derive_seed

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Window (days before extracted_at) in which batches start; every batch ends long before
# extracted_at so that late entries (<= 8 h) and out-of-spec durations stay in the past.
BATCH_START_MIN_DAYS_BEFORE = 380
BATCH_START_MAX_DAYS_BEFORE = 14
GAP_MIN_MIN, GAP_MAX_MIN = 5, 30  # minutes between one step's end and the next step's start
RECORD_DELAY_MAX_S = 600  # recorded_ts = end_ts + 0..10 min
AUDIT_TRAIL_SHARE = 0.10


_NO_CACHE = object()


class SiteClock:
    """Renders instants (epoch seconds) as ISO 8601 with the site offset for that instant."""

    def __init__(self, tz_name: str, extracted_at: str):
        self.tz_name = tz_name
        self.tz = ZoneInfo(tz_name)
        self.extracted_at = extracted_at
        self.extracted_epoch = int(datetime.fromisoformat(extracted_at).timestamp())
        self._offsets: dict[int, object] = {}
        self._days: dict[int, str] = {}
        self._offset_strs: dict[int, str] = {}

    def _exact_offset(self, epoch: int) -> int:
        return int(datetime.fromtimestamp(epoch, self.tz).utcoffset().total_seconds())

    def offset(self, epoch: int) -> int:
        """UTC offset in seconds of the site time zone at this instant."""
        day = epoch // 86400
        off = self._offsets.get(day)
        if off is None:
            lo, hi = self._exact_offset(day * 86400), self._exact_offset(day * 86400 + 86399)
            # a UTC day with a transition (DST change) is never cached: exact for each instant
            self._offsets[day] = off = lo if lo == hi else _NO_CACHE
        if off is _NO_CACHE:
            return self._exact_offset(epoch)
        return off

    def offset_str(self, off: int) -> str:
        s = self._offset_strs.get(off)
        if s is None:
            sign = "-" if off < 0 else "+"
            h, m = divmod(abs(off) // 60, 60)
            s = self._offset_strs[off] = f"{sign}{h:02d}:{m:02d}"
        return s

    def fmt(self, epoch: int, off: int | None = None) -> str:
        """ISO 8601 with seconds; the site offset for the instant unless `off` (s) is given."""
        if off is None:
            off = self.offset(epoch)
        local = epoch + off
        day, tod = divmod(local, 86400)
        d = self._days.get(day)
        if d is None:
            d = self._days[day] = date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
        h, rem = divmod(tod, 3600)
        m, s = divmod(rem, 60)
        return f"{d}T{h:02d}:{m:02d}:{s:02d}{self.offset_str(off)}"

    def local_datetime(self, epoch: int) -> datetime:
        return datetime.fromtimestamp(epoch, self.tz)


# --- objective, GMP-style execution notes ---------------------------------------------------
_CLASS_NOTES: dict[str, tuple[str, ...]] = {
    "balance": (
        "Weighed on {eq}; daily balance check within tolerance, net weight printout attached.",
        "Weighing performed on {eq}; material status label checked as released.",
        "Tare and gross weights printed on {eq} and attached to the batch record.",
        "Net weight within tolerance of the target; container labelled and sealed.",
    ),
    "sieve": (
        "Sieving completed on {eq}; screen integrity checked before and after use.",
        "Screen on {eq} found intact after sieving; no foreign matter observed.",
    ),
    "mill": (
        "Milling completed on {eq}; screen size verified against the master recipe.",
        "Screen integrity confirmed after milling; granules transferred to a labelled container.",
    ),
    "blender": (
        "Charged into {eq}; blender speed and timer verified.",
        "Blending completed on {eq}; blend transferred to a labelled container.",
        "Material charged completely; empty container checked and labelled.",
    ),
    "granulator": (
        "Granulation on {eq}; impeller and chopper speeds as per master recipe.",
        "End-point reached on {eq}; power consumption trend printed and attached.",
    ),
    "fluid_bed_dryer": (
        "Drying on {eq}; inlet air temperature trend printed and attached.",
        "Product temperature and airflow on {eq} within limits throughout drying.",
    ),
    "moisture_analyzer": (
        "Loss on drying measured on {eq}; result within specification.",
        "Loss on drying sample tested in duplicate on {eq}; printout attached.",
    ),
    "tablet_press": (
        "Compression on {eq}; tablet weight, hardness and thickness checked every 30 min.",
        "Set-up of {eq} verified; punches and dies match the tooling list.",
    ),
    "coater": (
        "Coating on {eq}; spray rate and bed temperature within limits.",
        "Weight gain checked at end of coating on {eq}; tablets moved to labelled containers.",
    ),
    "mixing_vessel": (
        "Prepared in {eq}; stirring time and speed as per master recipe.",
        "Dispersion in {eq} homogeneous by visual check; vessel labelled with hold time.",
    ),
    "encapsulator": (
        "Encapsulation on {eq}; fill weight checks every 15 min within limits.",
        "Set-up of {eq} verified; change parts match the product.",
    ),
    "metal_detector": (
        "Challenge test of {eq} passed at start and end of the run.",
        "All tablets passed through {eq}; rejects counted and reconciled.",
    ),
    "blister_line": (
        "Blistering on {eq}; seal integrity test passed.",
        "Line clearance of {eq} confirmed; embossed batch codes checked.",
    ),
    "cartoner": (
        "Cartoning on {eq}; batch number and expiry date checked on the first carton.",
        "Leaflet and carton codes verified by the camera system of {eq}.",
    ),
    "bottle_line": (
        "Bottles filled on {eq}; closure torque checks within limits.",
        "Count and closure checks at start-up of {eq} within limits.",
    ),
    "vial_washer": (
        "Vials washed on {eq}; final rinse conductivity within limits.",
        "Washing cycle completed on {eq}; cycle printout attached.",
    ),
    "depyrogenation_tunnel": (
        "Depyrogenation on {eq}; hot zone temperature within limits, chart attached.",
        "Cycle of {eq} completed; differential pressure maintained throughout.",
    ),
    "autoclave": (
        "Sterilisation cycle on {eq} completed; Bowie-Dick test passed.",
        "Cycle printout from {eq} attached; load pattern as validated.",
    ),
    "compounding_vessel": (
        "Charged into {eq}; mixing speed and time as per master recipe.",
        "Solution in {eq} clear and free from visible particles; temperature recorded.",
    ),
    "filter_integrity_tester": (
        "Bubble point test on {eq} passed; printout attached.",
        "Filter integrity test passed on {eq}; filter lot recorded in the logbook.",
    ),
    "filtration_skid": (
        "Filtration on {eq} completed at the validated pressure.",
        "Filtrate collected in the sterile receiving vessel; pressure trend of {eq} attached.",
    ),
    "filling_machine": (
        "Filling on {eq}; fill weight checks within limits.",
        "Settle plates exposed during filling on {eq} as per monitoring plan.",
    ),
    "lyophilizer": (
        "Cycle on {eq} as per master recipe; shelf temperature trend attached.",
        "Chamber pressure and shelf temperature on {eq} within limits.",
    ),
    "capping_machine": (
        "Capping on {eq}; crimp quality checked at start-up.",
        "Seal integrity checks on {eq} within limits.",
    ),
    "inspection_machine": (
        "Inspection on {eq}; rejects counted and reconciled.",
        "Inspection challenge set passed on {eq} before start.",
    ),
}
_CLOSING_NOTES: tuple[str, ...] = (
    "Line clearance confirmed before start.",
    "Room and equipment status labels checked.",
    "Second-person verification completed.",
    "Step completed as per master recipe.",
    "Cleaning status of equipment checked before use.",
    "Room differential pressure checked before start.",
)
_AUDIT_REASONS_COMMENTS: tuple[str, ...] = (
    "Comment completed per GDP; original entry retained.",
    "Typing error corrected; original entry retained in audit trail.",
    "Equipment reference added after check against the equipment logbook.",
)
_AUDIT_REASON_STATUS = "Status updated after second-person verification."

_QTY_RANGE = {"kg": (5.0, 200.0), "g": (50.0, 900.0), "L": (20.0, 300.0), "mL": (100.0, 2500.0),
              "ea": (20000.0, 250000.0)}


@dataclass
class GenContext:
    """Everything the generator needs for one split: master look-ups, clock and id formats."""

    master: dict
    prefix: str
    n_batches: int
    n_records: int
    index: MasterIndex = field(init=False)
    clock: SiteClock = field(init=False)

    def __post_init__(self):
        self.index = MasterIndex(self.master)
        self.clock = SiteClock(self.master["timezone"], self.master["extracted_at"])
        self.recipes = list(self.master["recipes"])
        self.batch_width = max(4, len(str(self.n_batches)))
        self.record_width = max(6, len(str(self.n_records)))
        self._nominal: dict[tuple[str, str], float] = {}

    def nominal_qty(self, product_code: str, material_id: str) -> float:
        key = (product_code, material_id)
        q = self._nominal.get(key)
        if q is None:
            uom = self.index.material_uom[material_id]
            lo, hi = _QTY_RANGE[uom]
            r = random.Random(derive_seed("nominal", product_code, material_id))
            q = lo * (hi / lo) ** r.random()
            q = round(q, -2) if uom == "ea" else round(q, 1)
            self._nominal[key] = q
        return q

    def record_id(self, global_index: int) -> str:
        return f"R-{self.prefix}-{global_index + 1:0{self.record_width}d}"


@dataclass
class BatchState:
    """One batch being built: its records and, beside them, each step's instants (epoch s)."""

    ctx: GenContext
    batch_index: int
    batch_id: str
    recipe: dict
    rng: random.Random
    records: list[dict] = field(default_factory=list)
    t_start: list[int] = field(default_factory=list)
    t_end: list[int] = field(default_factory=list)
    t_rec: list[int] = field(default_factory=list)
    lots: dict[str, str] = field(default_factory=dict)  # material_id -> lot
    equipment: dict[str, str] = field(default_factory=dict)  # equipment class -> id
    used_lots: set[str] = field(default_factory=set)

    @property
    def product_code(self) -> str:
        return self.recipe["product_code"]

    def new_lot(self) -> str:
        """A lot number not yet used in this batch (lots never repeat across materials)."""
        used = self.used_lots
        if len(used) < len(self.lots):  # pragma: no cover - lots are only made here
            used.update(self.lots.values())
        while True:
            lot = f"L{self.batch_id[1:3]}{int(self.rng.random() * 90000) + 10000}"
            if lot not in used:
                used.add(lot)
                return lot

    def lot_for(self, material_id: str) -> str:
        lot = self.lots.get(material_id)
        if lot is None:
            lot = self.lots[material_id] = self.new_lot()
        return lot

    def equipment_for(self, eq_class: str) -> str:
        eq = self.equipment.get(eq_class)
        if eq is None:
            units = self.ctx.index.equipment_by_class[eq_class]
            eq = self.equipment[eq_class] = self.rng.choice(units)
        return eq


def phase_content(st: BatchState, step: dict) -> dict:
    """The phase-dependent part of a record (what a structural deviation moves or copies)."""
    rng = st.rng
    ctx = st.ctx
    mats = step["materials"]
    if mats:
        material_id = mats[0]
        uom = ctx.index.material_uom[material_id]
        nominal = ctx.nominal_qty(st.product_code, material_id)
        q = nominal * (1.0 + (rng.random() - 0.5) * 0.008)
        qty = float(round(q)) if uom == "ea" else round(q, 3)
        lot = st.lot_for(material_id)
    else:
        material_id = lot = qty = uom = None
    eq_class = step["equipment_class"]
    eq = st.equipment_for(eq_class)
    t = step["temperature_c"]
    d = step["duration_min"]
    tv = round(rng.triangular(t["low"], t["high"], t["target"]), 1)
    tv = min(max(tv, t["low"]), t["high"])
    dlow = max(1, d["low"])
    dv = int(round(rng.triangular(dlow, d["high"], d["target"])))
    dv = min(max(dv, dlow), d["high"])
    notes = _CLASS_NOTES[eq_class]
    comment = (notes[int(rng.random() * len(notes))].format(eq=eq) + " "
               + _CLOSING_NOTES[int(rng.random() * len(_CLOSING_NOTES))])
    return {
        "unit_procedure": step["unit_procedure"],
        "operation": step["operation"],
        "phase": step["phase"],
        "material_id": material_id,
        "material_lot": lot,
        "qty_actual": qty,
        "uom": uom,
        "equipment_id": eq,
        "parameters": {
            "temperature_c": {"value": tv, "low": t["low"], "high": t["high"], "unit": "C"},
            "duration_min": {"value": dv, "low": d["low"], "high": d["high"], "unit": "min"},
        },
        "comments": comment,
    }


def generate_clean_batch(ctx: GenContext, batch_index: int, recipe_index: int, n_steps: int,
                         record_offset: int, rng: random.Random) -> BatchState:
    """Generate one clean batch (no deviation) of `n_steps` records of recipe `recipe_index`."""
    clock = ctx.clock
    recipe = ctx.recipes[recipe_index]
    steps = recipe["steps"][:n_steps]
    window = (BATCH_START_MIN_DAYS_BEFORE - BATCH_START_MAX_DAYS_BEFORE) * 86400
    t = clock.extracted_epoch - BATCH_START_MIN_DAYS_BEFORE * 86400 + int(rng.random() * window)
    t -= t % 60
    year = clock.local_datetime(t).year % 100
    batch_id = f"B{year:02d}-{ctx.prefix}-{batch_index + 1:0{ctx.batch_width}d}"
    st = BatchState(ctx=ctx, batch_index=batch_index, batch_id=batch_id, recipe=recipe, rng=rng)
    ops = ctx.index.operator_ids
    vers = ctx.index.verifier_ids
    product = recipe["product_code"]
    random_ = rng.random
    fmt = clock.fmt
    for k, step in enumerate(steps):
        c = phase_content(st, step)
        if k:
            t = st.t_end[-1] + (GAP_MIN_MIN + int(random_() * (GAP_MAX_MIN - GAP_MIN_MIN + 1))) * 60
        start = t
        end = start + c["parameters"]["duration_min"]["value"] * 60
        rec_t = end + int(random_() * (RECORD_DELAY_MAX_S + 1))
        operator = ops[int(random_() * len(ops))]
        u = random_()
        status = "COMPLETED" if u < 0.8 else ("VERIFIED" if u < 0.95 else "COMPLETED_WITH_COMMENT")
        audit: list = []
        if random_() < AUDIT_TRAIL_SHARE:
            changed_ts = fmt(rec_t + 60 + int(random_() * 1140))
            if status != "COMPLETED":
                audit.append({"field": "status", "old_value": "COMPLETED", "new_value": status,
                              "changed_by": operator, "changed_ts": changed_ts,
                              "reason": _AUDIT_REASON_STATUS})
            else:
                note = c["comments"]
                audit.append({"field": "comments", "old_value": note[:note.rfind(". ") + 1],
                              "new_value": c["comments"], "changed_by": operator,
                              "changed_ts": changed_ts,
                              "reason": _AUDIT_REASONS_COMMENTS[int(random_() * 3)]})
        record = {
            "record_id": ctx.record_id(record_offset + k),
            "batch_id": batch_id,
            "product_code": product,
            "unit_procedure": c["unit_procedure"],
            "operation": c["operation"],
            "phase": c["phase"],
            "step_seq": k + 1,
            "material_id": c["material_id"],
            "material_lot": c["material_lot"],
            "qty_actual": c["qty_actual"],
            "uom": c["uom"],
            "equipment_id": c["equipment_id"],
            "operator_id": operator,
            "verifier_id": vers[int(random_() * len(vers))],
            "start_ts": fmt(start),
            "end_ts": fmt(end),
            "recorded_ts": fmt(rec_t),
            "status": status,
            "parameters": c["parameters"],
            "environment": {
                "room_temp_c": round(19.0 + random_() * 4.5, 1),
                "relative_humidity_pct": round(35.0 + random_() * 20.0, 1),
                "differential_pressure_pa": round(10.0 + random_() * 35.0, 1),
            },
            "comments": c["comments"],
            "audit_trail": audit,
        }
        st.records.append(record)
        st.t_start.append(start)
        st.t_end.append(end)
        st.t_rec.append(rec_t)
    return st
