"""Partitions shared by the GxP assets: splits (static) x candidate models (dynamic).

Candidate models are dynamic partitions kept in step with configs/models.yaml by the model-registry
sensor and by `gxplab sync-models`, so adding a model is a YAML edit, not a code change.
"""

import dagster as dg

from synthetic.contracts import SPLITS

split_partitions = dg.StaticPartitionsDefinition(list(SPLITS))
model_partitions = dg.DynamicPartitionsDefinition(name="candidate_model")
model_split_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "split": split_partitions}
)
# A (model, split) asset reads the split partition of gxp_records/gxp_labels: Dagster infers that
# mapping because the "split" dimension is the same partitions definition.


def model_split_key(model_id: str, split: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"model": model_id, "split": split})
