"""inbox_sensor: labelled batch pairs in the inbox -> validated, accepted or quarantined."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.inbox import accepted_paths, inbox_batches, inbox_partitions
from resources.io_manager import DatasetIOManager
from sensors.inbox import InboxCursor, inbox_sensor
from synthetic.catalog import load_catalog
from synthetic.jsonl import dumps_jsonl
from synthetic.splits import SplitSpec, generate_split


@pytest.fixture(scope="module")
def pair(master) -> tuple[list[dict], list[dict]]:
    """A small valid batch: records and their label manifest (the synthetic generator's)."""
    generated = generate_split(SplitSpec("train", 3, 4, 6, 0.3), master, 7, load_catalog())
    assert generated.manifest, "the fixture needs labelled deviations"
    return generated.records, generated.manifest


@pytest.fixture
def inbox(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    monkeypatch.setenv("GXPLAB_INBOX_DIR", str(folder))
    return folder


def drop(inbox: Path, name: str, records: list[dict], labels: list[dict], *,
         age_s: float = 60.0) -> None:
    """Write a pair as if it had been finished `age_s` seconds ago."""
    for kind, rows in (("records", records), ("labels", labels)):
        path = inbox / f"{name}.{kind}.jsonl"
        path.write_bytes(dumps_jsonl(rows))
        then = time.time() - age_s
        os.utime(path, (then, then))


def tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    result = inbox_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_good_pair_becomes_a_partition_and_a_run(instance, inbox, pair):
    records, labels = pair
    drop(inbox, "site-a_2026-01", records, labels)
    result = tick(instance)
    (add,) = result.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert add.partitions_def_name == inbox_partitions.name
    assert list(add.partition_keys) == ["site-a_2026-01"]
    (run,) = result.run_requests
    assert (run.job_name, run.partition_key, run.run_key) == (
        "gxp_inbox_job", "site-a_2026-01", "inbox:site-a_2026-01")
    assert json.loads(result.cursor)["pending"] == ["site-a_2026-01"]
    records_path, labels_path = accepted_paths(inbox, "site-a_2026-01")
    assert records_path.read_bytes() == dumps_jsonl(records)
    assert labels_path.read_bytes() == dumps_jsonl(labels)
    assert sorted(p.name for p in inbox.iterdir()) == ["accepted"]


def test_bad_pairs_are_quarantined_with_the_line_and_field_and_the_good_one_accepted(
        instance, inbox, pair):
    records, labels = pair
    no_batch = [dict(r) for r in records]
    del no_batch[2]["batch_id"]
    unknown_type = [dict(r) for r in labels]
    unknown_type[1]["deviation_type"] = "coffee_spill"
    drop(inbox, "good", records, labels)
    drop(inbox, "bad-records", no_batch, labels)
    drop(inbox, "bad-labels", records, unknown_type)
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["good"]
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["good"]
    quarantined = inbox / "quarantine"
    reason = (quarantined / "bad-records.reason.txt").read_text()
    assert "bad-records.records.jsonl line 3" in reason
    assert f"(record_id {records[2]['record_id']})" in reason
    assert "field 'batch_id' is missing" in reason
    reason = (quarantined / "bad-labels.reason.txt").read_text()
    assert "bad-labels.labels.jsonl line 2" in reason
    assert "field 'deviation_type': unknown deviation type 'coffee_spill'" in reason
    rejects = [json.loads(line) for line in
               (quarantined / "bad-labels.labels.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, "deviation_type")]
    # both files of each bad pair are kept, nothing deleted; the good pair is accepted
    assert sorted(p.name for p in quarantined.glob("*.jsonl")
                  if not p.name.endswith(".rejects.jsonl")) == [
        "bad-labels.labels.jsonl", "bad-labels.records.jsonl",
        "bad-records.labels.jsonl", "bad-records.records.jsonl"]
    assert all(p.is_file() for p in accepted_paths(inbox, "good"))


def test_labels_that_name_records_not_in_the_file_are_rejected(instance, inbox, pair):
    records, labels = pair
    stray = [dict(r) for r in labels]
    stray[0]["record_id"] = "R-NOT-THERE"
    drop(inbox, "stray", records, stray)
    assert not tick(instance).run_requests
    reason = (inbox / "quarantine" / "stray.reason.txt").read_text()
    assert "stray.labels.jsonl: manifest line 1: record_id 'R-NOT-THERE' is not in the records" \
        in reason


def test_the_next_tick_without_new_files_skips_and_adds_nothing_twice(instance, inbox, pair):
    drop(inbox, "once", *pair)
    first = tick(instance)
    assert len(first.run_requests) == 1
    instance.add_dynamic_partitions(inbox_partitions.name, ["once"])  # as the daemon does
    again = tick(instance, first.cursor)
    assert again.skip_reason is not None
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert "waiting for inbox_records partitions once" in again.skip_reason.skip_message
    # the same name dropped again is not a second partition: it is quarantined
    drop(inbox, "once", *pair)
    third = tick(instance, again.cursor)
    assert not third.run_requests and not third.dynamic_partitions_requests
    assert "already accepted" in (inbox / "quarantine" / "once.reason.txt").read_text()


def test_a_file_still_being_written_or_without_its_partner_is_left_alone(instance, inbox, pair):
    records, labels = pair
    # modified "just now" even on a slow machine: an mtime a minute ahead is never settled
    drop(inbox, "fresh", records, labels, age_s=-60.0)
    drop(inbox, "lonely", records, labels)
    (inbox / "lonely.labels.jsonl").rename(inbox / "notes.txt")
    first = tick(instance)
    assert not first.run_requests
    assert "fresh: modified less than 2 s ago" in first.skip_reason.skip_message
    assert "lonely: waiting for lonely.labels.jsonl" in first.skip_reason.skip_message
    assert sorted(p.name for p in inbox.iterdir()) == [
        "fresh.labels.jsonl", "fresh.records.jsonl", "lonely.records.jsonl", "notes.txt"]
    drop(inbox, "fresh", records, labels)  # finished writing
    (inbox / "notes.txt").rename(inbox / "lonely.labels.jsonl")  # the partner arrives
    second = tick(instance, first.cursor)
    assert sorted(r.partition_key for r in second.run_requests) == ["fresh", "lonely"]


def test_the_partition_materializes_and_then_retraining_is_requested(
        instance, inbox, pair, tmp_path):
    records, labels = pair
    drop(inbox, "b1", records, labels)
    first = tick(instance)
    instance.add_dynamic_partitions(inbox_partitions.name, ["b1"])
    waiting = tick(instance, first.cursor)
    assert not waiting.run_requests  # not retrained before the batch is stored
    result = dg.materialize(
        [inbox_batches], partition_key="b1", instance=instance,
        resources={"io_manager": DatasetIOManager(root=str(tmp_path / "artifacts"))},
    )
    assert result.success
    assert result.output_for_node("inbox_batches", "inbox_records") == records
    assert result.output_for_node("inbox_batches", "inbox_labels") == labels
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("inbox_records")]
    metadata = event.materialization.metadata
    assert metadata["records"].value == len(records)
    assert metadata["batches"].value == len({r["batch_id"] for r in records})
    assert metadata["source_sha256"].value == hashlib.sha256(dumps_jsonl(records)).hexdigest()

    ready = tick(instance, waiting.cursor)
    (retrain,) = ready.run_requests
    assert retrain.job_name == "gxp_models_job"
    assert retrain.asset_selection == [dg.AssetKey("gxp_audit_adapter")]
    assert retrain.run_key == "inbox_retrain:b1"
    assert InboxCursor.parse(ready.cursor).pending == ()
    assert tick(instance, ready.cursor).skip_reason is not None


def test_the_asset_rejects_an_accepted_batch_that_was_edited_afterwards(
        instance, inbox, pair, tmp_path):
    records, labels = pair
    drop(inbox, "edited", records, labels)
    tick(instance)
    instance.add_dynamic_partitions(inbox_partitions.name, ["edited"])
    records_path, _ = accepted_paths(inbox, "edited")
    records_path.write_text(records_path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"edited.records.jsonl line \d+: truncated"):
        dg.materialize([inbox_batches], partition_key="edited", instance=instance,
                       resources={"io_manager": DatasetIOManager(root=str(tmp_path))})


def test_a_bad_cursor_says_how_to_reset_it(instance, inbox):
    with pytest.raises(ValueError, match="--delete"):
        tick(instance, "not json")


# --- hardening: one bad batch never stalls the inbox; acceptance survives a crash ---------------
def deep_line(record: dict, depth: int) -> bytes:
    """`record` as one JSON line whose comments are a list nested `depth` levels deep."""
    head = json.dumps({k: v for k, v in record.items() if k != "comments"})[:-1]
    return f'{head}, "comments": {"[" * depth}"x"{"]" * depth}}}\n'.encode()


def test_a_batch_whose_validation_raises_is_quarantined_and_the_next_batch_accepted(
        instance, inbox, pair):
    records, labels = pair
    drop(inbox, "a-good", records, labels)
    drop(inbox, "b-deep", records, labels)
    lines = dumps_jsonl(records).splitlines(keepends=True)
    lines[1] = deep_line(records[1], 1000)  # within orjson's limit, beyond the recursion limit
    path = inbox / "b-deep.records.jsonl"
    path.write_bytes(b"".join(lines))
    os.utime(path, (time.time() - 60, time.time() - 60))
    drop(inbox, "c-good", records, labels)
    result = tick(instance)
    assert sorted(r.partition_key for r in result.run_requests) == ["a-good", "c-good"]
    reason = (inbox / "quarantine" / "b-deep.reason.txt").read_text()
    assert "b-deep.records.jsonl" in reason
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == []


def test_any_exception_while_validating_quarantines_that_batch_only(
        instance, inbox, pair, monkeypatch):
    import assets.inbox as inbox_assets

    records, labels = pair
    real = inbox_assets.manifest_problems

    def flaky(recs, manifest, slugs):
        if manifest and manifest[0].get("why") == "boom":
            raise KeyError("no such column: secret-free message")
        return real(recs, manifest, slugs)

    monkeypatch.setattr(inbox_assets, "manifest_problems", flaky)
    boom = [dict(labels[0], why="boom"), *labels[1:]]
    drop(inbox, "boom", records, boom)
    drop(inbox, "fine", records, labels)
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["fine"]
    reason = (inbox / "quarantine" / "boom.reason.txt").read_text()
    assert "KeyError" in reason and "no such column" in reason
    assert (inbox / "quarantine" / "boom.records.jsonl").is_file()


def test_a_batch_moved_but_never_registered_is_recovered_by_the_next_tick(instance, inbox, pair):
    from sensors.inbox import process_inbox

    drop(inbox, "stranded", *pair)
    # the tick that moved it died before the daemon saw its result: no partition, no run
    assert process_inbox(inbox, known_batches=set()).accepted == ["stranded"]
    result = tick(instance)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["stranded"]
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [
        ("stranded", "inbox:stranded")]
    assert InboxCursor.parse(result.cursor).pending == ("stranded",)
    instance.add_dynamic_partitions(inbox_partitions.name, ["stranded"])
    assert not tick(instance, result.cursor).run_requests  # registered: not requested again


def test_a_crash_in_the_middle_of_accepting_loses_nothing(instance, inbox, pair, monkeypatch):
    drop(inbox, "halfway", *pair)
    real, calls = os.replace, []

    def power_cut(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        tick(instance)
    monkeypatch.setattr(os, "replace", real)
    result = tick(instance)
    assert [r.partition_key for r in result.run_requests] == ["halfway"]
    records_path, labels_path = accepted_paths(inbox, "halfway")
    assert records_path.read_bytes() == dumps_jsonl(pair[0])
    assert labels_path.read_bytes() == dumps_jsonl(pair[1])
    assert sorted(p.name for p in (inbox / "accepted").iterdir()) == ["halfway"]


def test_two_bad_batches_with_one_name_keep_both_rejects_and_reasons(instance, inbox, pair):
    records, labels = pair
    cursor = None
    for line in (2, 3):
        bad = [dict(r) for r in labels]
        bad[line - 1]["deviation_type"] = f"coffee_spill_{line}"
        drop(inbox, "twice", records, bad)
        cursor = tick(instance, cursor).cursor
    quarantined = inbox / "quarantine"
    rejects = sorted(quarantined.glob("twice.labels.jsonl.rejects.jsonl*"))
    lines = sorted(json.loads(text)["line"] for p in rejects
                   for text in p.read_text().splitlines())
    assert lines == [2, 3]
    reasons = "".join(p.read_text() for p in quarantined.glob("twice.reason.txt*"))
    assert "coffee_spill_2" in reasons and "coffee_spill_3" in reasons
    assert len(list(quarantined.glob("twice.records.jsonl*"))) == 2


def test_a_pair_that_cannot_be_moved_is_left_and_the_next_one_accepted(
        instance, inbox, pair, monkeypatch):
    real, stuck = os.replace, []

    def read_only(src, dst):  # the second file of a-stuck cannot be moved
        if Path(src).name.startswith("a-stuck."):
            stuck.append(src)
            if len(stuck) == 2:
                raise PermissionError(13, "Permission denied", str(src))
        return real(src, dst)

    drop(inbox, "a-stuck", *pair)
    drop(inbox, "b-fine", *pair)
    monkeypatch.setattr(os, "replace", read_only)
    first = tick(instance)
    assert [r.partition_key for r in first.run_requests] == ["b-fine"]
    # one file was staged, the other could not follow: nothing is accepted half
    assert [p.name for p in inbox.iterdir() if p.is_file()] == [Path(stuck[1]).name]
    assert "a-stuck" not in first.dynamic_partitions_requests[0].partition_keys
    monkeypatch.setattr(os, "replace", real)
    instance.add_dynamic_partitions(inbox_partitions.name, ["b-fine"])  # as the daemon does
    second = tick(instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["a-stuck"]
    assert all(p.is_file() for p in accepted_paths(inbox, "a-stuck"))
