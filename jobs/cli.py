"""`gxplab`: set up the Dagster instance and run the GxP benchmark graph from a terminal.

Every materialization goes through the Dagster instance in $DAGSTER_HOME, so the runs, asset
metadata and checks that this command produces are the ones the web UI (`make ui`) shows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.models_cli import add_models_parser

if TYPE_CHECKING:
    from jobs.up_to_date import UpToDate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PG_URL_ENV = "GXPLAB_DAGSTER_PG_URL"
# The instance folder when $DAGSTER_HOME is not set: the Makefile's default.
DEFAULT_DAGSTER_HOME = PROJECT_ROOT / "var" / "dagster_home"
INSTANCE_COMMANDS = ("init-instance", "sync-models", "benchmark", "serve")


def _instance_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME)


def _ensure_instance(command: str) -> None:
    """Point $DAGSTER_HOME at DEFAULT_DAGSTER_HOME when it is not set (saying so on stderr), and
    prepare the instance there as `gxplab init-instance` does when it has no dagster.yaml yet, so
    that every command works in any order. Exits 2 with one line when that fails."""
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(DEFAULT_DAGSTER_HOME)
        print(f"note: DAGSTER_HOME is not set: using {DEFAULT_DAGSTER_HOME}", file=sys.stderr)
    if command == "init-instance" or (_instance_home() / "dagster.yaml").exists():
        return
    print(f"note: no Dagster instance in {_instance_home()}: preparing one (gxplab init-instance)",
          file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # stdout stays the command's own output
        code = init_instance(argparse.Namespace())
    if code:  # not half-prepared: the next command tries again (and sets the gpu pool then)
        (_instance_home() / "dagster.yaml").unlink(missing_ok=True)
        raise SystemExit(code)


GPU_POOL = "gpu"  # the concurrency pool of every training asset
GPU_POOL_LIMIT = 1


def _redacted(message: str) -> str:
    """`message` without the PostgreSQL URL or its password (an error may quote either)."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        return message
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(url).password
    except ArgumentError:
        password = None
    message = message.replace(url, f"${PG_URL_ENV}")
    return message.replace(str(password), "***") if password else message


def _ensure_gpu_pool(instance) -> tuple[int, bool, list[str]]:
    """(limit, set_now, freed_run_ids) for the `gpu` pool.

    The limit becomes 1 unless the pool has an explicit limit already, so an operator's `dagster
    instance concurrency set gpu N` survives `make ui`/`make run`. Slots still claimed by runs that
    have finished (a run worker killed mid-step never releases its slot) are freed: with a limit
    of 1 such a slot would block every later training step."""
    storage = instance.event_log_storage
    info = storage.get_concurrency_info(GPU_POOL)
    set_now = info.limit is None or info.using_default_limit
    if set_now:
        storage.set_concurrency_slots(GPU_POOL, GPU_POOL_LIMIT)
    freed = []
    for run_id in sorted(info.active_run_ids):
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            freed.append(run_id)
    return storage.get_concurrency_info(GPU_POOL).limit, set_now, freed


INIT_INSTANCE_DESCRIPTION = """\
Write $DAGSTER_HOME/dagster.yaml and prepare the instance:
  - from dagster.yaml (SQLite under $DAGSTER_HOME, runs launch at once), or, when
    GXPLAB_DAGSTER_PG_URL is set, from dagster.postgres.yaml (PostgreSQL, run queue with limits,
    run monitoring, run retries); the URL stays in the environment, never in the file
  - open the instance (creates its tables on first use)
  - give the `gpu` concurrency pool (every training asset) a limit of 1, unless an explicit
    limit was set before (`dagster instance concurrency set gpu N`); running it again changes
    nothing; gpu slots still held by finished runs (a killed run worker) are freed
See docs/deploy.md.
"""


def init_instance(_: argparse.Namespace) -> int:
    """Write $DAGSTER_HOME/dagster.yaml (SQLite, or PostgreSQL if GXPLAB_DAGSTER_PG_URL is set)
    and give the `gpu` concurrency pool of the training assets a limit of 1 (an explicit limit
    set before is kept)."""
    import dagster as dg

    home = _instance_home()
    home.mkdir(parents=True, exist_ok=True)
    postgres = bool(os.environ.get(PG_URL_ENV))
    source = PROJECT_ROOT / ("dagster.postgres.yaml" if postgres else "dagster.yaml")
    shutil.copyfile(source, home / "dagster.yaml")
    backend = f"PostgreSQL (URL from ${PG_URL_ENV})" if postgres else "SQLite"
    print(f"Dagster instance: {home} ({backend}, from {source.name})")
    try:
        # Opening the instance creates (or checks) its storage schema.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            limit, set_now, freed = _ensure_gpu_pool(instance)
    except Exception as exc:  # unreachable server, bad URL, failed migration: say which
        reason = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        if cause is not None and str(cause).strip():
            reason += f" ({str(cause).strip().splitlines()[0]})"
        print(f"error: cannot open the Dagster instance in {home}: {_redacted(reason)}",
              file=sys.stderr)
        return 2
    how = "set" if set_now else "kept (set earlier)"
    if freed:
        print(f"concurrency pool {GPU_POOL}: freed the slots of {len(freed)} finished run(s) that "
              f"never released them: {', '.join(freed)}")
    print(f"concurrency pool {GPU_POOL}: limit {limit}, {how}; at most {limit} training step(s) "
          f"at once. Change it with `dagster instance concurrency set {GPU_POOL} N`.")
    return 0


def sync_models(_: argparse.Namespace) -> int:
    """Make the candidate_model partitions equal to configs/models.yaml."""
    import dagster as dg

    from sensors.model_registry import sync_model_partitions

    added, removed = sync_model_partitions(dg.DagsterInstance.get())
    print(f"model partitions: added {added or 'none'}, removed {removed or 'none'}")
    return 0


def _run(job, label: str, failures: list[str], log_level: str, run_config=None,
         up_to_date: UpToDate | None = None, skipped_as: str | None = None, **kwargs) -> None:
    """Run `job` in this process (one line with its time), unless `up_to_date` says its assets
    have nothing to do (`skipped_as`: why the step's model would be skipped now, if it would)."""
    started = time.perf_counter()
    tags = {}
    if up_to_date is not None:
        keys = kwargs.get("asset_selection") or job.asset_layer.selected_asset_keys
        reason = up_to_date.reason_to_run(keys, kwargs.get("partition_key"), run_config,
                                           skipped_as)
        if reason is None:
            print(f"  {label:<48} up to date, skipped", flush=True)
            return
        from jobs.up_to_date import FINGERPRINT_TAG

        tags[FINGERPRINT_TAG] = up_to_date.step_fingerprint(run_config)
    run_config = {
        **(run_config or {}),
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    result = job.execute_in_process(raise_on_error=False, run_config=run_config, tags=tags,
                                    **kwargs)
    if up_to_date is not None:
        up_to_date.reset()
    status = "ok" if result.success else "FAILED"
    print(f"  {label:<48} {status:>6}  {time.perf_counter() - started:6.1f} s", flush=True)
    if not result.success:
        failures.append(label)


BENCHMARK_DESCRIPTION = """\
Materialize the whole graph into $DAGSTER_HOME, one line per step with its time:
  1. gxp_site_master and the 5 splits of gxp_records/gxp_labels (with their checks)
  2. models: training data, base_model, every adapter (each in its own process through Pipes),
     training_comparison
  3. evaluation of the base model vs its adapters: accd_prompts, aqi_scores and
     behavioral_metrics (qlora/grit/dpo/orpo), judge_evaluations (the amr_judge candidates of
     configs/models.yaml on the amr_cases test split), batchqa_eval (batchqa_adapter)
  4. gxp_predictions + gxp_scores for every gxp_audit model on its splits (models without
     credentials are skipped, saying which variable is missing; local models skip `train`)
  5. gxp_leaderboard, printed at the end; its plot goes to var/artifacts/gxp_leaderboard/
  6. synthesis_report (Markdown + HTML under var/artifacts/synthesis_report/; not with
     --no-training)

examples:
  gxplab benchmark                                  # everything (about 13 min on 2 cores)
  gxplab benchmark --no-training                    # the GxP benchmark alone (about 35 s)
  gxplab benchmark --models gpt-4o --splits benchmark adversarial
  gxplab benchmark --force                          # re-materialize even what is up to date

A second run with nothing changed skips every step ("up to date, skipped"): each step's assets are
checked with Dagster's stale status and the fingerprint of the sources, configs and options that
made them (jobs/up_to_date.py).
"""


def _topological(defs, job) -> list:
    """The asset keys a job materializes, upstream first."""
    graph = defs.resolve_asset_graph()
    keys = set(job.asset_layer.selected_asset_keys)
    return [key for level in graph.toposorted_asset_keys_by_level for key in sorted(level)
            if key in keys]


def _one_of(kind: str, valid: Callable[[], Sequence[str]]) -> Callable[[str], str]:
    """An argparse `type` that accepts only the ids `valid()` gives (called when the option is
    used, so `gxplab --help` does not read the model registry)."""

    def check(value: str) -> str:
        ids = list(valid())
        if value not in ids:
            raise argparse.ArgumentTypeError(f"unknown {kind} {value!r}; valid: {', '.join(ids)}")
        return value

    return check


def _gxp_audit_model_ids() -> list[str]:
    """The enabled candidates of the GxP audit benchmark in configs/models.yaml."""
    from scoring.model_registry import GXP_AUDIT, load_model_registry

    return [m.id for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]


def _splits() -> tuple[str, ...]:
    from synthetic.contracts import SPLITS

    return SPLITS


def benchmark(args: argparse.Namespace) -> int:
    """Materialize site master, every split, every (model, split) and the leaderboard."""
    import dagster as dg

    from assets.partitions import model_split_key
    from definitions import defs
    from scoring.model_registry import GXP_AUDIT, load_model_registry, model_availability
    from sensors.model_registry import sync_model_partitions
    from synthetic.contracts import SPLITS

    # Pipes' message reader calls a preview API of Dagster's own; the warning is not the user's.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    from resources.pipes_entry import quiet_libraries

    quiet_libraries()  # the evaluation assets load models in this process
    instance = dg.DagsterInstance.get()
    sync_model_partitions(instance)
    models = [m.id for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]
    models = [m for m in models if not args.models or m in args.models]
    splits = [s for s in SPLITS if not args.splits or s in args.splits]
    run_config = (
        {"ops": {"gxp_predictions": {"config": {"max_batches": args.max_batches}}}}
        if args.max_batches
        else None
    )
    failures: list[str] = []
    log_level = "DEBUG" if args.verbose else "WARNING"
    from jobs.up_to_date import UpToDate

    checker = None if args.force else UpToDate(instance, defs)
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
        instance=instance, up_to_date=checker,
    )
    for split in splits:
        _run(
            defs.resolve_job_def("gxp_data_job"),
            f"gxp_records[{split}]",
            failures,
            log_level,
            instance=instance, up_to_date=checker,
            partition_key=split,
        )
    if args.no_training:
        local = [m.id for m in load_model_registry()
                 if m.kind in ("local", "served") and m.id in models]
        if local:
            print(f"  --no-training: skipping the local models {', '.join(local)}", flush=True)
        models = [m for m in models if m not in local]
    else:
        models_job = defs.resolve_job_def("gxp_models_job")
        # One line per asset, in graph order: training is the long part, so show its progress.
        for asset_key in _topological(defs, models_job):
            _run(models_job, f"models: {asset_key.to_user_string()}", failures, log_level,
                 instance=instance, up_to_date=checker, asset_selection=[asset_key])
        rag = defs.resolve_job_def("gxp_rag_job")
        for asset_key in _topological(defs, rag):
            _run(rag, f"rag: {asset_key.to_user_string()}", failures, log_level,
                 instance=instance, up_to_date=checker, asset_selection=[asset_key])
        model_evaluation = defs.resolve_job_def("gxp_model_evaluation_job")
        for asset_key in _topological(defs, model_evaluation):
            _run(model_evaluation, f"evaluation: {asset_key.to_user_string()}", failures,
                 log_level, instance=instance, up_to_date=checker, asset_selection=[asset_key])
    evaluation = defs.resolve_job_def("gxp_evaluation_job")
    registry = {m.id: m for m in load_model_registry()}
    for model_id in models:
        model_splits = [s for s in splits if s in (registry[model_id].splits or SPLITS)]
        if len(model_splits) < len(splits):
            left_out = ", ".join(s for s in splits if s not in model_splits)
            print(f"  {model_id}: not run on {left_out} (its `splits` in configs/models.yaml)",
                  flush=True)
        available, why = model_availability(registry[model_id])
        for split in model_splits:
            _run(
                evaluation,
                f"gxp_predictions+scores[{model_id}|{split}]",
                failures,
                log_level,
                instance=instance, up_to_date=checker, skipped_as=None if available else why,
                partition_key=model_split_key(model_id, split),
                run_config=run_config,
            )
    _run(
        defs.resolve_job_def("gxp_reports_job"),
        "gxp_leaderboard",
        failures,
        log_level,
        instance=instance, up_to_date=checker,
    )
    if not args.no_training:  # the report reads the models and evaluation stages' outputs
        _run(defs.resolve_job_def("gxp_synthesis_job"), "synthesis_report", failures, log_level,
             instance=instance, up_to_date=checker)
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


LEADERBOARD_FORMATS = ("markdown", "json", "csv")


def print_leaderboard(args: argparse.Namespace) -> int:
    """Print the leaderboard from the latest scores in the results warehouse."""
    from definitions import defs
    from scoring.leaderboard import (
        build_leaderboard,
        leaderboard_csv,
        leaderboard_json,
        leaderboard_markdown,
        leaderboard_plot,
    )
    from scoring.model_registry import GXP_AUDIT, load_model_registry

    warehouse = defs.resources["warehouse"].client
    model_ids = [m.id for m in load_model_registry(benchmark=GXP_AUDIT) if m.enabled]
    table = build_leaderboard(
        model_ids,
        warehouse.latest_scores(model_ids=model_ids, asset_key="gxp_scores"),
        warehouse.latest_run_summaries(model_ids=model_ids, asset_key="gxp_predictions"),
    )
    output = getattr(args, "format", "markdown")
    if output == "json":
        print(leaderboard_json(table))
    elif output == "csv":
        print(leaderboard_csv(table), end="")
    else:
        print("GxP leaderboard (benchmark split unless the column says otherwise; 95% bootstrap "
              "CIs; ranked over the batches each model answered)")
        print(leaderboard_markdown(table))
    plot_path = getattr(args, "plot", None)
    if plot_path:
        Path(plot_path).write_bytes(leaderboard_plot(table))
        # on stderr when stdout is data (JSON, CSV) that the caller parses
        note = sys.stdout if output == "markdown" else sys.stderr
        print(f"plot written to {plot_path}", file=note)
    return 0


SERVE_DESCRIPTION = """\
Serve every local model of configs/models.yaml whose files are materialized (the base model and
each adapter, by the registry id: embedded-base, embedded-gxp-audit, ...) over the OpenAI API of
serving/ (python -m serving). The catalog is read from the Dagster instance: the latest
materialization of base_model and of each adapter asset (restored from its S3 archive when the
folder is not on this host). Call it from litellm as openai/<id> with
api_base http://HOST:PORT/v1; set GXPLAB_SERVE_URL to that to benchmark the served-* entries
against this server instead of one started per step.

When rag_index is materialized, the server also gets its Parquet file (--rag-index; downloaded
and checked against its sha256 when it is on S3) and the models of configs/rag.yaml
comparison.models that it serves (--compare-models; those it does not serve are listed): the RAG
comparison page is then http://HOST:PORT/compare (serving/README.md).

Ctrl-C (SIGINT) or SIGTERM stops the server and everything it started, and waits for it."""


def serve(args: argparse.Namespace) -> int:
    """Serve the materialized local models over the OpenAI API (make serve)."""
    import json
    import os
    import sys
    import tempfile

    import dagster as dg

    from resources.artifacts import resolve_model_folder
    from resources.clients.local_server import run_server
    from scoring.model_registry import load_model_registry

    instance = dg.DagsterInstance.get()
    catalog, missing = [], []
    for model in load_model_registry():
        if model.kind != "local" or not model.enabled:
            continue
        paths = {}
        for asset in model.model_assets:
            metadata = _latest_metadata(instance, asset)
            key = "model_path" if asset == "base_model" else "adapter_path"
            if not metadata.get(key):
                missing.append(f"{model.id} ({asset} not materialized)")
                break
            paths[asset] = resolve_model_folder(metadata, key)
        else:
            catalog.append({"name": model.id, "base_model_path": paths["base_model"],
                            "adapter_path": paths.get(model.adapter) if model.adapter else None,
                            "description": model.description})
    for line in missing:
        print(f"  not served: {line}", flush=True)
    if not catalog:
        print("no local model is materialized: run `make run` (or materialize base_model) first",
              file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="gxplab-serve-")
    try:
        served = [entry["name"] for entry in catalog]
        rag_args = _rag_comparison_args(instance, served, missing, Path(work),
                                        args.serving_args)
        catalog_path = Path(work) / "catalog.json"
        catalog_path.write_text(json.dumps(catalog, default=str), encoding="utf-8")
        command = [sys.executable, "-m", "serving", "--catalog", str(catalog_path), *rag_args,
                   *args.serving_args]
        print(f"serving {', '.join(served)}", flush=True)
        # Its own process group, stopped with everything in it on SIGINT, SIGTERM or any exit.
        return run_server(command, env=os.environ.copy())
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _latest_metadata(instance: Any, asset: str) -> dict[str, Any]:
    """The plain metadata values of `asset`'s latest materialization ({} when there is none)."""
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or not event.asset_materialization:
        return {}
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def _rag_comparison_args(instance: Any, served: list[str], missing: list[str], work: Path,
                         serving_args: list[str]) -> list[str]:
    """--rag-index (the latest rag_index's Parquet file, the IO manager's artifact_uri, fetched
    from S3 into `work` when it is there) and --compare-models (configs/rag.yaml comparison.models
    this catalog serves) for the server; [] with the reason printed when there is no comparison,
    or when the caller gave --rag-index itself."""
    from resources.artifacts import fetch_artifact_file
    from retrieval.settings import load_rag_settings

    if "--rag-index" in {arg.split("=", 1)[0] for arg in serving_args}:
        return []  # the caller chose the index (and --compare-models) itself
    metadata = _latest_metadata(instance, "rag_index")
    if not metadata.get("artifact_uri"):
        print("  RAG comparison: off (rag_index is not materialized: run `make run` or the "
              "gxp_rag_job)", flush=True)
        return []
    wanted = load_rag_settings().comparison_models
    for model_id in wanted:
        if model_id not in served:
            why = next((line for line in missing if line.startswith(f"{model_id} (")),
                       f"{model_id} (not a local model of configs/models.yaml)")
            print(f"  RAG comparison: not compared: {why}", flush=True)
    compared = [m for m in wanted if m in served]
    if not compared:
        print("  RAG comparison: off (none of configs/rag.yaml comparison.models is served)",
              flush=True)
        return []
    try:
        index_path = fetch_artifact_file(str(metadata["artifact_uri"]), work / "rag_index.parquet",
                                         metadata.get("artifact_sha256"))
    except (OSError, ValueError) as error:
        print(f"  RAG comparison: off ({error}: materialize rag_index again)", flush=True)
        return []
    print(f"RAG comparison of {', '.join(compared)}: {_server_url(serving_args)}/compare",
          flush=True)
    return ["--rag-index", str(index_path), "--compare-models", ",".join(compared)]


def _server_url(serving_args: list[str]) -> str:
    """http://HOST:PORT the server will listen on, from its options and configs/serving.yaml."""
    from serving.__main__ import build_parser as serving_parser
    from serving.settings import load_serving_settings

    try:
        known, _ = serving_parser().parse_known_args(serving_args)
        settings = load_serving_settings(known.config)
    except (SystemExit, ValueError):  # the server reports bad options itself
        return "http://HOST:PORT"
    return f"http://{known.host or settings.host}:{known.port or settings.port}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gxplab",
        description="GxPLab: benchmark language models on GxP batch-record audits (Dagster).",
        epilog="Docs: README.md. The web UI: `make ui`. Backfills: see README 'Backfills'.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "init-instance", help=init_instance.__doc__, description=INIT_INSTANCE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).set_defaults(func=init_instance)
    commands.add_parser("sync-models", help=sync_models.__doc__).set_defaults(func=sync_models)
    run = commands.add_parser(
        "benchmark", help=benchmark.__doc__, description=BENCHMARK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument(
        "--models", nargs="*", type=_one_of("model id", _gxp_audit_model_ids),
        help="model ids from configs/models.yaml (default: all); an unknown id is an error",
    )
    run.add_argument("--splits", nargs="*", type=_one_of("split", _splits),
                     help="splits to run (default: all); an unknown split is an error")
    run.add_argument("--max-batches", type=int, help="audit only the first N batches per split")
    run.add_argument("--verbose", action="store_true", help="show Dagster's DEBUG event log")
    run.add_argument(
        "--force",
        action="store_true",
        help="re-materialize every step; by default a step whose assets are fresh (same sources, "
        "configs, options and upstream data as their last materialization) is skipped",
    )
    run.add_argument(
        "--no-training",
        action="store_true",
        help="skip the models and alignment stages (base model, adapter training, AQI) and the "
        "local models that need them: the GxP benchmark alone, about 35 s",
    )
    run.set_defaults(func=benchmark)
    served = commands.add_parser(
        "serve", help=serve.__doc__, description=SERVE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other options go to the server: --host, --port, --no-batching, --config, "
        "--rag-index, --compare-models (python -m serving --help).")
    served.set_defaults(func=serve, serving_args=[])
    board = commands.add_parser("leaderboard", help=print_leaderboard.__doc__,
                                description=print_leaderboard.__doc__)
    board.add_argument("--format", choices=LEADERBOARD_FORMATS, default="markdown",
                       help="markdown (default: a table to read), json (an array of objects, one "
                       "per model) or csv; CIs are <metric>_ci_low/_ci_high in json and csv")
    board.add_argument("--plot", metavar="PNG", help="also write the quality/cost/latency plot")
    board.set_defaults(func=print_leaderboard)
    add_models_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra and args.command != "serve":
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "serve":
        args.serving_args = extra
    if args.command in INSTANCE_COMMANDS:
        _ensure_instance(args.command)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
