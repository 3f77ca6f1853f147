"""Deviation-rich training data for the record-by-record audit (the `gxp_audit_adapter` asset).

The `train` split has 2% deviating records (~7 per type in 10,000): a small model trained on it
learns to answer "no findings" and stops there. These records come from the same generator and
the same site master data as every split (synthetic/splits.py), at a much higher deviation rate,
with a split name and seed of their own: never a benchmark, control or adversarial record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synthetic.catalog import DeviationCatalog, load_catalog
from synthetic.splits import GeneratedSplit, SplitSpec, generate_split

# Types one record cannot show: they need the batch's other records (or the recipe position and
# master data the compact record leaves out). Labelled on a record that looks clean, they only
# teach a small model to flag clean records, so its training data leaves them out.
OUT_OF_RECORD_TYPES = frozenset({"duplicate_record_id", "reused_batch_number", "redundant_step",
                                 "unexpected_step_order", "timestamp_out_of_sequence",
                                 "unexpected_material_usage"})
TRAINING_SPLIT = "gxp_audit_train"
HELDOUT_SPLIT = "gxp_audit_heldout"


@dataclass(frozen=True)
class AuditTrainingData:
    """Generated records and labels for the audit SFT, and the held-out ones for its metadata."""

    train: GeneratedSplit
    heldout: GeneratedSplit
    seed: int


def generate_audit_training_data(master: dict, *, seed: int, dataset_seed: int, n_batches: int,
                                 heldout_batches: int, deviation_rate: float = 0.5,
                                 steps: tuple[int, int] = (16, 24),
                                 catalog: DeviationCatalog | None = None) -> AuditTrainingData:
    """`n_batches` training batches and `heldout_batches` held-out ones at `deviation_rate` (of
    the catalog's types but OUT_OF_RECORD_TYPES), from `master` with `seed`, which must differ
    from `dataset_seed` (the evaluation splits')."""
    if seed == dataset_seed:
        raise ValueError(f"audit training data: field 'seed' {seed} is the evaluation splits' seed "
                         "(configs/datasets.yaml `seed`); choose another so no evaluation record "
                         "is trained on")
    if not 0 < deviation_rate <= 1:
        raise ValueError(f"audit training data: field 'deviation_rate' must be in (0, 1], got "
                         f"{deviation_rate}")
    if n_batches < 1 or heldout_batches < 0:
        raise ValueError("audit training data: n_batches must be >= 1 and heldout_batches >= 0")
    catalog = record_level_catalog(catalog or load_catalog())
    low, high = steps
    train = generate_split(SplitSpec(TRAINING_SPLIT, n_batches, low, high, deviation_rate),
                           master, seed, catalog)
    heldout = (generate_split(SplitSpec(HELDOUT_SPLIT, heldout_batches, low, high,
                                        deviation_rate), master, seed, catalog)
               if heldout_batches else GeneratedSplit())
    return AuditTrainingData(train=train, heldout=heldout, seed=seed)


def record_level_catalog(catalog: DeviationCatalog) -> DeviationCatalog:
    """`catalog` without OUT_OF_RECORD_TYPES."""
    return dataclasses.replace(catalog, types=tuple(t for t in catalog.types
                                                    if t.slug not in OUT_OF_RECORD_TYPES))


def record_level_examples(records: Sequence[Mapping[str, Any]],
                          labels: Sequence[Mapping[str, Any]]
                          ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """`records` and `labels` without OUT_OF_RECORD_TYPES: their labels are dropped, and so are
    the records that carried only such labels (clean-looking, yet labelled deviating)."""
    kept = [label for label in labels if label["deviation_type"] not in OUT_OF_RECORD_TYPES]
    hidden = ({str(label["record_id"]) for label in labels}
              - {str(label["record_id"]) for label in kept})
    return [r for r in records if str(r["record_id"]) not in hidden], kept
