"""`gxplab`: set up the Dagster instance and run the GxP benchmark graph from a terminal.

Every materialization goes through the Dagster instance in $DAGSTER_HOME, so the runs, asset
metadata and checks that this command produces are the ones the web UI (`make ui`) shows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PG_URL_ENV = "GXPLAB_DAGSTER_PG_URL"


def _instance_home() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit(
            "DAGSTER_HOME is not set. Use `make run`, or export DAGSTER_HOME=$PWD/var/dagster_home "
            "and run `gxplab init-instance` first."
        )
    return Path(home)


def init_instance(_: argparse.Namespace) -> int:
    """Write $DAGSTER_HOME/dagster.yaml: SQLite, or PostgreSQL if GXPLAB_DAGSTER_PG_URL is set."""
    home = _instance_home()
    home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / (
        "dagster.postgres.yaml" if os.environ.get(PG_URL_ENV) else "dagster.yaml"
    )
    shutil.copyfile(source, home / "dagster.yaml")
    backend = (
        "PostgreSQL (URL from $GXPLAB_DAGSTER_PG_URL)" if os.environ.get(PG_URL_ENV) else "SQLite"
    )
    print(f"Dagster instance: {home} ({backend}, from {source.name})")
    return 0


def sync_models(_: argparse.Namespace) -> int:
    """Make the candidate_model partitions equal to configs/models.yaml."""
    import dagster as dg

    from sensors.model_registry import sync_model_partitions

    added, removed = sync_model_partitions(dg.DagsterInstance.get())
    print(f"model partitions: added {added or 'none'}, removed {removed or 'none'}")
    return 0


def _run(job, label: str, failures: list[str], log_level: str, run_config=None, **kwargs) -> None:
    started = time.perf_counter()
    run_config = {
        **(run_config or {}),
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    result = job.execute_in_process(raise_on_error=False, run_config=run_config, **kwargs)
    status = "ok" if result.success else "FAILED"
    print(f"  {label:<48} {status:>6}  {time.perf_counter() - started:6.1f} s", flush=True)
    if not result.success:
        failures.append(label)


def benchmark(args: argparse.Namespace) -> int:
    """Materialize site master, every split, every (model, split) and the leaderboard."""
    import dagster as dg

    from assets.partitions import model_split_key
    from definitions import defs
    from scoring.model_registry import load_model_registry
    from sensors.model_registry import sync_model_partitions
    from synthetic.contracts import SPLITS

    instance = dg.DagsterInstance.get()
    sync_model_partitions(instance)
    models = [m.id for m in load_model_registry() if m.enabled]
    models = [m for m in models if not args.models or m in args.models]
    splits = [s for s in SPLITS if not args.splits or s in args.splits]
    run_config = (
        {"ops": {"gxp_predictions": {"config": {"max_batches": args.max_batches}}}}
        if args.max_batches
        else None
    )
    failures: list[str] = []
    log_level = "DEBUG" if args.verbose else "WARNING"
    started = time.perf_counter()
    print(
        f"Materializing the GxP graph into {instance.root_directory}: "
        f"{len(splits)} splits x {len(models)} models",
        flush=True,
    )
    _run(
        defs.resolve_job_def("gxp_site_master_job"),
        "gxp_site_master",
        failures,
        log_level,
        instance=instance,
    )
    for split in splits:
        _run(
            defs.resolve_job_def("gxp_data_job"),
            f"gxp_records[{split}]",
            failures,
            log_level,
            instance=instance,
            partition_key=split,
        )
    evaluation = defs.resolve_job_def("gxp_evaluation_job")
    for model_id in models:
        for split in splits:
            _run(
                evaluation,
                f"gxp_predictions+scores[{model_id}|{split}]",
                failures,
                log_level,
                instance=instance,
                partition_key=model_split_key(model_id, split),
                run_config=run_config,
            )
    if not args.no_training:
        _run(
            defs.resolve_job_def("gxp_models_job"),
            "models: base_model, qlora/grit adapters (Pipes)",
            failures,
            log_level,
            instance=instance,
        )
    _run(
        defs.resolve_job_def("gxp_reports_job"),
        "gxp_leaderboard",
        failures,
        log_level,
        instance=instance,
    )
    elapsed = time.perf_counter() - started
    print(f"\nMaterialization took {elapsed:.0f} s.\n")
    from definitions import ARTIFACTS_DIR

    args.plot = ARTIFACTS_DIR / "gxp_leaderboard" / "leaderboard.png"
    print_leaderboard(args)
    print(
        "\nOpen the Dagster UI with `make ui`, then http://127.0.0.1:3000 "
        "(asset graph, runs, checks, the leaderboard's metadata and plot)."
    )
    if failures:
        print(f"\n{len(failures)} step(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def print_leaderboard(args: argparse.Namespace) -> int:
    """Print the leaderboard from the latest scores in the results warehouse."""
    from definitions import defs
    from scoring.leaderboard import build_leaderboard, leaderboard_markdown, leaderboard_plot
    from scoring.model_registry import load_model_registry

    warehouse = defs.resources["warehouse"].client
    model_ids = [m.id for m in load_model_registry() if m.enabled]
    table = build_leaderboard(
        model_ids,
        warehouse.latest_scores(model_ids=model_ids),
        warehouse.latest_run_summaries(model_ids=model_ids, asset_key="gxp_predictions"),
    )
    print("GxP leaderboard (benchmark split unless the column says otherwise; 95% bootstrap CIs)")
    print(leaderboard_markdown(table))
    plot_path = getattr(args, "plot", None)
    if plot_path:
        Path(plot_path).write_bytes(leaderboard_plot(table))
        print(f"plot written to {plot_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gxplab",
        description="GxPLab: benchmark language models on GxP batch-record audits (Dagster).",
        epilog="Docs: README.md. The web UI: `make ui`. Backfills: see README 'Backfills'.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init-instance", help=init_instance.__doc__).set_defaults(
        func=init_instance
    )
    commands.add_parser("sync-models", help=sync_models.__doc__).set_defaults(func=sync_models)
    run = commands.add_parser("benchmark", help=benchmark.__doc__)
    run.add_argument(
        "--models", nargs="*", help="model ids from configs/models.yaml (default: all)"
    )
    run.add_argument("--splits", nargs="*", help="splits to run (default: all)")
    run.add_argument("--max-batches", type=int, help="audit only the first N batches per split")
    run.add_argument("--verbose", action="store_true", help="show Dagster's DEBUG event log")
    run.add_argument(
        "--no-training",
        action="store_true",
        help="skip the models stage (base model training, about 1-2 min on CPU)",
    )
    run.set_defaults(func=benchmark)
    board = commands.add_parser("leaderboard", help=print_leaderboard.__doc__)
    board.add_argument("--plot", metavar="PNG", help="also write the quality/cost/latency plot")
    board.set_defaults(func=print_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
