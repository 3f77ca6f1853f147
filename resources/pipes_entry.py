"""Process side of training through Dagster Pipes: `python -m resources.pipes_entry TASK ...`.

Runs one task of `training.tasks.TASKS` in its own process (locally under PipesSubprocessClient, or
in a Kubernetes pod). Inside a Pipes session it streams progress as log lines and custom messages
and reports the final metadata as the asset materialization; run by hand it prints JSON lines. Only
`dagster_pipes` (the small protocol package made for external processes) is imported here, never
Dagster itself, and the training code stays Pipes-agnostic.

    python -m resources.pipes_entry base_model --output-dir var/models/base
    python -m resources.pipes_entry base_model --output-dir /tmp/m --config '{"pretrain_steps": 20}'
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster_pipes


def _pipes_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Typed Pipes metadata: lists and dicts as JSON, the loss curve as an embedded PNG."""
    from training.plots import loss_curves_png

    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == "losses":
            png = base64.b64encode(loss_curves_png({"loss": value})).decode()
            out["loss_curve"] = {"raw_value": f"![loss](data:image/png;base64,{png})", "type": "md"}
            out["losses"] = {"raw_value": value, "type": "json"}
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            out[key] = {"raw_value": None, "type": "null"}  # JSON has no NaN
        elif key.endswith("_path"):
            out[key] = {"raw_value": value, "type": "path"}
        elif isinstance(value, dict):  # Pipes reads a bare dict as {raw_value, type}
            out[key] = {"raw_value": value, "type": "json"}
        else:
            out[key] = value
    return out


def quiet_libraries() -> None:
    """Progress bars and deprecation chatter of datasets/transformers/TRL off: the task's own
    per-step reports (Pipes messages, log lines) and `gxplab benchmark`'s lines carry the
    progress. Also used by `gxplab benchmark` for the assets that load models in-process."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers 5's weight-loading and shard-writing bars follow the hub's switch.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # ORPO comes from trl.experimental on purpose (docs/training.md); its warning is not news.
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # bitsandbytes warns on import that an optional CPU 4-bit kernel (a hub download) is absent;
    # on a CPU the adapters train plain LoRA and say so, so the warning only adds noise.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def process_rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when launched alone)."""
    return int(os.environ.get("RANK", "0"))


def run_task(task: str, config: dict, output_dir: Path) -> dict:
    from training.tasks import TASKS

    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    quiet_libraries()
    if process_rank() != 0:  # several processes train together; rank 0 alone reports
        return TASKS[task](config, output_dir, lambda **_metrics: None)
    if not os.environ.get(dagster_pipes.DAGSTER_PIPES_CONTEXT_ENV_VAR):

        def print_report(**metrics: Any) -> None:
            print(json.dumps(metrics), flush=True)

        metadata = TASKS[task](config, output_dir, progress_report(task, print_report))
        print(json.dumps({k: v for k, v in metadata.items() if k != "losses"}), flush=True)
        return metadata
    with dagster_pipes.open_dagster_pipes() as pipes:

        def pipes_report(**metrics: Any) -> None:
            pipes.report_custom_message(metrics)

        report = progress_report(task, pipes_report, sinks=[pipes.log])
        metadata = TASKS[task](config, output_dir, report)
        pipes.report_asset_materialization(metadata=_pipes_metadata(metadata))
        return metadata


def progress_report(task: str, forward: Callable[..., None], sinks: Sequence[Any] = ()
                    ) -> Callable[..., None]:
    """The task's `report`: every report goes to `forward` (a Pipes custom message, or a JSON
    line); training steps (step, total, loss, ...) also make progress lines with rate and ETA
    (training/progress.py: stderr, and each sink such as the Pipes log), other reports (notes,
    evaluations) a line each."""
    from training.progress import ProgressLog, logger

    meter: list[ProgressLog] = []

    def report(**metrics: Any) -> None:
        forward(**metrics)
        if {"step", "total", "loss"} <= metrics.keys():
            step, total = int(metrics["step"]), int(metrics["total"])
            if not meter:  # the rate counts from the first report (a resumed run starts late)
                meter.append(ProgressLog(task, total, "steps", start=step, sinks=sinks))
            fields = {k: v for k, v in metrics.items() if k not in ("step", "total")}
            meter[0](step, total, **fields)
            return
        line = f"{task}: " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        logger.info(line)
        for sink in sinks:
            sink.info(line)

    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resources.pipes_entry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", help="task name from training/tasks.py (e.g. base_model)")
    parser.add_argument("--output-dir", required=True, type=Path, help="where artifacts go")
    parser.add_argument("--config", default="{}", help="JSON object of task settings")
    args = parser.parse_args(argv)
    run_task(args.task, json.loads(args.config), args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
