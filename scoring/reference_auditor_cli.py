"""`python -m scoring.reference_auditor --records R --out P`: audit a records file without Dagster.

Reads JSON Lines batch records with scoring/data_files.py's line reader (a bad line is reported
with its file, line and field, and the good lines are still audited), runs the reference auditor
against the site master data (the one generated from configs/datasets.yaml's seed, or --master),
and writes prediction rows (synthetic/contracts.PREDICTION_COLUMNS; docs/scoring.md) to P.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from scoring.data_files import (
    JSON_SUFFIXES,
    DataFileError,
    iter_record_dicts,
    quarantine,
)
from scoring.reference_auditor import audit_records, findings_to_predictions
from synthetic.contracts import PREDICTION_COLUMNS
from synthetic.jsonl import write_jsonl

EXIT_OK, EXIT_REJECTED_LINES, EXIT_BAD_INPUT = 0, 1, 2
OUT_SUFFIXES = (".jsonl", ".csv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scoring.reference_auditor",
        description="Audit batch records with the rule-based reference auditor (every rule of "
                    "configs/deviations.yaml) and write one prediction row per finding, plus one "
                    "row with empty record_id/deviation_type per batch without findings.",
        epilog="Exit status: 0 all lines audited; 1 some lines were rejected (named on stderr, "
               "the others audited and written); 2 no output (unreadable file, bad option, no "
               "usable record).\nExample: python -m scoring.reference_auditor --records "
               "records.jsonl --out predictions.jsonl && python -m scoring.gxp --labels "
               "manifest.jsonl --predictions predictions.jsonl --records records.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", required=True, type=Path,
                        help="batch records, JSON Lines (.jsonl/.json/.ndjson), one step a line")
    parser.add_argument("--out", required=True, type=Path,
                        help="predictions to write: .jsonl or .csv (columns: docs/scoring.md)")
    parser.add_argument("--master", type=Path,
                        help="site master data as JSON (roster, equipment, recipes); default: the "
                             "one generated from configs/datasets.yaml, as the records' generator "
                             "does")
    parser.add_argument("--seed", type=int,
                        help="seed of the generated site master data (default: the datasets.yaml "
                             "seed); ignored with --master")
    parser.add_argument("--model-id", default="reference_auditor", help="model_id of the rows")
    parser.add_argument("--split", help="split name written in the rows (default: empty)")
    parser.add_argument("--quarantine", type=Path,
                        help="folder where rejected lines are written (<file>.rejects.jsonl)")
    return parser


def read_audit_records(path: Path) -> tuple[list[dict], list[DataFileError]]:
    """The records of a JSON Lines file as written (absent keys stay absent), and one error per
    rejected line (not JSON, not an object, record_id or batch_id missing or not a string)."""
    if path.suffix.lower() not in JSON_SUFFIXES:
        raise DataFileError(path, f"records must be JSON Lines ({', '.join(JSON_SUFFIXES)})")
    if not path.is_file():
        raise DataFileError(path, "file not found")
    errors: list[DataFileError] = []
    records = list(iter_record_dicts(path, errors))
    return records, errors


def load_master(path: Path | None, seed: int | None) -> dict:
    """Site master data from `path`, or generated as configs/datasets.yaml says (seed override)."""
    if path is not None:
        try:
            master = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise DataFileError(path, f"cannot read the site master data: {err}") from None
        missing = [k for k in ("timezone", "extracted_at") if not isinstance(master, dict)
                   or k not in master]
        if missing:
            raise DataFileError(path, f"not site master data: missing key(s) {missing}")
        return master
    from synthetic.master_data import build_site_master
    from synthetic.splits import load_dataset_config

    config = load_dataset_config()
    return build_site_master(config.site_master, config.seed if seed is None else seed)


def write_predictions(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)).to_csv(out, index=False)
    else:
        write_jsonl(rows, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.suffix.lower() not in OUT_SUFFIXES:
        print(f"error: --out {args.out}: use one of {', '.join(OUT_SUFFIXES)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        records, rejected = read_audit_records(args.records)
        master = load_master(args.master, args.seed)
    except DataFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for error in rejected:
        print(f"rejected: {error}", file=sys.stderr)
    if args.quarantine and rejected:
        for written in quarantine(rejected, args.quarantine):
            print(f"rejected lines written to {written}", file=sys.stderr)
    if not records:
        print(f"error: {args.records}: no usable record to audit", file=sys.stderr)
        return EXIT_BAD_INPUT
    findings = audit_records(records, master)
    batches = dict.fromkeys(str(r["batch_id"]) for r in records)
    rows = findings_to_predictions(findings, batches, args.model_id, args.split)
    write_predictions(rows, args.out)
    print(f"{len(records)} records in {len(batches)} batches audited: {len(findings)} findings; "
          f"{len(rows)} rows written to {args.out}", file=sys.stderr)
    return EXIT_REJECTED_LINES if rejected else EXIT_OK
