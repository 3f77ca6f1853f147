"""`python -m serving`: serve local models over an OpenAI-compatible API.

    python -m serving --model base=var/artifacts/base_model/... \\
                      --model audit=var/artifacts/base_model/...+var/artifacts/gxp_audit_adapter/...
    python -m serving --catalog models.json --port 8010 --no-batching
    python -m serving --catalog models.json --rag-index var/artifacts/rag_index/all.parquet \\
                      --compare-models embedded-base,embedded-rag-sft,embedded-rag-sft-dpo
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace

from serving.catalog import ServedModel, catalog_from_args
from serving.compare import PAGE_PATH, RagComparison
from serving.engine import EngineFactory
from serving.settings import SERVING_CONFIG, ServingSettings, load_serving_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve the base model and its adapters over an OpenAI-compatible API "
                    "(/v1/models, /v1/chat/completions with streaming; /health, /ready, "
                    "/metrics; with --rag-index the RAG comparison page /compare). Clients: "
                    "litellm model 'openai/<NAME>' with api_base http://HOST:PORT/v1; the "
                    "openai client with base_url the same.",
        epilog="Auth: set the bearer token in the environment variable named by token_env "
               "(default GXPLAB_SERVE_TOKEN); without it only a loopback host is allowed.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=BASE[+ADAPTER]",
                        help="a model to serve as NAME: a base model folder (or hub id), plus "
                             "a LoRA adapter folder merged into it; repeat for more models")
    parser.add_argument("--catalog", metavar="FILE.json",
                        help="a JSON list of {name, base_model_path, adapter_path, "
                             "description}; served before any --model")
    parser.add_argument("--config", default=str(SERVING_CONFIG), metavar="FILE.yaml",
                        help="serving settings (default: %(default)s)")
    parser.add_argument("--host", help="interface to bind (default: the config's host)")
    parser.add_argument("--port", type=int, help="port (default: the config's port)")
    parser.add_argument("--no-batching", action="store_true",
                        help="generate each request alone (no dynamic batching)")
    parser.add_argument("--rag-index", metavar="PATH.parquet",
                        help="the rag_index asset's Parquet file: serves the RAG comparison "
                             "page /compare and POST /v1/rag/compare")
    parser.add_argument("--compare-models", metavar="NAME,NAME,...",
                        help="served models compared on that page, in column order (default: "
                             "those of configs/rag.yaml comparison.models that are served); "
                             "needs --rag-index")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))
    return parser


def comparison_from_args(rag_index: str | None, compare_models: str | None,
                         catalog: Sequence[ServedModel]) -> RagComparison | None:
    """The RAG comparison of --rag-index and --compare-models (None without --rag-index;
    without --compare-models: the models of configs/rag.yaml comparison.models the catalog
    serves). The names are checked against the catalog before the index is loaded."""
    if not rag_index:
        if compare_models:
            raise ValueError("--compare-models needs --rag-index PATH.parquet")
        return None
    from retrieval.settings import load_rag_settings
    from serving.compare import load_rag_comparison

    settings = load_rag_settings()
    served = [model.name for model in catalog]
    if compare_models is None:  # the configured models this catalog serves
        names = [name for name in settings.comparison_models if name in served]
        left_out = [name for name in settings.comparison_models if name not in served]
        if left_out and names:
            print(f"  RAG comparison: not served, not compared: {', '.join(left_out)}",
                  file=sys.stderr, flush=True)
    else:
        names = [name.strip() for name in compare_models.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--compare-models: no model to compare (none of configs/rag.yaml "
                         f"comparison.models {', '.join(settings.comparison_models)} is served; "
                         f"served models: {', '.join(served)})" if compare_models is None else
                         "--compare-models: expected NAME,NAME,... of served models")
    unknown = [name for name in names if name not in served]
    if unknown:
        raise ValueError(f"--compare-models: {', '.join(map(repr, unknown))} "
                         f"{'is' if len(unknown) == 1 else 'are'} not served; served models: "
                         f"{', '.join(served)}")
    return load_rag_comparison(rag_index, names, settings=settings)


def serve(catalog: Sequence[ServedModel], settings: ServingSettings, *,
          engine_factory: EngineFactory | None = None, log_level: str = "info",
          rag: RagComparison | None = None) -> None:
    """Run the server in the foreground until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    from serving.app import create_app

    app = create_app(catalog, settings, engine_factory=engine_factory, rag=rag)
    url = f"http://{settings.host}:{settings.port}/v1"
    print(f"GxPLab serving on {url} ({'batching' if settings.batching else 'no batching'}); "
          f"models: {', '.join(m.name for m in catalog)}", flush=True)
    print(f"  litellm: model='openai/<name>', api_base='{url}'", flush=True)
    if rag is not None:
        print(f"  RAG comparison of {', '.join(rag.models)} ({len(rag.index.chunks)} chunks): "
              f"http://{settings.host}:{settings.port}{PAGE_PATH}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level,
                access_log=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    try:
        settings = load_serving_settings(args.config)
        overrides: dict[str, object] = {}
        if args.host:
            overrides["host"] = args.host
        if args.port:
            overrides["port"] = args.port
        if args.no_batching:
            overrides["batching"] = False
        settings = replace(settings, **overrides)
        catalog = catalog_from_args(args.model, args.catalog)
        rag = comparison_from_args(args.rag_index, args.compare_models, catalog)
        serve(catalog, settings, log_level=args.log_level, rag=rag)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
