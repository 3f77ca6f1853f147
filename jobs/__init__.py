"""Asset jobs (one per partitioning) and the `gxplab` command line."""

import dagster as dg

from assets.partitions import model_split_partitions, split_partitions
from jobs.schedules import all_schedules, schedule_jobs

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
                                   "rag_corpus", "rag_questions", "rag_index",
                                   "training_comparison")
    ),
    description="Training data (the RAG index included), the base model and adapters through "
    "Pipes, their comparison.",
    # the production queue runs at most one run with this tag at a time (dagster.postgres.yaml)
    tags={"gxplab/gpu-training": "true"},
)
model_evaluation_job = dg.define_asset_job(
    "gxp_model_evaluation_job",
    selection=dg.AssetSelection.assets("accd_prompts", "aqi_scores", "judge_evaluations",
                                       "behavioral_metrics", "batchqa_eval"),
    description="The base model vs its adapters: AQI and behaviour on the ACCD prompts, the AMR "
    "judge on the amr_cases test split, batch-record Q&A metrics.",
)
rag_job = dg.define_asset_job(
    "gxp_rag_job",
    selection=dg.AssetSelection.assets("rag_corpus", "rag_questions", "rag_index",
                                       "rag_retrieval_eval", "rag_eval"),
    description="The RAG corpus, its labelled questions, the hybrid index, the retrieval "
    "evaluation (BM25 vs dense vs fusion) and rag_eval (baseline RAG vs SFT vs SFT+DPO "
    "answers through the GxPLab server).",
)
reports_job = dg.define_asset_job(
    "gxp_reports_job",
    selection=dg.AssetSelection.assets("gxp_leaderboard"),
    description="Rebuild the leaderboard from the latest scores in the results warehouse.",
)
synthesis_job = dg.define_asset_job(
    "gxp_synthesis_job",
    selection=dg.AssetSelection.assets("synthesis_report"),
    description="The synthesis report (Markdown and HTML) from the latest leaderboard, training "
    "comparison and evaluations.",
)

all_jobs = [site_master_job, data_job, evaluation_job, models_job, model_evaluation_job,
            rag_job, reports_job, synthesis_job, *schedule_jobs]
__all__ = ["all_jobs", "all_schedules"]
