"""Progress lines inside long steps (training/progress.py): count, rate and ETA, to the
`gxplab.progress` logger and to extra sinks; training reports through the Pipes entry's report and
the TRL/transformers report callback; generation through LocalGenerator's progress callback."""

from __future__ import annotations

import dataclasses
import logging
import re
from types import SimpleNamespace

import pytest

from resources.pipes_entry import progress_report
from training.progress import ProgressLog, duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)


def test_lines_carry_count_rate_and_eta_and_are_throttled(caplog) -> None:
    clock, sink = Clock(), Sink()
    progress = ProgressLog("rag_eval: m", unit="answers", sinks=[sink], every_s=10, clock=clock)
    caplog.set_level(logging.INFO, logger="gxplab.progress")
    clock.now += 4
    assert progress(8, 120) == "rag_eval: m: 8/120 answers (7%), 2 answers/s, ETA 56s"
    clock.now += 4
    assert progress(16, 120) is None  # 4 s after the last line: not due
    clock.now += 8
    assert progress(32, 120) == "rag_eval: m: 32/120 answers (27%), 2 answers/s, ETA 44s"
    clock.now += 1
    last = progress(120, 120)  # the last item always gets its line
    assert last is not None and last.startswith("rag_eval: m: 120/120 answers (100%), ")
    assert last.endswith("ETA 0s")
    assert sink.lines == [r.getMessage() for r in caplog.records
                          if r.name == "gxplab.progress"]
    assert len(sink.lines) == 3


def test_fields_and_a_resumed_start_leave_the_done_part_out_of_the_rate() -> None:
    clock = Clock()
    progress = ProgressLog("sft", 200, "steps", start=100, clock=clock)
    assert progress(100, loss=None) == "sft: 100/200 steps (50%)"  # no rate yet
    clock.now += 50
    line = progress(150, loss=2.3456789, learning_rate=1e-4, note="x")
    assert line == ("sft: 150/200 steps (75%), loss=2.346, learning_rate=0.0001, note=x, "
                    "1 steps/s, ETA 50s")
    assert ProgressLog("gen", clock=clock)(5) == "gen: 5 items"  # no total: no share, no ETA


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (84, "1m24s"),
                                               (3600 + 180, "1h03m")])
def test_duration(seconds, text) -> None:
    assert duration(seconds) == text


def test_training_reports_become_progress_lines_and_notes_pass_through(capsys) -> None:
    """The report of resources/pipes_entry.py: every report is forwarded (Pipes custom message
    or JSON line); training steps also make progress lines on stderr and in each sink."""
    forwarded, sink = [], Sink()
    report = progress_report("gxp_audit_adapter", lambda **m: forwarded.append(m), sinks=[sink])
    report(note="quantization none (no CUDA): plain LoRA in float32")
    report(step=1, total=4, loss=2.5, learning_rate=0.001)
    report(step=4, total=4, loss=1.25, learning_rate=0.0)
    assert len(forwarded) == 3 and forwarded[2] == {"step": 4, "total": 4, "loss": 1.25,
                                                      "learning_rate": 0.0}
    assert sink.lines[0] == ("gxp_audit_adapter: note=quantization none (no CUDA): plain LoRA "
                             "in float32")
    assert sink.lines[1] == "gxp_audit_adapter: 1/4 steps (25%), loss=2.5, learning_rate=0.001"
    assert re.fullmatch(r"gxp_audit_adapter: 4/4 steps \(100%\), loss=1\.25, learning_rate=0, "
                        r"[\d.e+]+ steps/s, ETA 0s", sink.lines[2]), sink.lines
    assert capsys.readouterr().err.splitlines() == sink.lines  # the terminal gets the same lines


def test_trainer_report_callback_feeds_the_progress_lines() -> None:
    """The TrainerCallback that SFT, DPO and ORPO train with (training/sft.py) passes each
    logging step's step, total and loss on, which the report turns into progress lines."""
    from training.sft import _report_callback

    sink = Sink()
    callback = _report_callback(progress_report("dpo_adapter", lambda **m: None, sinks=[sink]))
    for step in (1, 2):
        callback.on_log(None, SimpleNamespace(global_step=step, max_steps=2), None,
                        logs={"loss": 0.5 / step, "learning_rate": 1e-3})
    assert sink.lines[0] == "dpo_adapter: 1/2 steps (50%), loss=0.5, learning_rate=0.001"
    assert sink.lines[1].startswith("dpo_adapter: 2/2 steps (100%), loss=0.25, ")
    assert sink.lines[1].endswith("ETA 0s")


def test_local_generation_reports_progress(tmp_path) -> None:
    """LocalGenerator.generate calls the progress helper after each batch."""
    from test_embedded_model import TINY

    from training.embedded_model import build_embedded_base_model
    from training.inference import DecodingSettings, LocalGenerator

    build_embedded_base_model(tmp_path / "base", dataclasses.replace(TINY, pretrain_steps=1))
    generator = LocalGenerator(tmp_path / "base")
    sink = Sink()
    chats = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    generator.generate(chats, DecodingSettings(max_new_tokens=2), batch_size=2,
                       progress=ProgressLog("batchqa_eval: base", unit="answers", sinks=[sink],
                                            every_s=0))
    assert [line.split(",")[0] for line in sink.lines] == [
        "batchqa_eval: base: 2/5 answers (40%)", "batchqa_eval: base: 4/5 answers (80%)",
        "batchqa_eval: base: 5/5 answers (100%)"]
    assert all("answers/s, ETA " in line for line in sink.lines)
