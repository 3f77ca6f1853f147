"""Tools a RAG model may call, as a registry: name -> JSON schema of the arguments + function.

`drug_dose_lookup(drug, syndrome=None, egfr=None)` reads the AMR guideline table
(configs/amr_guidelines.yaml through synthetic/amr_cases.py): the drug's regimen for the syndrome
(first choice, alternative, or not indicated), its AWaRe group, and the renal rule applied when the
eGFR is below the drug's threshold (`renal_regimen`, the same rule the AMR cases follow).
A call is `{"name": str, "arguments": {...}}`; `validate_tool_call` lists what is wrong with one
(each message names the field), `run_tool_call` executes a valid one and returns its JSON result.
SYNTHETIC-BENCHMARK GUIDANCE, NOT CLINICAL ADVICE.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

from synthetic.amr_cases import Guidelines, Regimen, load_guidelines, renal_regimen

DRUG_DOSE_LOOKUP = "drug_dose_lookup"
CALL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tool_call",
    "type": "object",
    "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}},
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
DRUG_DOSE_ARGUMENTS: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "drug_dose_lookup arguments",
    "type": "object",
    "properties": {
        "drug": {"type": "string", "minLength": 1,
                 "description": "antibiotic name as in the guideline table"},
        "syndrome": {"type": ["string", "null"],
                     "description": "syndrome id of the guideline table, or null"},
        "egfr": {"type": ["number", "null"], "exclusiveMinimum": 0,
                 "description": "patient's eGFR in mL/min/1.73m2, or null"},
    },
    "required": ["drug"],
    "additionalProperties": False,
}
_CALL_VALIDATOR = jsonschema.Draft202012Validator(CALL_SCHEMA)


@dataclass(frozen=True)
class Tool:
    """One callable tool: its argument schema, a description for the prompt, and the function
    (keyword arguments -> JSON-serializable result)."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., dict[str, Any]]
    check: Callable[[Mapping[str, Any]], list[str]] | None = None  # checks beyond the schema

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style function specification of the tool."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolRegistry:
    """Tools by name."""

    def __init__(self, tools: list[Tool]) -> None:
        names = [tool.name for tool in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        self.tools = {tool.name: tool for tool in tools}
        self._validators = {tool.name: jsonschema.Draft202012Validator(tool.parameters)
                            for tool in tools}

    def render(self) -> str:
        """One line per tool for the prompt: name(arguments): description."""
        lines = []
        for tool in self.tools.values():
            props = tool.parameters.get("properties", {})
            required = set(tool.parameters.get("required", []))
            arguments = ", ".join(
                f"{name}: {_type_text(spec.get('type'))}{'' if name in required else ' (optional)'}"
                for name, spec in props.items())
            lines.append(f"- {tool.name}({arguments}): {tool.description}")
        return "\n".join(lines)

    def validate(self, call: Any) -> list[str]:
        """What is wrong with `call` (empty when it can run); each message names the field."""
        if not isinstance(call, Mapping):
            return [f"tool_call: expected an object with name and arguments, got "
                    f"{type(call).__name__}"]
        errors = _schema_errors(_CALL_VALIDATOR, call, "tool_call")
        if errors:
            return errors
        tool = self.tools.get(call["name"])
        if tool is None:
            return [f"tool_call.name: unknown tool {call['name']!r}; known: "
                    f"{', '.join(sorted(self.tools))}"]
        arguments = call["arguments"]
        errors = _schema_errors(self._validators[tool.name], arguments, "tool_call.arguments")
        if not errors and tool.check is not None:
            errors = tool.check(arguments)
        return errors

    def run(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """The result of a valid call; an invalid one is a ValueError listing its problems."""
        errors = self.validate(call)
        if errors:
            raise ValueError("invalid tool call: " + "; ".join(errors))
        return self.tools[call["name"]].function(**call["arguments"])


def _type_text(value: Any) -> str:
    return " or ".join(value) if isinstance(value, list) else str(value)


def _schema_errors(validator: jsonschema.protocols.Validator, value: Any, at: str) -> list[str]:
    """Every schema violation as '<at>.<field>: <problem>' (missing and extra keys one by one)."""
    messages: list[str] = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        where = ".".join([at, *map(str, error.path)])
        if error.validator == "required":
            missing = [name for name in error.validator_value if name not in error.instance]
            messages += [f"{where}.{name}: missing required field" for name in missing]
        elif error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties", {}))
            extra = sorted(str(name) for name in error.instance if name not in allowed)
            messages += [f"{where}.{name}: unexpected field (allowed: {', '.join(sorted(allowed))})"
                         for name in extra]
        else:
            messages.append(f"{where}: {error.message}")
    return messages


# --------------------------------------------------------------------------- drug_dose_lookup


def drug_dose_lookup(drug: str, syndrome: str | None = None, egfr: float | None = None, *,
                     guidelines: Guidelines | None = None) -> dict[str, Any]:
    """The guideline regimen of `drug` (for `syndrome` when given, else its usual adult regimen),
    adjusted for `egfr` by the drug's renal rule. Unknown names are a ValueError."""
    g = guidelines or _default_guidelines()
    if drug not in g.drugs:
        raise ValueError(f"drug_dose_lookup: argument 'drug': {drug!r} is not a drug of {g.path}")
    if syndrome is not None and syndrome not in g.syndromes:
        raise ValueError(f"drug_dose_lookup: argument 'syndrome': {syndrome!r} is not a syndrome "
                         f"of {g.path}")
    facts = g.drugs[drug]
    result: dict[str, Any] = {
        "drug": drug, "aware": facts.aware, "syndrome": syndrome, "syndrome_name": None,
        "listing": "usual", "reason": None, "egfr": egfr, "renal_rule": None,
        "renal_adjustment_applied": False, "renal_avoid": False, "regimen": None,
        "guideline_version": g.version,
    }
    regimen: Regimen | None = facts.usual
    if syndrome is not None:
        entry = g.syndromes[syndrome]
        result["syndrome_name"] = entry.name
        listed = entry.listed(drug)
        if listed is not None:
            result["listing"], regimen = listed
        else:
            regimen = None
            result["listing"] = "not_indicated"
            result["reason"] = entry.not_indicated.get(drug) or (
                "no antibiotic is indicated" if entry.no_antibiotic
                else "not listed for this syndrome")
    rule = facts.renal
    if rule is not None:
        result["renal_rule"] = {**rule.to_dict(), "note": rule.describe(drug)}
        if egfr is not None and rule.applies(egfr):
            result["renal_avoid"] = rule.action == "avoid"
            if regimen is not None and rule.action == "adjust":
                regimen = renal_regimen(regimen, facts, egfr)
                result["renal_adjustment_applied"] = True
    if regimen is not None:
        result["regimen"] = {"dose_mg": regimen.dose_mg, "route": regimen.route,
                             "interval_h": regimen.interval_h, "frequency": regimen.frequency,
                             "duration_days": regimen.duration_days}
    return result


def describe_dose_result(result: Mapping[str, Any]) -> str:
    """The answer a drug_dose_lookup result supports, in sentences made of its own values."""
    drug = result["drug"]
    where = f" for {result['syndrome_name']}" if result.get("syndrome_name") else ""
    if result["listing"] == "not_indicated":
        return f"{_capital(drug)} is not indicated{where}: {result['reason']}."
    regimen = result["regimen"]
    role = {"first_choice": "first choice", "alternative": "alternative",
            "usual": "usual adult regimen"}[result["listing"]]
    text = (f"{_capital(drug)} ({result['aware']}, {role}){where}: {_num(regimen['dose_mg'])} mg "
            f"{regimen['route']} {regimen['frequency']} for {regimen['duration_days']} days.")
    rule = result.get("renal_rule")
    if result.get("renal_adjustment_applied") and rule:
        text += (f" The eGFR {_num(result['egfr'])} is below {_num(rule['egfr_below'])}, so the "
                 f"renal adjustment applies: {rule['note']}.")
    if result.get("renal_avoid") and rule:
        text += (f" The eGFR {_num(result['egfr'])} is below {_num(rule['egfr_below'])}: "
                 f"{rule['note']}.")
    return text


def dose_lookup_tool(guidelines: Guidelines) -> Tool:
    """drug_dose_lookup over `guidelines`; the prompt's description names its drugs and
    syndromes."""
    g = guidelines

    def check(arguments: Mapping[str, Any]) -> list[str]:
        errors = []
        if arguments["drug"] not in g.drugs:
            errors.append(f"tool_call.arguments.drug: {arguments['drug']!r} is not a drug of "
                          f"{g.path}")
        syndrome = arguments.get("syndrome")
        if syndrome is not None and syndrome not in g.syndromes:
            errors.append(f"tool_call.arguments.syndrome: {syndrome!r} is not a syndrome of "
                          f"{g.path}")
        egfr = arguments.get("egfr")
        if isinstance(egfr, float) and not math.isfinite(egfr):
            errors.append(f"tool_call.arguments.egfr: {egfr!r} must be a finite number")
        return errors

    def run(**arguments: Any) -> dict[str, Any]:
        return drug_dose_lookup(**arguments, guidelines=g)

    description = (
        "guideline regimen (dose_mg, route, interval_h, duration_days), AWaRe group and listing "
        "(first_choice, alternative or not_indicated) of an antibiotic for a syndrome, adjusted "
        "for the eGFR by the renal rule. drug: the antibiotic's name as written in the question; "
        "syndrome: one of " + ", ".join(g.syndromes) + ".")
    return Tool(DRUG_DOSE_LOOKUP, description, DRUG_DOSE_ARGUMENTS, run, check)


@lru_cache(maxsize=1)
def _default_guidelines() -> Guidelines:
    return load_guidelines()


@lru_cache(maxsize=1)
def default_registry() -> ToolRegistry:
    """The registry of the RAG prompt: drug_dose_lookup over configs/amr_guidelines.yaml."""
    return ToolRegistry([dose_lookup_tool(_default_guidelines())])


def validate_tool_call(call: Any, registry: ToolRegistry | None = None) -> list[str]:
    """Problems of one call `{"name", "arguments"}` (unknown tool, missing, extra or mistyped
    argument, unknown drug or syndrome); empty when it is valid."""
    return (registry or default_registry()).validate(call)


def run_tool_call(call: Mapping[str, Any], registry: ToolRegistry | None = None) -> dict[str, Any]:
    """The JSON result of a valid call (ValueError listing the problems of an invalid one)."""
    result = (registry or default_registry()).run(call)
    json.dumps(result, allow_nan=False)  # a tool's result must be plain JSON
    return result


def _num(value: float) -> str:
    return f"{float(value):g}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
