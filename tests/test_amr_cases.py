"""Synthetic AMR prescription-validation cases: balance, split, determinism, the decision rules."""

import copy
import json
from collections import Counter

import pytest

from synthetic.amr_cases import (
    DECISIONS,
    ROLE_LINE,
    assess_prescription,
    case_prompt,
    generate_amr_cases,
    load_guidelines,
    reference_answer,
    validate_amr_cases,
)


@pytest.fixture(scope="module")
def guidelines():
    return load_guidelines()


@pytest.fixture(scope="module")
def cases(guidelines):
    return generate_amr_cases(guidelines=guidelines)


def patient(**overrides):
    fields = {"age": 45, "sex": "male", "weight_kg": 80, "comorbidities": [], "allergies": [],
              "egfr_ml_min": 90, "pregnant": False}
    return {**fields, **overrides}


def rx(drug, dose_mg, interval_h, duration_days, route="oral"):
    return {"drug": drug, "dose_mg": dose_mg, "route": route,
            "frequency": f"every {interval_h} h", "duration_days": duration_days}


def test_guideline_table_has_the_syndromes_and_regimens(guidelines):
    assert len(guidelines.syndromes) >= 8
    cap = guidelines.syndromes["community_acquired_pneumonia"]
    [first] = cap.first_choice
    assert (first.drug, first.dose_mg, first.route, first.interval_h, first.duration_days) == (
        "amoxicillin", 1000, "oral", 8, 5)
    assert guidelines.drugs["amoxicillin"].aware == "Access"
    assert guidelines.drugs["ciprofloxacin"].aware == "Watch"
    assert guidelines.drugs["linezolid"].aware == "Reserve"
    assert guidelines.drugs["nitrofurantoin"].renal.action == "avoid"


def test_decisions_are_balanced_and_split_is_stratified(cases):
    assert len(cases) == 240
    counts = Counter(case["reference_decision"] for case in cases)
    assert counts == {"Approve": 80, "Modify": 80, "Reject": 80}
    for decision in DECISIONS:
        tests = [c for c in cases if c["reference_decision"] == decision and c["split"] == "test"]
        assert len(tests) == 16  # round(80 x 0.2)
    assert {case["split"] for case in cases} == {"train", "test"}
    assert len({case["case_id"] for case in cases}) == 240


def test_odd_sizes_stay_within_one_and_fraction_is_honoured(guidelines):
    cases = generate_amr_cases(n_cases=200, seed=7, test_fraction=0.25, guidelines=guidelines)
    counts = Counter(case["reference_decision"] for case in cases)
    assert sorted(counts.values()) == [66, 67, 67]
    by_decision = Counter((c["reference_decision"], c["split"]) for c in cases)
    for decision in DECISIONS:
        assert by_decision[decision, "test"] == round(counts[decision] * 0.25)
    no_test = generate_amr_cases(n_cases=30, seed=7, test_fraction=0.0, guidelines=guidelines)
    assert {case["split"] for case in no_test} == {"train"}


def test_same_seed_same_cases_other_seed_other_cases(cases, guidelines):
    again = generate_amr_cases(guidelines=guidelines)
    assert json.dumps(again) == json.dumps(cases)
    other = generate_amr_cases(seed=1, guidelines=guidelines)
    assert json.dumps(other) != json.dumps(cases)


def test_generated_cases_validate_and_reasoning_has_4_to_8_steps(cases, guidelines):
    validate_amr_cases(cases, guidelines)  # also re-derives every decision from the table
    for case in cases:
        assert 4 <= len(case["reference_reasoning"]) <= 8
    assert len({case["scenario"] for case in cases}) == 11
    assert len({case["diagnosis"]["syndrome"] for case in cases}) >= 8


@pytest.mark.parametrize(
    ("syndrome", "who", "prescription", "decision", "findings", "recommended"), [
    # first choice at the right regimen
    ("community_acquired_pneumonia", {}, rx("amoxicillin", 1000, 8, 5), "Approve", [], None),
    # allergy -> Reject; the Access alternative is recommended
    ("community_acquired_pneumonia", {"allergies": ["penicillin"]},
     rx("amoxicillin", 1000, 8, 5), "Reject", ["allergy"], ("doxycycline", 100, 12, 5)),
    # Watch alternative while the Access first choice fits -> Modify to the first choice
    ("community_acquired_pneumonia", {}, rx("clarithromycin", 500, 12, 5), "Modify",
     ["watch_over_access"], ("amoxicillin", 1000, 8, 5)),
    # the same Watch drug is right when the Access first choice is contraindicated
    ("community_acquired_pneumonia", {"allergies": ["beta-lactam"]},
     rx("clarithromycin", 500, 12, 5), "Approve", [], None),
    # wrong duration
    ("community_acquired_pneumonia", {}, rx("amoxicillin", 1000, 8, 10), "Modify",
     ["wrong_duration"], ("amoxicillin", 1000, 8, 5)),
    # eGFR < 30: amoxicillin every 12 h; the standard regimen misses the adjustment
    ("acute_otitis_media", {"egfr_ml_min": 20}, rx("amoxicillin", 500, 8, 5), "Modify",
     ["renal_adjustment_missed"], ("amoxicillin", 500, 12, 5)),
    ("acute_otitis_media", {"egfr_ml_min": 20}, rx("amoxicillin", 500, 12, 5), "Approve", [],
     None),
    # cefalexin's renal rule halves the dose
    ("streptococcal_pharyngitis", {"egfr_ml_min": 25, "allergies": ["penicillin"]},
     rx("cefalexin", 500, 12, 10), "Modify", ["renal_adjustment_missed"],
     ("cefalexin", 250, 12, 10)),
    # nitrofurantoin is avoided below eGFR 45 -> Reject, trimethoprim instead
    ("uncomplicated_cystitis", {"egfr_ml_min": 40}, rx("nitrofurantoin", 100, 12, 5), "Reject",
     ["renal_avoid"], ("trimethoprim", 200, 12, 3)),
    # ciprofloxacin in pregnancy -> Reject, ceftriaxone instead
    ("pyelonephritis", {"sex": "female", "age": 30, "pregnant": True},
     rx("ciprofloxacin", 500, 12, 7), "Reject", ["pregnancy"], ("ceftriaxone", 1000, 24, 7)),
    # wrong spectrum and no antibiotic indicated
    ("cellulitis", {}, rx("metronidazole", 500, 8, 7), "Reject", ["not_indicated"],
     ("cefalexin", 500, 8, 5)),
    ("acute_bronchitis", {}, rx("amoxicillin", 500, 8, 5), "Reject", ["not_indicated"], None),
])
def test_decision_follows_the_table(guidelines, syndrome, who, prescription, decision, findings,
                                    recommended):
    result = assess_prescription(guidelines, patient(**who), syndrome, prescription)
    assert result.decision == decision
    assert list(result.findings) == findings
    got = result.facts["recommended_regimen"]
    if recommended is None:
        assert got is None
    else:
        assert (got["drug"], got["dose_mg"], got["interval_h"], got["duration_days"]) == recommended
    assert result.reasoning[-1].startswith(f"Decision: {decision}")


def test_validation_names_case_and_field(cases, guidelines):
    def broken(change):
        bad = copy.deepcopy(cases[:5])
        change(bad[2])
        with pytest.raises(ValueError) as info:
            validate_amr_cases(bad, guidelines, source="amr.jsonl")
        return str(info.value)

    case_id = cases[2]["case_id"]
    message = broken(lambda c: c["patient"].update(egfr_ml_min=-3))
    assert "amr.jsonl" in message and case_id in message and "patient.egfr_ml_min" in message
    message = broken(lambda c: c["prescription"].update(frequency="thrice daily"))
    assert case_id in message and "prescription.frequency" in message
    message = broken(lambda c: c["prescription"].pop("drug"))
    assert case_id in message and "prescription.drug" in message
    wrong = next(d for d in DECISIONS if d != cases[2]["reference_decision"])
    message = broken(lambda c: c.update(reference_decision=wrong))
    assert case_id in message and "reference_decision" in message and "does not follow" in message
    message = broken(lambda c: c.update(reference_reasoning=["only one step"]))
    assert case_id in message and "reference_reasoning" in message
    message = broken(lambda c: c.update(case_id=cases[0]["case_id"]))
    assert cases[0]["case_id"] in message and "duplicate" in message


def test_guideline_errors_name_file_and_field(tmp_path):
    import yaml

    from synthetic.amr_cases import GUIDELINES_PATH

    raw = yaml.safe_load(GUIDELINES_PATH.read_text(encoding="utf-8"))
    raw["drugs"]["amoxicillin"]["aware"] = "Green"
    path = tmp_path / "guidelines.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ValueError, match=r"guidelines\.yaml: field 'drugs\.amoxicillin\.aware'"):
        load_guidelines(path)


def test_prompt_and_reference_answer_are_short_and_in_format(cases):
    for case in cases:
        prompt, answer = case_prompt(case), reference_answer(case)
        assert len(prompt) < 600, case["case_id"]
        assert len(answer) < 700, case["case_id"]
        assert prompt.startswith(ROLE_LINE)
        assert case["diagnosis"]["name"] in prompt and case["prescription"]["drug"] in prompt
        lines = answer.splitlines()
        assert lines[0] == f"Decision: {case['reference_decision']}"
        assert lines[1] == "Reasoning:"
        assert lines[2].startswith("1. ") and len(lines) == 2 + len(case["reference_reasoning"])
