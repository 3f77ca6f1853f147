"""Settings dataclasses from YAML or task-config mappings, with errors that name the field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


def from_mapping(
    cls: type,
    raw: Mapping[str, Any],
    *,
    source: str,
    prefix: str = "",
    optional: frozenset[str] = frozenset(),
    converters: Mapping[str, Callable[[Any], Any]] | None = None,
    none_as: type = int,
) -> Any:
    """`cls(**raw)` with each value converted to its field default's type (bools must be bools;
    `optional` fields accept None; `converters` override by field; fields whose default is None
    convert with `none_as`). Unknown or unusable fields raise ValueError naming `source` and
    `prefix + field`; the class's own validation errors are prefixed with `source`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    converters = converters or {}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"{source}: field {name!r} is unknown; known: {', '.join(fields)}")
        default = fields[key].default
        try:
            if key in converters:
                value = converters[key](value)
            elif value is None and key in optional:
                pass
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError
            else:
                value = (none_as if default is None else type(default))(value)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: field {name!r}: cannot use {value!r}") from None
        values[key] = value
    try:
        return cls(**values)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
