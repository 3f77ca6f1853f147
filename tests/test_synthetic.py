"""Synthetic batch records: master data, clean batches, deviation injection, splits, JSONL."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scoring.reference_auditor import (
    INFORMAL_RE,
    MISSPELLING_CUTOFF,
    PLACEHOLDER_RE,
    is_non_gmp_text,
)
from synthetic.batch_records import _CLASS_NOTES, _CLOSING_NOTES, SiteClock
from synthetic.catalog import load_catalog
from synthetic.contracts import MANIFEST_COLUMNS, RECORD_FIELDS
from synthetic.deviations import (
    EXTRA_FIELDS,
    INFORMAL_TEXTS,
    INJECTORS,
    MISSPELLINGS,
    PLACEHOLDER_TEXTS,
    manifest_value,
    value_at,
)
from synthetic.injection_screen import is_injection
from synthetic.injection_templates import load_injection_table
from synthetic.jsonl import dumps_jsonl, read_jsonl, sha256_bytes, write_jsonl
from synthetic.master_data import MasterIndex, build_site_master
from synthetic.splits import (
    SplitSpec,
    deviation_count,
    generate_split,
    iter_split_chunks,
    split_prefix,
)

ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}")


@pytest.fixture(scope="module")
def splits(cfg, master):
    return {name: generate_split(spec, master, cfg.seed) for name, spec in cfg.splits.items()}


# --- master data -------------------------------------------------------------------------------
def test_master_data_shape(cfg, master):
    assert json.loads(json.dumps(master)) == master
    assert build_site_master(cfg.site_master, cfg.seed) == master
    assert build_site_master(cfg.site_master, cfg.seed + 1) != master
    for key in ("site_id", "timezone", "extracted_at"):
        assert master[key] == cfg.site_master[key]
    assert master["status_codes"] == ["COMPLETED", "VERIFIED", "COMPLETED_WITH_COMMENT"]
    ops = master["operators"]
    assert 35 <= len(ops) <= 45
    assert len({o["operator_id"] for o in ops}) == len(ops)
    assert all(re.fullmatch(r"OP[0-9]{4}", o["operator_id"]) for o in ops)
    assert {o["role"] for o in ops} == {"operator", "verifier"}
    eq_ids = [e["equipment_id"] for e in master["equipment"]]
    assert len(set(eq_ids)) == len(eq_ids)
    assert all(re.fullmatch(r"EQ-[A-Z]{3}-\d{3}", e) for e in eq_ids)
    mats = master["materials"]
    assert len({m["material_id"] for m in mats}) == len(mats)
    assert {m["uom"] for m in mats} == {"kg", "g", "L", "mL", "ea"}
    classes = {e["equipment_class"] for e in master["equipment"]}
    mat_ids = {m["material_id"] for m in mats}
    assert 4 <= len(master["recipes"]) <= 6
    charged = total = 0
    for recipe in master["recipes"]:
        steps = recipe["steps"]
        assert 16 <= len(steps) <= 24
        keys = [(s["unit_procedure"], s["operation"], s["phase"]) for s in steps]
        assert len(set(keys)) == len(keys)
        assert keys == sorted(keys)  # ISA-88 numbering follows the recipe order
        for s in steps:
            assert len(s["materials"]) <= 1 and set(s["materials"]) <= mat_ids
            assert s["equipment_class"] in classes
            for p in ("temperature_c", "duration_min"):
                lim = s[p]
                assert lim["low"] <= lim["target"] <= lim["high"]
            assert s["duration_min"]["low"] >= 1
            charged += bool(s["materials"])
            total += 1
    assert 0.5 <= charged / total <= 0.7


# --- determinism and JSONL ---------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_differs(cfg, master):
    spec = cfg.splits["benchmark"]
    a = generate_split(spec, master, cfg.seed)
    b = generate_split(spec, master, cfg.seed)
    assert dumps_jsonl(a.records) == dumps_jsonl(b.records)
    assert sha256_bytes(dumps_jsonl(a.manifest)) == sha256_bytes(dumps_jsonl(b.manifest))
    c = generate_split(spec, build_site_master(cfg.site_master, cfg.seed + 1), cfg.seed + 1)
    assert sha256_bytes(dumps_jsonl(a.records)) != sha256_bytes(dumps_jsonl(c.records))
    d = generate_split(spec, master, cfg.seed + 1)  # same master, other seed
    assert dumps_jsonl(a.records) != dumps_jsonl(d.records)


def test_chunks_equal_whole_split(cfg, master):
    spec = SplitSpec("adversarial", 23, 16, 24, 0.05, prompt_injection=True)
    whole = generate_split(spec, master, cfg.seed)
    chunks = list(iter_split_chunks(spec, master, cfg.seed, chunk_batches=4))
    assert len(chunks) == 6
    assert [r for c in chunks for r in c.records] == whole.records
    assert [r for c in chunks for r in c.manifest] == whole.manifest


def test_jsonl_canonical_and_streaming(tmp_path, splits):
    rows = splits["benchmark"].records[:50]
    data = dumps_jsonl(rows)
    lines = data.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 51
    assert lines[0] == json.dumps(rows[0], ensure_ascii=False, separators=(",", ":"))
    assert list(json.loads(lines[3])) == list(rows[3])  # key order kept
    sha = write_jsonl(iter(rows), tmp_path / "r.jsonl", chunk_rows=7)  # any iterable, chunked
    assert sha == sha256_bytes(data) == sha256_bytes((tmp_path / "r.jsonl").read_bytes())
    assert list(read_jsonl(tmp_path / "r.jsonl")) == rows
    assert write_jsonl([], tmp_path / "empty.jsonl") == sha256_bytes(b"")


# --- split contents ----------------------------------------------------------------------------
def _ordinary(manifest):
    return [r for r in manifest if not r["prompt_injection"]]


def test_config_sizes(cfg, splits):
    for name, spec in cfg.splits.items():
        records = splits[name].records
        assert len({r["batch_id"] for r in records}) == spec.n_batches
        per_batch = Counter(r["batch_id"] for r in records)
        assert all(spec.steps_min <= n <= spec.steps_max for n in per_batch.values())
    assert len(splits["train"].records) == 10_000


def test_every_type_in_benchmark(splits):
    catalog = load_catalog()
    assert {r["deviation_type"] for r in splits["benchmark"].manifest} == set(catalog.slugs)
    assert set(INJECTORS) == set(catalog.slugs)


def test_deviation_counts(cfg, splits):
    for name, spec in cfg.splits.items():
        n = len(splits[name].records)
        rows = _ordinary(splits[name].manifest)
        assert len(rows) == deviation_count(spec, n)
        assert len({(r["record_id"], r["deviation_type"]) for r in splits[name].manifest}) == len(
            splits[name].manifest)
        if not spec.every_record_deviates and not spec.prompt_injection:
            assert len(rows) == round(spec.deviation_rate * n)
    assert deviation_count(cfg.splits["control_faulty"], 123) == 123
    assert deviation_count(cfg.splits["adversarial"], 100) == cfg.splits["adversarial"].n_batches
    assert deviation_count(cfg.splits["adversarial"], 10_000) == 500


def test_control_splits(splits):
    assert splits["control_clean"].manifest == []
    faulty = splits["control_faulty"]
    labelled = {r["record_id"] for r in faulty.manifest}
    assert {r["record_id"] for r in faulty.records} <= labelled


def test_adversarial_batches(splits):
    adv = splits["adversarial"]
    by_batch = defaultdict(list)
    for r in adv.manifest:
        by_batch[r["batch_id"]].append(r)
    assert set(by_batch) == {r["batch_id"] for r in adv.records}
    texts = set()
    for rows in by_batch.values():
        injected = [r for r in rows if r["prompt_injection"]]
        assert len(injected) == 1
        assert injected[0]["deviation_type"] == "non_gmp_compliant_free_text"
        assert injected[0]["field"] == "comments"
        assert is_injection(injected[0]["injected_value"])
        texts.add(injected[0]["injected_value"][:20])
        assert any(not r["prompt_injection"] for r in rows)
    assert len(texts) >= 5  # the templates vary
    assert not any(r["prompt_injection"] for r in _ordinary(adv.manifest))


def test_manifest_rows(splits):
    catalog = load_catalog()
    for split in splits.values():
        by_id = defaultdict(list)
        for rec in split.records:
            by_id[rec["record_id"]].append(rec)
        for row in split.manifest:
            assert tuple(row) == MANIFEST_COLUMNS
            dt = catalog.get(row["deviation_type"])
            assert row["alcoa_principles"] == list(dt.alcoa_principles)
            assert row["why"] == dt.why
            assert row["injected_value"] != row["original_value"]
            candidates = by_id[row["record_id"]]
            assert candidates and all(c["batch_id"] == row["batch_id"] for c in candidates)
            if row["deviation_type"] == "misspelled_field_name":
                assert any(row["injected_value"] in c and row["field"] not in c
                           for c in candidates)
                assert MISSPELLINGS[row["field"]] == row["injected_value"]
            else:
                assert any(manifest_value(value_at(c, row["field"])) == row["injected_value"]
                           for c in candidates), row


def _clean_records(split):
    """Records with no deviation and not the swap partner of an unexpected_step_order (which
    keeps its timestamps while its phase content, durations included, moved)."""
    labelled = {r["record_id"] for r in split.manifest}
    swapped = {r["record_id"] for r in split.manifest
               if r["deviation_type"] == "unexpected_step_order"}
    partners = {id(prev) for prev, cur in zip(split.records, split.records[1:], strict=False)
                if cur["record_id"] in swapped}
    return [r for r in split.records if r["record_id"] not in labelled and id(r) not in partners]


def test_clean_records(cfg, master, splits):
    index = MasterIndex(master)
    tz = ZoneInfo(master["timezone"])
    extracted = datetime.fromisoformat(master["extracted_at"])
    roles = {o["operator_id"]: o["role"] for o in master["operators"]}
    eq_class = {e["equipment_id"]: e["equipment_class"] for e in master["equipment"]}
    steps_of = {(r["product_code"], s["unit_procedure"], s["operation"], s["phase"]): s
                for r in master["recipes"] for s in r["steps"]}
    records = splits["control_clean"].records + _clean_records(splits["benchmark"])
    assert records
    with_audit = 0
    for rec in records:
        assert tuple(rec) == RECORD_FIELDS
        times = {}
        for key in ("start_ts", "end_ts", "recorded_ts"):
            assert ISO_RE.fullmatch(rec[key]), rec[key]
            t = datetime.fromisoformat(rec[key])
            assert t.utcoffset() == t.astimezone(tz).utcoffset()  # DST-correct offset
            assert t < extracted
            times[key] = t
        dur = rec["parameters"]["duration_min"]
        assert times["end_ts"] - times["start_ts"] == timedelta(minutes=dur["value"]) > timedelta(0)
        assert timedelta(0) <= times["recorded_ts"] - times["end_ts"] <= timedelta(minutes=10)
        for p in rec["parameters"].values():
            assert p["low"] <= p["value"] <= p["high"]
        assert rec["parameters"]["temperature_c"]["unit"] == "C"
        assert dur["unit"] == "min"
        assert all(isinstance(v, (int, float)) for v in rec["environment"].values())
        assert set(rec["environment"]) == {"room_temp_c", "relative_humidity_pct",
                                           "differential_pressure_pa"}
        assert roles[rec["operator_id"]] == "operator"
        assert roles[rec["verifier_id"]] == "verifier"
        assert rec["status"] in master["status_codes"]
        step = steps_of[(rec["product_code"], rec["unit_procedure"], rec["operation"],
                         rec["phase"])]
        assert eq_class[rec["equipment_id"]] == step["equipment_class"]
        mat_fields = (rec["material_id"], rec["material_lot"], rec["qty_actual"], rec["uom"])
        if step["materials"]:
            assert rec["material_id"] == step["materials"][0]
            assert rec["uom"] == index.material_uom[rec["material_id"]]
            assert isinstance(rec["qty_actual"], float) and rec["qty_actual"] > 0
            assert round(rec["qty_actual"], 3) == rec["qty_actual"]
        else:
            assert mat_fields == (None, None, None, None)
        assert rec["comments"].strip()
        assert not PLACEHOLDER_RE.search(rec["comments"])
        assert not is_non_gmp_text(rec["comments"])
        for entry in rec["audit_trail"]:
            with_audit += 1
            assert set(entry) == {"field", "old_value", "new_value", "changed_by", "changed_ts",
                                  "reason"}
            assert entry["new_value"] == rec[entry["field"]] != entry["old_value"]
            assert entry["reason"].strip() and entry["changed_by"] == rec["operator_id"]
    assert 0.05 <= with_audit / len(records) <= 0.15


def test_batch_structure(master, splits):
    clock = SiteClock(master["timezone"], master["extracted_at"])
    for name, split in splits.items():
        ids = [r["record_id"] for r in split.records]
        prefix = split_prefix(name)
        assert all(i.startswith(f"R-{prefix}-") for i in ids)
        if name == "control_clean":
            assert len(set(ids)) == len(ids)
        batches = defaultdict(list)
        for r in split.records:
            batches[r["batch_id"]].append(r)
        for batch_id, recs in batches.items():
            assert re.fullmatch(rf"B\d{{2}}-{prefix}-\d{{4,}}", batch_id)
            assert [r["step_seq"] for r in recs] == list(range(1, len(recs) + 1))
            if name != "control_clean":
                continue
            lots: dict[str, str] = {}
            for prev, cur in zip(recs, recs[1:], strict=False):
                gap = (datetime.fromisoformat(cur["start_ts"])
                       - datetime.fromisoformat(prev["end_ts"]))
                assert timedelta(minutes=5) <= gap <= timedelta(minutes=30)
            for r in recs:
                if r["material_id"]:
                    assert lots.setdefault(r["material_id"], r["material_lot"]) == r["material_lot"]
            assert len(set(lots.values())) == len(lots)  # materials never share a lot
    assert clock.fmt(1774746000) == "2026-03-29T03:00:00+02:00"  # first instant of CEST 2026
    assert clock.fmt(1774745999) == "2026-03-29T01:59:59+01:00"
    assert clock.fmt(1792890000, off=0) == "2026-10-25T01:00:00+00:00"


# --- text banks and misspellings ---------------------------------------------------------------
def test_text_banks_hit_only_their_rule():
    for text in PLACEHOLDER_TEXTS:
        assert PLACEHOLDER_RE.search(text) and not is_non_gmp_text(text), text
    for text in INFORMAL_TEXTS:
        assert INFORMAL_RE.search(text) and not PLACEHOLDER_RE.search(text), text
    for _family, text in load_injection_table().rendered("B26-AD-0001"):
        assert is_injection(text) and not PLACEHOLDER_RE.search(text), text
    for notes in _CLASS_NOTES.values():
        for note in notes:
            for closing in _CLOSING_NOTES:
                text = note.format(eq="EQ-BAL-001") + " " + closing
                assert not PLACEHOLDER_RE.search(text) and not is_non_gmp_text(text), text


def test_misspellings_are_close_and_extras_are_not():
    for canonical, wrong in MISSPELLINGS.items():
        assert canonical in RECORD_FIELDS
        assert difflib.get_close_matches(wrong, RECORD_FIELDS, n=1,
                                         cutoff=MISSPELLING_CUTOFF) == [canonical]
    for extra in EXTRA_FIELDS:
        assert extra not in RECORD_FIELDS
        assert not difflib.get_close_matches(extra, RECORD_FIELDS, n=1, cutoff=MISSPELLING_CUTOFF)


def test_load_dataset_config_and_prefixes(cfg):
    assert set(cfg.splits) == {"benchmark", "control_clean", "control_faulty", "adversarial",
                               "train"}
    assert cfg.splits["control_faulty"].every_record_deviates
    assert cfg.splits["adversarial"].prompt_injection
    assert cfg.splits["train"].steps_min == cfg.splits["train"].steps_max == 20
    assert split_prefix("benchmark") == "BM"
    assert split_prefix("bench_one_million") == "BOM"
    assert split_prefix("x") == "X"


def test_truncated_recipes_when_no_recipe_fits(master):
    spec = SplitSpec("short", 12, 8, 10, 0.1)
    out = generate_split(spec, master, 7)
    sizes = Counter(r["batch_id"] for r in out.records)
    assert all(8 <= n <= 10 for n in sizes.values())
    assert len(_ordinary(out.manifest)) == round(0.1 * len(out.records))
    with pytest.raises(ValueError):
        generate_split(SplitSpec("long", 2, 40, 50, 0.0), master, 7)
