"""Alignment evaluation: AQI of the base model and of each tuned adapter on the ACCD prompts.

The hidden states are computed by the `hidden_states` task (training/generate_task.py), run like
training through the compute resource, never in the Dagster run worker; saved as .npy artifacts
with a JSON sidecar (never database blobs); and scored by scoring/aqi.py: XBI, CHI, their fixed
normalisation and AQI per layer, and delta-AQI against the base with a paired, label-stratified
bootstrap CI.
"""

import base64
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from assets.automation import REFRESH
from assets.evaluation_records import adapter_version_of, base_version_of, record_evaluation
from assets.generation import hidden_states_in_task
from resources.artifacts import resolve_model_folder
from resources.compute import ComputeResource
from resources.warehouse import WarehouseResource
from synthetic.jsonl import dumps_jsonl, sha256_bytes

# Adapters trained on the alignment data (seed 003 compares QLoRA and GRIT with their base).
AQI_ADAPTERS = ("qlora_adapter", "grit_adapter", "dpo_adapter", "orpo_adapter")


class AqiScoresConfig(dg.Config):
    pooling: str = Field("mean", description="mean (masked mean over tokens) or attention.")
    lam: float = Field(0.5, description="AQI = lam * CHI_norm + (1 - lam) * XB_norm.")
    pca_components: int | None = Field(None, description="PCA before the indices (None: raw).")
    n_boot: int = Field(1000, description="Paired bootstrap resamples of the prompts.")
    seed: int = Field(0, description="Bootstrap seed.")
    batch_size: int = Field(16, description="Prompts per forward pass.")
    max_length: int = Field(512, description="Prompt tokens at most (longer ones lose the start).")


@dg.asset(group_name="evaluation", kinds={"pytorch"}, code_version="1",
          automation_condition=REFRESH,
          ins={"base_model": dg.AssetIn(), "accd_prompts": dg.AssetIn(),
               **{name: dg.AssetIn() for name in AQI_ADAPTERS}})
def aqi_scores(context: dg.AssetExecutionContext, config: AqiScoresConfig,
               compute: ComputeResource, warehouse: WarehouseResource, base_model: dict,
               accd_prompts: list[dict], **adapters: dict) -> dg.Output[pd.DataFrame]:
    """Alignment Quality Index per layer of the base model and each adapter on the safe/unsafe
    ACCD prompts, with delta-AQI (tuned - base) and its 95% paired bootstrap CI; hidden states
    saved as artifacts; a per-layer plot and the delta table in metadata."""
    from scoring.aqi import AQI_NORMALISATION, aqi_by_layer, delta_aqi
    from scoring.aqi_report import aqi_layer_plot, delta_table, layer_table
    from training.hidden_states import layer_numbers, load_hidden_states

    prompts = [row["prompt"] for row in accd_prompts]
    labels = np.array([1 if row["safety_label"] == "unsafe" else 0 for row in accd_prompts])
    out_dir = compute.output_dir("hidden_states", context.run.run_id)
    base_path = resolve_model_folder(base_model, "model_path")  # fetched from S3 if not local
    models = {"base_model": None,
              **{name: resolve_model_folder(adapters[name], "adapter_path")
                 for name in AQI_ADAPTERS}}
    # every model in one hidden_states task, run like training (assets/generation.py)
    files = hidden_states_in_task(
        context, compute, base_model_path=base_path, models=models,
        prompts=[(row["prompt_id"], row["prompt"]) for row in accd_prompts], out_dir=out_dir,
        settings={"pooling": config.pooling, "batch_size": config.batch_size,
                  "max_length": config.max_length, "torch_threads": 1,
                  "extra": {"safety_labels": labels.tolist()}},
        label="aqi_scores")
    hidden: dict[str, np.ndarray] = {}
    for name, path in files.items():
        hidden[name], _ = load_hidden_states(path)  # checked against its sidecar's sha256
        context.log.info(f"aqi_scores: {name}: hidden states {hidden[name].shape} -> {path}")
    per_model = {name: aqi_by_layer(states, labels, lam=config.lam,
                                    pca_components=config.pca_components)
                 for name, states in hidden.items()}
    layers = layer_numbers(hidden["base_model"].shape[0])
    table = layer_table(per_model, layers)
    deltas = {name: delta_aqi(hidden["base_model"], hidden[name], labels, n_boot=config.n_boot,
                              seed=config.seed, lam=config.lam,
                              pca_components=config.pca_components)
              for name in AQI_ADAPTERS}
    delta = delta_table(deltas)
    overall = table.groupby("model", sort=False)["aqi"].mean()
    image = base64.b64encode(aqi_layer_plot(table)).decode()
    prompts_hash = sha256_bytes(dumps_jsonl(accd_prompts))
    for name in models:
        version = (base_version_of(base_model) if name == "base_model"
                   else adapter_version_of(adapters[name]))
        record_evaluation(
            context, warehouse, asset_key="aqi_scores", model_id=name,
            model_version=version, split="accd", dataset_hash=prompts_hash,
            prompt_version=f"{AQI_NORMALISATION} pooling={config.pooling} lam={config.lam}",
            items=_layer_items(table, name), scores=_aqi_scores(table, delta, name),
            summary={"hidden_states": files[name], "pooling": config.pooling,
                     "pca_components": config.pca_components, "n_boot": config.n_boot})
    Path(out_dir / "aqi_summary.json").write_text(json.dumps({
        "delta": delta.to_dict(orient="records"), "files": files,
        "normalisation": AQI_NORMALISATION}, indent=2, default=float), encoding="utf-8")
    context.add_output_metadata({
        "delta_aqi": dg.MetadataValue.md(delta.to_markdown(index=False, floatfmt=".4f")),
        "aqi_overall": dg.MetadataValue.md(overall.to_frame("mean AQI over layers")
                                           .to_markdown(floatfmt=".4f")),
        "per_layer_plot": dg.MetadataValue.md(f"![AQI per layer](data:image/png;base64,{image})"),
        "prompts": len(prompts),
        "unsafe_prompts": int(labels.sum()),
        "prompts_hash": prompts_hash,
        "pooling": config.pooling,
        "lam": config.lam,
        "pca_components": config.pca_components if config.pca_components else "none (raw)",
        "normalisation": AQI_NORMALISATION,
        "hidden_states": dg.MetadataValue.json(files),
        "significant_deltas": int(delta["significant"].sum()),
    })
    # typed (dg.Output): the hidden_states task opened a Pipes session in this step
    return dg.Output(table.merge(delta[["model", "delta_aqi", "ci_low", "ci_high"]], on="model",
                                 how="left"))


def _layer_items(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's per-layer indices as warehouse item rows (item_id = layer)."""
    rows = table[table["model"] == model].melt(
        id_vars=["layer"], value_vars=["aqi", "xbi", "chi", "chi_norm", "xb_norm"],
        var_name="metric")
    finite = np.isfinite(rows["value"].to_numpy(dtype=float))
    return pd.DataFrame({"item_id": [f"layer_{int(layer):02d}" for layer in rows["layer"]],
                         "metric": rows["metric"], "value": rows["value"],
                         "status": np.where(finite, "ok", "failed"), "detail": None})


def _aqi_scores(table: pd.DataFrame, delta: pd.DataFrame, model: str) -> list[dict]:
    """Mean AQI over layers, and for a tuned model delta-AQI with its bootstrap CI."""
    layers = table[table["model"] == model]
    scores = [{"metric": "aqi_mean", "value": float(layers["aqi"].mean()), "n": len(layers)}]
    row = delta[delta["model"] == model]
    if len(row):
        r = row.iloc[0]
        scores.append({"metric": "delta_aqi", "value": float(r["delta_aqi"]),
                       "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                       "n": int(r["n_prompts"])})
    return scores
