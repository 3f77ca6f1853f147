"""The GxPLab server (serving/) as a client sees it: started on loopback for one evaluation step,
or an already running one (`make serve`), then called through litellm like any API model.

`served_generate` is the `Generate` function of a `served` registry entry: every chat goes to the
server as an OpenAI chat completion (`openai/<served model>` with `api_base`) through the LLM
client, concurrently, so the server's dynamic batching merges them. Plain Python: no Dagster.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from scoring.model_registry import CandidateModel, resolve_api_base
from serving.settings import SERVING_CONFIG, serving_token_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOKEN_ENV = serving_token_env()


@dataclass(frozen=True)
class ServedAnswer:
    """One answer in the shape scoring/record_audit.py's `Generated` asks for."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    truncated_prompt_tokens: int = 0
    error: str | None = None  # the call failed (after its retries): no answer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_server(catalog: Sequence[Mapping[str, Any]], *, token_env: str = DEFAULT_TOKEN_ENV,
                 startup_timeout_s: float = 300.0, settings: Mapping[str, Any] | None = None,
                 server_args: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """Start `python -m serving` on a free loopback port for `catalog` (a list of {name,
    base_model_path, adapter_path}) with a fresh bearer token; yield (api_base, token) once
    /ready answers; stop it on exit. `settings` override fields of configs/serving.yaml (the
    rate limit is off unless given); `server_args` are more options (e.g. --no-batching). A
    server that dies or never gets ready is a RuntimeError with the tail of its log (the token
    is never in it)."""
    import httpx

    port = _free_port()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="gxplab-serve-") as folder:
        catalog_path = Path(folder) / "catalog.json"
        catalog_path.write_text(json.dumps(list(catalog), default=str), encoding="utf-8")
        # The server is this step's own: its one client is not rate limited (it would otherwise
        # meet the per-client limit of configs/serving.yaml on a large split).
        config = {**yaml.safe_load(SERVING_CONFIG.read_text(encoding="utf-8")),
                  "rate_limit_per_minute": 0, **(settings or {})}
        config_path = Path(folder) / "serving.yaml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "serving", "--catalog", str(catalog_path),
                 "--config", str(config_path),
                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                 *server_args],
                cwd=PROJECT_ROOT, env={**os.environ, token_env: token}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the GxPLab server exited with {process.returncode} "
                                       f"before it was ready:\n{_tail(log_path)}")
                try:
                    answer = httpx.get(f"{base}/ready", timeout=2)
                    if answer.status_code == 200:
                        break
                    failed = {name: status for name, status in
                              answer.json().get("models", {}).items()
                              if str(status).startswith("failed")}
                    if failed:  # the server stays up; a model that cannot load never will
                        raise RuntimeError(f"the GxPLab server could not load {failed}")
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the GxPLab server was not ready after "
                                       f"{startup_timeout_s:.0f} s:\n{_tail(log_path)}")
                time.sleep(0.5)
            yield f"{base}/v1", token
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop `process`, started with start_new_session=True, and everything it started: SIGTERM to
    its process group, SIGKILL after `timeout_s`; waits for it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # The leader is gone; a child of its that outlived it would still hold the port.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


_POLL_S = 0.5


def run_server(command: Sequence[str], env: Mapping[str, str] | None = None,
               stop_timeout_s: float = 15.0) -> int:
    """Run the server `command` in the foreground in its own process group until it exits, and
    return its exit status. SIGINT and SIGTERM (and any exception here) stop the whole group and
    wait for it (stop_process_group); then the status is 128 + the first signal's number. Call it
    from the main thread (signal handlers).

    The handlers only note the signal and the loop below acts on it, so a signal at any moment
    (while the child starts, or while it is being stopped) can neither leave it running nor cut
    its stopping short."""
    received: list[int] = []
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, _frame: received.append(signum))
                for signum in handled}
    try:
        process = subprocess.Popen(list(command), env=dict(env) if env is not None else None,
                                   start_new_session=True)
        try:
            while not received:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    return process.wait(timeout=_POLL_S)
            return 128 + received[0]
        finally:
            stop_process_group(process, stop_timeout_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-size:]


@contextmanager
def server_token(name: str, value: str) -> Iterator[None]:
    """Environment variable `name` set to the server's token `value` for the block (the LLM
    client reads the api key from the environment, by the entry's api_key_env)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def ask_server(client: Any, target: CandidateModel, chats: Sequence[list[dict[str, str]]], *,
               model_key: str, progress: Any = None,
               json_schema: Mapping[str, Any] | None = None) -> list[ServedAnswer]:
    """Each chat as one chat completion of `target` (a litellm entry whose api_base is the
    server), concurrently through `client` (resources/clients/llm.LLMClient) so the server's
    dynamic batching merges them; `model_key` (the model files' versions) is part of every
    cache key, so a retrained adapter is asked anew. A failed call is an empty answer with its
    `error` set (scoring counts it as a failed call, not as a wrong answer). The
    latency is the model's: a cache hit reports the call that produced the answer, not the
    lookup (as scoring/candidate_runner.summarize_calls does for API models). `json_schema`:
    the answer's schema, sent when `target.response_format` is json_schema."""
    requests = [(f"{target.id}-{i}", chat, f"{model_key}:{i}") for i, chat in enumerate(chats)]
    extra = {"json_schema": json_schema} if json_schema is not None else {}
    results = client.complete_many(target, requests, progress=progress, **extra)
    return [ServedAnswer(text=r.text or "", prompt_tokens=r.prompt_tokens or 0,
                         completion_tokens=r.completion_tokens or 0,
                         latency_s=(r.original_latency_s if r.cached else r.latency_s) or 0.0,
                         error=None if r.status == "ok" else (r.error or "call failed"))
            for r in results]


def served_api_model(model: CandidateModel, api_base: str, **changes: Any) -> CandidateModel:
    """`model` (a served or local entry) as the litellm entry `openai/<served name>` at
    `api_base`, with `changes` (e.g. response_format) applied."""
    name = model.served_model or model.id
    return replace(model, kind="litellm", litellm_model=f"openai/{name}", api_base=api_base,
                   api_base_env=None, **changes)


def served_generate(model: CandidateModel, catalog_entry: Mapping[str, Any], client: Any, *,
                    model_key: str, log: Any = print,
                    json_schema: Mapping[str, Any] | None = None):
    """The `Generate` function of a served model: each chat is one chat completion through
    `client` (ask_server; `json_schema` as there). With `model.api_base_env` set, the running
    server there answers; otherwise one is started for the call and stopped after it."""

    def generate(chats: Sequence[list[dict[str, str]]], progress: Any = None) -> list:
        running = resolve_api_base(model) if model.api_base_env else None
        if running:
            log(f"{model.id}: answered by the GxPLab server at ${model.api_base_env}")
            return ask_server(client, served_api_model(model, running), chats,
                              model_key=model_key, progress=progress, json_schema=json_schema)
        token_env = model.api_key_env or DEFAULT_TOKEN_ENV
        with local_server([catalog_entry], token_env=token_env) as (api_base, token):
            log(f"{model.id}: GxPLab server started on {api_base} for {len(chats)} chats")
            with server_token(token_env, token):
                return ask_server(client, served_api_model(model, api_base), chats,
                                  model_key=model_key, progress=progress,
                                  json_schema=json_schema)

    return generate
