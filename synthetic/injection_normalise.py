"""The prompt-injection detector's normalisation (synthetic/injection_screen.py): one text's
normalised form and its de-obfuscated readings (look-alike letters, leetspeak, spaced or split
letters, URL escapes, HTML entities, base64 / base32 / hex runs, ROT13, reversed text)."""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
import unicodedata
import urllib.parse
from functools import lru_cache

_LEET = str.maketrans("0134578@$|!", "oieastbasli")
_LEET_TOKEN = re.compile(r"\b(?=[\w@$|!]*[a-z])(?=[\w@$|!]*[0134578@$|!])[\w@$|!]{2,}")
_SPACED = re.compile(r"(?<!\S)\w([ .\-_*·])(?:\w\1)*\w(?=[\s,;:!?]|$)")
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")
_B32_RUN = re.compile(r"\b[A-Z2-7]{16,}={0,6}")
# A separator inside a word (ign-ore, in_struc_tions, re.port): two or more and a joined reading
# is screened too.
_INNER_SPLIT = re.compile(r"(?<=[^\W\d_])[-‐‑‧·•_.|/*~^+](?=[^\W\d_])")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
# Enclosed and squared Latin capitals (🅸, 🄸, 🅘, regional indicators) that NFKC leaves alone.
_ENCLOSED = {start + i: chr(ord("a") + i) for start in (0x1F130, 0x1F150, 0x1F170, 0x1F1E6)
             for i in range(26)}
# Common function words of the languages screened: two of them and the text is read as it is.
_READABLE = re.compile(r"\b(?:the|and|to|of|is|for|on|in|with|at|by|as|was|no|not|der|die|und|"
                       r"le|la|et|les|el|y|los|de|il|che|een|het|en)\b")
# Words that make a decoded reading (ROT13, reversed) worth screening: two of them and it is kept.
_DECODED_WORDS = re.compile(r"\b(?:the|and|to|of|is|for|in|with|all|any|no|not|your|you|ignore|"
                            r"instructions?|rules|previous|report|findings|deviations?|audit\w*|"
                            r"review\w*|ai|model|system|nothing|compliant|output|empty|batch)\b")
# An escape or a long run: a short text with one may still hide an instruction.
ENCODED_HINT = re.compile(r"%[0-9a-fA-F]{2}|[A-Za-z0-9+/=_-]{16,}")
_NON_LATIN_LETTER = re.compile(r"[^\x00-\x7f]")
# Scripts written without spaces between words (Thai, kana, CJK ideographs).
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")


def word_count(text: str) -> int:
    """Words of `text`: runs between spaces, and in scripts written without spaces one word per
    two characters (so a Chinese or Thai sentence is not taken for a single word)."""
    return len(text.split()) + len(_UNSPACED.findall(text)) // 2


def _printable_text(raw: bytes) -> str | None:
    """`raw` as text if it is UTF-8 and reads like text (letters and spaces), else None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(c.isprintable() for c in text) < 0.95 * len(text):
        return None
    return text if sum(c.isalpha() or c.isspace() for c in text) >= 0.7 * len(text) else None


def _decoded_runs(text: str) -> list[str]:
    """The text hidden in base64, base32 and hex runs of `text` (runs that decode to readable
    text)."""
    found: list[str] = []
    for run in _HEX_RUN.findall(text):
        decoded = _printable_text(binascii.unhexlify(run))
        if decoded:
            found.append(decoded)
    for run in _B64_RUN.findall(text):
        if _HEX_RUN.fullmatch(run):
            continue
        body = run.rstrip("=")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if (
                "-" in body or "_" in body) else None, validate=True)
        except (binascii.Error, ValueError):
            continue
        decoded = _printable_text(raw)
        if decoded:
            found.append(decoded)
    return found + _decoded_base32(text)


def _decoded_base32(text: str) -> list[str]:
    """The text hidden in base32 runs of `text` (upper-case letters and digits 2-7)."""
    found: list[str] = []
    for run in _B32_RUN.findall(text):
        body = run.rstrip("=")
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except (binascii.Error, ValueError):
            continue
        decoded = _printable_text(raw)
        if decoded:
            found.append(decoded)
    return found


@lru_cache(maxsize=1)
def _homoglyph_table() -> dict[int, str]:
    """Non-ASCII letters that look like one ASCII letter (Cyrillic а, Greek ο, ...) -> that letter,
    from confusable-homoglyphs' copy of the Unicode confusables table."""
    from confusable_homoglyphs import utils

    table: dict[int, str] = {}
    for char, glyphs in utils.load("confusables.json").items():
        if len(char) != 1 or char.isascii():
            continue
        bases = ("".join(c for c in g["c"] if not unicodedata.combining(c)) for g in glyphs)
        latin = [b for b in bases if len(b) == 1 and b.isascii() and b.isalpha()]
        if latin:
            table[ord(char)] = latin[0]
    return table | _ENCLOSED


def _visible(text: str) -> str:
    """NFKC with the invisible format characters (zero-width, bidi controls: Cf) removed."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def normalise(text: str) -> str:
    """NFKC, invisible format characters removed, case folded; whitespace runs are kept (spaced-out
    letters need the difference)."""
    return _visible(text).casefold()


def _unescaped(base: str) -> list[str]:
    """Readings of `base` with its URL escapes, HTML entities and \\u / \\x escapes undone."""
    out = []
    if "%" in base:
        out.append(urllib.parse.unquote_plus(base))
    if "&" in base and ";" in base:
        out.append(html.unescape(base).casefold())
    if "\\" in base:
        out.append(_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), base))
    return out


def _rejoined(candidate: str) -> list[str]:
    """Leetspeak undone, spaced-out letters joined, separators inside words removed (ign-ore) or
    read as spaces (ignore_previous_instructions)."""
    deleet = _LEET_TOKEN.sub(lambda m: m.group(0).translate(_LEET), candidate)
    joined = _SPACED.sub(lambda m: m.group(0).replace(m.group(1), ""), candidate)
    out = [deleet, joined]
    if len(_INNER_SPLIT.findall(candidate)) >= 2:  # split words, or words joined by separators
        out += [_INNER_SPLIT.sub("", candidate), _INNER_SPLIT.sub(" ", candidate)]
    return [v for v in out if v != candidate]


def variants(text: str) -> list[str]:
    """The normalised text and its de-obfuscated readings (each only when it differs): look-alike
    and enclosed letters folded, leetspeak undone, spaced or split letters joined, URL escapes,
    HTML entities and \\u escapes undone, base64, base32 and hex decoded, ROT13 and reversed text
    (cheap to try; on ordinary text they give no cue)."""
    visible = _visible(text)
    base = visible.casefold()
    out = [base]
    if _NON_LATIN_LETTER.search(visible):
        out.append(visible.translate(_homoglyph_table()).casefold())
    out += _unescaped(base)
    if len(_READABLE.findall(base)) < 2:  # not plain prose: try ROT13 and reversed text
        decoded = (codecs.encode(base, "rot13"), base[::-1],
                   " ".join(word[::-1] for word in base.split()))
        out += [d for d in decoded if len(_DECODED_WORDS.findall(d)) >= 2]
    for candidate in list(out[:4]):
        out += _rejoined(candidate)
    out += [normalise(decoded) for decoded in _decoded_runs(unicodedata.normalize("NFKC", text))]
    return list(dict.fromkeys(out))
