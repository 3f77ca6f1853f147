"""Evaluation stage: each candidate model audits each split; the audit is scored against labels."""

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.automation import REFRESH
from assets.generation import generate_in_task
from assets.partitions import model_split_partitions
from resources.artifacts import resolve_model_folder
from resources.compute import ComputeResource
from resources.llm import LLMResource
from resources.warehouse import WarehouseResource
from scoring.audit_prompt import load_prompt
from scoring.candidate_runner import failed_calls_note, is_outage
from scoring.candidates import run_candidate
from scoring.gxp import score_predictions
from scoring.model_registry import GXP_AUDIT, CandidateModel, load_model_registry
from scoring.record_audit import load_record_prompt, record_output_schema
from synthetic.catalog import load_catalog
from synthetic.contracts import CALL_FAILED, MANIFEST_COLUMNS, PREDICTION_COLUMNS
from synthetic.jsonl import dumps_jsonl, sha256_bytes
from training.progress import ProgressLog

# Model assets the `local` candidates of configs/models.yaml run (the base model and the adapters
# they name): upstream of gxp_predictions, so lineage shows which models a score came from.
LOCAL_MODEL_ASSETS = sorted(
    {asset for model in load_model_registry(benchmark=GXP_AUDIT)
     for asset in model.model_assets}
)
HEADLINE_METRICS = ("gxp1_f1", "gxp2_micro_f1", "gxp2_macro_f1", "gxp1_fpr", "invalid_output_rate",
                    "coverage")


class GxpPredictionsConfig(dg.Config):
    max_batches: int | None = Field(
        None,
        description="Audit only the first N batches of the split (a quick look; the score "
        "then covers only those batches and says so in metadata).",
    )


def _provenance(context: dg.AssetExecutionContext, dataset_hash: str, prompt_version: str):
    from resources.clients.warehouse import UNVERSIONED, Provenance, code_version
    from scoring.model_registry import resolve_litellm_model

    keys = context.partition_key.keys_by_dimension
    model = {m.id: m for m in load_model_registry()}.get(keys["model"])
    kind = model.kind if model is not None else None
    model_version = UNVERSIONED  # a model no longer in configs/models.yaml
    if kind == "rule_based":  # its findings do not depend on the prompt
        prompt_version = "none (rule-based)"
        # rule_based: the auditor is code, so its version is the code version.
        model_version = f"rule_based:{code_version()}"
    elif kind == "litellm":
        # litellm: the litellm model string that is called (model_name_env applied).
        model_version = resolve_litellm_model(model)
    elif kind in ("local", "served"):  # record by record, with its own prompt
        prompt_version = load_record_prompt().version
        # local: the adapter's registered version ("model_version" in the metadata of its latest
        # materialization, the one _local_model_files loads), or base:<hf id|embedded>@<run> for
        # the base model alone; "unversioned" while that asset is not materialized.
        asset = model.adapter or "base_model"
        event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
        materialization = event.asset_materialization if event is not None else None
        metadata = {key: getattr(value, "value", value)
                    for key, value in (materialization.metadata if materialization else {}).items()}
        if model.adapter:
            model_version = str(metadata.get("model_version") or UNVERSIONED)
        elif event is not None:
            from assets.evaluation_records import base_model_version

            model_version = base_model_version(metadata.get("model_id"), event.run_id)
    return Provenance(
        dagster_run_id=context.run.run_id,
        # A re-execution (from failure, run retries) replaces the rows its root run wrote.
        dagster_root_run_id=context.run.root_run_id or context.run.run_id,
        model_id=keys["model"],
        split=keys["split"],
        dataset_hash=dataset_hash,
        prompt_version=prompt_version,
        code_version=code_version(),
        model_version=model_version,
    )


def _first_batches(records: list[dict], max_batches: int | None) -> list[dict]:
    if max_batches is None:
        return records
    keep: list[str] = []
    for record in records:
        if record["batch_id"] not in keep:
            if len(keep) == max_batches:
                continue
            keep.append(record["batch_id"])
    kept = set(keep)
    return [r for r in records if r["batch_id"] in kept]


def _local_model_files(context: dg.AssetExecutionContext, model: CandidateModel) -> dict:
    """Paths and versions of a local model's assets, from their latest materializations."""
    files: dict = {}
    for asset in model.model_assets:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
        if event is None or event.asset_materialization is None:
            raise dg.Failure(
                f"model {model.id!r} runs the {asset} asset, which has not been materialized: "
                f"materialize it first (dagster asset materialize -m definitions --select {asset})",
                allow_retries=False,
            )
        metadata = {key: getattr(value, "value", value)
                    for key, value in event.asset_materialization.metadata.items()}
        path_key = "model_path" if asset == "base_model" else "adapter_path"
        if not metadata.get(path_key):
            raise dg.Failure(f"the latest {asset} materialization (run {event.run_id}) names no "
                             "model folder in its metadata", allow_retries=False)
        # absent here (another host, a cleaned folder): restored from its S3 model archive
        path = resolve_model_folder(metadata, path_key)
        if path != str(metadata[path_key]):
            context.log.info(f"{asset}: {metadata[path_key]} is not on this host; restored from "
                             f"{metadata['model_archive_uri']} into {path}")
        files[asset] = {"path": path, "run_id": event.run_id,
                        "archive_sha256": metadata.get("archive_sha256")}
    return files


def _local_generate(context: dg.AssetExecutionContext, files: dict, compute: ComputeResource):
    """`local_generate` for run_candidate: all of a split's chats in one `generate` task, run
    through the compute resource like training (assets/generation.py), never in this process."""
    from training.inference import DecodingSettings

    def factory(model: CandidateModel):
        adapter = files[model.adapter]["path"] if model.adapter else None
        decoding = DecodingSettings(max_new_tokens=model.max_tokens,
                                    temperature=model.temperature)
        label = f"gxp_predictions {model.id} on {context.partition_key.keys_by_dimension['split']}"

        # every answer constrained to the record audit's schema (the catalog's slugs): invalid
        # output is impossible by construction, short of max_tokens cutting an answer
        schema = record_output_schema(load_catalog())

        def generate(chats, progress=None):
            return generate_in_task(context, compute, base_model_path=files["base_model"]["path"],
                                    adapter_path=adapter, chats=chats, decoding=decoding,
                                    batch_size=model.batch_size, label=label, progress=progress,
                                    json_schemas=[schema] * len(chats))

        return generate

    return factory


def _served_generate(context: dg.AssetExecutionContext, files: dict, llm: LLMResource):
    """`local_generate` for a served model: the same model files, answered by the GxPLab server
    through litellm (resources/clients/local_server.py)."""
    from resources.clients.local_server import served_generate

    def factory(model: CandidateModel):
        entry = {"name": model.served_model, "base_model_path": files["base_model"]["path"],
                 "adapter_path": files[model.adapter]["path"] if model.adapter else None,
                 "description": model.description}
        model_key = "+".join(f"{asset}@{info['run_id']}" for asset, info in files.items())
        client = llm.get_client()
        # sent as response_format json_schema when the entry asks for it (configs/models.yaml)
        generate = served_generate(model, entry, client, model_key=model_key,
                                   log=context.log.info,
                                   json_schema=record_output_schema(load_catalog()))

        def generate_and_close(chats, progress=None):
            try:
                return generate(chats, progress)
            finally:
                client.close()

        return generate_and_close

    return factory


@dg.asset(
    partitions_def=model_split_partitions,
    group_name="evaluation",
    deps=LOCAL_MODEL_ASSETS,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL),
    kinds={"python"},
    code_version="1",
)
def gxp_predictions(
    context: dg.AssetExecutionContext,
    config: GxpPredictionsConfig,
    gxp_records: list[dict],
    gxp_site_master: dict,
    llm: LLMResource,
    warehouse: WarehouseResource,
    compute: ComputeResource,
) -> dg.Output[pd.DataFrame]:
    """One candidate model's findings on one split: a row per finding, a row per clean batch."""
    keys = context.partition_key.keys_by_dimension
    model_id, split = keys["model"], keys["split"]
    registry = {model.id: model for model in load_model_registry()}
    if model_id not in registry:
        raise dg.Failure(
            f"model {model_id!r} is not in configs/models.yaml any more; the model-registry sensor "
            "removes its partitions",
            allow_retries=False,
        )
    model = registry[model_id]
    prompt = load_prompt()
    records = _first_batches(gxp_records, config.max_batches)
    dataset_hash = sha256_bytes(dumps_jsonl(gxp_records))
    provenance = _provenance(context, dataset_hash, prompt.version)

    record_by_record = model.kind in ("local", "served")
    unit = "records" if record_by_record else "batches"
    local_files = _local_model_files(context, model) if record_by_record else {}
    if model.kind == "served":
        local_generate = _served_generate(context, local_files, llm)
    else:
        local_generate = (_local_generate(context, local_files, compute) if local_files
                          else None)

    log_progress = ProgressLog(f"{model_id} on {split}", unit=f"{unit} audited",
                               sinks=[context.log])
    outcome = run_candidate(
        model,
        records,
        gxp_site_master,
        split=split,
        client_factory=llm.get_client,
        prompt=prompt,
        catalog=load_catalog(),
        progress=log_progress,
        local_generate=local_generate,
    )
    if outcome.skipped_reason:
        context.log.info(f"{model_id} on {split}: {outcome.skipped_reason}")
        warehouse.client.record_run(
            provenance,
            asset_key="gxp_predictions",
            partition_key=str(context.partition_key),
            status="skipped",
            detail=outcome.skipped_reason,
        )
        context.add_output_metadata({"status": "skipped", "reason": outcome.skipped_reason})
        return dg.Output(pd.DataFrame(columns=list(PREDICTION_COLUMNS)))
    summary = {**outcome.summary, "batches_in_split": len({r["batch_id"] for r in gxp_records})}
    for asset, info in local_files.items():  # which model files produced these predictions
        summary[f"{asset}_run_id"] = info["run_id"]
        summary[f"{asset}_archive_sha256"] = info["archive_sha256"]
    warehouse.client.record_run(
        provenance,
        asset_key="gxp_predictions",
        partition_key=str(context.partition_key),
        status="succeeded",
        summary=summary,
        predictions=outcome.predictions,
        llm_calls=outcome.calls,
    )
    n_failed = int(summary.get("n_failed_calls") or 0)
    if n_failed:
        context.log.warning(f"{model_id} on {split}: {n_failed} of {summary['n_calls']} calls "
                            "failed; their batches are left out of the scores")
    context.add_output_metadata(
        {
            "status": _audit_status(summary),
            "dataset_hash": dataset_hash,
            "prompt_version": provenance.prompt_version,
            **{k: v for k, v in summary.items() if isinstance(v, int | float | str)},
        }
    )
    return dg.Output(outcome.predictions)  # typed: a generate task opened a Pipes session


def _audit_status(summary: dict) -> str:
    """`audited`, `audited; N of M calls failed`, or `outage: N of N calls failed`."""
    note = failed_calls_note(summary)
    if note is None or is_outage(summary):
        return note or "audited"
    return f"audited; {note}"


@dg.asset(
    partitions_def=model_split_partitions,
    group_name="evaluation",
    kinds={"python"},
    code_version="1",
    automation_condition=REFRESH,
)
def gxp_scores(
    context: dg.AssetExecutionContext,
    gxp_predictions: pd.DataFrame,
    gxp_records: list[dict],
    gxp_labels: list[dict],
    warehouse: WarehouseResource,
) -> dict:
    """GxP1/GxP2, controls and adversarial scores with 95% bootstrap CIs (1000 batch resamples)."""
    prompt = load_prompt()
    dataset_hash = sha256_bytes(dumps_jsonl(gxp_records))
    provenance = _provenance(context, dataset_hash, prompt.version)
    if gxp_predictions.empty:
        context.add_output_metadata({"status": "skipped (no predictions: model not audited)"})
        return {"status": "skipped"}
    failed = (gxp_predictions[CALL_FAILED].astype("boolean").fillna(False)
              if CALL_FAILED in gxp_predictions else None)
    if failed is not None and failed.all():
        # An outage is not a result: scores of nothing would rank as a model that finds nothing.
        detail = (f"not scored: every call failed ({gxp_predictions['batch_id'].nunique()} "
                  "batches, no answer)")
        warehouse.client.record_run(provenance, asset_key="gxp_scores",
                                    partition_key=str(context.partition_key), status="skipped",
                                    detail=detail)
        context.add_output_metadata({"status": detail})
        return {"status": "skipped", "reason": detail}
    audited = set(gxp_predictions["batch_id"])
    records = pd.DataFrame(
        [
            {"record_id": r["record_id"], "batch_id": r["batch_id"]}
            for r in gxp_records
            if r["batch_id"] in audited
        ]
    )
    manifest = pd.DataFrame(gxp_labels, columns=list(MANIFEST_COLUMNS))
    manifest = manifest[manifest["batch_id"].isin(audited)]
    scores = score_predictions(manifest, gxp_predictions, records, n_boot=1000, seed=0)
    metric_rows = [
        {"metric": name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
        for name, m in scores.metrics.items()
    ]
    warehouse.client.record_run(
        provenance,
        asset_key="gxp_scores",
        partition_key=str(context.partition_key),
        status="succeeded",
        scores=metric_rows,
        per_type=scores.per_type,
        summary={"batches_scored": len(audited)},
    )
    context.add_output_metadata(
        {
            "status": "scored",
            "batches_scored": len(audited),
            "batches_call_failed": scores.counts["n_batches_call_failed"],
            **{
                name: scores.metrics[name].value
                for name in HEADLINE_METRICS
                if name in scores.metrics
            },
            "scores": dg.MetadataValue.md(scores.headline_table()),
            "per_type": dg.MetadataValue.md(scores.per_type.to_markdown(index=False)),
        }
    )
    return scores.to_dict()
