"""Quick record-level metrics of record-audit answers against labels (no scorer, no batches):
what the gxp_audit_adapter task reports on its held-out generated records, and what the learning
test and bench measure. The benchmark's own numbers come from scoring/gxp.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scoring.record_audit import parse_record_output
from synthetic.catalog import DeviationCatalog, load_catalog


def record_metrics(labels: Sequence[Sequence[Mapping[str, Any]]], answers: Sequence[str],
                   catalog: DeviationCatalog | None = None) -> dict[str, Any]:
    """Per record: truth = has a label, prediction = a valid answer with a finding. Record
    precision / recall / F1, accuracy, clean false-positive rate, invalid-answer rate, type
    accuracy on deviating records, and recall per deviation type (a type is found when the
    answer names it)."""
    if len(labels) != len(answers):
        raise ValueError(f"record_metrics: {len(labels)} label lists but {len(answers)} answers")
    catalog = catalog or load_catalog()
    tp = fp = fn = tn = invalid = 0
    per_type: dict[str, list[int]] = {}
    for i, (truth, answer) in enumerate(zip(labels, answers, strict=True)):
        parsed = parse_record_output(answer, f"R{i}", "B", catalog)
        invalid += not parsed.valid
        predicted = {f["deviation_type"] for f in parsed.findings}
        true_types = {str(t["deviation_type"]) for t in truth}
        if true_types:
            tp += bool(predicted)
            fn += not predicted
        else:
            fp += bool(predicted)
            tn += not predicted
        for slug in true_types:
            per_type.setdefault(slug, [0, 0])
            per_type[slug][0] += slug in predicted
            per_type[slug][1] += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    found = sum(hit for hit, _ in per_type.values())
    total = sum(n for _, n in per_type.values())
    return {
        "records": len(answers),
        "record_precision": precision,
        "record_recall": recall,
        "record_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "record_accuracy": (tp + tn) / len(answers) if answers else 0.0,
        "clean_fpr": fp / (fp + tn) if fp + tn else 0.0,
        "invalid_rate": invalid / len(answers) if answers else 0.0,
        "type_recall": found / total if total else 0.0,
        "per_type_recall": {slug: {"found": hit, "of": n, "recall": hit / n}
                            for slug, (hit, n) in sorted(per_type.items())},
    }
