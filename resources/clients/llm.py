"""The litellm client used for every LLM call: bounded concurrency, retries, a disk cache, cost.

Plain Python (no dagster): the Dagster resource wraps it, a training process builds it directly.

- Retries: our own policy (litellm and the provider SDK are told not to retry, so attempts are
  counted) on 429, 5xx, timeouts and connection errors; other 4xx errors (400, 401, 404, ...) fail
  at once. The wait is the provider's Retry-After when it sends one (bounded), else exponential
  backoff: full jitter from 0.25 s for 5xx, timeouts and connection errors, equal jitter from
  0.5 s for a 429 without Retry-After (`_backoff_s`). A concurrency slot is held per attempt, never
  during the backoff sleep, and a retry gets the next free slot first.
- Cache: a hit makes no HTTP call and costs 0 (the first call's cost is kept in original_cost_usd).
- Secrets: keys are read from the environment at call time, passed only to litellm, and scrubbed
  from every error text; the registry and the results only hold variable names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import diskcache
import yaml

from scoring.geval import score_token_logprobs
from scoring.model_output import OUTPUT_JSON_SCHEMA
from scoring.model_registry import (
    CandidateModel,
    model_availability,
    resolve_api_base,
    resolve_litellm_model,
)

# Must be set before litellm is first imported (lazily, in _litellm()): use the cost map bundled
# with the installed litellm instead of fetching one from the internet at import time.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CACHE_FORMAT = "gxplab-llm-cache-v1"  # bump to invalidate every cached answer
KEY_PLACEHOLDER = "no-key-configured"
_SCRUBBED = "***"
_MIN_SECRET_CHARS = 4  # shorter values would mangle ordinary text and are no real secret
_T = TypeVar("_T")

Request = tuple[str, Sequence[Mapping[str, Any]], str]  # (request_id, messages, cache_key)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LLMCallResult:
    """Outcome of one chat completion (or cache hit). `error` never holds a secret."""

    request_id: str
    model_id: str
    litellm_model: str
    text: str | None
    status: str  # "ok" | "error"
    error: str | None
    attempts: int  # HTTP attempts made by this call; 0 for a cache hit
    latency_s: float  # from first acquiring a concurrency slot to the answer, retries included
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None  # spent by this call: 0.0 for a cache hit, None if unpriced
    cost_source: str  # "model_pricing.yaml" | "litellm" | "unpriced"
    cached: bool
    cache_key: str
    original_cost_usd: float | None = None  # cost of the call that produced the answer
    original_latency_s: float | None = None  # latency of the call that produced the answer
    # With the model's top_logprobs: {JSON key: top logprobs at its 1-5 score digit} (G-Eval)
    logprobs: dict[str, list[dict[str, Any]]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def _litellm() -> ModuleType:
    """Import litellm once (a few seconds), quietly and without telemetry."""
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout for every error
    return litellm


def load_pricing(path: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """configs/model_pricing.yaml as {model id or litellm model: {input_per_1m, output_per_1m}}."""
    path = Path(path) if path else CONFIG_DIR / "model_pricing.yaml"
    with path.open(encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    return check_pricing(raw.get("models") or {}, str(path))


def check_pricing(pricing: Mapping[str, Any], source: str = "pricing") -> dict[str, dict[str, Any]]:
    """Check that every entry has non-negative input_per_1m and output_per_1m numbers."""
    for name, entry in pricing.items():
        for field in ("input_per_1m", "output_per_1m"):
            value = entry.get(field) if isinstance(entry, Mapping) else None
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{source}: models.{name} field {field!r}: {value!r} must be a "
                                 "number >= 0 (USD per 1M tokens)")
    return {name: dict(entry) for name, entry in pricing.items()}


class _Slots:
    """A semaphore whose waiting retries are served before waiting first attempts.

    Written here because asyncio.Semaphore serves its waiters first come, first served: a retry
    would queue behind every request not yet started, and the run would end with a tail of retry
    chains. Served first, a retry's backoff overlaps with the other requests' work instead."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []  # heap: priority, order
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, *, retry: bool) -> AsyncIterator[None]:
        await self._acquire(0 if retry else 1)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled
                self._release()
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter still waiting, else free it."""
        while self._waiters:
            waiter = heapq.heappop(self._waiters)[2]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


@dataclass
class _ModelLimits:
    """Per event loop and model: the concurrency slots and the requests-per-minute pacing."""

    slots: _Slots
    interval_s: float
    next_start: float = 0.0

    async def pace(self) -> None:
        if self.interval_s <= 0:
            return
        now = time.monotonic()
        start = max(now, self.next_start)
        self.next_start = start + self.interval_s
        await asyncio.sleep(start - now)


_LimitsByLoop = weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _ModelLimits]]


class LLMClient:
    """Chat completions through litellm with concurrency bounds, retries, disk cache and cost."""

    def __init__(self, cache_dir: str | Path | None = None, max_concurrency: int = 16,
                 max_retries: int = 4, backoff_base_s: float = 0.25, backoff_max_s: float = 20.0,
                 timeout_s: float = 60.0, pricing: Mapping[str, Any] | None = None,
                 throttle_backoff_base_s: float = 0.5) -> None:
        """`pricing` None loads configs/model_pricing.yaml; pass {} to use litellm's map only.
        `backoff_base_s` paces retries of 5xx, timeouts and connection errors,
        `throttle_backoff_base_s` those of a 429 without Retry-After (see `_backoff_s`)."""
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.throttle_backoff_base_s = throttle_backoff_base_s
        self.timeout_s = timeout_s
        self.pricing = load_pricing() if pricing is None else check_pricing(pricing)
        # litellm 1.106's own cache (litellm.caching.Cache(type="disk")) is not used: its cache-hit
        # path imports litellm.proxy, which needs fastapi (ModuleNotFoundError here), the cache is
        # one process-global object (litellm.cache) shared by every client and every litellm call,
        # writes happen in fire-and-forget tasks and errors are swallowed. We use diskcache, the
        # store behind litellm's disk cache, directly: one store per client, synchronous writes,
        # our own key (model, prompt version, messages hash, sampling settings).
        self._cache = diskcache.Cache(str(cache_dir)) if cache_dir else None
        # Semaphores belong to one event loop; complete_many starts a new loop per call.
        self._limits: _LimitsByLoop = weakref.WeakKeyDictionary()
        self._limits_lock = threading.Lock()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()

    def cache_key_for(self, model: CandidateModel, messages: Sequence[Mapping[str, Any]],
                      cache_key: str, json_schema: Mapping[str, Any] | None = None) -> str:
        """Disk key: the caller's key plus everything else that changes the answer."""
        material = {
            "format": CACHE_FORMAT, "caller_key": cache_key, "model_id": model.id,
            "litellm_model": resolve_litellm_model(model), "temperature": model.temperature,
            "max_tokens": model.max_tokens, "response_format": model.response_format,
            # Hash the messages here as well: a caller reusing a key for other messages must not
            # be served another prompt's answer.
            "messages": _sha256(list(messages)),
        }
        # Only when set: the keys of answers cached before these options existed stay valid.
        if model.top_logprobs:
            material["top_logprobs"] = model.top_logprobs
        if json_schema is not None:
            material["json_schema"] = _sha256(json_schema)
        return f"{model.id}:{_sha256(material)}"

    def complete_many(self, model: CandidateModel, requests: Sequence[Request],
                      progress: Progress | None = None, *,
                      json_schema: Mapping[str, Any] | None = None) -> list[LLMCallResult]:
        """Run all requests concurrently (bounded); results in input order. `json_schema`: the
        answer's schema, sent as response_format json_schema when the model asks for that
        format (instead of the audit output schema)."""
        total, done = len(requests), 0

        async def one(request_id: str, messages: Sequence[Mapping[str, Any]],
                      key: str) -> LLMCallResult:
            nonlocal done
            result = await self.acomplete(model, messages, cache_key=key, request_id=request_id,
                                          json_schema=json_schema)
            done += 1
            if progress is not None:
                progress(done, total)
            return result

        async def run_all() -> list[LLMCallResult]:
            return list(await asyncio.gather(*(one(*request) for request in requests)))

        return _run_coroutine(run_all())

    async def acomplete(self, model: CandidateModel, messages: Sequence[Mapping[str, Any]], *,
                        cache_key: str, request_id: str = "",
                        json_schema: Mapping[str, Any] | None = None) -> LLMCallResult:
        """One chat completion for `model`, served from the cache when possible."""
        if model.kind != "litellm":
            raise ValueError(f"model {model.id!r} is kind {model.kind!r}, not an LLM")
        started = time.perf_counter()
        litellm_model = resolve_litellm_model(model)
        key = self.cache_key_for(model, messages, cache_key, json_schema)
        base = {"request_id": request_id, "model_id": model.id, "litellm_model": litellm_model,
                "cache_key": key}
        hit = self._cache_get(key)
        if hit is not None:
            return LLMCallResult(
                **base, text=hit["text"], status="ok", error=None, attempts=0,
                latency_s=time.perf_counter() - started, prompt_tokens=hit["prompt_tokens"],
                completion_tokens=hit["completion_tokens"], cost_usd=0.0,
                cost_source=hit["cost_source"], cached=True,
                original_cost_usd=hit["cost_usd"], original_latency_s=hit["latency_s"],
                logprobs=hit.get("logprobs"))
        available, reason = model_availability(model)
        if not available:
            return _failure(base, reason, attempts=0, latency_s=0.0)
        kwargs = self._call_kwargs(model, messages, json_schema)
        return await self._call_with_retries(model, kwargs, base, self._limits_for(model))

    async def _call_with_retries(self, model: CandidateModel, kwargs: dict[str, Any],
                                 base: dict[str, Any], limits: _ModelLimits) -> LLMCallResult:
        """Each attempt holds a concurrency slot only while its request is in flight: the slot is
        released before the backoff sleep, so that other requests use it meanwhile; a retry then
        gets the next free slot before the requests not yet started."""
        litellm = _litellm()
        started, attempts = 0.0, 0
        while True:
            attempts += 1
            async with limits.slots.hold(retry=attempts > 1):
                if attempts == 1:
                    started = time.perf_counter()
                await limits.pace()
                try:
                    response = await litellm.acompletion(**kwargs)
                    break
                except tuple(litellm.LITELLM_EXCEPTION_TYPES) as exc:
                    error = self._scrub(f"{type(exc).__name__}: {exc}", model)
                    if not _is_retryable(exc) or attempts > self.max_retries:
                        log.warning("model %s request %s failed after %d attempt(s): %s",
                                    model.id, base["request_id"], attempts, error)
                        return _failure(base, error, attempts, time.perf_counter() - started)
                    delay = self._backoff_s(attempts, _retry_after_s(exc),
                                            throttled=getattr(exc, "status_code", None) == 429)
            log.info("model %s request %s attempt %d failed (%s); retry in %.2f s",
                     model.id, base["request_id"], attempts, error, delay)
            await asyncio.sleep(delay)  # without the slot
        latency_s = time.perf_counter() - started
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None)
        completion_tokens = getattr(usage, "completion_tokens", None)
        cost, cost_source = self.cost_usd(model, base["litellm_model"], response, prompt_tokens,
                                          completion_tokens)
        choices = getattr(response, "choices", None) or []  # none: the parser reports it empty
        result = LLMCallResult(
            **base, text=choices[0].message.content if choices else None, status="ok", error=None,
            attempts=attempts, latency_s=latency_s, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, cost_usd=cost, cost_source=cost_source,
            cached=False, original_cost_usd=cost, original_latency_s=latency_s,
            logprobs=_score_logprobs(choices) if model.top_logprobs else None)
        self._cache_put(result)
        return result

    def cost_usd(self, model: CandidateModel, litellm_model: str, response: Any,
                 prompt_tokens: int | None,
                 completion_tokens: int | None) -> tuple[float | None, str]:
        """(cost, source): model_pricing.yaml first, then litellm's cost map, else unpriced."""
        if prompt_tokens is None or completion_tokens is None:
            return None, "unpriced"
        for name in (model.id, litellm_model, model.litellm_model):
            price = self.pricing.get(name or "")
            if price is not None:
                cost = (prompt_tokens * price["input_per_1m"]
                        + completion_tokens * price["output_per_1m"]) / 1e6
                return cost, "model_pricing.yaml"
        # litellm has already priced the response with its cost map (litellm.completion_cost);
        # None means the model is not in the map. Re-pricing it here would double that work.
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        return (float(cost), "litellm") if cost is not None else (None, "unpriced")

    def _call_kwargs(self, model: CandidateModel, messages: Sequence[Mapping[str, Any]],
                     json_schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": resolve_litellm_model(model), "messages": [dict(m) for m in messages],
            "temperature": model.temperature, "max_tokens": model.max_tokens,
            "timeout": model.timeout_s or self.timeout_s,
            # Retries are ours (counted, with our backoff): neither litellm's retry wrapper
            # (num_retries) nor the provider SDK client (max_retries) may retry on its own.
            "num_retries": 0, "max_retries": 0,
        }
        api_base = resolve_api_base(model)
        if api_base:
            kwargs["api_base"] = api_base
        if model.api_key_env:
            # A keyless endpoint gets a placeholder so that litellm never falls back to another
            # provider's key from the environment (e.g. OPENAI_API_KEY) and sends it there.
            kwargs["api_key"] = os.environ.get(model.api_key_env, "").strip() or KEY_PLACEHOLDER
        if model.top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=model.top_logprobs)
        if model.response_format == "json_schema":
            source = OUTPUT_JSON_SCHEMA if json_schema is None else json_schema
            schema = {k: v for k, v in source.items() if k != "$schema"}
            name = "gxp_audit_output" if json_schema is None else "answer"
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": name, "schema": schema}}
        elif model.response_format == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        return kwargs

    def _scrub(self, text: str, model: CandidateModel) -> str:
        """Remove the values of the model's secret-bearing variables from `text`."""
        for name in (*model.required_env, model.api_key_env):
            value = os.environ.get(name, "").strip() if name else ""
            if len(value) >= _MIN_SECRET_CHARS:
                text = text.replace(value, _SCRUBBED)
        return text

    def _backoff_s(self, attempt: int, retry_after_s: float | None, *,
                   throttled: bool = False) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        A provider's Retry-After is the wait itself (bounded by backoff_max_s), never added to a
        backoff. Otherwise the ceiling is min(backoff_max_s, base * 2**(attempt - 1)) and the wait
        is drawn below it: "full jitter", uniform in [0, ceiling] from backoff_base_s, for 5xx,
        timeouts and connection errors (AWS Architecture Blog, "Exponential Backoff and Jitter",
        2015: of the schemes it compared, full jitter made the fewest calls and finished the
        competing clients' work far sooner than equal jitter; decorrelated jitter was slightly
        sooner with more calls); "equal jitter", uniform in [ceiling / 2, ceiling] from
        throttle_backoff_base_s, for a 429 that gave no Retry-After, so that a rate-limited
        provider gets a guaranteed pause. The AWS SDK for Java 2.x splits them the
        same way in its legacy retry mode (full jitter from 100 ms for errors, equal jitter from
        500 ms for throttling, both capped at 20 s)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.backoff_max_s)
        base = self.throttle_backoff_base_s if throttled else self.backoff_base_s
        ceiling = min(self.backoff_max_s, base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2 if throttled else 0.0, ceiling)

    def _limits_for(self, model: CandidateModel) -> _ModelLimits:
        loop = asyncio.get_running_loop()
        with self._limits_lock:
            per_model = self._limits.setdefault(loop, {})
            if model.id not in per_model:
                per_model[model.id] = _ModelLimits(
                    slots=_Slots(model.max_concurrency or self.max_concurrency),
                    interval_s=60.0 / model.rpm if model.rpm else 0.0)
            return per_model[model.id]

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        if self._cache is None:
            return None
        stored = self._cache.get(key)
        return json.loads(stored) if isinstance(stored, str) else None

    def _cache_put(self, result: LLMCallResult) -> None:
        if self._cache is None:
            return
        entry = {"text": result.text, "prompt_tokens": result.prompt_tokens,
                 "completion_tokens": result.completion_tokens, "cost_usd": result.cost_usd,
                 "cost_source": result.cost_source, "latency_s": result.latency_s,
                 "attempts": result.attempts, "model_id": result.model_id,
                 "litellm_model": result.litellm_model, "stored_at": time.time(),
                 "logprobs": result.logprobs}
        # JSON text rather than diskcache's default pickle: readable by any tool, no code on load.
        self._cache.set(result.cache_key, json.dumps(entry))


def _score_logprobs(choices: Sequence[Any]) -> dict[str, list[dict[str, Any]]] | None:
    """The score digits' top logprobs of the first choice (None when it carries none)."""
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else \
        getattr(logprobs, "content", None)
    return score_token_logprobs(content) if content else None


def _failure(base: dict[str, Any], error: str, attempts: int, latency_s: float) -> LLMCallResult:
    return LLMCallResult(**base, text=None, status="error", error=error, attempts=attempts,
                         latency_s=latency_s, prompt_tokens=None, completion_tokens=None,
                         cost_usd=None, cost_source="unpriced", cached=False)


def _is_retryable(exc: BaseException) -> bool:
    """429, 408/409, 5xx, timeouts and connection errors are transient; other errors are not."""
    litellm = _litellm()
    if isinstance(exc, litellm.Timeout | litellm.APIConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


def _retry_after_s(exc: BaseException) -> float | None:
    """Seconds from a Retry-After header (litellm keeps the provider's headers on the error)."""
    for headers in (getattr(exc, "litellm_response_headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):
        value = headers.get("retry-after") if headers is not None else None
        if value is not None:
            try:
                return float(value)
            except ValueError:  # an HTTP date: fall back to our own backoff
                return None
    return None


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _run_coroutine(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run, also when called from code that already runs an event loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
