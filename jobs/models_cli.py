"""`gxplab models {list,promote,rollback,history}`: adapter versions and their aliases in the
results warehouse's model registry (docs/training.md)."""

from __future__ import annotations

import argparse
import os
import sys

MODELS_EPILOG = """\
examples:
  gxplab models list --task qlora_adapter
  gxplab models promote qlora_adapter 5f1c2e9a-3f2a1b9c04d7 --reason "GxP F1 0.82 > 0.78"
  gxplab models rollback qlora_adapter --reason "false positives on control_clean"
  gxplab models history qlora_adapter

The adapter assets register a version per materialization; an alias (default: production) points
at one version of a task, and every move is kept in the alias history. The results warehouse is
$GXPLAB_WAREHOUSE_URL, else var/warehouse.sqlite in the project (the file the Dagster definitions
use). See docs/warehouse.md."""


def _model_registry():
    """The results warehouse the Dagster definitions use, upgraded to the current schema."""
    from jobs.cli import PROJECT_ROOT
    from resources.clients.warehouse import URL_ENV, Warehouse
    from resources.warehouse import default_warehouse_url

    warehouse = Warehouse(os.environ.get(URL_ENV) or default_warehouse_url(PROJECT_ROOT))
    warehouse.upgrade()
    return warehouse


def _clip(value: object, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _when(value) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _metrics_text(metrics: dict | None) -> str:
    items = (metrics or {}).items()
    return ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in items)


def _text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    cells = (zip(row, widths, strict=True) for row in lines)
    return "\n".join("  ".join(c.ljust(w) for c, w in row).rstrip() for row in cells)


def _check_task(warehouse, task: str) -> None:
    """ValueError naming the registered tasks when `task` has no registered version."""
    tasks = sorted({v["task"] for v in warehouse.list_model_versions()})
    if task not in tasks:
        raise ValueError(f"unknown task {task!r}: no model version is registered for it "
                         f"(registered tasks: {', '.join(tasks) or 'none'})")


def _models_list(warehouse, args: argparse.Namespace) -> None:
    if args.task:
        _check_task(warehouse, args.task)
    versions = warehouse.list_model_versions(args.task)
    if not versions:
        where = f" for task {args.task!r}" if args.task else ""
        print(f"no model versions registered{where} in {warehouse.url}")
        return
    headers = ["TASK", "VERSION", "ALIASES", "CREATED (UTC)", "BASE MODEL", "SHA256", "METRICS"]
    rows = [
        [
            v["task"],
            v["version"],
            ",".join(v["aliases"]) or "-",
            _when(v["created_at"]),
            _clip(v["base_model"], 32) or "-",
            (v["archive_sha256"] or "-")[:12],
            _clip(_metrics_text(v["metrics"]), 48) or "-",
        ]
        for v in versions
    ]
    print(_text_table(headers, rows))


def _models_promote(warehouse, args: argparse.Namespace) -> None:
    event = warehouse.promote(args.task, args.version, args.alias, args.reason)
    if not event["changed"]:
        print(f"{args.task}: {args.alias} already points at {args.version}; nothing changed")
        return
    was = event["from_version"] or "unset"
    print(f"{args.task}: {args.alias} -> {event['to_version']} (was {was})")


def _models_rollback(warehouse, args: argparse.Namespace) -> None:
    event = warehouse.rollback(args.task, args.alias, args.reason)
    print(
        f"{args.task}: {args.alias} rolled back to {event['to_version']} "
        f"(was {event['from_version']}); a further rollback goes to "
        f"{event['previous_version'] or 'nothing (no earlier version)'}"
    )


def _models_history(warehouse, args: argparse.Namespace) -> None:
    _check_task(warehouse, args.task)
    events = warehouse.alias_history(args.task, args.alias)
    if not events:
        print(f"alias {args.alias!r} of task {args.task!r} was never set")
        return
    headers = ["AT (UTC)", "ACTION", "FROM", "TO", "ACTOR", "REASON"]
    rows = [
        [_when(e["at"]), e["action"], e["from_version"] or "-", e["to_version"],
         e["actor"] or "-", _clip(e["reason"], 60) or "-"]
        for e in events
    ]  # fmt: skip
    print(_text_table(headers, rows))


def models(args: argparse.Namespace) -> int:
    """List model versions; promote or roll back an alias (production) in the results warehouse."""
    from resources.clients.warehouse import WarehouseError

    try:
        warehouse = _model_registry()
        try:
            args.models_func(warehouse, args)
        finally:
            warehouse.close()
    except (WarehouseError, ValueError) as exc:  # user errors: unknown task/version, bad name
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_models_parser(commands) -> None:
    """The `models` subcommand and its actions, on `commands` (gxplab's subparsers)."""
    parser = commands.add_parser(
        "models",
        help=models.__doc__,
        description=models.__doc__,
        epilog=MODELS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=models)
    actions = parser.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def add(name: str, func, help_text: str, example: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(models_func=func)
        return sub

    listing = add(
        "list",
        _models_list,
        "registered versions, newest first, with the aliases that point at each",
        "gxplab models list --task qlora_adapter",
    )
    listing.add_argument("--task", help="only this task (e.g. qlora_adapter)")
    promote = add(
        "promote",
        _models_promote,
        "point an alias (default production) of TASK at a registered VERSION",
        'gxplab models promote qlora_adapter 5f1c2e9a-3f2a1b9c04d7 --reason "better GxP F1"',
    )
    promote.add_argument("task", metavar="TASK", help="e.g. qlora_adapter, gxp_audit_adapter")
    promote.add_argument("version", metavar="VERSION", help="a version from `gxplab models list`")
    rollback = add(
        "rollback",
        _models_rollback,
        "move an alias of TASK back to the version it pointed at before the current one",
        'gxplab models rollback qlora_adapter --reason "regression on control_clean"',
    )
    rollback.add_argument("task", metavar="TASK", help="e.g. qlora_adapter")
    history = add(
        "history",
        _models_history,
        "promotions and rollbacks of an alias of TASK, newest first",
        "gxplab models history qlora_adapter",
    )
    history.add_argument("task", metavar="TASK", help="e.g. qlora_adapter")
    for sub in (promote, rollback, history):
        sub.add_argument("--alias", default="production", help="alias name (default: production)")
    for sub in (promote, rollback):
        sub.add_argument("--reason", help="why, kept in the alias history (an audit trail)")
