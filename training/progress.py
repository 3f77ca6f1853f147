"""Progress lines inside long steps: count done, rate and ETA, for training and generation.

One helper for every long loop. `ProgressLog(label, total, unit)` is called with the count done
so far (it is a `(done, total)` callback, as `LocalGenerator.generate` and the candidate runner
take; training passes the loss and other numbers as fields) and writes a line on the first call,
then at most every `every_s` seconds, and on the last item:

    gxp_audit_adapter: 40/200 steps (20%), loss=2.31, 1.9 steps/s, ETA 1m24s
    rag_eval gxp_rag_sft: 48/120 answers (40%), 2.1 answers/s, ETA 34s

Every line goes to the `gxplab.progress` logger, which writes to stderr (so it shows in the
terminal even where Dagster's console log is at WARNING, as in `gxplab benchmark`), and to each
extra sink given: an asset's `context.log` or a Pipes context's `log`, which puts the line in the
Dagster run's logs. Plain Python, no Dagster import.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a test or a tool may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


logger = logging.getLogger("gxplab.progress")
if not logger.handlers:  # once per process; propagation stays on (pytest's caplog sees it)
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)

EVERY_S = 10.0  # a line at most this often, besides the first and the last


class InfoSink(Protocol):
    """Anything with `info(str)`: a logging.Logger, Dagster's context.log, a Pipes context's log."""

    def info(self, msg: str) -> Any: ...


def duration(seconds: float) -> str:
    """45s, 1m24s, 2h03m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _field(name: str, value: Any) -> str:
    return f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"


class ProgressLog:
    """Writes progress lines for one loop; call it with the count done (and optionally the total
    and fields such as loss). Returns the line written, or None when none was due."""

    def __init__(self, label: str, total: int | None = None, unit: str = "items", *,
                 start: int = 0, sinks: Sequence[InfoSink] = (), every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`start`: the count already done now (a resumed run), which the rate leaves out."""
        self.label, self.total, self.unit = label, total, unit
        self.sinks = list(sinks)
        self.every_s = every_s
        self._clock = clock
        self._start = (clock(), start)  # the rate counts from here
        self._last_line_at: float | None = None

    def __call__(self, done: int, total: int | None = None, **fields: Any) -> str | None:
        now = self._clock()
        if total is not None:
            self.total = total
        finished = self.total is not None and done >= self.total
        due = self._last_line_at is None or now - self._last_line_at >= self.every_s
        if not (due or finished):
            return None
        self._last_line_at = now
        line = self.line(done, now, fields)
        logger.info(line)
        for sink in self.sinks:
            sink.info(line)
        return line

    def line(self, done: int, now: float, fields: dict[str, Any]) -> str:
        """`label: done/total unit (pct), fields, rate unit/s, ETA t` (rate and ETA once known)."""
        parts = [f"{done}/{self.total} {self.unit}" if self.total else f"{done} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * done / self.total:.0f}%)"
        parts += [_field(k, v) for k, v in fields.items() if v is not None]
        started, base = self._start
        elapsed = now - started
        if done > base and elapsed > 0:
            rate = (done - base) / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total:
                parts.append(f"ETA {duration(max(0, self.total - done) / rate)}")
        return f"{self.label}: " + ", ".join(parts)
