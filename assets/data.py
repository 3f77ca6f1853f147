"""Data stage: site master data and the synthetic batch records with their label manifest."""

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.partitions import split_partitions
from scoring.reference_auditor import audit_records
from synthetic.catalog import load_catalog
from synthetic.jsonl import dumps_jsonl, sha256_bytes
from synthetic.master_data import build_site_master
from synthetic.splits import generate_split, load_dataset_config
from synthetic.validation import (
    deviating_record_share,
    manifest_problems,
    schema_problems,
    type_counts,
)

RECORDS = dg.AssetKey("gxp_records")
CHECKS = {
    "records_schema_valid": "Every record has the contract's fields and types, except where the "
    "manifest documents an extra or misspelled field.",
    "deviation_rate_within_tolerance": "Share of records with a deviation is within tolerance of "
    "the configured rate.",
    "manifest_consistent_with_records": "Every manifest row names a record of the split, its batch "
    "and a known deviation type.",
    "reference_auditor_recall": "The rule-based reference auditor finds every labelled deviation "
    "and nothing else.",
}


class SiteMasterConfig(dg.Config):
    seed: int | None = Field(None, description="Generator seed; default: configs/datasets.yaml.")


class GxpRecordsConfig(dg.Config):
    seed: int | None = Field(None, description="Generator seed; default: configs/datasets.yaml.")
    n_batches: int | None = Field(None, description="Override the split's number of batches.")
    deviation_rate: float | None = Field(None, description="Override the split's deviation rate.")
    rate_tolerance: float = Field(
        0.005, description="Allowed absolute gap between observed and configured deviation rate."
    )


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def gxp_site_master(context: dg.AssetExecutionContext, config: SiteMasterConfig) -> dict:
    """Site master data for all splits: status codes, roster, equipment, materials, recipes."""
    dataset_config = load_dataset_config()
    seed = dataset_config.seed if config.seed is None else config.seed
    master = build_site_master(dataset_config.site_master, seed)
    context.add_output_metadata(
        {
            "seed": seed,
            "operators": len(master["operators"]),
            "equipment": len(master["equipment"]),
            "materials": len(master["materials"]),
            "products": dg.MetadataValue.md(
                "\n".join(
                    f"- {r['product_code']}: {r['name']} ({len(r['steps'])} steps)"
                    for r in master["recipes"]
                )
            ),
        }
    )
    return master


@dg.multi_asset(
    outs={
        "gxp_records": dg.AssetOut(
            description="Executed batch-record steps (what a model sees), one JSON object each.",
            kinds={"python"},
        ),
        "gxp_labels": dg.AssetOut(
            description="Label manifest: one row per injected deviation. Never shown to a model.",
            kinds={"python"},
        ),
    },
    partitions_def=split_partitions,
    group_name="data",
    check_specs=[
        dg.AssetCheckSpec(name, asset=RECORDS, description=text, blocking=True)
        for name, text in CHECKS.items()
    ],
    code_version="1",
)
def gxp_batch_records(
    context: dg.AssetExecutionContext, config: GxpRecordsConfig, gxp_site_master: dict
):
    """Generate one split of synthetic ISA-88 batch records with documented ALCOA+ deviations."""
    split = context.partition_key
    dataset_config = load_dataset_config()
    spec = dataset_config.splits[split]
    overrides = {
        key: value
        for key, value in (
            ("n_batches", config.n_batches),
            ("deviation_rate", config.deviation_rate),
        )
        if value is not None
    }
    if overrides:
        spec = spec.__class__(**{**spec.__dict__, **overrides})
    seed = dataset_config.seed if config.seed is None else config.seed
    catalog = load_catalog()
    generated = generate_split(spec, gxp_site_master, seed, catalog)
    records, manifest = generated.records, generated.manifest
    dataset_hash = sha256_bytes(dumps_jsonl(records))
    observed_rate = deviating_record_share(records, manifest)
    counts = type_counts(manifest)
    context.log.info(
        f"split {split}: {len(records)} records in {spec.n_batches} batches, "
        f"{len(manifest)} labelled deviations (rate {observed_rate:.4f}), "
        f"sha256 {dataset_hash[:12]}"
    )
    yield dg.Output(
        records,
        output_name="gxp_records",
        metadata={
            "dataset_hash": dataset_hash,
            "records": len(records),
            "batches": len({r["batch_id"] for r in records}),
            "seed": seed,
            "configured_deviation_rate": spec.deviation_rate,
            "observed_deviation_rate": observed_rate,
        },
    )
    type_table = pd.DataFrame(
        [(slug, counts.get(slug, 0)) for slug in catalog.slugs], columns=["deviation_type", "rows"]
    )
    yield dg.Output(
        manifest,
        output_name="gxp_labels",
        metadata={
            "dataset_hash": dataset_hash,
            "labelled_deviations": len(manifest),
            "deviation_types_present": int((type_table["rows"] > 0).sum()),
            "prompt_injections": sum(bool(r.get("prompt_injection")) for r in manifest),
            "rows_per_type": dg.MetadataValue.md(type_table.to_markdown(index=False)),
        },
    )
    yield from _data_checks(records, manifest, gxp_site_master, spec, observed_rate, config)


def _data_checks(records, manifest, master, spec, observed_rate, config: GxpRecordsConfig):
    catalog = load_catalog()
    schema = schema_problems(records, manifest)
    yield dg.AssetCheckResult(
        check_name="records_schema_valid",
        asset_key=RECORDS,
        passed=not schema,
        metadata={"problems": len(schema), "first_problems": "\n".join(schema[:10])},
    )
    if getattr(spec, "every_record_deviates", False):
        passed = observed_rate == 1.0
    else:
        passed = abs(observed_rate - spec.deviation_rate) <= config.rate_tolerance
    yield dg.AssetCheckResult(
        check_name="deviation_rate_within_tolerance",
        asset_key=RECORDS,
        passed=passed,
        metadata={
            "configured": spec.deviation_rate,
            "observed": observed_rate,
            "tolerance": config.rate_tolerance,
        },
    )
    consistency = manifest_problems(records, manifest, catalog.slugs)
    yield dg.AssetCheckResult(
        check_name="manifest_consistent_with_records",
        asset_key=RECORDS,
        passed=not consistency,
        metadata={"problems": len(consistency), "first_problems": "\n".join(consistency[:10])},
    )
    found = {(f.record_id, f.deviation_type) for f in audit_records(records, master, catalog)}
    labelled = {(row["record_id"], row["deviation_type"]) for row in manifest}
    missed, extra = labelled - found, found - labelled
    recall = 1.0 - len(missed) / len(labelled) if labelled else 1.0
    yield dg.AssetCheckResult(
        check_name="reference_auditor_recall",
        asset_key=RECORDS,
        passed=not missed and not extra,
        metadata={
            "recall": recall,
            "missed": len(missed),
            "unlabelled_findings": len(extra),
            "examples": "\n".join(
                f"{'missed' if p in missed else 'extra'}: {p}" for p in sorted(missed | extra)[:10]
            ),
        },
    )


class AlignmentInstructionsConfig(dg.Config):
    hub_id: str = Field("Vaibhaav/alignment-instructions", description="Hugging Face dataset id.")
    local_path: str | None = Field(None, description="A local JSONL/CSV/Parquet copy instead.")
    max_rows: int | None = Field(None, description="Keep at most this many rows.")


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def alignment_instructions(
    context: dg.AssetExecutionContext, config: AlignmentInstructionsConfig
) -> list[dict]:
    """Prompt / Accepted Response / Rejected Response / Instruction generated rows: the hub dataset
    when reachable, a configured local copy, or the sample the project builds (offline default)."""
    from resources.clients.hub_datasets import load_rows
    from synthetic.alignment_instructions import (
        build_alignment_sample,
        check_columns,
        preference_pairs,
    )

    loaded = load_rows(config.hub_id, local_path=config.local_path,
                       sample=build_alignment_sample, max_rows=config.max_rows)
    check_columns(loaded.rows, loaded.source)
    unique = list({tuple(sorted(row.items())): row for row in loaded.rows}.values())
    context.log.info(f"alignment_instructions: {len(unique)} rows from {loaded.source} "
                     f"({loaded.detail})")
    context.add_output_metadata({
        "source": loaded.source,
        "source_detail": loaded.detail,
        "rows": len(unique),
        "duplicates_removed": len(loaded.rows) - len(unique),
        "usable_preference_pairs": len(preference_pairs(unique)),
        "dataset_hash": sha256_bytes(dumps_jsonl(unique)),
    })
    return unique


def _split_counts_markdown(rows: list[dict], column: str) -> str:
    """A markdown table of row counts per `column` value and split."""
    counts = pd.DataFrame(rows).groupby([column, "split"]).size().unstack(fill_value=0)
    return counts.to_markdown()


class AmrCasesConfig(dg.Config):
    n_cases: int = Field(240, description="Cases, decisions in equal thirds.")
    seed: int | None = Field(None, description="Generator seed; default synthetic/amr_cases.py's.")
    test_fraction: float = Field(0.2, description="Held-out share, stratified by decision.")


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def amr_cases(context: dg.AssetExecutionContext, config: AmrCasesConfig) -> list[dict]:
    """Synthetic antimicrobial prescription-validation cases (patient, diagnosis, prescription)
    with a reference decision (Approve / Modify / Reject) and step-by-step reasoning, built from
    the guideline table in configs/amr_guidelines.yaml; train/test split stratified by decision."""
    from synthetic.amr_cases import DEFAULT_SEED, generate_amr_cases, load_guidelines

    guidelines = load_guidelines()
    seed = DEFAULT_SEED if config.seed is None else config.seed
    cases = generate_amr_cases(config.n_cases, seed=seed, test_fraction=config.test_fraction,
                               guidelines=guidelines)
    context.add_output_metadata({
        "cases": len(cases),
        "seed": seed,
        "guidelines_version": guidelines.version,
        "decisions_by_split": dg.MetadataValue.md(
            _split_counts_markdown(cases, "reference_decision")),
        "syndromes": len({case["diagnosis"]["syndrome"] for case in cases}),
        "dataset_hash": sha256_bytes(dumps_jsonl(cases)),
    })
    return cases


class BatchRecordQaConfig(dg.Config):
    n_batches: int = Field(60, description="Batch summaries; 6-10 questions each.")
    seed: int | None = Field(None, description="Generator seed; default configs/datasets.yaml.")
    test_fraction: float = Field(0.2, description="Share of batches held out (whole batches).")


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def batch_record_qa(context: dg.AssetExecutionContext, config: BatchRecordQaConfig,
                    gxp_site_master: dict) -> list[dict]:
    """Question/answer pairs over synthetic batch-record summaries (product code, batch number,
    QA manager, yield, deviations...), each with its source summary kept for grounding checks."""
    from synthetic.batch_record_qa import generate_batch_record_qa

    seed = load_dataset_config().seed if config.seed is None else config.seed
    rows = generate_batch_record_qa(config.n_batches, seed=seed,
                                    test_fraction=config.test_fraction, master=gxp_site_master)
    context.add_output_metadata({
        "pairs": len(rows),
        "batches": len({row["batch_number"] for row in rows}),
        "seed": seed,
        "question_types_by_split": dg.MetadataValue.md(
            _split_counts_markdown(rows, "question_type")),
        "dataset_hash": sha256_bytes(dumps_jsonl(rows)),
        "example": dg.MetadataValue.md(
            f"**source**: {rows[0]['source']}\n\n**Q**: {rows[0]['question']}\n\n"
            f"**A**: {rows[0]['answer']}"),
    })
    return rows


class AccdPromptsConfig(dg.Config):
    hub_id: str = Field("hasnat79/ACCD", description="Hugging Face dataset id.")
    split: str = Field("train", description="Hub split to load.")
    local_path: str | None = Field(None, description="A local JSONL/CSV/Parquet copy instead.")
    max_rows: int | None = Field(None, description="At most this many rows, before balancing.")
    max_per_label: int | None = Field(None, description="Cap safe (and unsafe) prompts per axiom.")
    seed: int | None = Field(None, description="Balancing seed (default: the module's).")


@dg.asset(group_name="data", kinds={"python"}, code_version="1")
def accd_prompts(context: dg.AssetExecutionContext, config: AccdPromptsConfig) -> list[dict]:
    """Safe and unsafe prompts by axiom (ACCD): `load_dataset` of the hub id when reachable, a
    configured local copy, or the GxP sample the project builds; columns mapped to axiom /
    safety_label / prompt, duplicates removed, bad rows kept aside with their reason, then
    balanced safe/unsafe per axiom."""
    from resources.clients.hub_datasets import load_rows
    from synthetic.accd_prompts import (
        DEFAULT_SEED,
        balance_safe_unsafe,
        build_accd_sample,
        label_counts,
        normalize_accd_rows,
    )

    loaded = load_rows(config.hub_id, split=config.split, local_path=config.local_path,
                       sample=build_accd_sample, max_rows=config.max_rows)
    normalized = normalize_accd_rows(loaded.rows, loaded.source)
    for reject in normalized.rejects:
        context.log.warning(f"accd_prompts: {reject['error']}")
    seed = DEFAULT_SEED if config.seed is None else config.seed
    rows = balance_safe_unsafe(normalized.rows, seed, max_per_label=config.max_per_label)
    context.log.info(f"accd_prompts: {len(rows)} balanced prompts from {loaded.source} "
                     f"({loaded.detail}); {len(normalized.rejects)} rows rejected")
    counts = pd.DataFrame(label_counts(rows)).T.fillna(0).astype(int)
    context.add_output_metadata({
        "source": loaded.source,
        "source_detail": loaded.detail,
        "columns_used": dg.MetadataValue.json(normalized.columns),
        "rows_loaded": len(loaded.rows),
        "rows": len(rows),
        "duplicates_removed": normalized.duplicates_removed,
        "rejected_rows": len(normalized.rejects),
        # every reject with its reason and original values: nothing is dropped silently
        "rejects": dg.MetadataValue.json(normalized.rejects),
        "labels_by_axiom": dg.MetadataValue.md(counts.to_markdown()),
        "dataset_hash": sha256_bytes(dumps_jsonl(rows)),
    })
    return rows
