"""`python -m scoring.reference_auditor`: audit a records file without Dagster, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.data_files import read_predictions
from scoring.reference_auditor import audit_records, findings_to_predictions
from synthetic.jsonl import write_jsonl
from synthetic.splits import SplitSpec, generate_split

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "scoring.reference_auditor", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def split(cfg, master):
    return generate_split(SplitSpec("adversarial", 4, 16, 24, 0.1, prompt_injection=True),
                          master, cfg.seed)


def test_help_names_the_options():
    out = run_cli("--help")
    assert out.returncode == 0
    for option in ("--records", "--out", "--master", "--seed", "--split", "Exit status"):
        assert option in out.stdout


def test_audits_a_file_like_the_library(tmp_path, split, master):
    records = tmp_path / "records.jsonl"
    write_jsonl(split.records, records)
    out = run_cli("--records", records, "--out", tmp_path / "p.jsonl", "--split", "adversarial")
    assert out.returncode == 0, out.stderr
    expected = findings_to_predictions(audit_records(split.records, master),
                                       dict.fromkeys(r["batch_id"] for r in split.records),
                                       "reference_auditor", "adversarial")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rows == expected
    assert {(r["record_id"], r["deviation_type"]) for r in rows if r["record_id"]} == \
        {(r["record_id"], r["deviation_type"]) for r in split.manifest}
    assert len(read_predictions(tmp_path / "p.jsonl")) == len(rows)
    master_file = tmp_path / "master.json"
    master_file.write_text(json.dumps(master))
    csv = run_cli("--records", records, "--out", tmp_path / "p.csv", "--master", master_file)
    assert csv.returncode == 0, csv.stderr
    assert len(read_predictions(tmp_path / "p.csv")) == len(rows)


def test_bad_lines_are_named_and_the_rest_audited(tmp_path, split):
    good = [json.dumps(r) for r in split.records[:20]]
    no_batch = dict(split.records[20])
    del no_batch["batch_id"]
    lines = [*good[:5], "{not json", *good[5:], json.dumps(no_batch), "[1, 2]"]
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(lines) + "\n")
    out = run_cli("--records", records, "--out", tmp_path / "p.jsonl",
                  "--quarantine", tmp_path / "q")
    assert out.returncode == 1, out.stderr
    assert f"{records} line 6: truncated or malformed JSON" in out.stderr
    assert f"{records} line 22 (record_id {no_batch['record_id']}): field 'batch_id' is missing" \
        in out.stderr
    assert f"{records} line 23: expected a JSON object" in out.stderr
    assert "20 records" in out.stderr and (tmp_path / "p.jsonl").is_file()
    rejects = (tmp_path / "q" / "records.jsonl.rejects.jsonl").read_text().splitlines()
    assert len(rejects) == 3


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "missing.jsonl: file not found"),
    ("records.csv", "record_id,batch_id\n", "records must be JSON Lines"),
    ("empty.jsonl", "\n", "no usable record to audit"),
    ("bad.jsonl", "null\n", "line 1: expected a JSON object, got NoneType"),
])
def test_unusable_input_exits_2_with_the_file_named(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    out = run_cli("--records", path, "--out", tmp_path / "p.jsonl")
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "p.jsonl").exists()


def test_bad_master_and_out_suffix_exit_2(tmp_path, split):
    records = tmp_path / "records.jsonl"
    write_jsonl(split.records[:5], records)
    master = tmp_path / "master.json"
    master.write_text('{"site_id": "X"}')
    out = run_cli("--records", records, "--out", tmp_path / "p.jsonl", "--master", master)
    assert out.returncode == 2 and "not site master data: missing key(s)" in out.stderr
    out = run_cli("--records", records, "--out", tmp_path / "p.txt")
    assert out.returncode == 2 and "use one of .jsonl, .csv" in out.stderr
