"""The versioned GxP audit prompt (configs/prompts.yaml) and the chat messages built from it.

The same prompt serves every candidate model. The batch's records go in as JSON Lines between
delimiter lines; delimiter-like text inside the data is escaped so that a record cannot close the
block and pose as instructions (see METHODS.md, "Prompt injection in audited records").
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from string import Template
from typing import Any

import yaml

from synthetic.catalog import DeviationCatalog

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
RECORDS_OPEN = "<<<BATCH_RECORDS"
RECORDS_CLOSE = "BATCH_RECORDS>>>"
TEMPLATE_FIELDS = frozenset(
    {"deviation_catalog", "site_rules", "master_data", "batch_id", "n_records", "batch_records"}
)
# Inside JSON text "<" and ">" only occur within strings, where \u003c / \u003e decode to the same
# characters: escaping them keeps the data byte-for-byte recoverable while no delimiter survives.
_DELIMITER_ESCAPES = (("<<<", "\\u003c\\u003c\\u003c"), (">>>", "\\u003e\\u003e\\u003e"))


@dataclass(frozen=True)
class AuditPrompt:
    """One version of the audit prompt."""

    version: str
    system: str
    user_template: str


def check_delimited(text: str, placeholder: str, open_mark: str, close_mark: str,
                    where: str) -> None:
    """`text` must hold ${placeholder} once, between one `open_mark` and one `close_mark`: the
    data a prompt carries cannot then be confused with its instructions."""
    at = text.find(f"${{{placeholder}}}")
    opened, closed = text.find(open_mark), text.find(close_mark)
    if text.count(open_mark) != 1 or text.count(close_mark) != 1 or not opened < at < closed:
        raise ValueError(f"{where} must hold ${{{placeholder}}} once, between one {open_mark} "
                         f"line and one {close_mark} line")


def prompt_section(path: Path | str | None, section: str,
                   keys: tuple[str, ...] = ("version", "system", "user_template"),
                   ) -> tuple[Path, dict[str, Any]]:
    """(the file, section `section` of configs/prompts.yaml or another prompt file) with each of
    `keys` checked to be a non-empty string; errors name the file and the field."""
    path = Path(path) if path else CONFIG_DIR / "prompts.yaml"
    with path.open(encoding="utf-8") as handle:
        raw = (yaml.safe_load(handle) or {}).get(section)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: section {section!r} must be a mapping")
    for key in keys:
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ValueError(f"{path}: field '{section}.{key}' must be a non-empty string")
    return path, raw


def load_prompt(path: Path | str | None = None) -> AuditPrompt:
    """Load and check configs/prompts.yaml (or another prompt file)."""
    path = Path(path) if path else CONFIG_DIR / "prompts.yaml"
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with version, system, user_template")
    for key in ("version", "system", "user_template"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ValueError(f"{path}: field {key!r} must be a non-empty string")
    template = Template(raw["user_template"])
    if not template.is_valid():
        raise ValueError(f"{path}: field 'user_template' has a malformed $-placeholder")
    names = set(template.get_identifiers())
    if names - TEMPLATE_FIELDS:
        raise ValueError(f"{path}: field 'user_template': unknown placeholders "
                         f"{sorted(names - TEMPLATE_FIELDS)}; allowed {sorted(TEMPLATE_FIELDS)}")
    text = raw["user_template"]
    check_delimited(text, "batch_records", RECORDS_OPEN, RECORDS_CLOSE,
                    f"{path}: field 'user_template'")
    return AuditPrompt(version=raw["version"], system=raw["system"], user_template=text)


def build_messages(prompt: AuditPrompt, batch_records: Sequence[Mapping[str, Any]],
                   master: Mapping[str, Any], catalog: DeviationCatalog) -> list[dict[str, str]]:
    """System + user messages auditing one batch (records already in step_seq order)."""
    if not batch_records:
        raise ValueError("build_messages: a batch needs at least one record")
    batch_ids = {record.get("batch_id") for record in batch_records}
    if len(batch_ids) != 1:
        raise ValueError(f"build_messages: records of one batch expected, got batch_id {batch_ids}")
    batch_id = str(next(iter(batch_ids)))
    product_codes = sorted({str(r.get("product_code")) for r in batch_records})
    user = Template(prompt.user_template).substitute(
        deviation_catalog=render_catalog(catalog),
        site_rules="\n".join(f"- {key}: {value}" for key, value in catalog.site_rules.items()),
        master_data=render_master_data(master, product_codes),
        batch_id=batch_id,
        n_records=len(batch_records),
        batch_records="\n".join(data_line(record) for record in batch_records),
    )
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def messages_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 hex of the messages as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(list(messages), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=_jsonable)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def render_catalog(catalog: DeviationCatalog) -> str:
    """One line per deviation type: slug, name, fields and the exact rule."""
    return "\n".join(
        f"- {t.slug} ({t.name}; fields: {', '.join(t.fields)}): {t.rule}" for t in catalog.types
    )


def render_master_data(master: Mapping[str, Any], product_codes: Sequence[str]) -> str:
    """Site master data with only the master recipe(s) of the batch's product(s)."""
    recipes = [r for r in master.get("recipes", []) if str(r.get("product_code")) in product_codes]
    lines = [
        f"site_id: {master.get('site_id')}",
        f"time zone: {master.get('timezone')}",
        f"extracted_at (time the records were extracted): {master.get('extracted_at')}",
        f"status codes: {data_line(list(master.get('status_codes', [])))}",
        "authorized operator roster (JSON Lines):",
        *(data_line(o) for o in master.get("operators", [])),
        "equipment registry (JSON Lines):",
        *(data_line(e) for e in master.get("equipment", [])),
        "material master (JSON Lines):",
        *(data_line(m) for m in master.get("materials", [])),
    ]
    if not recipes:
        lines.append(f"master recipe: none on file for product_code {', '.join(product_codes)}")
    for recipe in recipes:
        header = {k: v for k, v in recipe.items() if k != "steps"}
        lines.append(f"master recipe {data_line(header)}; steps in order (JSON Lines):")
        lines.extend(data_line(step) for step in recipe.get("steps", []))
    return "\n".join(lines)


def data_line(value: Any) -> str:
    """Compact one-line JSON of `value` with delimiter-like sequences escaped."""
    line = json.dumps(_without_nan(value), ensure_ascii=False, default=_jsonable, allow_nan=False)
    for raw, escaped in _DELIMITER_ESCAPES:
        line = line.replace(raw, escaped)
    return line


def _without_nan(value: Any) -> Any:
    """NaN (pandas' missing value, also numpy's float64) becomes null, as in the source JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(item) for item in value]
    return value


def _jsonable(value: Any) -> Any:
    """JSON form of values that come from pandas/numpy or datetime columns."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        item = value.item()
        return None if isinstance(item, float) and math.isnan(item) else item
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON serializable")
