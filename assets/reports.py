"""Reports stage: the GxP leaderboard, the training comparison and the synthesis report."""

import base64

import dagster as dg
import pandas as pd

from assets.automation import REFRESH
from resources.artifacts import ArtifactsResource
from resources.warehouse import WarehouseResource
from scoring.leaderboard import (
    build_leaderboard,
    flatten_cis,
    leaderboard_markdown,
    leaderboard_plot,
)
from scoring.model_registry import GXP_AUDIT, load_model_registry


@dg.asset(
    group_name="reports",
    deps=["gxp_scores"],
    kinds={"python"},
    automation_condition=REFRESH,
    code_version="1",
)
def gxp_leaderboard(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> pd.DataFrame:
    """Every registered model's latest scores per split, with 95% CIs, cost and latency; the
    warehouse rows carry the dataset hash, prompt and code versions behind each number."""
    model_ids = [m.id for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]
    scores = warehouse.client.latest_scores(model_ids=model_ids, asset_key="gxp_scores")
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
    return flatten_cis(table)  # CI tuples do not survive Parquet; keep them as two columns


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
          automation_condition=REFRESH, ins={name: dg.AssetIn() for name in ADAPTER_OBJECTIVES})
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


# The evaluation assets whose per-item rows (the shared contract) the synthesis report compares.
EVALUATION_ASSETS = ("judge_evaluations", "behavioral_metrics", "batchqa_eval")
REPORT_INPUTS = ("gxp_leaderboard", "training_comparison", "aqi_scores", *EVALUATION_ASSETS)
# Metadata keys of the upstream materializations that say which data and prompts they used.
_HASH_KEYS = ("dataset_hash", "cases_hash", "prompts_hash", "questions_hash", "dataset_hashes")
_PROMPT_KEYS = ("prompt_version", "judge_prompt_version", "judge")


@dg.asset(group_name="reports", kinds={"python"}, code_version="1",
          automation_condition=REFRESH, ins={name: dg.AssetIn() for name in REPORT_INPUTS})
def synthesis_report(context: dg.AssetExecutionContext, artifacts: ArtifactsResource,
                     gxp_leaderboard: pd.DataFrame, training_comparison: pd.DataFrame,
                     aqi_scores: pd.DataFrame, judge_evaluations: pd.DataFrame,
                     behavioral_metrics: pd.DataFrame, batchqa_eval: pd.DataFrame,
                     ) -> pd.DataFrame:
    """One document (Markdown and HTML) with the leaderboard, the cost-quality Pareto front, AQI
    with CIs, judge, behaviour and batch-QA scores, the training comparison and the significance
    of every base-vs-tuned difference (paired t-test, Holm-adjusted), with a recommendation per
    task that says which differences are not significant; saved as an artifact, shown in
    metadata. Returns the comparisons table."""
    from datetime import UTC, datetime

    from resources.clients.warehouse import code_version
    from scoring.synthesis import build_report, save_report

    evaluations = {"judge_evaluations": judge_evaluations,
                   "behavioral_metrics": behavioral_metrics, "batchqa_eval": batchqa_eval}
    report = build_report(
        gxp_leaderboard, training_comparison, aqi_scores, evaluations,
        title="GxPLab synthesis report", generated_at=datetime.now(UTC).replace(microsecond=0),
        lineage={"run_id": context.run.run_id, "code_version": code_version(),
                 **_upstream_lineage(context)})
    folder = artifacts.store.path_for(f"synthesis_report/{context.run.run_id}")
    paths = save_report(report, folder)
    significant = report.comparisons["significant"].fillna(False).astype(bool)
    context.log.info(f"synthesis_report: {len(report.comparisons)} comparisons, "
                     f"{int(significant.sum())} significant after Holm; {paths['report.html']}")
    context.add_output_metadata({
        "report": dg.MetadataValue.md(_inline_images(report.markdown, report.images)),
        "html": dg.MetadataValue.path(str(paths["report.html"])),
        "markdown_file": dg.MetadataValue.path(str(paths["report.md"])),
        "comparisons": len(report.comparisons),
        "significant_after_holm": int(significant.sum()),
        "sections_not_available": dg.MetadataValue.json(report.unavailable),
    })
    return report.comparisons.astype({"significant": "object"})


def _upstream_lineage(context: dg.AssetExecutionContext) -> dict:
    """Data hashes, prompt versions and run ids of the materializations the report reads."""
    hashes, prompts, runs = {}, {}, {}
    for name in REPORT_INPUTS:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
        if event is None or event.asset_materialization is None:
            continue
        runs[name] = event.run_id
        metadata = {k: getattr(v, "value", v)
                    for k, v in event.asset_materialization.metadata.items()}
        for keys, found in ((_HASH_KEYS, hashes), (_PROMPT_KEYS, prompts)):
            for key in (k for k in keys if k in metadata):
                found.update(_flat(f"{name}.{key}", metadata[key]))
    return {"dataset_hashes": hashes, "prompt_versions": prompts, "upstream_runs": runs}


def _flat(name: str, value: object) -> dict[str, str]:
    """{name: value}, a mapping as {name.key: value} (e.g. the leaderboard's hashes per split)."""
    if isinstance(value, dict):
        return {f"{name}.{key}": ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                for key, v in value.items()}
    return {name: str(value)}


def _inline_images(markdown: str, images: dict[str, bytes]) -> str:
    """The report's Markdown with its images/<name>.png links embedded (the UI has no files)."""
    for name, png in images.items():
        markdown = markdown.replace(f"(images/{name}.png)",
                                    f"(data:image/png;base64,{base64.b64encode(png).decode()})")
    return markdown
