"""Reports stage: the GxP leaderboard."""

import base64

import dagster as dg
import pandas as pd

from resources.warehouse import WarehouseResource
from scoring.leaderboard import build_leaderboard, leaderboard_markdown, leaderboard_plot
from scoring.model_registry import load_model_registry


@dg.asset(
    group_name="reports",
    deps=["gxp_scores"],
    kinds={"python"},
    automation_condition=dg.AutomationCondition.eager(),
    code_version="1",
)
def gxp_leaderboard(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> pd.DataFrame:
    """Every registered model's latest scores per split, with 95% CIs, cost and latency; the
    warehouse rows carry the dataset hash, prompt and code versions behind each number."""
    model_ids = [model.id for model in load_model_registry() if model.enabled]
    scores = warehouse.client.latest_scores(model_ids=model_ids)
    runs = warehouse.client.latest_run_summaries(model_ids=model_ids, asset_key="gxp_predictions")
    table = build_leaderboard(model_ids, scores, runs)
    markdown = leaderboard_markdown(table)
    png = leaderboard_plot(table)
    context.log.info("leaderboard:\n" + markdown)
    image = base64.b64encode(png).decode()
    context.add_output_metadata(
        {
            "leaderboard": dg.MetadataValue.md(markdown),
            "plot": dg.MetadataValue.md(
                f"![quality vs cost and latency](data:image/png;base64,{image})"
            ),
            "models": len(table),
            "models_scored": int(table["gxp1_f1"].notna().sum()) if "gxp1_f1" in table else 0,
            "dataset_hashes": dg.MetadataValue.json(
                scores.groupby("split")["dataset_hash"].unique().apply(list).to_dict()
                if len(scores)
                else {}
            ),
        }
    )
    # CI tuples do not survive Parquet; keep them as two columns.
    flat = table.copy()
    for column in [c for c in flat.columns if c.endswith("_ci")]:
        flat[column + "_low"] = flat[column].map(lambda v: v[0] if isinstance(v, tuple) else None)
        flat[column + "_high"] = flat[column].map(lambda v: v[1] if isinstance(v, tuple) else None)
        flat = flat.drop(columns=column)
    return flat


COMPARISON_COLUMNS = (
    ("steps", "steps"), ("train_loss", "train loss"), ("eval_loss", "eval loss"),
    ("wall_s", "wall s"), ("tokens_per_s", "tokens/s"), ("peak_memory_mb", "peak MB"),
    ("trainable_params", "trainable params"), ("grit_effective_params", "effective params"),
    ("grit_mean_effective_rank", "effective rank"), ("adapter_size_bytes", "adapter bytes"),
    ("quantization", "quantization"),
)


# adapter asset -> the objective it trains (its loss-curve panel)
ADAPTER_OBJECTIVES = {
    "qlora_adapter": "SFT (cross-entropy)",
    "grit_adapter": "SFT (cross-entropy)",
    "batchqa_adapter": "SFT (cross-entropy)",
    "gxp_audit_adapter": "SFT (cross-entropy)",
    "dpo_adapter": "preference (DPO / ORPO loss)",
    "orpo_adapter": "preference (DPO / ORPO loss)",
    "grpo_adapter": "GRPO (policy loss)",
}


@dg.asset(group_name="reports", kinds={"python"}, code_version="2",
          ins={name: dg.AssetIn() for name in ADAPTER_OBJECTIVES})
def training_comparison(context: dg.AssetExecutionContext, **adapters: dict) -> pd.DataFrame:
    """The adapters side by side: loss curves per objective, wall time, tokens/s, peak memory,
    trainable and effective parameters, adapter size, quantization."""
    from training.plots import loss_panels_png

    table = pd.DataFrame(
        [{"adapter": name, "objective": ADAPTER_OBJECTIVES[name],
          **{key: ref.get(key) for key, _ in COMPARISON_COLUMNS}}
         for name, ref in adapters.items()]
    )
    panels: dict[str, dict[str, list]] = {}
    for name, ref in adapters.items():
        panels.setdefault(ADAPTER_OBJECTIVES[name], {})[name] = ref.get("losses") or []
    image = base64.b64encode(loss_panels_png(panels)).decode()
    shown = table.rename(columns=dict(COMPARISON_COLUMNS))
    context.add_output_metadata({
        "comparison": dg.MetadataValue.md(shown.to_markdown(index=False, floatfmt=".4g")),
        "loss_curves": dg.MetadataValue.md(f"![loss curves](data:image/png;base64,{image})"),
        "adapters": len(table),
    })
    return table
