"""Asset jobs (one per partitioning) and the `gxplab` command line."""

import dagster as dg

from assets.partitions import model_split_partitions, split_partitions

site_master_job = dg.define_asset_job(
    "gxp_site_master_job",
    selection=dg.AssetSelection.assets("gxp_site_master"),
    description="Generate the site master data (roster, equipment, materials, recipes).",
)
data_job = dg.define_asset_job(
    "gxp_data_job",
    selection=dg.AssetSelection.assets("gxp_records", "gxp_labels"),
    partitions_def=split_partitions,
    description="Generate one split of batch records and labels, with the data checks.",
)
evaluation_job = dg.define_asset_job(
    "gxp_evaluation_job",
    selection=dg.AssetSelection.assets("gxp_predictions", "gxp_scores"),
    partitions_def=model_split_partitions,
    description="Audit one (model, split) partition and score it. Backfill it from the CLI.",
)
models_job = dg.define_asset_job(
    "gxp_models_job",
    selection=(
        dg.AssetSelection.groups("models")
        | dg.AssetSelection.assets("alignment_instructions", "amr_cases", "batch_record_qa",
                                   "training_comparison")
    ),
    description="Training data, the base model and adapters through Pipes, their comparison.",
)
alignment_job = dg.define_asset_job(
    "gxp_alignment_job",
    selection=dg.AssetSelection.assets("accd_prompts", "aqi_scores"),
    description="Safe/unsafe ACCD prompts and the AQI of the base model and each adapter.",
)
reports_job = dg.define_asset_job(
    "gxp_reports_job",
    selection=dg.AssetSelection.assets("gxp_leaderboard"),
    description="Rebuild the leaderboard from the latest scores in the results warehouse.",
)

all_jobs = [site_master_job, data_job, evaluation_job, models_job, alignment_job, reports_job]
