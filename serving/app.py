"""The FastAPI app: OpenAI-compatible endpoints over a catalog of served models.

`create_app(catalog, settings)` builds it (the tests, `python -m serving` and `gxplab serve` all
do); models load in the background once the server starts (`/ready` answers 503 until every
model is loaded). Plain Python: no Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.cache import CachedAnswer, RateLimiter, ResponseCache
from serving.catalog import ServedModel, check_catalog
from serving.compare import RagComparison, mount_rag_comparison
from serving.constrained import build_answer, options, stream_logprobs, whole_stream, with_tools
from serving.engine import NO_OPTIONS, EngineFactory, GenerateOptions, LocalEngine, ModelRunner
from serving.guardrails import detect_injection, enforce_json, redact_phi
from serving.metrics import ServingMetrics
from serving.protocol import (
    ApiError,
    ChatRequest,
    chunk_body,
    completion_body,
    completion_id,
    invalid,
    parse_chat_request,
    usage,
    usage_chunk_body,
)
from serving.settings import ServingSettings, load_json_reminders
from serving.streaming import StreamTextFilter
from synthetic.injection_screen import prepare as prepare_injection_screen
from training.constrained import TokenLogprob
from training.inference import DecodingSettings, Generation

log = logging.getLogger("serving")
access_log = logging.getLogger("serving.access")
Hook = Callable[[dict[str, Any]], None]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
CHAT_PATH = "/v1/chat/completions"


# --- state ------------------------------------------------------------------------------------

@dataclass
class ServingState:
    """Everything one app holds: catalog, runners, cache, limiter, metrics, hooks."""

    catalog: dict[str, ServedModel]
    settings: ServingSettings
    engine_factory: EngineFactory
    token: str | None
    hooks: list[Hook]
    metrics: ServingMetrics = field(default_factory=ServingMetrics)
    runners: dict[str, ModelRunner] = field(default_factory=dict)
    load_errors: dict[str, str] = field(default_factory=dict)
    cache: ResponseCache = field(init=False)
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.cache = ResponseCache(self.settings.cache_entries)
        self.limiter = RateLimiter(self.settings.rate_limit_per_minute)

    def model_status(self) -> dict[str, str]:
        return {name: "loaded" if name in self.runners else
                f"failed: {self.load_errors[name]}" if name in self.load_errors else "loading"
                for name in self.catalog}

    def runner(self, name: str) -> ModelRunner:
        if name not in self.catalog:
            raise ApiError(404, f"The model {name!r} does not exist; served models: "
                                f"{', '.join(self.catalog)}", param="model",
                           code="model_not_found")
        if name in self.runners:
            return self.runners[name]
        if name in self.load_errors:
            raise ApiError(503, f"The model {name!r} failed to load", type="server_error",
                           code="model_load_failed")
        raise ApiError(503, f"The model {name!r} is still loading", type="server_error",
                       code="model_loading", headers={"Retry-After": "2"})

    async def load_models(self) -> None:
        """Build the injection screen's classifier, then load each model in turn in a worker
        thread and start its runner (readiness waits for both; the event loop never trains)."""
        await asyncio.to_thread(prepare_injection_screen)
        s = self.settings
        for name, model in self.catalog.items():
            began = time.perf_counter()
            try:
                engine = await asyncio.to_thread(self.engine_factory, model)
            except Exception as err:
                self.load_errors[name] = f"{type(err).__name__}: {err}"
                log.error(json.dumps({"event": "model_load_failed", "model": name,
                                      "error": self.load_errors[name]}))
                continue
            runner = ModelRunner(
                engine, batching=s.batching, max_batch_size=s.max_batch_size,
                max_wait_ms=s.max_wait_ms,
                on_batch=self.metrics.batch_size.labels(name).observe,
                on_queue_depth=self.metrics.queue_depth.labels(name).set)
            runner.start()
            self.runners[name] = runner
            self.metrics.models_loaded.set(len(self.runners))
            log.info(json.dumps({"event": "model_loaded", "model": name,
                                 "adapter": bool(model.adapter_path),
                                 "load_s": round(time.perf_counter() - began, 3)}))

    def call_hooks(self, event: dict[str, Any]) -> None:
        for hook in self.hooks:
            try:
                hook(dict(event))
            except Exception:  # a tracing hook never breaks a request
                log.exception("serving hook %r failed", hook)


# --- the gateway: request id, size limit, rate limit, auth, hooks, logs, request metrics ---------

class RequestTooLarge(Exception):
    """A streamed request body grew past max_request_bytes."""


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class Gateway:
    """Pure ASGI middleware in front of the routes (nothing is read before its checks)."""

    def __init__(self, app: ASGIApp, state: ServingState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        info: dict[str, Any] = {"request_id": request_id, "path": scope["path"],
                                "method": scope["method"], "model": None, "status": None}
        scope.setdefault("state", {})["gxplab"] = info
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-request-id", request_id.encode("ascii"))]
            await send(message)

        self.state.call_hooks({"event": "start", **info})
        try:
            error = self._check(scope, headers) if scope["path"].startswith("/v1/") else None
            if error is not None:
                await _error_response(error)(scope, receive, send_with_id)
            else:
                await self.app(scope, self._limited(receive), send_with_id)
        finally:
            info["latency_s"] = round(time.perf_counter() - began, 6)
            info["status"] = info["status"] or 500
            self._record(info)

    def _check(self, scope: Scope, headers: Headers) -> ApiError | None:
        s = self.state.settings
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > s.max_request_bytes):
            return ApiError(413, f"request body over {s.max_request_bytes} bytes",
                            code="request_too_large")
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.state.limiter.acquire(client)
        if wait > 0:
            return ApiError(429, f"rate limit of {s.rate_limit_per_minute:g} requests per minute "
                                 f"exceeded", type="rate_limit_error", code="rate_limit_exceeded",
                            headers={"Retry-After": str(math.ceil(wait))})
        if self.state.token is None:
            return None
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials and hmac.compare_digest(
                credentials.strip().encode("utf-8"), self.state.token.encode("utf-8")):
            return None
        challenge = 'Bearer realm="gxplab"' + ('' if not credentials else
                                                ', error="invalid_token"')
        return ApiError(401, "missing or invalid bearer token", type="authentication_error",
                        code="invalid_api_key", headers={"WWW-Authenticate": challenge})

    def _limited(self, receive: Receive) -> Receive:
        limit, seen = self.state.settings.max_request_bytes, 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLarge()
            return message

        return limited

    def _record(self, info: dict[str, Any]) -> None:
        m = self.state.metrics
        if info["path"] == CHAT_PATH:
            model = info["model"] if info["model"] in self.state.catalog else "unknown"
            m.requests.labels(model, str(info["status"])).inc()
            m.latency.labels(model).observe(info["latency_s"])
        self.state.call_hooks({"event": "end", **info})
        if info["path"] not in ("/health", "/ready", "/metrics"):
            access_log.info(json.dumps({"event": "request", **info}, default=str))


# --- the chat completion ------------------------------------------------------------------------

def _count_header(counts: Mapping[str, Counter[str]]) -> str:
    return ",".join(f"{where}.{name}={n}" for where, c in counts.items()
                    for name, n in sorted(c.items()) if n)


class ChatService:
    """Guardrails, cache, JSON enforcement and streaming around the model runners."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.settings = state.settings
        self.guard = state.settings.guardrails
        self.reminders = load_json_reminders()
        self.metrics = state.metrics

    def _event(self, model: str, guardrail: str, rule: str, n: int = 1) -> None:
        self.metrics.guardrail_events.labels(model, guardrail, rule).inc(n)

    def screen_input(self, chat: ChatRequest, info: dict[str, Any]
                     ) -> tuple[list[dict[str, str]], dict[str, str], Counter[str]]:
        """Injection screen (flag or block) and PHI redaction of the messages; the headers."""
        headers: dict[str, str] = {}
        rules: list[str] = []
        for i, (message, retrieved) in enumerate(zip(chat.messages, chat.retrieved,
                                                     strict=True)):
            if message["role"] != "user" and not retrieved:
                continue
            screen = detect_injection(message["content"])
            if not screen.flagged:
                continue
            source = "retrieved" if retrieved else "user"
            for rule in screen.rules:
                self._event(chat.model, f"injection_{source}", rule)
            rules += [r for r in screen.rules if r not in rules]
            log.warning(json.dumps({"event": "prompt_injection", "request_id": info["request_id"],
                                    "model": chat.model, "message": i, "source": source,
                                    "rules": list(screen.rules),
                                    "policy": self.guard.injection_policy}))
            if self.guard.injection_policy == "block":
                raise ApiError(400, f"messages[{i}].content: prompt injection detected "
                                    f"({', '.join(screen.rules)})",
                               param=f"messages[{i}].content", code="prompt_injection_detected")
        if rules:
            headers["x-gxplab-injection"] = ",".join(rules)
        counts: Counter[str] = Counter()
        messages = [dict(m) for m in chat.messages]
        if self.guard.redact_phi:
            for message in messages:
                redaction = redact_phi(message["content"])
                message["content"] = redaction.text
                counts.update(redaction.counts)
            for name, n in counts.items():
                self._event(chat.model, "phi_input", name, n)
        return messages, headers, counts

    async def complete(self, chat: ChatRequest, info: dict[str, Any]) -> Response:
        messages, headers, phi_in = self.screen_input(chat, info)
        cacheable = chat.decoding.temperature == 0 and self.settings.cache_entries > 0
        try:
            cached, cache_status = await self.answer(chat, messages, phi_in, cacheable=cacheable)
        except ApiError as err:  # the guardrails' headers go with an error too
            err.headers = {**headers, **err.headers}
            raise
        if cache_status:
            headers["x-gxplab-cache"] = cache_status
        info.update(prompt_tokens=cached.usage["prompt_tokens"],
                    completion_tokens=cached.usage["completion_tokens"],
                    tokens=cached.usage["total_tokens"], cache=headers.get("x-gxplab-cache"))
        generation_headers = dict(cached.headers)
        if headers.get("x-gxplab-cache") == "hit":
            del generation_headers["x-gxplab-batch-size"]  # nothing was generated now
        else:
            info["batch_size"] = int(generation_headers["x-gxplab-batch-size"])
        phi_header = _count_header({"input": phi_in, "output": Counter(cached.phi_output)})
        if phi_header:
            headers["x-gxplab-phi-redactions"] = phi_header
        body = completion_body(completion_id(), chat.model, cached.content,
                               cached.finish_reason, cached.usage, logprobs=cached.logprobs,
                               tool_calls=cached.tool_calls)
        return JSONResponse(body, headers={**generation_headers, **headers})

    async def answer(self, chat: ChatRequest, messages: list[dict[str, str]],
                     phi_in: Counter[str], *, cacheable: bool) -> tuple[CachedAnswer, str | None]:
        """The reply to screened `messages`: from the response cache when `cacheable` and
        there, else generated by the model's runner (batched with what else waits) and cached;
        with the cache status ('hit', 'miss', or None when not cacheable)."""
        runner = self.state.runner(chat.model)  # an unknown model fails before any metric
        key = ResponseCache.key(chat, messages) if cacheable else ""
        cached = self.state.cache.get(key) if cacheable else None
        status = ("hit" if cached else "miss") if cacheable else None
        if status:
            self.metrics.cache.labels(chat.model, status).inc()
        if cached is None:
            cached = await self._generate(chat, messages, runner, phi_in)
            if cacheable:
                self.state.cache.put(key, cached)
        return cached, status

    async def _generate(self, chat: ChatRequest, messages: list[dict[str, str]],
                        runner: ModelRunner, phi_in: Counter[str]) -> CachedAnswer:
        if runner.constrained:
            return await self._generate_constrained(chat, messages, runner)
        if chat.logprobs or chat.tool_plan:
            name = "logprobs" if chat.logprobs else "tools"
            raise invalid(name, f"is not supported by the engine of model {chat.model!r}")
        fmt = chat.response_format
        attempts = 1 + (self.guard.json_retries if fmt.is_json else 0)
        prompt_tokens = completion_tokens = 0
        attempt_messages: list[dict[str, str]] = messages
        error = ""
        for attempt in range(1, attempts + 1):
            generation, batch_size = await self._run(runner, attempt_messages, chat.decoding)
            prompt_tokens += generation.prompt_tokens
            completion_tokens += generation.completion_tokens
            self.metrics.tokens.labels(chat.model, "prompt").inc(generation.prompt_tokens)
            self.metrics.tokens.labels(chat.model, "completion").inc(
                generation.completion_tokens)
            headers = {"x-gxplab-batch-size": str(batch_size)}
            if generation.truncated_prompt_tokens:
                headers["x-gxplab-truncated-prompt-tokens"] = \
                    str(generation.truncated_prompt_tokens)
            if not fmt.is_json:
                content, phi_out = generation.text, Counter[str]()
                if self.guard.redact_phi:
                    redaction = redact_phi(content)
                    content, phi_out = redaction.text, Counter(redaction.counts)
            else:
                check = enforce_json(generation.text, fmt.schema, redact=self.guard.redact_phi)
                headers["x-gxplab-json-attempts"] = str(attempt)
                if not check.ok:
                    error = check.error or "invalid JSON"
                    self._event(chat.model, "json", "retry" if attempt < attempts else "invalid")
                    attempt_messages = [*messages, {"role": "user",
                                                    "content": self._reminder(chat)}]
                    continue
                content = json.dumps(check.value, ensure_ascii=False)
                phi_out = Counter(check.redactions)
            for name, n in phi_out.items():
                self._event(chat.model, "phi_output", name, n)
            finish = "length" if generation.completion_tokens >= chat.decoding.max_new_tokens \
                else "stop"
            return CachedAnswer(content, finish, usage(prompt_tokens, completion_tokens),
                                headers, dict(phi_out))
        raise ApiError(422, f"the model's answer is not a valid JSON object for response_format "
                            f"{fmt.type} after {attempts} attempt(s): {error}",
                       type="invalid_response_error", param="response_format",
                       code="invalid_model_output")

    def _reminder(self, chat: ChatRequest) -> str:
        from string import Template

        fmt = chat.response_format
        if fmt.schema is None:
            return self.reminders.json_object
        return Template(self.reminders.json_schema).safe_substitute(
            schema=json.dumps(fmt.schema, separators=(",", ":"), sort_keys=True))

    async def _generate_constrained(self, chat: ChatRequest, messages: list[dict[str, str]],
                                    runner: ModelRunner) -> CachedAnswer:
        """One generation under the request's schema (serving/constrained.py)."""
        generation, batch_size = await self._run(
            runner, with_tools(messages, chat.tool_plan), chat.decoding, options(chat))
        self.metrics.tokens.labels(chat.model, "prompt").inc(generation.prompt_tokens)
        self.metrics.tokens.labels(chat.model, "completion").inc(generation.completion_tokens)
        headers = {"x-gxplab-batch-size": str(batch_size)}
        if generation.truncated_prompt_tokens:
            headers["x-gxplab-truncated-prompt-tokens"] = str(generation.truncated_prompt_tokens)
        answer = build_answer(chat, generation, headers, redact=self.guard.redact_phi)
        for name, n in answer.phi_output.items():
            self._event(chat.model, "phi_output", name, n)
        return answer

    @staticmethod
    async def _run(runner: ModelRunner, messages: list[dict[str, str]],
                   decoding: DecodingSettings, options: GenerateOptions = NO_OPTIONS
                   ) -> tuple[Generation, int]:
        try:
            return await runner.generate(messages, decoding, options)
        except ValueError as err:  # e.g. max_tokens leaves no room in the model's context
            raise invalid("max_tokens", str(err)) from None

    async def stream(self, chat: ChatRequest, info: dict[str, Any]) -> Response:
        runner = self.state.runner(chat.model)
        if not runner.constrained and (chat.response_format.is_json or chat.logprobs
                                       or chat.tool_plan):
            raise invalid("stream", "cannot be true with a JSON response_format, logprobs or "
                                    f"tools: the engine of model {chat.model!r} cannot constrain "
                                    "its answer, which is validated whole before it is sent")
        if chat.tool_plan:  # a tool call is decided on the whole answer: sent in one piece
            return whole_stream(chat, await self.complete(chat, info))
        messages, headers, phi_in = self.screen_input(chat, info)
        cid, created, model = completion_id(), int(time.time()), chat.model
        headers["x-gxplab-batch-size"] = "1"
        phi_header = _count_header({"input": phi_in})
        if phi_header:
            headers["x-gxplab-phi-redactions"] = phi_header
        info["batch_size"] = 1

        def event(payload: Mapping[str, Any]) -> str:
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            text_filter = StreamTextFilter(chat.decoding.stop_strings,
                                           redact=self.guard.redact_phi)
            final: Generation | None = None
            entries: list[TokenLogprob] = []
            stream_options = options(chat) if runner.constrained else NO_OPTIONS
            yield event(chunk_body(cid, model, created, {"role": "assistant", "content": ""}))
            try:
                async with contextlib.aclosing(runner.stream(messages, chat.decoding,
                                                             stream_options)) as items:
                    async for item in items:
                        if isinstance(item, Generation):
                            final = item
                            continue
                        if isinstance(item, TokenLogprob):
                            entries.append(item)
                            continue
                        piece = text_filter.feed(item)
                        if piece:
                            yield event(chunk_body(cid, model, created, {"content": piece}))
            except Exception as err:
                status = 400 if isinstance(err, ValueError) else 500
                info["status"] = status
                log.error(json.dumps({"event": "stream_failed", "request_id": info["request_id"],
                                      "model": model, "error": type(err).__name__}))
                message = str(err) if status == 400 else "generation failed"
                yield event({"error": {"message": message, "type": "server_error"
                                       if status == 500 else "invalid_request_error",
                                       "param": None, "code": None}})
                yield "data: [DONE]\n\n"
                return
            rest = text_filter.finish()
            logprobs = stream_logprobs(chat, entries, text_filter.counts)
            if rest or logprobs:
                yield event(chunk_body(cid, model, created, {"content": rest},
                                       logprobs=logprobs))
            for name, n in text_filter.counts.items():
                self._event(model, "phi_output", name, n)
            prompt = final.prompt_tokens if final else 0
            completion = final.completion_tokens if final else 0
            self.metrics.tokens.labels(model, "prompt").inc(prompt)
            self.metrics.tokens.labels(model, "completion").inc(completion)
            info.update(prompt_tokens=prompt, completion_tokens=completion,
                        tokens=prompt + completion)
            finish = final.finish_reason if final and runner.constrained else \
                "length" if completion >= chat.decoding.max_new_tokens else "stop"
            yield event(chunk_body(cid, model, created, {}, finish))
            if chat.include_usage:
                yield event(usage_chunk_body(cid, model, created, usage(prompt, completion)))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})


# --- the app ------------------------------------------------------------------------------------

def _read_token(settings: ServingSettings) -> str | None:
    token = os.environ.get(settings.token_env) or None
    if token is None:
        if not settings.loopback:
            raise ValueError(f"refusing to serve on {settings.host!r} without a bearer token: set "
                             f"{settings.token_env} or bind a loopback host")
        log.warning("no token set: loopback only, auth disabled")
    return token


def create_app(catalog: Iterable[ServedModel], settings: ServingSettings, *,
               engine_factory: EngineFactory | None = None,
               hooks: Sequence[Hook] = (), rag: RagComparison | None = None) -> FastAPI:
    """The app serving `catalog`. `engine_factory(model)` builds each model's engine (default:
    `LocalEngine.load`, a LocalGenerator with the adapter merged); `hooks` are called with a
    dict on every request's start and end (request_id, path, model, status, latency_s, tokens).
    `rag` enables the RAG comparison (/compare, /v1/rag/compare: serving/compare.py). The bearer
    token is read from `settings.token_env` now."""
    models = check_catalog(catalog)
    factory = engine_factory or (lambda model: LocalEngine.load(
        model, torch_threads=settings.torch_threads))
    state = ServingState(catalog={m.name: m for m in models}, settings=settings,
                         engine_factory=factory, token=_read_token(settings), hooks=list(hooks))
    service = ChatService(state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(state.load_models())
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            for runner in state.runners.values():
                await runner.close()

    app = FastAPI(title="GxPLab serving", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.serving = state
    app.add_middleware(Gateway, state=state)

    async def api_error(_request: Request, err: Exception) -> Response:
        assert isinstance(err, ApiError)
        return _error_response(err)

    async def too_large(_request: Request, _err: Exception) -> Response:
        return _error_response(ApiError(413, f"request body over {settings.max_request_bytes} "
                                             f"bytes", code="request_too_large"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestTooLarge, too_large)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        status = state.model_status()
        ok = all(v == "loaded" for v in status.values())
        return JSONResponse({"ready": ok, "models": status}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    def model_card(model: ServedModel) -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": 0, "owned_by": "gxplab",
                "description": model.description, "adapter": bool(model.adapter_path),
                "ready": model.name in state.runners}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(m) for m in state.catalog.values()]}

    @app.get("/v1/models/{name}")
    async def get_model(name: str) -> dict[str, Any]:
        if name not in state.catalog:
            raise ApiError(404, f"The model {name!r} does not exist", param="model",
                           code="model_not_found")
        return model_card(state.catalog[name])

    @app.post(CHAT_PATH)
    async def chat_completions(request: Request) -> Response:
        info: dict[str, Any] = request.state.gxplab
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise invalid("body", f"is not valid JSON: {err}") from None
        chat = parse_chat_request(body, settings)
        info["model"] = chat.model
        handle: Callable[[ChatRequest, dict[str, Any]], Awaitable[Response]] = \
            service.stream if chat.stream else service.complete
        try:
            return await handle(chat, info)
        except ApiError:
            raise
        except Exception as err:
            log.exception("chat completion failed (request %s)", info["request_id"])
            raise ApiError(500, "generation failed", type="server_error",
                           code="engine_error") from err

    mount_rag_comparison(app, state, service, rag)
    return app
