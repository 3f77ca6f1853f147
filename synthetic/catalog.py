"""The deviation catalog: the 30 ALCOA+ deviation types, loaded from configs/deviations.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ALCOA_PRINCIPLES = frozenset(
    {
        "Attributable",
        "Legible",
        "Contemporaneous",
        "Original",
        "Accurate",
        "Complete",
        "Consistent",
        "Enduring",
        "Available",
        "Traceable",
    }
)


@dataclass(frozen=True)
class DeviationType:
    """One deviation type of the benchmark."""

    id: int
    slug: str
    name: str
    alcoa_principles: tuple[str, ...]
    why: str
    fields: tuple[str, ...]
    needs_batch_context: bool
    needs_master_data: bool
    rule: str


@dataclass(frozen=True)
class DeviationCatalog:
    """All deviation types, in seed-000 order, with the site rules they refer to."""

    version: int
    types: tuple[DeviationType, ...]
    site_rules: dict

    @property
    def slugs(self) -> tuple[str, ...]:
        return tuple(t.slug for t in self.types)

    def get(self, slug: str) -> DeviationType:
        for deviation_type in self.types:
            if deviation_type.slug == slug:
                return deviation_type
        raise KeyError(f"unknown deviation type {slug!r}; known: {', '.join(self.slugs)}")


def parse_catalog(raw: dict, source: str) -> DeviationCatalog:
    """Build a catalog from parsed YAML, with errors that name the source and the entry."""
    entries = raw.get("deviation_types")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: 'deviation_types' must be a non-empty list")
    types: list[DeviationType] = []
    for position, entry in enumerate(entries, start=1):
        where = f"{source}: deviation_types[{position}]"
        try:
            principles = tuple(entry["alcoa_principles"])
            unknown = set(principles) - ALCOA_PRINCIPLES
            if unknown:
                raise ValueError(f"{where} field 'alcoa_principles': unknown {sorted(unknown)}")
            types.append(
                DeviationType(
                    id=int(entry["id"]),
                    slug=str(entry["slug"]),
                    name=str(entry["name"]),
                    alcoa_principles=principles,
                    why=str(entry["why"]),
                    fields=tuple(entry["fields"]),
                    needs_batch_context=bool(entry["needs_batch_context"]),
                    needs_master_data=bool(entry["needs_master_data"]),
                    rule=str(entry["rule"]),
                )
            )
        except KeyError as missing:
            raise ValueError(f"{where}: missing field {missing}") from None
    slugs = [t.slug for t in types]
    duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate slugs {duplicates}")
    return DeviationCatalog(
        version=int(raw.get("version", 1)),
        types=tuple(types),
        site_rules=dict(raw.get("site_rules", {})),
    )


@lru_cache(maxsize=4)
def load_catalog(path: Path | None = None) -> DeviationCatalog:
    """Load configs/deviations.yaml (or another catalog file)."""
    path = Path(path) if path else CONFIG_DIR / "deviations.yaml"
    with path.open(encoding="utf-8") as handle:
        return parse_catalog(yaml.safe_load(handle), str(path))
