"""Streamed text made safe piece by piece: cut at the first stop string, PHI redacted.

Text is held back until it can no longer be the start of a stop string or of a PHI match: a
piece is released only up to a whitespace at least `HOLD_CHARS` before the end of what was
generated, and never inside a PHI match found so far. The PHI formats that contain whitespace
(phone, MRN, date of birth) are much shorter than `HOLD_CHARS`, and the ones that do not (email)
are never split at a whitespace, so redacting the released pieces one by one finds what redacting
the whole answer would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from serving.guardrails import PHI_PATTERNS, redact_phi

HOLD_CHARS = 64


class StreamTextFilter:
    """`feed(piece)` returns the text that can be sent now; `finish()` returns the rest."""

    def __init__(self, stop_strings: Sequence[str] = (), *, redact: bool = True) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.redact = redact
        self.counts: Counter[str] = Counter()
        self.stopped = False
        self._raw = ""
        self._sent = 0  # characters of _raw already released
        self._hold = max([HOLD_CHARS if redact else 0]
                         + [len(s) - 1 for s in self.stop_strings])

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self._raw += piece
        cut = self._stop_position()
        if cut is not None:
            self._raw = self._raw[:cut]
            self.stopped = True
            return self._release(len(self._raw))
        return self._release(self._safe_end())

    def finish(self) -> str:
        return self._release(len(self._raw))

    def _stop_position(self) -> int | None:
        # A stop string may straddle the released part only by less than its length.
        start = max(0, self._sent - max((len(s) for s in self.stop_strings), default=0))
        cuts = [i for s in self.stop_strings if (i := self._raw.find(s, start)) >= 0]
        return min(cuts) if cuts else None

    def _safe_end(self) -> int:
        end = len(self._raw) - self._hold
        if end <= self._sent:
            return self._sent
        if self.redact:
            space = max(self._raw.rfind(c, self._sent, end) for c in " \n\t")
            if space < 0:
                return self._sent
            end = space
            for pattern in PHI_PATTERNS:
                for match in pattern.regex.finditer(self._raw, self._sent):
                    if match.start() < end < match.end():
                        end = match.start()
        return max(end, self._sent)

    def _release(self, end: int) -> str:
        text, self._sent = self._raw[self._sent:end], max(end, self._sent)
        if not self.redact or not text:
            return text
        redaction = redact_phi(text)
        self.counts.update(redaction.counts)
        return redaction.text

