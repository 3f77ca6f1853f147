"""The per-item contract every evaluation asset returns (judge_evaluations, behavioral_metrics,
batchqa_eval): one row per (model, item, metric), so that the synthesis report can pair a tuned
model with its base on the same items and the warehouse can store each row with its lineage.

Columns, in order (more may follow):
  model_id       the evaluated model (e.g. base_model, batchqa_adapter, embedded-grpo)
  base_model_id  the model it is compared against; None for a base or an API model
  model_version  the adapter's registered version, base:<model> or the litellm model string
  item_id        the prompt, case or question id
  metric         the metric's name
  value          a finite float when status is ok; NaN when failed
  status         ok | failed (a failure is never scored 0)
  detail         the error, or a short note (e.g. a justification)
"""

ITEM_COLUMNS: tuple[str, ...] = (
    "model_id", "base_model_id", "model_version", "item_id", "metric", "value", "status", "detail",
)  # fmt: skip
ITEM_STATUSES: tuple[str, ...] = ("ok", "failed")
