"""Rule-based reference auditor: implements exactly the `rule:` of each deviation type in
configs/deviations.yaml and returns findings in the model-output shape. One part is not a rule:
a comment addressed to the auditor (prompt injection, a kind of non_gmp_compliant_free_text) is
recognised by the shared detector of synthetic/injection_screen.py, whose classifier can err; its
measured rates are in docs/benchmarks.md.

Pipeline (vectorised over the whole record list; each record is touched once in Python):

1. keys: a record whose keys are not the schema's is normalised first. A missing schema key with
   a near-identical extra key (difflib) is `misspelled_field_name` and the value moves back to the
   schema key; any other extra key is `extra_field_not_in_schema` and is dropped. A key still
   absent after that is "not checkable": no rule fires on it (a misspelled operator_id does not
   also fire missing_operator_id).
2. flatten: one row per record in a DataFrame of plain columns. Text fields are factorized (int
   codes + a table of distinct values, so a rule is evaluated once per distinct value); parameters
   become floats; timestamps are parsed to UTC epoch seconds with their written offset and the
   site offset for that instant.
3. per-record rules: one pandera `Check` per rule, named after the slug, validated lazily (pandas
   backend) on the rule's columns; the failure cases map row -> record.
4. batch rules in numpy/pandas over records sorted by (batch, step_seq): timestamp sequence,
   duplicate record ids, redundant steps, step order against the master recipe, lot reuse.
"""

from __future__ import annotations

import difflib
import gc
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

try:
    import pandera.pandas as pa
except ImportError:  # pragma: no cover - pandera < 0.24 has no pandera.pandas namespace
    import pandera as pa

from synthetic.catalog import DeviationCatalog, load_catalog
from synthetic.contracts import (
    ENVIRONMENT_KEYS,
    PREDICTION_COLUMNS,
    RECORD_FIELDS,
    TIMESTAMP_FIELDS,
)
from synthetic.injection_screen import flag_texts
from synthetic.master_data import MasterIndex


@dataclass(frozen=True)
class Finding:
    record_id: str | None
    batch_id: str | None
    deviation_type: str
    field: str | None
    evidence: str


class _Absent:
    """Marks a schema field that a record does not have (not checkable)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()
_FIELDS = tuple(RECORD_FIELDS)
_FIELDSET = frozenset(RECORD_FIELDS)
_POS = {k: i for i, k in enumerate(RECORD_FIELDS)}
MISSPELLING_CUTOFF = 0.8
TEXT_FIELDS: tuple[str, ...] = (
    "record_id", "batch_id", "product_code", "unit_procedure", "operation", "phase",
    "material_id", "material_lot", "uom", "equipment_id", "operator_id", "verifier_id", "status",
    "comments",
)
_PARAM_COLS = ("temp_value", "temp_low", "temp_high", "dur_value", "dur_low", "dur_high")

PLACEHOLDER_RE = re.compile(
    r"\b(?:tbd|tbc|todo|to-do)\b|\bx{3,}\b|(?<!\w)n/a(?!\w)|lorem ipsum"
    r"|\bto be (?:completed|filled(?: in)?|confirmed|added|entered|defined)\b"
    r"|<\s*(?:enter|insert|fill)[^>]*>|\bplaceholder\b",
    re.IGNORECASE,
)
# Informal or speculative language; text that addresses the reviewer or an AI with instructions
# is the shared injection detector's (synthetic/injection_screen.py, also the server's guardrail).
INFORMAL_RE = re.compile(
    r"\b(?:guess(?:ed|ing)?|probably|lol|whatever|maybe|kinda|sorta|dunno|i think|no idea"
    r"|more or less|looks? (?:ok|okay|fine|good|alright)|should be (?:ok|okay|fine)"
    r"|seems? (?:ok|okay|fine))\b",
    re.IGNORECASE,
)


def is_non_gmp_text(value: object) -> bool:
    """The non_gmp_compliant_free_text rule on one comment: informal, or an injection."""
    return non_gmp_flags([value])[0]


def non_gmp_flags(values: Sequence[object]) -> np.ndarray:
    """The non_gmp_compliant_free_text rule over many comments (one classifier call)."""
    informal = np.fromiter((isinstance(v, str) and INFORMAL_RE.search(v) is not None
                            for v in values), dtype=bool, count=len(values))
    return informal | np.asarray(flag_texts(values), dtype=bool)

_TS_SLOW_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


# --- small helpers -------------------------------------------------------------------------
def _obj(values: Sequence) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _is_blank(v: object) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


class _Unhashable:
    """Stands in for an unhashable value (a dict where text belongs) so it can be factorized."""

    __slots__ = ("text",)

    def __init__(self, value: object):
        self.text = repr(value)

    def __eq__(self, other):
        return isinstance(other, _Unhashable) and other.text == self.text

    def __hash__(self):
        return hash(("_Unhashable", self.text))

    def __repr__(self):
        return self.text


def _hashable(v: object) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _to_float(values: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Floats and a state per value: -1 absent, 0 null or blank, 1 number, 2 anything else."""
    try:
        out = np.array(values, dtype=np.float64)
        return out, np.where(np.isnan(out), 0, 1).astype(np.int8)
    except (TypeError, ValueError):
        pass
    n = len(values)
    out = np.full(n, np.nan)
    state = np.zeros(n, dtype=np.int8)
    for i, v in enumerate(values):
        if v is ABSENT:
            state[i] = -1
        elif _is_blank(v):
            state[i] = 0
        elif isinstance(v, bool):
            state[i] = 2
        else:
            try:
                out[i] = float(v)
                state[i] = 1
            except (TypeError, ValueError):
                state[i] = 2
    return out, state


def _combo_codes(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One code per distinct tuple of several code columns (codes >= -1)."""
    combined = np.zeros(len(arrays[0]), dtype=np.int64)
    for a in arrays:
        combined = combined * (int(a.max(initial=0)) + 2) + (a.astype(np.int64) + 1)
    return combined


# --- timestamps ----------------------------------------------------------------------------
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24])
_SEPS = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 22: ":"}
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = np.where(m > 2, m - 3, m + 9)
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _leap(y: np.ndarray) -> np.ndarray:
    return ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)


def parse_timestamps(values: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ISO 8601 'YYYY-MM-DDTHH:MM:SS[.f](+HH:MM|Z)' strings.

    Returns (state, utc, offset): state -1 absent, 0 not valid, 1 valid; utc epoch seconds
    (float, NaN unless valid); offset the written UTC offset in seconds (NaN unless valid).
    """
    values = values if isinstance(values, list) else list(values)
    n = len(values)
    lens = np.fromiter((len(v) if type(v) is str else (-2 if v is ABSENT else -1) for v in values),
                       dtype=np.int64, count=n)
    state = np.where(lens == -2, -1, 0).astype(np.int8)
    utc = np.full(n, np.nan)
    off = np.full(n, np.nan)

    is25 = lens == 25  # the site format: 2026-03-04T08:15:00+01:00
    fast = np.flatnonzero(is25)
    if len(fast):
        chosen = values if len(fast) == n else [values[i] for i in fast]
        try:
            u = np.frombuffer("".join(chosen).encode("ascii"), dtype=np.uint8).reshape(-1, 25)
        except UnicodeEncodeError:  # a non-ASCII character: code points instead of bytes
            u = np.array(chosen, dtype="U25").view(np.uint32).reshape(-1, 25)

        def digit(j: int) -> np.ndarray:
            return u[:, j].astype(np.int64) - 48

        ok = np.ones(len(fast), dtype=bool)
        dig = {}
        for j in _DIGITS:
            dj = digit(j)
            ok &= (dj >= 0) & (dj <= 9)
            dig[j] = dj
        for pos, ch in _SEPS.items():
            ok &= u[:, pos] == ord(ch)
        sign_ch = u[:, 19]
        ok &= (sign_ch == ord("+")) | (sign_ch == ord("-"))
        year = dig[0] * 1000 + dig[1] * 100 + dig[2] * 10 + dig[3]
        month = dig[5] * 10 + dig[6]
        day = dig[8] * 10 + dig[9]
        hh = dig[11] * 10 + dig[12]
        mi = dig[14] * 10 + dig[15]
        ss = dig[17] * 10 + dig[18]
        oh = dig[20] * 10 + dig[21]
        om = dig[23] * 10 + dig[24]
        ok &= (month >= 1) & (month <= 12) & (day >= 1) & (hh <= 23) & (mi <= 59)
        ok &= (ss <= 59) & (oh <= 23) & (om <= 59) & (year >= 1)
        mclip = np.clip(month, 1, 12)
        ok &= day <= _DAYS_IN_MONTH[mclip] + ((mclip == 2) & _leap(year))
        offset = np.where(sign_ch == ord("-"), -1, 1) * (oh * 3600 + om * 60)
        seconds = _days_from_civil(year, mclip, day) * 86400 + hh * 3600 + mi * 60 + ss
        idx = fast[ok]
        state[idx] = 1
        utc[idx] = (seconds - offset)[ok]
        off[idx] = offset[ok]

    for i in np.flatnonzero((lens >= 0) & ~is25):  # fractions, 'Z', or not valid
        m = _TS_SLOW_RE.fullmatch(values[i])
        if not m:
            continue
        y, mo, dd, hh, mi, ss = (int(g) for g in m.groups()[:6])
        tz = m.group(8)
        if tz != "Z" and (int(tz[1:3]) > 23 or int(tz[4:6]) > 59):
            continue
        try:
            base = datetime(y, mo, dd, hh, mi, ss)
        except ValueError:
            continue
        o = 0 if tz == "Z" else (-1 if tz[0] == "-" else 1) * (int(tz[1:3]) * 3600
                                                               + int(tz[4:6]) * 60)
        frac = float(m.group(7)) if m.group(7) else 0.0
        state[i] = 1
        utc[i] = (base.toordinal() - 719163) * 86400 + hh * 3600 + mi * 60 + ss + frac - o
        off[i] = o
    return state, utc, off


def site_offsets(utc: np.ndarray, tz_name: str) -> np.ndarray:
    """The site time zone's UTC offset (seconds) at each instant (NaN where utc is NaN)."""
    out = np.full(len(utc), np.nan)
    valid = np.flatnonzero(~np.isnan(utc))
    if not len(valid):
        return out
    secs = np.clip(np.floor(utc[valid]), -(2**37), 2**37).astype(np.int64)
    idx = pd.DatetimeIndex(secs.astype("datetime64[s]")).tz_localize("UTC").tz_convert(tz_name)
    wall = idx.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)
    out[valid] = wall - secs
    return out


# --- key normalisation ---------------------------------------------------------------------
def _normalise(rec: dict) -> tuple[dict, list[tuple[str, str, str]]]:
    """A copy with exactly the schema keys in order (ABSENT where missing) and key findings."""
    missing = [f for f in RECORD_FIELDS if f not in rec]
    new = {f: rec.get(f, ABSENT) for f in RECORD_FIELDS}
    found = []
    for key in rec:
        if key in _FIELDSET:
            continue
        match = difflib.get_close_matches(str(key), missing, n=1, cutoff=MISSPELLING_CUTOFF)
        if match:
            canonical = match[0]
            missing.remove(canonical)
            new[canonical] = rec[key]
            found.append(("misspelled_field_name", canonical,
                          f"field {key!r} holds the value of schema field {canonical!r}"))
        else:
            found.append(("extra_field_not_in_schema", str(key),
                          f"field {key!r} is not in the record schema"))
    return new, found


# --- flattening ----------------------------------------------------------------------------


def _env_state(env: object) -> int:
    """-1 absent, 1 incomplete (null or a reading missing), 0 complete."""
    if env is ABSENT:
        return -1
    if not isinstance(env, dict):
        return 1
    return int(any(env.get(k) is None for k in ENVIRONMENT_KEYS))


def _params_slow(p: object) -> tuple:
    out = []
    for key in ("temperature_c", "duration_min"):
        for part in ("value", "low", "high"):
            try:
                out.append(p[key][part])
            except (KeyError, TypeError, IndexError):
                out.append(None)
    return tuple(out)


def _audit_reason_missing(trail: object) -> bool:
    if not trail or not isinstance(trail, list):
        return False
    return any(isinstance(e, dict) and _is_blank(e.get("reason")) for e in trail)


@dataclass
class _Flat:
    """Flattened records: `frame` holds numeric columns only (text fields as codes into
    `uniques[field]`, whose entry 0 is None); `raw` keeps the timestamp strings for evidence."""

    frame: pd.DataFrame
    uniques: dict[str, np.ndarray]
    raw: dict[str, list]
    key_findings: list[tuple[int, str, str, str]]

    def __post_init__(self):
        self._codes = {c: self.frame[c].to_numpy() for c in self.uniques}

    def value(self, col: str, row: int) -> object:
        """The record's value of a text or timestamp field (None for null)."""
        if col in self.raw:
            return self.raw[col][row]
        return self.uniques[col][self._codes[col][row]]

    def table(self, col: str, fn: Callable[[object], bool]) -> np.ndarray:
        """fn over the distinct values of a text column, indexable by its codes."""
        return np.fromiter((bool(fn(v)) for v in self.uniques[col]), dtype=bool,
                           count=len(self.uniques[col]))


def _flatten(records: Sequence[dict], tz_name: str) -> _Flat:
    """One pass over the records (each touched once, while it is in cache): text fields are
    dictionary-encoded on the fly, nested values pulled out, key problems normalised."""
    n = len(records)
    tables = [{None: 0} for _ in TEXT_FIELDS]
    (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13) = tables
    (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13) = (t.setdefault for t in tables)
    code_rows: list[tuple] = []
    other_rows: list[tuple] = []
    add_codes, add_other = code_rows.append, other_rows.append
    key_findings: list[tuple[int, str, str, str]] = []
    fields = _FIELDS
    for i, r in enumerate(records):
        if tuple(r) != fields:
            r, found = _normalise(r)
            key_findings.extend((i, *f) for f in found)
        (rid, bid, prod, up, op, ph, seq, mat, lot, qty, uom, eq, opr, ver, st, et, rt, status,
         par, env, com, aud) = r.values()
        try:
            add_codes((s0(rid, len(t0)), s1(bid, len(t1)), s2(prod, len(t2)), s3(up, len(t3)),
                       s4(op, len(t4)), s5(ph, len(t5)), s6(mat, len(t6)), s7(lot, len(t7)),
                       s8(uom, len(t8)), s9(eq, len(t9)), s10(opr, len(t10)), s11(ver, len(t11)),
                       s12(status, len(t12)), s13(com, len(t13))))
        except TypeError:  # an unhashable value where text belongs
            vals = (rid, bid, prod, up, op, ph, mat, lot, uom, eq, opr, ver, status, com)
            add_codes(tuple(t.setdefault(v if _hashable(v) else _Unhashable(v), len(t))
                            for t, v in zip(tables, vals, strict=True)))
        try:
            t, d = par["temperature_c"], par["duration_min"]
            pv = (t["value"], t["low"], t["high"], d["value"], d["low"], d["high"])
        except (KeyError, TypeError):  # malformed parameters: the slow path says what is wrong
            pv = _params_slow(par)
        try:
            ev = int(env["room_temp_c"] is None or env["relative_humidity_pct"] is None
                     or env["differential_pressure_pa"] is None)
        except (KeyError, TypeError):  # malformed environment: the slow path handles it
            ev = _env_state(env)
        add_other((seq, qty, st, et, rt, ev, bool(aud) and _audit_reason_missing(aud), *pv))
    frame: dict[str, np.ndarray] = {"_row": np.arange(n)}
    uniques: dict[str, np.ndarray] = {}
    code_matrix = (np.array(code_rows, dtype=np.int32) if n
                   else np.zeros((0, len(TEXT_FIELDS)), dtype=np.int32))
    del code_rows
    for j, (key, table) in enumerate(zip(TEXT_FIELDS, tables, strict=True)):
        frame[key] = np.ascontiguousarray(code_matrix[:, j])
        uniques[key] = _obj(list(table))
    cols = list(zip(*other_rows, strict=True)) if n else [()] * 13
    del other_rows
    steps, qtys, starts, ends, recorded, envs, audits = (list(c) for c in cols[:7])
    frame["step_seq"], _ = _to_float(steps)
    frame["qty_num"], frame["qty_state"] = _to_float(qtys)
    for name, col in zip(_PARAM_COLS, cols[7:], strict=True):
        frame[name], _ = _to_float(col)
    frame["env_state"] = np.array(envs, dtype=np.int8)
    frame["audit_bad"] = np.array(audits, dtype=bool)
    raw = {"start_ts": starts, "end_ts": ends, "recorded_ts": recorded}
    for key, values in raw.items():
        state, utc, off = parse_timestamps(values)
        frame[f"{key}__state"] = state
        frame[f"{key}__utc"] = utc
        frame[f"{key}__off"] = off
        frame[f"{key}__site_off"] = site_offsets(utc, tz_name)
    return _Flat(frame=pd.DataFrame(frame), uniques=uniques, raw=raw, key_findings=key_findings)


# --- per-record rules ----------------------------------------------------------------------
def _is_set(v: object) -> bool:
    """Present, not null, not a blank string."""
    return v is not ABSENT and not _is_blank(v)


class _Rules:
    """Per-record rules over one flattened frame; each returns a boolean 'fails' mask for the
    rows of the (sub-)frame it is given."""

    def __init__(self, flat: _Flat, index: MasterIndex, catalog: DeviationCatalog):
        self.flat = flat
        self.index = index
        self.extracted = datetime.fromisoformat(index.master["extracted_at"]).timestamp()
        site = catalog.site_rules
        self.late_s = float(site.get("late_entry_minutes", 30)) * 60
        self.op_re = re.compile(site.get("operator_id_pattern", "^OP[0-9]{4}$"))
        self._tables: dict[tuple[str, str], np.ndarray] = {}

    def tab(self, d: pd.DataFrame, col: str, name: str, fn: Callable[[object], bool]) -> np.ndarray:
        """Evaluate fn once per distinct value of a text column; mask for d's rows."""
        table = self._tables.get((col, name))
        if table is None:
            table = self._tables[(col, name)] = self.flat.table(col, fn)
        return table[d[col].to_numpy()]

    def is_set(self, d, col):
        return self.tab(d, col, "set", _is_set)

    # 1 / 13
    def missing_quantity(self, d):
        return self.is_set(d, "material_id") & (d["qty_state"].to_numpy() == 0)

    def negative_quantity(self, d):
        return np.nan_to_num(d["qty_num"].to_numpy(), nan=0.0) < 0

    # 2 / 3 / 18
    @staticmethod
    def _ts_bad(d):
        return {k: d[f"{k}__state"].to_numpy() == 0 for k in TIMESTAMP_FIELDS}

    def _ts_future(self, d):
        return {k: d[f"{k}__utc"].to_numpy() > self.extracted for k in TIMESTAMP_FIELDS}

    @staticmethod
    def _ts_tz(d):
        return {k: (d[f"{k}__state"].to_numpy() == 1)
                & (d[f"{k}__off"].to_numpy() != d[f"{k}__site_off"].to_numpy())
                for k in TIMESTAMP_FIELDS}

    def invalid_timestamp_format(self, d):
        return np.logical_or.reduce(list(self._ts_bad(d).values()))

    def future_timestamp(self, d):
        return np.logical_or.reduce(list(self._ts_future(d).values()))

    def timestamp_with_wrong_timezone(self, d):
        return np.logical_or.reduce(list(self._ts_tz(d).values()))

    # 5
    def invalid_status_code(self, d):
        codes = self.index.status_codes
        return self.tab(d, "status", "invalid", lambda v: v is not ABSENT and v not in codes)

    # 6 / 7 / 17
    def placeholder_text_in_notes(self, d):
        return self.tab(d, "comments", "placeholder",
                        lambda v: isinstance(v, str) and PLACEHOLDER_RE.search(v) is not None)

    def empty_notes_field(self, d):
        return self.tab(d, "comments", "empty", lambda v: v is not ABSENT and _is_blank(v))

    def non_gmp_compliant_free_text(self, d):
        table = self._tables.get(("comments", "informal"))
        if table is None:
            table = self._tables[("comments", "informal")] = non_gmp_flags(
                self.flat.uniques["comments"])
        return table[d["comments"].to_numpy()]

    # 8
    def overwritten_field_without_comment(self, d):
        return d["audit_bad"].to_numpy()

    # 9 / 10 / 11 / 26
    def missing_operator_id(self, d):
        return self.tab(d, "operator_id", "blank", lambda v: v is not ABSENT and _is_blank(v))

    def invalid_operator_id_format(self, d):
        op_re = self.op_re
        return self.tab(d, "operator_id", "format", lambda v: _is_set(v) and not (
            isinstance(v, str) and op_re.fullmatch(v)))

    def operator_mismatch(self, d):
        op, ver = d["operator_id"].to_numpy(), d["verifier_id"].to_numpy()
        op_u = self.flat.uniques["operator_id"]
        where = {v: k for k, v in enumerate(op_u)}
        ver_in_op = np.array([where.get(v, -1) for v in self.flat.uniques["verifier_id"]])
        return self.is_set(d, "operator_id") & self.is_set(d, "verifier_id") & (
            op == ver_in_op[ver])

    def _unauthorized(self, d):
        roster, op_re = self.index.roster, self.op_re

        def bad(v):
            return isinstance(v, str) and op_re.fullmatch(v) is not None and v not in roster
        return {k: self.tab(d, k, "unauthorized", bad) for k in ("operator_id", "verifier_id")}

    def unauthorized_user_entry(self, d):
        m = self._unauthorized(d)
        return m["operator_id"] | m["verifier_id"]

    # 14 / 15
    def unexpected_material_usage(self, d):
        has = self.is_set(d, "material_id")
        if not has.any():
            return has
        keys = ("product_code", "unit_procedure", "operation", "phase")
        combo = _combo_codes([d[k].to_numpy() for k in keys])
        ucombo, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
        mat_u = self.flat.uniques["material_id"]
        bom = self.index.phase_bom
        table = np.zeros((len(ucombo), len(mat_u)), dtype=bool)
        for i, row in enumerate(first):
            key = tuple(self.flat.value(k, d["_row"].iat[row]) for k in keys)
            allowed = bom.get(key) if all(isinstance(x, str) for x in key) else None
            if allowed is None:  # phase not in the master recipe: not checkable
                continue
            table[i, :] = [m not in allowed for m in mat_u]
        return has & table[inverse.reshape(-1), d["material_id"].to_numpy()]

    def inconsistent_unit_of_measure(self, d):
        mat_u, uom_u = self.flat.uniques["material_id"], self.flat.uniques["uom"]
        master = self.index.material_uom
        table = np.zeros((len(mat_u), len(uom_u)), dtype=bool)
        for i, m in enumerate(mat_u):
            expected = master.get(m) if isinstance(m, str) else None
            if expected is None:  # not a master material: not checkable
                continue
            table[i, :] = [u is not ABSENT and u != expected for u in uom_u]
        return self.is_set(d, "material_id") & table[d["material_id"].to_numpy(),
                                                     d["uom"].to_numpy()]

    # 20 / 21
    @staticmethod
    def _outside(d, prefix):
        v, lo, hi = (d[f"{prefix}_{p}"].to_numpy() for p in ("value", "low", "high"))
        with np.errstate(invalid="ignore"):
            return (v < lo) | (v > hi)

    def out_of_spec_temperature(self, d):
        return self._outside(d, "temp")

    def out_of_spec_duration(self, d):
        return self._outside(d, "dur")

    # 23
    def missing_environmental_condition(self, d):
        return d["env_state"].to_numpy() == 1

    # 27 / 28 / 29
    def data_recorded_before_step_start(self, d):
        return d["recorded_ts__utc"].to_numpy() < d["start_ts__utc"].to_numpy()

    def data_recorded_after_step_end(self, d):
        return d["recorded_ts__utc"].to_numpy() > d["end_ts__utc"].to_numpy() + self.late_s

    def zero_duration(self, d):
        return d["end_ts__utc"].to_numpy() == d["start_ts__utc"].to_numpy()

    # 30
    def invalid_equipment_id(self, d):
        registry = self.index.equipment_ids
        return self.tab(d, "equipment_id", "registry",
                        lambda v: v is not ABSENT and v not in registry)


def _ts_cols(*keys: str) -> tuple[str, ...]:
    return tuple(f"{k}__{p}" for k in keys for p in ("state", "utc", "off", "site_off"))


_ALL_TS = _ts_cols(*TIMESTAMP_FIELDS)
RULE_COLUMNS: dict[str, tuple[str, ...]] = {
    "missing_quantity": ("material_id", "qty_state"),
    "invalid_timestamp_format": tuple(f"{k}__state" for k in TIMESTAMP_FIELDS),
    "future_timestamp": tuple(f"{k}__utc" for k in TIMESTAMP_FIELDS),
    "invalid_status_code": ("status",),
    "placeholder_text_in_notes": ("comments",),
    "empty_notes_field": ("comments",),
    "overwritten_field_without_comment": ("audit_bad",),
    "missing_operator_id": ("operator_id",),
    "invalid_operator_id_format": ("operator_id",),
    "operator_mismatch": ("operator_id", "verifier_id"),
    "negative_quantity": ("qty_num",),
    "unexpected_material_usage": ("product_code", "unit_procedure", "operation", "phase",
                                  "material_id"),
    "inconsistent_unit_of_measure": ("material_id", "uom"),
    "non_gmp_compliant_free_text": ("comments",),
    "timestamp_with_wrong_timezone": _ALL_TS,
    "out_of_spec_temperature": ("temp_value", "temp_low", "temp_high"),
    "out_of_spec_duration": ("dur_value", "dur_low", "dur_high"),
    "missing_environmental_condition": ("env_state",),
    "unauthorized_user_entry": ("operator_id", "verifier_id"),
    "data_recorded_before_step_start": ("recorded_ts__utc", "start_ts__utc"),
    "data_recorded_after_step_end": ("recorded_ts__utc", "end_ts__utc"),
    "zero_duration": ("start_ts__utc", "end_ts__utc"),
    "invalid_equipment_id": ("equipment_id",),
}
BATCH_RULES: tuple[str, ...] = ("timestamp_out_of_sequence", "duplicate_record_id",
                                "reused_batch_number", "redundant_step", "unexpected_step_order")
KEY_RULES: tuple[str, ...] = ("extra_field_not_in_schema", "misspelled_field_name")


def record_schema(slug: str, fails: Callable[[pd.DataFrame], np.ndarray]) -> pa.DataFrameSchema:
    """The pandera schema of one per-record rule: a single Check named after the slug."""
    def check(d: pd.DataFrame) -> pd.Series:
        return pd.Series(~np.asarray(fails(d), dtype=bool), index=d.index)
    return pa.DataFrameSchema(checks=[pa.Check(check, name=slug, ignore_na=False)],
                              name=f"record_rule:{slug}")


def _run_schema(frame: pd.DataFrame, slug: str, cols: tuple[str, ...],
                fails: Callable[[pd.DataFrame], np.ndarray]) -> np.ndarray:
    """Validate the rule's columns lazily; return the failing row positions."""
    cols = tuple(dict.fromkeys(("_row", *cols)))
    try:
        record_schema(slug, fails).validate(frame[list(cols)], lazy=True, inplace=True)
    except pa.errors.SchemaErrors as err:
        fc = err.failure_cases
        rows = fc.loc[(fc["check"] == slug) & (fc["column"] == "_row"), "failure_case"]
        return np.unique(rows.to_numpy().astype(np.int64))
    return np.empty(0, dtype=np.int64)


def _fmt(v: object) -> str:
    return "<absent>" if v is ABSENT else repr(v)


_SIMPLE_EVIDENCE: dict[str, tuple[str, str]] = {
    "missing_quantity": ("qty_actual",
                         "material_id={material_id} is charged but qty_actual is {qty}"),
    "invalid_status_code": ("status", "status={status} is not one of the site status codes"),
    "placeholder_text_in_notes": ("comments", "comments={comments} is placeholder text"),
    "empty_notes_field": ("comments", "comments={comments} is empty"),
    "non_gmp_compliant_free_text": ("comments", "comments={comments} is informal or addresses "
                                                "the reviewer"),
    "overwritten_field_without_comment": ("audit_trail", "an audit_trail entry changes a value "
                                                         "without a reason"),
    "missing_operator_id": ("operator_id", "operator_id={operator_id} is empty"),
    "invalid_operator_id_format": ("operator_id", "operator_id={operator_id} does not match the "
                                                  "site format"),
    "operator_mismatch": ("verifier_id", "verifier_id={verifier_id} equals operator_id"),
    "negative_quantity": ("qty_actual", "qty_actual={qty} is below zero"),
    "unexpected_material_usage": ("material_id", "material_id={material_id} is not in the BOM of "
                                                 "phase {phase}"),
    "inconsistent_unit_of_measure": ("uom", "uom={uom} differs from the material master unit of "
                                            "{material_id}"),
    "out_of_spec_temperature": ("parameters.temperature_c", "temperature {temp_value:g} C outside "
                                                            "[{temp_low:g}, {temp_high:g}]"),
    "out_of_spec_duration": ("parameters.duration_min", "duration {dur_value:g} min outside "
                                                        "[{dur_low:g}, {dur_high:g}]"),
    "missing_environmental_condition": ("environment", "environment lacks a required reading or "
                                                       "is null"),
    "data_recorded_before_step_start": ("recorded_ts", "recorded_ts={recorded_ts} is before "
                                                       "start_ts={start_ts}"),
    "data_recorded_after_step_end": ("recorded_ts", "recorded_ts={recorded_ts} is more than the "
                                                    "late-entry limit after end_ts={end_ts}"),
    "zero_duration": ("start_ts", "start_ts={start_ts} equals end_ts={end_ts}"),
    "invalid_equipment_id": ("equipment_id", "equipment_id={equipment_id} is not in the "
                                             "equipment registry"),
}


def _explain(slug: str, rules: _Rules, flat: _Flat, rows: np.ndarray) -> list[tuple[str, str]]:
    frame = flat.frame
    if slug in ("invalid_timestamp_format", "future_timestamp", "timestamp_with_wrong_timezone",
                "unauthorized_user_entry"):
        sub = frame.iloc[rows]
        masks = {"invalid_timestamp_format": rules._ts_bad, "future_timestamp": rules._ts_future,
                 "timestamp_with_wrong_timezone": rules._ts_tz,
                 "unauthorized_user_entry": rules._unauthorized}[slug](sub)
        text = {"invalid_timestamp_format": "{f}={v} is not ISO 8601 with seconds and a UTC offset",
                "future_timestamp": "{f}={v} is later than extracted_at",
                "timestamp_with_wrong_timezone": "{f}={v} does not carry the site offset for that "
                                                 "instant",
                "unauthorized_user_entry": "{f}={v} is not on the authorized roster"}[slug]
        out = []
        for k, r in enumerate(rows):
            f = next((f for f, m in masks.items() if m[k]), next(iter(masks)))
            out.append((f, text.format(f=f, v=_fmt(flat.value(f, r)))))
        return out
    field, template = _SIMPLE_EVIDENCE[slug]
    out = []
    for r in rows:
        values = {k: _fmt(flat.value(k, r)) for k in (*TEXT_FIELDS, *TIMESTAMP_FIELDS)
                  if "{" + k + "}" in template}
        values.update({k: frame[k].iat[r] for k in _PARAM_COLS if "{" + k in template})
        if "{qty}" in template:
            q, s = frame["qty_num"].iat[r], frame["qty_state"].iat[r]
            values["qty"] = f"{q:g}" if s == 1 else ("null or empty" if s == 0 else "not a number")
        out.append((field, template.format(**values)))
    return out


# --- batch rules ---------------------------------------------------------------------------
def _batch_findings(flat: _Flat, index: MasterIndex,
                    wanted: set[str]) -> list[tuple[int, str, str, str]]:
    frame = flat.frame
    n = len(frame)
    out: list[tuple[int, str, str, str]] = []

    def codes(col: str) -> tuple[np.ndarray, np.ndarray]:
        c = frame[col].to_numpy()
        return c, flat.table(col, _is_set)[c]

    bcodes, bvalid = codes("batch_id")
    bkey = np.where(bvalid, bcodes, -1)
    seq = np.nan_to_num(frame["step_seq"].to_numpy(), nan=np.inf)
    order = np.lexsort((np.arange(n), seq, bkey))
    b = bkey[order]
    same_prev = np.zeros(n, dtype=bool)
    same_prev[1:] = (b[1:] == b[:-1]) & (b[1:] >= 0)

    def earlier_dup(valid: np.ndarray, *code_arrays: np.ndarray) -> np.ndarray:
        """Sorted positions whose key already appeared earlier in the same batch."""
        key = pd.DataFrame({"b": b, **{f"k{i}": c[order] for i, c in enumerate(code_arrays)}})
        return key.duplicated(keep="first").to_numpy() & valid[order] & (b >= 0)

    if "timestamp_out_of_sequence" in wanted:
        s = frame["start_ts__utc"].to_numpy()[order]
        fail = np.zeros(n, dtype=bool)
        fail[1:] = same_prev[1:] & (s[1:] < s[:-1])
        for k in np.flatnonzero(fail):
            r, pr = order[k], order[k - 1]
            out.append((r, "timestamp_out_of_sequence", "start_ts",
                        f"start_ts={flat.value('start_ts', r)} is earlier than the previous step's "
                        f"start_ts={flat.value('start_ts', pr)}"))

    if "duplicate_record_id" in wanted:
        rc, rvalid = codes("record_id")
        for k in np.flatnonzero(earlier_dup(rvalid, rc)):
            r = order[k]
            out.append((r, "duplicate_record_id", "record_id",
                        f"record_id={flat.value('record_id', r)} already appears on an earlier "
                        "step of the batch"))

    phase_cols = ("unit_procedure", "operation", "phase")
    pc = [codes(c) for c in phase_cols]
    pvalid = pc[0][1] & pc[1][1] & pc[2][1]

    if "redundant_step" in wanted:
        for k in np.flatnonzero(earlier_dup(pvalid, *(c for c, _ in pc))):
            r = order[k]
            out.append((r, "redundant_step", "phase",
                        f"phase {flat.value('phase', r)!r} already appears on an earlier step of "
                        "the batch"))

    if "unexpected_step_order" in wanted:
        keys = ("product_code", *phase_cols)
        combo = _combo_codes([frame[k].to_numpy() for k in keys])
        _, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
        ranks = np.array([index.phase_rank.get(tuple(flat.value(k, r) for k in keys), -1)
                          for r in first])
        rank = ranks[inverse.reshape(-1)][order]
        fail = np.zeros(n, dtype=bool)
        fail[1:] = same_prev[1:] & (rank[1:] >= 0) & (rank[:-1] >= 0) & (rank[1:] < rank[:-1])
        for k in np.flatnonzero(fail):
            r, pr = order[k], order[k - 1]
            out.append((r, "unexpected_step_order", "phase",
                        f"phase {flat.value('phase', r)!r} comes before the previous step's phase "
                        f"{flat.value('phase', pr)!r} in the master recipe"))

    if "reused_batch_number" in wanted:
        mc, mvalid = codes("material_id")
        lc, lvalid = codes("material_lot")
        ok = mvalid & lvalid & bvalid
        if ok.any():
            sel = order[ok[order]]  # eligible rows in (batch, step) order
            g = pd.DataFrame({"b": bcodes[sel], "l": lc[sel], "m": mc[sel]})
            first = g.groupby(["b", "l"], sort=False)["m"].transform("first").to_numpy()
            diff = g["m"].to_numpy() != first
            g["d"] = diff
            prior = g.groupby(["b", "l"], sort=False)["d"].cumsum().to_numpy() - diff
            for k in np.flatnonzero(diff | (prior > 0)):
                r = sel[k]
                out.append((r, "reused_batch_number", "material_lot",
                            f"material_lot={flat.value('material_lot', r)} was already recorded "
                            "for a different material earlier in the batch"))
    return out


# --- public API ----------------------------------------------------------------------------
def audit_records(records: Sequence[dict], master: dict,
                  catalog: DeviationCatalog | None = None) -> list[Finding]:
    """Run every catalog rule over the records; findings in input order, then catalog order.

    Batch rules see the records of each batch_id sorted by step_seq, so auditing any set of
    whole batches (e.g. in chunks) gives the same findings as auditing them all at once.
    """
    catalog = catalog or load_catalog()
    known = set(RULE_COLUMNS) | set(BATCH_RULES) | set(KEY_RULES)
    unknown = [s for s in catalog.slugs if s not in known]
    if unknown:
        raise ValueError(f"no detector for deviation type(s) {unknown}; add one in "
                         "scoring/reference_auditor.py")
    if not records:
        return []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived tuples: the cyclic GC would rescan every record
    try:
        return _audit(records, master, catalog)
    finally:
        if gc_was_enabled:
            gc.enable()


def _audit(records: Sequence[dict], master: dict, catalog: DeviationCatalog) -> list[Finding]:
    wanted = set(catalog.slugs)
    index = MasterIndex(master)
    flat = _flatten(records, master["timezone"])
    found: list[tuple[int, str, str, str]] = [f for f in flat.key_findings if f[1] in wanted]
    rules = _Rules(flat, index, catalog)
    for slug, cols in RULE_COLUMNS.items():
        if slug not in wanted:
            continue
        rows = _run_schema(flat.frame, slug, cols, getattr(rules, slug))
        if len(rows):
            for r, (fld, ev) in zip(rows, _explain(slug, rules, flat, rows), strict=True):
                found.append((int(r), slug, fld, ev))
    found.extend((int(r), s, f, e) for r, s, f, e in _batch_findings(flat, index, wanted))

    order = {s: k for k, s in enumerate(catalog.slugs)}
    found.sort(key=lambda f: (f[0], order[f[1]]))

    def clean(v):
        return None if v is ABSENT or v is None else str(v)
    return [Finding(clean(flat.value("record_id", r)), clean(flat.value("batch_id", r)), s, f, e)
            for r, s, f, e in found]


def audit_batches(records: Sequence[dict], master: dict,
                  catalog: DeviationCatalog | None = None) -> dict[str | None, list[Finding]]:
    """Findings grouped by batch_id, with every audited batch present (empty list if clean)."""
    out: dict[str | None, list[Finding]] = {}
    for r in records:
        b = r.get("batch_id")
        out.setdefault(None if b is None else str(b), [])
    for f in audit_records(records, master, catalog):
        out.setdefault(f.batch_id, []).append(f)
    return out


def findings_to_predictions(findings: Iterable[Finding], audited_batch_ids: Iterable[str],
                            model_id: str, split: str) -> list[dict]:
    """Rows with contracts.PREDICTION_COLUMNS: one per finding, plus one row with null
    record_id/deviation_type for each audited batch without findings."""
    rows: list[dict] = []
    with_findings: set = set()
    for f in findings:
        with_findings.add(f.batch_id)
        rows.append(dict(zip(PREDICTION_COLUMNS, (model_id, split, f.batch_id, f.record_id,
                                                   f.deviation_type, f.field, f.evidence, True),
                             strict=True)))
    seen: set = set()
    for b in audited_batch_ids:
        if b in with_findings or b in seen:
            continue
        seen.add(b)
        rows.append(dict(zip(PREDICTION_COLUMNS, (model_id, split, b, None, None, None, None, True),
                             strict=True)))
    return rows


if __name__ == "__main__":  # python -m scoring.reference_auditor: the CLI lives in its own module
    from scoring.reference_auditor_cli import main

    raise SystemExit(main())
