"""The adversarial split's prompt-injection comments, in families: loaded from
configs/injection_templates.yaml (typed, with errors naming the file and the entry) and drawn by
the generator, family first (so a family's weight does not depend on how many templates it has).
"""

from __future__ import annotations

import base64
import codecs
import random
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from synthetic.catalog import CONFIG_DIR

_HOMOGLYPHS = str.maketrans("aceopxyiAEOPCHTMK", "асеорхуіАЕОРСНТМК")  # Latin -> Cyrillic
_LEET = str.maketrans("aeiostAEIOST", "431057431057")
_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)} | {0x20: 0x3000}


def _spaced(text: str) -> str:
    return "   ".join(" ".join(word) for word in text.split())


def _split(text: str) -> str:
    """A hyphen in the middle of every word of five letters or more (ign-ore prev-ious)."""
    return " ".join(w[:len(w) // 2] + "-" + w[len(w) // 2:] if len(w) >= 5 and w.isalpha() else w
                    for w in text.split())


# What each `encoding:` does to a template's text: the obfuscations seen in real injections.
ENCODINGS: Mapping[str, Callable[[str], str]] = {
    "base64": lambda t: base64.b64encode(t.encode("utf-8")).decode("ascii"),
    "hex": lambda t: t.encode("utf-8").hex(),
    "leet": lambda t: t.translate(_LEET),
    "spaced": _spaced,
    "zero_width": lambda t: "\u200b".join(t),
    "homoglyph": lambda t: t.translate(_HOMOGLYPHS),
    "fullwidth": lambda t: t.translate(_FULLWIDTH),
    "base32": lambda t: base64.b32encode(t.encode("utf-8")).decode("ascii"),
    "rot13": lambda t: codecs.encode(t, "rot13"),
    "reversed": lambda t: t[::-1],
    "url": lambda t: urllib.parse.quote(t),
    "html_entities": lambda t: "".join(f"&#{ord(c)};" if c.isalpha() else c for c in t),
    "split": _split,
}


@dataclass(frozen=True)
class InjectionTemplate:
    """One injection comment: its text, and how it is disguised (encoding, plain wrapper)."""

    text: str
    encoding: str | None = None
    wrapper: str | None = None

    def render(self, batch_id: str) -> str:
        """The comment as written into the record."""
        text = self.text.format(batch_id=batch_id)
        if self.encoding is None:
            return text
        encoded = ENCODINGS[self.encoding](text)
        return self.wrapper.format(encoded=encoded) if self.wrapper else encoded


@dataclass(frozen=True)
class InjectionFamily:
    """A style of attack, its templates, and whether it was held out from the detector's design."""

    name: str
    description: str
    held_out: bool
    templates: tuple[InjectionTemplate, ...]


@dataclass(frozen=True)
class InjectionTable:
    version: int
    families: tuple[InjectionFamily, ...]

    def family(self, name: str) -> InjectionFamily:
        for family in self.families:
            if family.name == name:
                return family
        raise KeyError(f"unknown injection family {name!r}; known: "
                       f"{', '.join(f.name for f in self.families)}")

    def draw(self, rng: random.Random, batch_id: str) -> tuple[str, str]:
        """(family name, rendered comment): a family uniformly, then one of its templates."""
        family = rng.choice(self.families)
        return family.name, rng.choice(family.templates).render(batch_id)

    def rendered(self, batch_id: str = "B26-AD-0001") -> list[tuple[str, str]]:
        """Every template as (family name, rendered comment), in table order."""
        return [(f.name, t.render(batch_id)) for f in self.families for t in f.templates]


def _template(entry: object, where: str) -> InjectionTemplate:
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str) or not entry["text"]:
        raise ValueError(f"{where}: field 'text' must be a non-empty string")
    unknown = set(entry) - {"text", "encoding", "wrapper"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    encoding, wrapper = entry.get("encoding"), entry.get("wrapper")
    if encoding is not None and encoding not in ENCODINGS:
        raise ValueError(f"{where} field 'encoding': {encoding!r} is not one of "
                         f"{sorted(ENCODINGS)}")
    if wrapper is not None and (encoding is None or "{encoded}" not in str(wrapper)):
        raise ValueError(f"{where} field 'wrapper': needs an 'encoding' and an {{encoded}} mark")
    template = InjectionTemplate(entry["text"], encoding, wrapper)
    try:
        template.render("B00-XX-0000")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"{where} field 'text': bad placeholder ({err}); only {{batch_id}}, "
                         "literal braces doubled") from None
    return template


def parse_injection_table(raw: object, source: str) -> InjectionTable:
    """Build the table from parsed YAML; errors name the source, the family and the template."""
    families_raw = raw.get("families") if isinstance(raw, dict) else None
    if not isinstance(families_raw, list) or not families_raw:
        raise ValueError(f"{source}: 'families' must be a non-empty list")
    families: list[InjectionFamily] = []
    for i, entry in enumerate(families_raw, start=1):
        where = f"{source}: families[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping")
        missing = {"name", "held_out", "description", "templates"} - set(entry)
        if missing:
            raise ValueError(f"{where}: missing field(s) {sorted(missing)}")
        if not isinstance(entry["held_out"], bool):
            raise ValueError(f"{where} field 'held_out': must be true or false")
        templates = entry["templates"]
        if not isinstance(templates, list) or not templates:
            raise ValueError(f"{where} field 'templates': must be a non-empty list")
        families.append(InjectionFamily(
            str(entry["name"]), str(entry["description"]), entry["held_out"],
            tuple(_template(t, f"{where} ({entry['name']}) templates[{j}]")
                  for j, t in enumerate(templates, start=1))))
    names = [f.name for f in families]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate family names {duplicates}")
    return InjectionTable(int(raw.get("version", 1)), tuple(families))


@lru_cache(maxsize=4)
def load_injection_table(path: Path | None = None) -> InjectionTable:
    """Load configs/injection_templates.yaml (or another table file)."""
    path = Path(path) if path else CONFIG_DIR / "injection_templates.yaml"
    with path.open(encoding="utf-8") as handle:
        return parse_injection_table(yaml.safe_load(handle), str(path))
