"""Seeded synthetic AMR prescription-validation cases built from configs/amr_guidelines.yaml.

Each case is a patient, a diagnosis (syndrome) and one antibiotic prescription, with a reference
decision that FOLLOWS from the guideline table by these rules (`assess_prescription`, in order):

Reject  the drug is not listed for the syndrome (wrong spectrum, a Reserve antibiotic or carbapenem
        for a simple infection, or no antibiotic indicated at all), or the patient has a
        contraindication: an allergy class of the drug, pregnancy for a drug to avoid in pregnancy,
        age below the drug's minimum, or eGFR below the drug's `avoid` threshold.
Modify  a listed drug, but a Watch/Reserve drug while an Access first choice fits the patient
        (AWaRe stewardship), or a dose, route, interval or duration that differs from the listed
        regimen adjusted for the patient's eGFR (renal `adjust` rules).
Approve otherwise: a first choice or acceptable alternative at the right regimen, no
        contraindication.

The reference reasoning walks the same steps (syndrome and first choice -> listing of the drug ->
allergy/pregnancy -> renal -> dose/duration -> AWaRe -> decision); the facts used are kept in
each case's `guideline` so that a scorer can check them. Same seed -> identical cases.
SYNTHETIC-BENCHMARK GUIDANCE, NOT CLINICAL ADVICE.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthetic.config_yaml import read_versioned_mapping

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
GUIDELINES_PATH = CONFIG_DIR / "amr_guidelines.yaml"
DECISIONS = ("Approve", "Modify", "Reject")
AWARE_GROUPS = ("Access", "Watch", "Reserve")
ROUTES = ("oral", "IV")
SPLITS = ("train", "test")
DEFAULT_SEED = 20261125
ROLE_LINE = ("You are a clinical pharmacist validating an antimicrobial prescription against the "
             "AMR guideline.")
FREQUENCY_PATTERN = re.compile(r"^every (\d+) h$")
COMORBIDITIES = ("type 2 diabetes", "hypertension", "COPD", "heart failure", "asthma",
                 "atrial fibrillation")
CKD = "chronic kidney disease"


@dataclass(frozen=True)
class Regimen:
    """One dosing regimen of one drug (adult dose per administration)."""

    drug: str
    dose_mg: float
    route: str
    interval_h: int
    duration_days: int

    @property
    def frequency(self) -> str:
        return f"every {self.interval_h} h"

    def schedule(self) -> str:
        """'1000 mg oral every 8 h for 5 days'."""
        return (f"{_num(self.dose_mg)} mg {self.route} {self.frequency} for "
                f"{self.duration_days} days")

    def describe(self) -> str:
        return f"{self.drug} {self.schedule()}"


@dataclass(frozen=True)
class RenalRule:
    """Below `egfr_below`: avoid the drug, or multiply the dose / change the interval."""

    egfr_below: float
    action: str  # "avoid" | "adjust"
    dose_factor: float | None = None
    interval_h: int | None = None

    def applies(self, egfr: float) -> bool:
        return egfr < self.egfr_below

    def describe(self, drug: str) -> str:
        if self.action == "avoid":
            return f"avoid {drug}"
        parts = []
        if self.dose_factor is not None:
            parts.append("half the dose" if self.dose_factor == 0.5
                         else f"{_num(self.dose_factor)} x the dose")
        if self.interval_h is not None:
            parts.append(f"every {self.interval_h} h dosing")
        return f"{drug} needs {' and '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return {"egfr_below": self.egfr_below, "action": self.action,
                "dose_factor": self.dose_factor, "interval_h": self.interval_h}


@dataclass(frozen=True)
class Drug:
    """Syndrome-independent facts about one antibiotic."""

    name: str
    aware: str
    allergy_classes: tuple[str, ...]
    avoid_in_pregnancy: bool
    min_age_years: int | None
    renal: RenalRule | None
    interaction_notes: tuple[str, ...]
    usual: Regimen


@dataclass(frozen=True)
class Syndrome:
    """First choices, alternatives and not-indicated drugs for one syndrome."""

    id: str
    name: str
    no_antibiotic: bool
    first_choice: tuple[Regimen, ...]
    alternatives: tuple[Regimen, ...]
    not_indicated: dict[str, str]  # drug -> reason

    def listed(self, drug: str) -> tuple[str, Regimen] | None:
        """('first_choice' | 'alternative', regimen) for a listed drug, else None."""
        for listing, regimens in (("first_choice", self.first_choice),
                                  ("alternative", self.alternatives)):
            for regimen in regimens:
                if regimen.drug == drug:
                    return listing, regimen
        return None


@dataclass(frozen=True)
class Guidelines:
    """The parsed guideline table."""

    version: str
    drugs: dict[str, Drug]
    syndromes: dict[str, Syndrome]
    allergy_labels: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class Assessment:
    """The rule-based verdict on one prescription."""

    decision: str
    findings: tuple[str, ...]
    reasoning: tuple[str, ...]
    facts: dict[str, Any]


# --------------------------------------------------------------------------- guideline table


def load_guidelines(path: Path | str | None = None) -> Guidelines:
    """Load and check configs/amr_guidelines.yaml; errors name the file and the field."""
    path = Path(path) if path else GUIDELINES_PATH
    raw, where, version = read_versioned_mapping(path, "version, allergy_labels, drugs, syndromes")
    labels = raw.get("allergy_labels")
    if not isinstance(labels, list) or not labels or not all(
            isinstance(label, str) and label for label in labels):
        raise ValueError(f"{where}: field 'allergy_labels' must be a non-empty list of strings")
    raw_drugs = raw.get("drugs")
    if not isinstance(raw_drugs, dict) or not raw_drugs:
        raise ValueError(f"{where}: field 'drugs' must be a non-empty mapping")
    drugs = {name: _parse_drug(name, entry, where) for name, entry in raw_drugs.items()}
    raw_syndromes = raw.get("syndromes")
    if not isinstance(raw_syndromes, dict) or not raw_syndromes:
        raise ValueError(f"{where}: field 'syndromes' must be a non-empty mapping")
    syndromes = {sid: _parse_syndrome(sid, entry, drugs, where)
                 for sid, entry in raw_syndromes.items()}
    return Guidelines(version=version, drugs=drugs, syndromes=syndromes,
                      allergy_labels=tuple(labels), path=where)


def _parse_drug(name: str, entry: Any, where: str) -> Drug:
    at = f"{where}: field 'drugs.{name}"
    if not isinstance(entry, dict):
        raise ValueError(f"{at}': expected a mapping")
    aware = entry.get("aware")
    if aware not in AWARE_GROUPS:
        raise ValueError(f"{at}.aware': {aware!r} is not one of {AWARE_GROUPS}")
    classes = entry.get("allergy_classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{at}.allergy_classes': must be a list of strings")
    pregnancy = entry.get("avoid_in_pregnancy")
    if not isinstance(pregnancy, bool):
        raise ValueError(f"{at}.avoid_in_pregnancy': {pregnancy!r} must be true or false")
    min_age = entry.get("min_age_years")
    if min_age is not None and (not isinstance(min_age, int) or isinstance(min_age, bool)
                                or min_age < 0):
        raise ValueError(f"{at}.min_age_years': {min_age!r} must be null or an integer >= 0")
    notes = entry.get("interaction_notes") or []
    if not isinstance(notes, list):
        raise ValueError(f"{at}.interaction_notes': must be a list")
    usual = entry.get("usual")
    if not isinstance(usual, dict):
        raise ValueError(f"{at}.usual': expected a regimen mapping")
    return Drug(name=name, aware=aware, allergy_classes=tuple(classes),
                avoid_in_pregnancy=pregnancy, min_age_years=min_age,
                renal=_parse_renal(entry.get("renal"), f"{at}.renal"),
                interaction_notes=tuple(str(note) for note in notes),
                usual=_parse_regimen({**usual, "drug": name}, f"{at}.usual", {name}))


def _parse_renal(entry: Any, at: str) -> RenalRule | None:
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ValueError(f"{at}': expected null or a mapping")
    threshold = entry.get("egfr_below")
    if not _positive(threshold):
        raise ValueError(f"{at}.egfr_below': {threshold!r} must be a positive number")
    action = entry.get("action")
    if action not in ("avoid", "adjust"):
        raise ValueError(f"{at}.action': {action!r} is not one of ('avoid', 'adjust')")
    factor, interval = entry.get("dose_factor"), entry.get("interval_h")
    if factor is not None and not (_positive(factor) and factor < 1):
        raise ValueError(f"{at}.dose_factor': {factor!r} must be a number in (0, 1)")
    if interval is not None and not (isinstance(interval, int) and _positive(interval)):
        raise ValueError(f"{at}.interval_h': {interval!r} must be a positive integer")
    if action == "adjust" and factor is None and interval is None:
        raise ValueError(f"{at}': action adjust needs dose_factor or interval_h")
    return RenalRule(egfr_below=float(threshold), action=action, dose_factor=factor,
                     interval_h=interval)


def _parse_regimen(entry: Any, at: str, drugs: Iterable[str]) -> Regimen:
    if not isinstance(entry, dict):
        raise ValueError(f"{at}': expected a regimen mapping")
    drug = entry.get("drug")
    if drug not in set(drugs):
        raise ValueError(f"{at}.drug': {drug!r} is not a drug of the table")
    for name in ("dose_mg", "interval_h", "duration_days"):
        if not _positive(entry.get(name)):
            raise ValueError(f"{at}.{name}': {entry.get(name)!r} must be a positive number")
    for name in ("interval_h", "duration_days"):
        if not isinstance(entry[name], int):
            raise ValueError(f"{at}.{name}': {entry[name]!r} must be an integer")
    if entry.get("route") not in ROUTES:
        raise ValueError(f"{at}.route': {entry.get('route')!r} is not one of {ROUTES}")
    return Regimen(drug=drug, dose_mg=_clean_number(entry["dose_mg"]), route=entry["route"],
                   interval_h=entry["interval_h"], duration_days=entry["duration_days"])


def _parse_syndrome(sid: str, entry: Any, drugs: Mapping[str, Drug], where: str) -> Syndrome:
    at = f"{where}: field 'syndromes.{sid}"
    if not isinstance(entry, dict):
        raise ValueError(f"{at}': expected a mapping")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{at}.name': must be a non-empty string")
    no_antibiotic = entry.get("no_antibiotic", False)
    if not isinstance(no_antibiotic, bool):
        raise ValueError(f"{at}.no_antibiotic': {no_antibiotic!r} must be true or false")
    lists: dict[str, tuple[Regimen, ...]] = {}
    for key in ("first_choice", "alternatives"):
        items = entry.get(key) or []
        if not isinstance(items, list):
            raise ValueError(f"{at}.{key}': must be a list of regimens")
        lists[key] = tuple(_parse_regimen(item, f"{at}.{key}[{i}]", drugs)
                           for i, item in enumerate(items))
    if no_antibiotic and (lists["first_choice"] or lists["alternatives"]):
        raise ValueError(f"{at}.first_choice': must be empty when no_antibiotic is true")
    if not no_antibiotic and not lists["first_choice"]:
        raise ValueError(f"{at}.first_choice': at least one regimen is required")
    listed = [r.drug for r in lists["first_choice"] + lists["alternatives"]]
    if len(set(listed)) != len(listed):
        raise ValueError(f"{at}': a drug is listed twice in first_choice/alternatives")
    not_indicated: dict[str, str] = {}
    for i, item in enumerate(entry.get("not_indicated") or []):
        if not isinstance(item, dict) or item.get("drug") not in drugs \
                or not isinstance(item.get("reason"), str) or not item["reason"].strip():
            raise ValueError(f"{at}.not_indicated[{i}]': needs a drug of the table and a reason")
        if item["drug"] in listed:
            raise ValueError(f"{at}.not_indicated[{i}].drug': {item['drug']!r} is also listed "
                             "as first choice or alternative")
        not_indicated[item["drug"]] = item["reason"].strip()
    if not not_indicated:
        raise ValueError(f"{at}.not_indicated': at least one drug is required")
    for key, regimens in lists.items():
        for i, regimen in enumerate(regimens):
            rule = drugs[regimen.drug].renal
            if rule and rule.action == "adjust" and _adjusted(regimen, rule) == regimen:
                raise ValueError(f"{at}.{key}[{i}]': the renal rule of {regimen.drug} does not "
                                 "change this regimen")
    return Syndrome(id=sid, name=name.strip(), no_antibiotic=no_antibiotic,
                    first_choice=lists["first_choice"], alternatives=lists["alternatives"],
                    not_indicated=not_indicated)


# --------------------------------------------------------------------------- the decision rules


def renal_regimen(regimen: Regimen, drug: Drug, egfr: float) -> Regimen:
    """The regimen adjusted for the patient's eGFR (unchanged when no `adjust` rule applies)."""
    rule = drug.renal
    if rule is None or rule.action != "adjust" or not rule.applies(egfr):
        return regimen
    return _adjusted(regimen, rule)


def _adjusted(regimen: Regimen, rule: RenalRule) -> Regimen:
    dose = regimen.dose_mg * rule.dose_factor if rule.dose_factor else regimen.dose_mg
    return Regimen(drug=regimen.drug, dose_mg=_clean_number(dose), route=regimen.route,
                   interval_h=rule.interval_h or regimen.interval_h,
                   duration_days=regimen.duration_days)


def contraindications(drug: Drug, patient: Mapping[str, Any]) -> list[tuple[str, str]]:
    """[(finding code, short reason)] that forbid `drug` for `patient`."""
    found = [("allergy", f"{label} allergy") for label in patient["allergies"]
             if label in drug.allergy_classes]
    if patient["pregnant"] and drug.avoid_in_pregnancy:
        found.append(("pregnancy", "pregnancy"))
    if drug.min_age_years is not None and patient["age"] < drug.min_age_years:
        found.append(("age", f"age below {drug.min_age_years}"))
    if drug.renal and drug.renal.action == "avoid" and drug.renal.applies(patient["egfr_ml_min"]):
        found.append(("renal_avoid", f"eGFR below {_num(drug.renal.egfr_below)}"))
    return found


def assess_prescription(guidelines: Guidelines, patient: Mapping[str, Any], syndrome_id: str,
                        prescription: Mapping[str, Any]) -> Assessment:
    """Decision, findings, reasoning steps and the guideline facts used, by the module's rules."""
    syndrome = guidelines.syndromes.get(syndrome_id)
    if syndrome is None:
        raise ValueError(f"syndrome {syndrome_id!r} is not in {guidelines.path}")
    drug = guidelines.drugs.get(prescription["drug"])
    if drug is None:
        raise ValueError(f"drug {prescription['drug']!r} is not in {guidelines.path}")
    prescribed = prescription_regimen(prescription)
    egfr = float(patient["egfr_ml_min"])
    listed = syndrome.listed(drug.name)
    contra = contraindications(drug, patient)

    def fits(regimen: Regimen) -> bool:
        return not contraindications(guidelines.drugs[regimen.drug], patient)

    def aware(regimen: Regimen) -> str:
        return guidelines.drugs[regimen.drug].aware

    access_fit = [r for r in syndrome.first_choice if aware(r) == "Access" and fits(r)]
    findings: list[str] = []
    if listed is None:
        findings.append("not_indicated")
    findings.extend(code for code, _ in contra)
    stewardship = listed is not None and drug.aware != "Access" and bool(access_fit)
    if stewardship:
        findings.append("watch_over_access")
    expected = renal_regimen(listed[1], drug, egfr) if listed else None
    if expected is not None:
        findings.extend(_regimen_findings(prescribed, expected, listed[1]))
    if listed is None or contra:
        decision = "Reject"
    elif findings:
        decision = "Modify"
    else:
        decision = "Approve"

    recommended: Regimen | None = None
    if decision == "Modify":
        recommended = (renal_regimen(access_fit[0], guidelines.drugs[access_fit[0].drug], egfr)
                       if stewardship else expected)
    elif decision == "Reject":
        ordered = ([r for r in syndrome.first_choice if aware(r) == "Access"]
                   + [r for r in syndrome.first_choice if aware(r) != "Access"]
                   + [r for r in syndrome.alternatives if aware(r) == "Access"]
                   + [r for r in syndrome.alternatives if aware(r) != "Access"])
        options = [r for r in ordered if fits(r) and r.drug != drug.name]
        if options:
            recommended = renal_regimen(options[0], guidelines.drugs[options[0].drug], egfr)

    reasoning = _reasoning(syndrome, drug, guidelines, patient, prescribed, listed, contra,
                           expected, access_fit, decision, recommended)
    facts = {
        "version": guidelines.version,
        "syndrome": syndrome.id,
        "no_antibiotic": syndrome.no_antibiotic,
        "first_choice": [_regimen_dict(r, aware(r)) for r in syndrome.first_choice],
        "drug": drug.name,
        "drug_aware": drug.aware,
        "drug_allergy_classes": list(drug.allergy_classes),
        "avoid_in_pregnancy": drug.avoid_in_pregnancy,
        "renal_rule": drug.renal.to_dict() if drug.renal else None,
        "listing": listed[0] if listed else "not_indicated",
        "not_indicated_reason": (None if listed else syndrome.not_indicated.get(
            drug.name, "not listed for this syndrome")),
        "expected_regimen": _regimen_dict(expected, drug.aware) if expected else None,
        "recommended_regimen": (_regimen_dict(recommended, aware(recommended))
                                if recommended else None),
        "findings": findings,
    }
    return Assessment(decision=decision, findings=tuple(findings), reasoning=reasoning,
                      facts=facts)


def _regimen_findings(prescribed: Regimen, expected: Regimen, standard: Regimen) -> list[str]:
    found = []
    if expected != standard and (prescribed.dose_mg, prescribed.interval_h) == (
            standard.dose_mg, standard.interval_h):
        found.append("renal_adjustment_missed")
    else:
        if prescribed.dose_mg != expected.dose_mg:
            found.append("wrong_dose")
        if prescribed.interval_h != expected.interval_h:
            found.append("wrong_frequency")
    if prescribed.route != expected.route:
        found.append("wrong_route")
    if prescribed.duration_days != expected.duration_days:
        found.append("wrong_duration")
    return found


def _reasoning(syndrome: Syndrome, drug: Drug, guidelines: Guidelines,
               patient: Mapping[str, Any], prescribed: Regimen,
               listed: tuple[str, Regimen] | None, contra: Sequence[tuple[str, str]],
               expected: Regimen | None, access_fit: Sequence[Regimen], decision: str,
               recommended: Regimen | None) -> tuple[str, ...]:
    name = drug.name
    if syndrome.no_antibiotic:
        first = f"{_capital(syndrome.name)}: no antibiotic indicated."
    else:
        choices = " or ".join(f"{r.describe()} ({guidelines.drugs[r.drug].aware})"
                              for r in syndrome.first_choice)
        first = f"{_capital(syndrome.name)}: first choice {choices}."
    if listed is None:
        reason = syndrome.not_indicated.get(name, "not listed for this syndrome")
        listing = f"{_capital(name)} ({drug.aware}) is not indicated: {reason}."
    elif listed[0] == "first_choice":
        listing = f"{_capital(name)} is the guideline first choice ({drug.aware})."
    else:
        listing = f"{_capital(name)} is a listed alternative ({drug.aware})."

    allergies = ", ".join(patient["allergies"]) + " allergy" if patient["allergies"] \
        else "no known drug allergy"
    hits = [reason for code, reason in contra if code in ("allergy", "pregnancy", "age")]
    verdict = f"{name} contraindicated ({', '.join(hits)})" if hits else "no contraindication"
    pregnancy = "; pregnant" if patient["pregnant"] else ""
    allergy = f"Allergy check: {allergies}{pregnancy}; {verdict}."

    egfr = float(patient["egfr_ml_min"])
    rule = drug.renal
    if rule is not None and rule.applies(egfr):
        renal = (f"Renal check: eGFR {_num(egfr)} mL/min, below {_num(rule.egfr_below)}: "
                 f"{rule.describe(name)}.")
    else:
        renal = f"Renal check: eGFR {_num(egfr)} mL/min; no adjustment needed."

    if expected is None:
        dose = f"Dose check: {prescribed.schedule()}; not applicable, drug not indicated."
    elif prescribed == expected:
        dose = f"Dose check: {prescribed.schedule()} matches the guideline."
    else:
        dose = f"Dose check: {prescribed.schedule()}; guideline {expected.schedule()}."

    if listed is not None and drug.aware != "Access" and access_fit:
        stewardship = (f"AWaRe: {name} is {drug.aware} while Access first choice "
                       f"{access_fit[0].drug} fits.")
    elif drug.aware == "Access":
        stewardship = f"AWaRe: {name} is Access; good stewardship."
    elif drug.aware == "Reserve":
        stewardship = f"AWaRe: {name} is Reserve; keep for resistant infections."
    elif listed is not None:
        stewardship = f"AWaRe: {name} is Watch; no Access first choice fits."
    else:
        stewardship = f"AWaRe: {name} is Watch; avoid unnecessary use."

    if decision == "Approve":
        action = "give as prescribed"
    elif recommended is not None:
        action = f"give {recommended.describe()}"
    elif syndrome.no_antibiotic:
        action = f"stop {name}, no antibiotic needed"
    else:
        action = f"stop {name}, no listed option fits; seek specialist advice"
    return (first, listing, allergy, renal, dose, stewardship, f"Decision: {decision}; {action}.")


# --------------------------------------------------------------------------- generation

_Draft = tuple[str, dict[str, Any], Regimen]  # (syndrome id, patient, prescribed regimen)


def generate_amr_cases(n_cases: int = 240, seed: int = DEFAULT_SEED, test_fraction: float = 0.2,
                       guidelines: Guidelines | None = None) -> list[dict[str, Any]]:
    """`n_cases` cases, decisions in equal thirds (+-1), split train/test stratified by decision.

    Every case's decision comes from `assess_prescription`: scenarios propose a prescription
    aimed at a decision and a draft is kept only when the rules give that decision.
    """
    if not isinstance(n_cases, int) or n_cases < 3:
        raise ValueError(f"n_cases: {n_cases!r} must be an integer >= 3")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction: {test_fraction!r} must be in [0, 1)")
    guidelines = guidelines or load_guidelines()
    targets = [DECISIONS[i % 3] for i in range(n_cases)]
    random.Random(_derive_seed(seed, "decisions")).shuffle(targets)
    cases = []
    for index, target in enumerate(targets):
        rng = random.Random(_derive_seed(seed, f"case-{index}"))
        case_id = f"AMR-{index + 1:04d}"
        scenario, (syndrome_id, patient, regimen), assessment = _draw(rng, target, guidelines,
                                                                      case_id)
        syndrome = guidelines.syndromes[syndrome_id]
        cases.append({
            "case_id": case_id,
            "split": "train",
            "patient": patient,
            "diagnosis": {"syndrome": syndrome.id, "name": syndrome.name},
            "prescription": prescription_dict(regimen),
            "reference_decision": assessment.decision,
            "reference_reasoning": list(assessment.reasoning),
            "guideline": assessment.facts,
            "scenario": scenario,
        })
    _assign_splits(cases, seed, test_fraction)
    return cases


def _assign_splits(cases: list[dict[str, Any]], seed: int, test_fraction: float) -> None:
    rng = random.Random(_derive_seed(seed, "split"))
    for decision in DECISIONS:
        members = [case for case in cases if case["reference_decision"] == decision]
        rng.shuffle(members)
        for case in members[:round(len(members) * test_fraction)]:
            case["split"] = "test"


def _draw(rng: random.Random, target: str, guidelines: Guidelines,
          case_id: str) -> tuple[str, _Draft, Assessment]:
    names, weights = zip(*SCENARIO_WEIGHTS[target], strict=True)
    for _attempt in range(2000):
        scenario = rng.choices(names, weights=weights)[0]
        draft = SCENARIOS[scenario](rng, guidelines)
        if draft is None:
            continue
        syndrome_id, patient, regimen = draft
        assessment = assess_prescription(guidelines, patient, syndrome_id,
                                         prescription_dict(regimen))
        if assessment.decision == target:
            return scenario, draft, assessment
    raise RuntimeError(f"{case_id}: no {target} case found in 2000 draws; check {guidelines.path}")


def _listed_pairs(guidelines: Guidelines, *, alternatives: bool = True,
                  first: bool = True) -> list[tuple[Syndrome, Regimen]]:
    pairs = []
    for syndrome in guidelines.syndromes.values():
        if first:
            pairs.extend((syndrome, regimen) for regimen in syndrome.first_choice)
        if alternatives:
            pairs.extend((syndrome, regimen) for regimen in syndrome.alternatives)
    return pairs


def _patient(rng: random.Random, guidelines: Guidelines, *, safe_for: Sequence[Drug] = (),
             allergies: Sequence[str] | None = None, pregnant: bool | None = None,
             egfr: float | None = None) -> dict[str, Any]:
    """A patient; random features never contraindicate the drugs in `safe_for`."""
    if pregnant is None:  # pregnancy only with normal renal function, never against safe_for
        pregnant = ((egfr is None or egfr >= 60) and rng.random() < 0.12
                    and not any(d.avoid_in_pregnancy for d in safe_for))
    sex = "female" if pregnant else rng.choice(("female", "male"))
    min_age = max([18] + [d.min_age_years or 0 for d in safe_for])
    age = rng.randint(18, 42) if pregnant else rng.randint(min_age, 90)
    if egfr is None:
        egfr = rng.randint(60, 120) if rng.random() < 0.8 else rng.randint(50, 59)
    if allergies is None:
        blocked = {c for d in safe_for for c in d.allergy_classes}
        free = [label for label in guidelines.allergy_labels if label not in blocked]
        allergies = [rng.choice(free)] if free and rng.random() < 0.35 else []
    comorbidities = rng.sample(COMORBIDITIES, rng.choice((0, 0, 1, 1, 2)))
    if egfr < 60:
        comorbidities.append(CKD)
    return {"age": age, "sex": sex,
            "weight_kg": rng.randint(52, 95) if pregnant else rng.randint(45, 120),
            "comorbidities": comorbidities, "allergies": list(allergies),
            "egfr_ml_min": int(egfr), "pregnant": pregnant}


def _renal_low(rng: random.Random, drug: Drug) -> int | None:
    """An eGFR below the drug's `adjust` threshold (>= 15), or None without such a rule."""
    rule = drug.renal
    if rule is None or rule.action != "adjust" or rule.egfr_below <= 15:
        return None
    return rng.randint(15, int(rule.egfr_below) - 1)


def _approve_first(rng: random.Random, g: Guidelines) -> _Draft | None:
    syndrome, regimen = rng.choice(_listed_pairs(g, alternatives=False))
    drug = g.drugs[regimen.drug]
    egfr = _renal_low(rng, drug) if rng.random() < 0.3 else None
    patient = _patient(rng, g, safe_for=[drug], egfr=egfr)
    return syndrome.id, patient, renal_regimen(regimen, drug, patient["egfr_ml_min"])


def _approve_alternative(rng: random.Random, g: Guidelines) -> _Draft | None:
    syndrome, regimen = rng.choice(_listed_pairs(g, first=False))
    drug = g.drugs[regimen.drug]
    blockers = [g.drugs[r.drug] for r in syndrome.first_choice if g.drugs[r.drug].aware == "Access"]
    allergies, egfr, pregnant = None, _renal_low(rng, drug) if rng.random() < 0.3 else None, None
    if drug.aware != "Access" and blockers:
        # A Watch alternative is right only when every Access first choice is contraindicated.
        options: list[tuple[str, Any]] = [
            ("allergy", label) for label in g.allergy_labels
            if all(label in b.allergy_classes for b in blockers)
            and label not in drug.allergy_classes]
        avoid = [b.renal.egfr_below for b in blockers if b.renal and b.renal.action == "avoid"]
        if len(avoid) == len(blockers):
            options.append(("renal", rng.randint(15, int(min(avoid)) - 1)))
        if all(b.avoid_in_pregnancy for b in blockers) and not drug.avoid_in_pregnancy:
            options.append(("pregnancy", True))
        if not options:
            return None
        kind, value = rng.choice(options)
        allergies = [value] if kind == "allergy" else None
        egfr = value if kind == "renal" else egfr
        pregnant = True if kind == "pregnancy" else None
    patient = _patient(rng, g, safe_for=[drug], allergies=allergies, pregnant=pregnant, egfr=egfr)
    return syndrome.id, patient, renal_regimen(regimen, drug, patient["egfr_ml_min"])


def _modify_regimen(field: str) -> Callable[[random.Random, Guidelines], _Draft | None]:
    def draft(rng: random.Random, g: Guidelines) -> _Draft | None:
        syndrome, regimen = rng.choice(_listed_pairs(g))
        drug = g.drugs[regimen.drug]
        patient = _patient(rng, g, safe_for=[drug])
        expected = renal_regimen(regimen, drug, patient["egfr_ml_min"])
        if field == "dose_mg":
            value: float = _clean_number(expected.dose_mg * rng.choice((0.5, 2)))
        elif field == "interval_h":
            value = rng.choice([h for h in (6, 8, 12, 24) if h != expected.interval_h])
        else:
            days = expected.duration_days
            value = rng.choice(sorted({days * 2, days + 7, max(1, days - 2)} - {days}))
        changed = {**_regimen_fields(expected), field: value}
        return syndrome.id, patient, Regimen(**changed)

    return draft


def _modify_renal(rng: random.Random, g: Guidelines) -> _Draft | None:
    pairs = [(s, r) for s, r in _listed_pairs(g)
             if g.drugs[r.drug].renal and g.drugs[r.drug].renal.action == "adjust"]
    syndrome, regimen = rng.choice(pairs)
    drug = g.drugs[regimen.drug]
    patient = _patient(rng, g, safe_for=[drug], egfr=_renal_low(rng, drug))
    return syndrome.id, patient, regimen  # the unadjusted regimen


def _modify_watch(rng: random.Random, g: Guidelines) -> _Draft | None:
    pairs = [(s, r) for s, r in _listed_pairs(g, first=False) if g.drugs[r.drug].aware != "Access"
             and any(g.drugs[f.drug].aware == "Access" for f in s.first_choice)]
    syndrome, regimen = rng.choice(pairs)
    drug = g.drugs[regimen.drug]
    access = [g.drugs[f.drug] for f in syndrome.first_choice if g.drugs[f.drug].aware == "Access"]
    patient = _patient(rng, g, safe_for=[drug, *access])
    return syndrome.id, patient, renal_regimen(regimen, drug, patient["egfr_ml_min"])


def _reject_allergy(rng: random.Random, g: Guidelines) -> _Draft | None:
    syndrome, regimen = rng.choice(_listed_pairs(g))
    drug = g.drugs[regimen.drug]
    labels = [label for label in g.allergy_labels if label in drug.allergy_classes]
    if not labels:
        return None
    patient = _patient(rng, g, allergies=[rng.choice(labels)])
    return syndrome.id, patient, renal_regimen(regimen, drug, patient["egfr_ml_min"])


def _reject_pregnancy(rng: random.Random, g: Guidelines) -> _Draft | None:
    pairs = [(s, r) for s, r in _listed_pairs(g) if g.drugs[r.drug].avoid_in_pregnancy]
    syndrome, regimen = rng.choice(pairs)
    drug = g.drugs[regimen.drug]
    patient = _patient(rng, g, pregnant=True, egfr=rng.randint(80, 130))
    return syndrome.id, patient, renal_regimen(regimen, drug, patient["egfr_ml_min"])


def _reject_renal(rng: random.Random, g: Guidelines) -> _Draft | None:
    pairs = [(s, r) for s, r in _listed_pairs(g)
             if g.drugs[r.drug].renal and g.drugs[r.drug].renal.action == "avoid"]
    syndrome, regimen = rng.choice(pairs)
    drug = g.drugs[regimen.drug]
    egfr = rng.randint(15, int(drug.renal.egfr_below) - 1)
    return syndrome.id, _patient(rng, g, egfr=egfr), regimen


def _reject_not_indicated(rng: random.Random, g: Guidelines) -> _Draft | None:
    syndrome = rng.choice(list(g.syndromes.values()))
    drug = g.drugs[rng.choice(sorted(syndrome.not_indicated))]
    return syndrome.id, _patient(rng, g), drug.usual


SCENARIOS: dict[str, Callable[[random.Random, Guidelines], _Draft | None]] = {
    "approve_first_choice": _approve_first,
    "approve_alternative": _approve_alternative,
    "modify_dose": _modify_regimen("dose_mg"),
    "modify_frequency": _modify_regimen("interval_h"),
    "modify_duration": _modify_regimen("duration_days"),
    "modify_renal_adjustment": _modify_renal,
    "modify_watch_over_access": _modify_watch,
    "reject_allergy": _reject_allergy,
    "reject_pregnancy": _reject_pregnancy,
    "reject_renal": _reject_renal,
    "reject_not_indicated": _reject_not_indicated,
}
SCENARIO_WEIGHTS: dict[str, tuple[tuple[str, float], ...]] = {
    "Approve": (("approve_first_choice", 0.6), ("approve_alternative", 0.4)),
    "Modify": (("modify_dose", 0.2), ("modify_frequency", 0.15), ("modify_duration", 0.2),
               ("modify_renal_adjustment", 0.2), ("modify_watch_over_access", 0.25)),
    "Reject": (("reject_allergy", 0.3), ("reject_pregnancy", 0.15), ("reject_renal", 0.1),
               ("reject_not_indicated", 0.45)),
}


# --------------------------------------------------------------------------- prompt and answer


def case_prompt(case: Mapping[str, Any]) -> str:
    """The user prompt of one case: role, patient, diagnosis, prescription, answer format."""
    p = case["patient"]
    allergies = ", ".join(p["allergies"]) if p["allergies"] else "none known"
    comorbidities = ", ".join(p["comorbidities"]) if p["comorbidities"] else "none"
    pregnancy = ("; pregnant" if p["pregnant"] else "; not pregnant") \
        if p["sex"] == "female" else ""
    rx = case["prescription"]
    return (
        f"{ROLE_LINE}\n"
        f"Patient: {p['age']}-year-old {p['sex']}, {_num(p['weight_kg'])} kg; comorbidities: "
        f"{comorbidities}; allergies: {allergies}; eGFR {_num(p['egfr_ml_min'])} mL/min"
        f"{pregnancy}.\n"
        f"Diagnosis: {case['diagnosis']['name']}.\n"
        f"Prescription: {rx['drug']} {_num(rx['dose_mg'])} mg {rx['route']} {rx['frequency']} "
        f"for {rx['duration_days']} days.\n"
        "Answer with a first line 'Decision: Approve', 'Decision: Modify' or 'Decision: Reject', "
        "then 'Reasoning:' and numbered steps."
    )


def reference_answer(case: Mapping[str, Any]) -> str:
    """The reference answer in the required format (what SFT learns)."""
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(case["reference_reasoning"], 1))
    return f"Decision: {case['reference_decision']}\nReasoning:\n{steps}"


# --------------------------------------------------------------------------- validation

_PATIENT_FIELDS = ("age", "sex", "weight_kg", "comorbidities", "allergies", "egfr_ml_min",
                   "pregnant")
_PRESCRIPTION_FIELDS = ("drug", "dose_mg", "route", "frequency", "duration_days")


def validate_amr_cases(cases: Sequence[Mapping[str, Any]], guidelines: Guidelines | None = None,
                       source: str = "amr_cases") -> None:
    """Check every case's fields and that its decision follows from the guideline rules.

    Raises ValueError naming `source`, the case_id (or position) and the field.
    """
    guidelines = guidelines or load_guidelines()
    seen: set[str] = set()
    for position, case in enumerate(cases):
        if not isinstance(case, Mapping):
            raise ValueError(f"{source}: cases[{position}]: expected a mapping")
        case_id = case.get("case_id")
        if not isinstance(case_id, str) or not case_id.strip():
            raise ValueError(f"{source}: cases[{position}] field 'case_id': {case_id!r} must be a "
                             "non-empty string")

        def bad(field: str, problem: str, case_id: str = case_id) -> ValueError:
            return ValueError(f"{source}: case {case_id!r} field {field!r}: {problem}")

        if case_id in seen:
            raise bad("case_id", "duplicate case_id")
        seen.add(case_id)
        _check_patient(case.get("patient"), bad, guidelines)
        diagnosis = case.get("diagnosis")
        if not isinstance(diagnosis, Mapping) or diagnosis.get("syndrome") \
                not in guidelines.syndromes:
            raise bad("diagnosis.syndrome", f"must be one of {sorted(guidelines.syndromes)}")
        _check_prescription(case.get("prescription"), bad, guidelines)
        if case.get("split") not in SPLITS:
            raise bad("split", f"{case.get('split')!r} is not one of {SPLITS}")
        decision = case.get("reference_decision")
        if decision not in DECISIONS:
            raise bad("reference_decision", f"{decision!r} is not one of {DECISIONS}")
        steps = case.get("reference_reasoning")
        if not isinstance(steps, list) or not 4 <= len(steps) <= 8 or not all(
                isinstance(step, str) and step.strip() for step in steps):
            raise bad("reference_reasoning", "must be a list of 4-8 non-empty strings")
        if not isinstance(case.get("guideline"), Mapping):
            raise bad("guideline", "must be a mapping of the guideline facts used")
        ruled = assess_prescription(guidelines, case["patient"], diagnosis["syndrome"],
                                    case["prescription"]).decision
        if ruled != decision:
            raise bad("reference_decision", f"{decision!r} does not follow from the guideline "
                      f"table ({guidelines.path}): the rules give {ruled!r}")


def _check_patient(patient: Any, bad: Callable[[str, str], ValueError],
                   guidelines: Guidelines) -> None:
    if not isinstance(patient, Mapping):
        raise bad("patient", "must be a mapping")
    for name in _PATIENT_FIELDS:
        if name not in patient:
            raise bad(f"patient.{name}", "missing")
    if not _positive(patient["age"]) or patient["age"] > 120:
        raise bad("patient.age", f"{patient['age']!r} must be a number in (0, 120]")
    if patient["sex"] not in ("female", "male"):
        raise bad("patient.sex", f"{patient['sex']!r} must be 'female' or 'male'")
    if not _positive(patient["weight_kg"]):
        raise bad("patient.weight_kg", f"{patient['weight_kg']!r} must be a positive number")
    if not _positive(patient["egfr_ml_min"]):
        raise bad("patient.egfr_ml_min", f"{patient['egfr_ml_min']!r} must be a positive number")
    if not isinstance(patient["pregnant"], bool):
        raise bad("patient.pregnant", f"{patient['pregnant']!r} must be true or false")
    if patient["pregnant"] and patient["sex"] != "female":
        raise bad("patient.pregnant", "only a female patient can be pregnant")
    for name in ("comorbidities", "allergies"):
        if not isinstance(patient[name], list) or not all(
                isinstance(item, str) for item in patient[name]):
            raise bad(f"patient.{name}", "must be a list of strings")
    unknown = [a for a in patient["allergies"] if a not in guidelines.allergy_labels]
    if unknown:
        raise bad("patient.allergies", f"unknown allergy label(s) {unknown}; known: "
                  f"{list(guidelines.allergy_labels)}")


def _check_prescription(rx: Any, bad: Callable[[str, str], ValueError],
                        guidelines: Guidelines) -> None:
    if not isinstance(rx, Mapping):
        raise bad("prescription", "must be a mapping")
    for name in _PRESCRIPTION_FIELDS:
        if name not in rx:
            raise bad(f"prescription.{name}", "missing")
    if rx["drug"] not in guidelines.drugs:
        raise bad("prescription.drug", f"{rx['drug']!r} is not a drug of {guidelines.path}")
    if not _positive(rx["dose_mg"]):
        raise bad("prescription.dose_mg", f"{rx['dose_mg']!r} must be a positive number")
    if rx["route"] not in ROUTES:
        raise bad("prescription.route", f"{rx['route']!r} is not one of {ROUTES}")
    if not isinstance(rx["frequency"], str) or not FREQUENCY_PATTERN.match(rx["frequency"]):
        raise bad("prescription.frequency", f"{rx['frequency']!r} must read 'every <hours> h'")
    if not isinstance(rx["duration_days"], int) or not _positive(rx["duration_days"]):
        raise bad("prescription.duration_days",
                  f"{rx['duration_days']!r} must be a positive integer")


# --------------------------------------------------------------------------- helpers


def prescription_dict(regimen: Regimen) -> dict[str, Any]:
    """A case's `prescription` field for a regimen."""
    return {"drug": regimen.drug, "dose_mg": regimen.dose_mg, "route": regimen.route,
            "frequency": regimen.frequency, "duration_days": regimen.duration_days}


def prescription_regimen(prescription: Mapping[str, Any]) -> Regimen:
    """The regimen of a case's `prescription` field."""
    match = FREQUENCY_PATTERN.match(str(prescription["frequency"]))
    if match is None:
        raise ValueError(f"prescription frequency {prescription['frequency']!r} must read "
                         "'every <hours> h'")
    return Regimen(drug=prescription["drug"], dose_mg=_clean_number(prescription["dose_mg"]),
                   route=prescription["route"], interval_h=int(match.group(1)),
                   duration_days=int(prescription["duration_days"]))


def _regimen_fields(regimen: Regimen) -> dict[str, Any]:
    return {"drug": regimen.drug, "dose_mg": regimen.dose_mg, "route": regimen.route,
            "interval_h": regimen.interval_h, "duration_days": regimen.duration_days}


def _regimen_dict(regimen: Regimen, aware: str) -> dict[str, Any]:
    return {**_regimen_fields(regimen), "frequency": regimen.frequency, "aware": aware}


def _derive_seed(seed: int, label: str) -> int:
    digest = hashlib.sha256(f"amr-cases|{seed}|{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _clean_number(value: float) -> float:
    """Whole numbers as int (1000, not 1000.0) so that text and JSON read naturally."""
    return int(value) if float(value).is_integer() else float(value)


def _num(value: float) -> str:
    return f"{_clean_number(value):g}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
