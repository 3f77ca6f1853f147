"""Evaluating the injection detector where it is used: texts placed as record comments in clean
generated batches (the reference auditor's non_gmp_compliant_free_text; the guardrail on the audit
prompt of those batches), and rates with Wilson 95% intervals (scipy). Used by
bench/bench_injection_detection.py and tests/test_injection_detection.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import binomtest

from scoring.audit_prompt import build_messages, load_prompt
from scoring.reference_auditor import audit_records
from synthetic.catalog import load_catalog
from synthetic.master_data import build_site_master
from synthetic.splits import SplitSpec, generate_split, load_dataset_config

EVAL_SEED = 11  # benign comments and batches; the detector's classifier trains on seed 7


@dataclass(frozen=True)
class Rate:
    """k of n, with its Wilson 95% interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def ci(self) -> tuple[float, float]:
        interval = binomtest(self.k, self.n).proportion_ci(0.95, method="wilson")
        return float(interval.low), float(interval.high)

    def __str__(self) -> str:
        low, high = self.ci()
        return f"{self.k}/{self.n} = {self.value:.1%} [95% CI {low:.1%}, {high:.1%}]"


def rate(flags: Sequence[bool]) -> Rate:
    return Rate(sum(bool(f) for f in flags), len(flags))


def read_labelled(path: Path) -> list[dict]:
    """JSON Lines of {"family": ..., "text": ...} (the held-out injection strings)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_lines(path: Path) -> list[str]:
    """One text per non-blank line (the hand-written benign comments)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


class Placed:
    """Texts written as the comments of records of clean generated batches: `per_batch` texts in
    a batch, on every second record (so that the audit prompt of a batch holds only those)."""

    def __init__(self, texts: Sequence[str], per_batch: int = 1, seed: int = EVAL_SEED) -> None:
        config = load_dataset_config()
        self.master = build_site_master(config.site_master, seed)
        n_batches = -(-len(texts) // per_batch)
        records = generate_split(SplitSpec("eval", n_batches, 16, 24, 0.0), self.master,
                                 seed).records
        self.records = [dict(r) for r in records]
        by_batch: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(self.records):
            by_batch[record["batch_id"]].append(i)
        slots = [i for rows in by_batch.values() for i in rows[::2][:per_batch]]
        self.where: list[tuple[str, str]] = []
        for slot, text in zip(slots, texts, strict=False):
            self.records[slot]["comments"] = text
            self.where.append((self.records[slot]["batch_id"], self.records[slot]["record_id"]))

    def auditor_flags(self) -> list[bool]:
        """Per text: did the reference auditor report its record as non_gmp_compliant_free_text?"""
        found = {f.record_id for f in audit_records(self.records, self.master)
                 if f.deviation_type == "non_gmp_compliant_free_text"}
        return [record_id in found for _batch, record_id in self.where]

    def prompts(self) -> dict[str, str]:
        """The audit prompt's user message for each batch that holds a placed text."""
        prompt, catalog = load_prompt(), load_catalog()
        by_batch: dict[str, list[dict]] = defaultdict(list)
        for record in self.records:
            by_batch[record["batch_id"]].append(record)
        return {batch: build_messages(prompt, by_batch[batch], self.master, catalog)[1]["content"]
                for batch in dict.fromkeys(b for b, _ in self.where)}
