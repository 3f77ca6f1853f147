"""The served models: the name clients call (`openai/<name>` in litellm), a base, an adapter."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_FIELDS = ("name", "base_model_path", "adapter_path", "description")


@dataclass(frozen=True)
class ServedModel:
    """One model of the catalog; the adapter, if any, is merged into the base when loaded."""

    name: str
    base_model_path: str
    adapter_path: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"served model name {self.name!r} must match {NAME_PATTERN.pattern}")
        if not self.base_model_path:
            raise ValueError(f"served model {self.name!r}: base_model_path is empty")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "base_model_path": self.base_model_path,
                "adapter_path": self.adapter_path, "description": self.description}


def parse_model_spec(spec: str) -> ServedModel:
    """`NAME=BASE_PATH[+ADAPTER_PATH]` (the CLI's --model) as a ServedModel."""
    name, sep, paths = spec.partition("=")
    if not sep or not name or not paths:
        raise ValueError(f"--model {spec!r}: expected NAME=BASE_PATH[+ADAPTER_PATH]")
    base, plus, adapter = paths.partition("+")
    if plus and not adapter:
        raise ValueError(f"--model {spec!r}: the adapter path after '+' is empty")
    return ServedModel(name=name, base_model_path=base, adapter_path=adapter or None)


def load_catalog(path: str | Path) -> list[ServedModel]:
    """A JSON list of {name, base_model_path, adapter_path, description}; errors name the file,
    the entry and the field."""
    path = Path(path)
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the catalog: {err}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of models, got {type(raw).__name__}")
    models = []
    for index, entry in enumerate(raw):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where}: field {unknown[0]!r} is unknown; known: "
                             f"{', '.join(_FIELDS)}")
        for name in _FIELDS:
            value = entry.get(name)
            required = name in ("name", "base_model_path")
            if (required and not isinstance(value, str)) or \
                    (not required and value is not None and not isinstance(value, str)):
                raise ValueError(f"{where}: field {name!r} must be a string"
                                 f"{'' if required else ' or null'}, got {value!r}")
        try:
            models.append(ServedModel(name=entry["name"],
                                      base_model_path=entry["base_model_path"],
                                      adapter_path=entry.get("adapter_path") or None,
                                      description=entry.get("description") or ""))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return check_catalog(models, source=str(path))


def check_catalog(models: Iterable[ServedModel], source: str = "catalog") -> list[ServedModel]:
    """The models, checked to be at least one and uniquely named."""
    models = list(models)
    if not models:
        raise ValueError(f"{source}: no model to serve")
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ValueError(f"{source}: model name {model.name!r} appears twice")
        seen.add(model.name)
    return models


def catalog_from_args(specs: Sequence[str], catalog_file: str | Path | None) -> list[ServedModel]:
    """The CLI's models: the catalog file's, then each --model."""
    models = load_catalog(catalog_file) if catalog_file else []
    models += [parse_model_spec(spec) for spec in specs]
    return check_catalog(models, source="--model/--catalog")
