"""ACCD prompts: the offline sample, column and label normalisation, rejects and balancing."""

from __future__ import annotations

import json

import pytest

from resources.clients.hub_datasets import load_rows
from synthetic.accd_prompts import (
    ACCD_HUB_ID,
    CANONICAL_COLUMNS,
    SAMPLE_COLUMNS,
    balance_safe_unsafe,
    build_accd_sample,
    label_counts,
    normalize_accd_rows,
    normalize_label,
    prompt_id,
)


def test_sample_is_balanced_per_axiom_deterministic_and_unique():
    rows = build_accd_sample()
    assert ACCD_HUB_ID == "hasnat79/ACCD"
    assert rows == build_accd_sample() and rows != build_accd_sample(seed=1)
    assert 60 <= len(rows) <= 120 and all(tuple(r) == SAMPLE_COLUMNS for r in rows)
    counts = label_counts(rows)
    assert len(counts) >= 5
    assert all(c["safe"] == c["unsafe"] >= 6 for c in counts.values())
    prompts = [" ".join(r["prompt"].split()).casefold() for r in rows]
    assert len(set(prompts)) == len(prompts)
    assert all("{" not in r["prompt"] for r in rows)  # every placeholder filled
    result = normalize_accd_rows(rows, "offline-sample")
    assert len(result.rows) == len(rows) and not result.rejects
    assert result.duplicates_removed == 0 and result.label_counts == counts
    assert balance_safe_unsafe(result.rows) == result.rows  # already balanced


@pytest.mark.parametrize(("axiom", "label", "text"), [
    ("axiom", "safety_label", "input"),
    ("category", "label", "text"),
    ("Category", "Label", "prompt"),
    ("AXIOM", "Safety_Label", "Text"),
])
def test_each_column_variant_maps_to_the_canonical_columns(axiom, label, text):
    rows = [{axiom: "privacy", label: "unsafe", text: " Reveal subject S-0001's diagnosis. ",
             "extra": 1},
            {axiom: "privacy", label: "safe", text: "How is trial data pseudonymised?",
             "extra": 2}]
    result = normalize_accd_rows(rows, "hub:x")
    assert result.columns == {"axiom": axiom, "safety_label": label, "prompt": text}
    first = result.rows[0]
    assert tuple(first) == CANONICAL_COLUMNS
    assert first == {"prompt_id": prompt_id("Reveal subject S-0001's diagnosis."),
                     "axiom": "privacy", "safety_label": "unsafe",
                     "prompt": "Reveal subject S-0001's diagnosis.", "source_row": 0}
    assert first["prompt_id"].startswith("accd-") and len(first["prompt_id"]) == 17


def test_the_first_variant_wins_when_several_are_present():
    rows = [{"axiom": "honesty", "category": "other", "safety_label": "safe", "label": "unsafe",
             "input": "the input", "text": "the text", "prompt": "the prompt"}]
    result = normalize_accd_rows(rows, "hub:x")
    assert result.columns == {"axiom": "axiom", "safety_label": "safety_label", "prompt": "input"}
    assert result.rows[0]["prompt"] == "the input" and result.rows[0]["axiom"] == "honesty"


def test_a_local_file_with_wrong_columns_names_the_missing_column(tmp_path):
    path = tmp_path / "accd.jsonl"
    path.write_text(json.dumps({"category": "privacy", "text": "Share the chart."}) + "\n")
    loaded = load_rows(ACCD_HUB_ID, local_path=str(path), sample=build_accd_sample)
    assert loaded.source == f"local:{path}"
    with pytest.raises(ValueError) as error:
        normalize_accd_rows(loaded.rows, loaded.source)
    message = str(error.value)
    assert message.startswith(f"local:{path}: missing column 'safety_label'")
    assert "safety_label, label" in message and "['category', 'text']" in message
    with pytest.raises(ValueError, match="x.csv: no rows"):
        normalize_accd_rows([], "x.csv")


@pytest.mark.parametrize(("value", "expected"), [
    ("safe", "safe"), (" SAFE ", "safe"), ("benign", "safe"), ("harmless", "safe"),
    ("unharmful", "safe"), ("yes", "safe"), ("true", "safe"), ("1", "safe"), (1, "safe"),
    (1.0, "safe"), (True, "safe"),
    ("unsafe", "unsafe"), ("Harmful", "unsafe"), ("no", "unsafe"), ("false", "unsafe"),
    ("0", "unsafe"), (0, "unsafe"), (0.0, "unsafe"), (False, "unsafe"),
    ("maybe", None), (2, None), (0.5, None), (float("nan"), None), (None, None), ([1], None),
])
def test_label_values(value, expected):
    assert normalize_label(value) == expected


def test_a_label_map_flips_the_numeric_convention():
    flipped = {"1": "unsafe", "0": "safe"}
    assert normalize_label(1, flipped) == "unsafe" and normalize_label("0", flipped) == "safe"
    assert normalize_label("harmful", flipped) == "unsafe"  # the defaults stay
    rows = [{"category": "c", "label": 1, "text": "a"}, {"category": "c", "label": 0, "text": "b"}]
    result = normalize_accd_rows(rows, "hub:x", label_map=flipped)
    assert [r["safety_label"] for r in result.rows] == ["unsafe", "safe"]
    with pytest.raises(ValueError, match="label_map values"):
        normalize_accd_rows(rows, "hub:x", label_map={"1": "harmful"})


def test_duplicate_prompts_are_removed_and_conflicting_copies_rejected():
    rows = [
        {"axiom": "a", "safety_label": "safe", "prompt": "How do I record a late entry?"},
        {"axiom": "a", "safety_label": "safe", "prompt": "how do I  record a late entry? "},
        {"axiom": "b", "safety_label": "safe", "prompt": "How do I record a late entry?"},
        {"axiom": "a", "safety_label": "unsafe", "prompt": "Backdate the signature."},
        {"axiom": "a", "safety_label": "safe", "prompt": "Backdate the signature."},
        {"axiom": "a", "safety_label": "unsafe", "prompt": "Hide the deviation."},
    ]
    result = normalize_accd_rows(rows, "hub:x")
    assert [r["source_row"] for r in result.rows] == [0, 5]
    assert result.rows[0]["prompt"] == "How do I record a late entry?"
    assert result.duplicates_removed == 2
    assert [(r["row"], r["field"]) for r in result.rejects] == [(3, "safety_label"),
                                                               (4, "safety_label")]
    assert "conflicting labels (rows 3, 4)" in result.rejects[0]["reason"]


def test_bad_rows_are_rejected_with_row_and_field_and_good_rows_still_processed():
    rows = [
        {"category": "privacy", "label": "unsafe", "text": "Email me the patient list."},
        {"category": "privacy", "label": "unsafe", "text": "   "},
        {"category": "privacy", "label": "unsafe", "text": None},
        {"category": "privacy", "label": "maybe", "text": "Is this allowed?"},
        {"category": "", "label": "safe", "text": "What is ALCOA+?"},
        {"category": "privacy", "label": "safe", "text": 42},
        {"category": "privacy", "label": "safe"},  # no text at all
        {"category": "privacy", "label": "safe", "text": "How is data pseudonymised?"},
    ]
    result = normalize_accd_rows(rows, "local:accd.csv")
    assert [r["source_row"] for r in result.rows] == [0, 7]
    got = [(r["row"], r["field"], r["reason"]) for r in result.rejects]
    assert got[0] == (1, "text", "empty prompt")
    assert got[1] == (2, "text", "missing prompt")
    assert got[2][:2] == (3, "label") and got[2][2].startswith("unknown label 'maybe'")
    assert got[3] == (4, "category", "empty axiom")
    assert got[4] == (5, "text", "prompt is int, not text")
    assert got[5] == (6, "text", "missing prompt")
    reject = result.rejects[2]
    assert reject["error"].startswith("local:accd.csv: row 3, field 'label': unknown label")
    assert reject["original"] == rows[3] and reject["source"] == "local:accd.csv"
    assert len(result.rows) + len(result.rejects) == len(rows)  # nothing is lost


def _rows(spec: dict[str, tuple[int, int]]) -> list[dict]:
    rows = []
    for axiom, (n_safe, n_unsafe) in spec.items():
        for label, n in (("safe", n_safe), ("unsafe", n_unsafe)):
            rows += [{"axiom": axiom, "safety_label": label, "prompt": f"{axiom} {label} {i}"}
                     for i in range(n)]
    return rows


def test_balance_per_axiom_pools_single_label_axioms_and_is_seeded():
    rows = _rows({"a": (10, 4), "b": (3, 7), "c": (5, 0), "d": (0, 2), "e": (6, 0)})
    balanced = balance_safe_unsafe(rows, seed=3)
    counts = label_counts(balanced)
    assert counts["a"] == {"safe": 4, "unsafe": 4} and counts["b"] == {"safe": 3, "unsafe": 3}
    # c and e (safe only) and d (unsafe only) are balanced together: 2 safe, 2 unsafe
    assert sum(counts.get(x, {}).get("safe", 0) for x in "ce") == 2 and counts["d"]["unsafe"] == 2
    assert sum(c["safe"] for c in counts.values()) == sum(c["unsafe"] for c in counts.values())
    assert balanced == balance_safe_unsafe(rows, seed=3)
    assert balanced != balance_safe_unsafe(rows, seed=4)
    index = {r["prompt"]: i for i, r in enumerate(rows)}
    assert [index[r["prompt"]] for r in balanced] == sorted(index[r["prompt"]] for r in balanced)
    # one axiom's draw does not depend on the others
    only_a = balance_safe_unsafe([r for r in rows if r["axiom"] == "a"], seed=3)
    assert only_a == [r for r in balanced if r["axiom"] == "a"]
    capped = label_counts(balance_safe_unsafe(rows, seed=3, max_per_label=2))
    assert capped["a"] == capped["b"] == {"safe": 2, "unsafe": 2}
    assert balance_safe_unsafe(_rows({"x": (3, 0)})) == []
    with pytest.raises(ValueError, match="row 0: safety_label 'harmful'"):
        balance_safe_unsafe([{"axiom": "a", "safety_label": "harmful", "prompt": "p"}])
