"""Engines (what generates) and the per-model runner that batches requests for them.

An engine answers chats (`generate`, several at once) and streams one chat (`stream`). The
`LocalEngine` runs training/inference.py's `LocalGenerator`; tests pass scripted engines through
`create_app(..., engine_factory=...)`. A `ModelRunner` owns one engine: an asyncio queue, a worker
that takes up to `max_batch_size` requests with the same decoding settings arriving within
`max_wait_ms` of the first, and ONE thread where the engine runs, so that torch never runs on the
event loop and never twice at once on the same model. A stream is generated alone.

An engine with `constrained = True` also takes `json_schemas` (one per chat: the answer is
generated under the schema's grammar), `logprobs` and `top_logprobs` (per-token log-probabilities
in `Generation.logprobs`; a stream then yields `TokenLogprob`s among its text pieces). Requests
with and without a schema share a batch; requests asking for other logprobs do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from serving.catalog import ServedModel
from training.constrained import TokenLogprob
from training.inference import DecodingSettings, Generation

Chat = Sequence[Mapping[str, str]]


@dataclass(frozen=True)
class GenerateOptions:
    """What a request asks of a constrained engine beyond the decoding settings."""

    json_schema: Mapping[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def plain(self) -> bool:
        return self.json_schema is None and not self.logprobs

    def batch_key(self) -> tuple[bool, int]:
        return self.logprobs, self.top_logprobs


NO_OPTIONS = GenerateOptions()


class Engine(Protocol):
    """What a served model needs: batched answers and one streamed answer."""

    def generate(self, chats: Sequence[Chat], decoding: DecodingSettings) -> list[Generation]:
        """One Generation per chat, in order."""
        ...

    def stream(self, chat: Chat, decoding: DecodingSettings) -> Iterator[str | Generation]:
        """Text pieces as they are generated, then the whole `Generation` (text cut at the
        first stop string, token counts). Closing the iterator early stops the generation."""
        ...


EngineFactory = Callable[[ServedModel], Engine]


class LocalEngine:
    """A `LocalGenerator` (base model with its adapter merged) as an engine."""

    constrained = True

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    @classmethod
    def load(cls, model: ServedModel, *, torch_threads: int | None = None) -> LocalEngine:
        from training.inference import LocalGenerator

        # LocalGenerator loads a fully fine-tuned "adapter" (a whole model) as the model itself
        return cls(LocalGenerator(model.base_model_path, model.adapter_path,
                                  torch_threads=torch_threads))

    def generate(self, chats: Sequence[Chat], decoding: DecodingSettings, *,
                 json_schemas: Sequence[Mapping[str, Any] | None] | None = None,
                 logprobs: bool = False, top_logprobs: int = 0) -> list[Generation]:
        return self.generator.generate(chats, decoding, batch_size=max(1, len(chats)),
                                       json_schemas=json_schemas, logprobs=logprobs,
                                       top_logprobs=top_logprobs)

    def stream(self, chat: Chat, decoding: DecodingSettings, *,
               json_schema: Mapping[str, Any] | None = None, logprobs: bool = False,
               top_logprobs: int = 0) -> Iterator[str | TokenLogprob | Generation]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        generator = self.generator
        ids, cut = generator.encode_chat(chat, decoding.max_new_tokens)
        processors, recorder = generator.processors([json_schema], logprobs, top_logprobs)
        streamer = _token_streamer(TextIteratorStreamer)(generator.tokenizer, skip_prompt=True,
                                                         skip_special_tokens=True)
        streamer.logprobs = _stream_logprobs(generator, recorder)
        stop = threading.Event()

        class _Stopped(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        # The same generation arguments as LocalGenerator.generate (one source of them).
        kwargs = generator._generate_kwargs(decoding)
        kwargs["stopping_criteria"] = StoppingCriteriaList([_Stopped()])
        kwargs["logits_processor"] = processors
        input_ids = torch.tensor([ids], device=generator.device)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                torch.manual_seed(decoding.seed)
                with torch.inference_mode():
                    outcome["ids"] = generator.model.generate(
                        input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                        streamer=streamer, **kwargs)
            except BaseException as err:  # surfaced to the reader below
                outcome["error"] = err
                streamer.end()

        began = time.perf_counter()
        thread = threading.Thread(target=run, name="gxplab-serving-stream", daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            stop.set()
            thread.join()
        if "error" in outcome:
            raise outcome["error"]
        yield generator.finish(outcome["ids"][0, len(ids):].tolist(), decoding,
                               time.perf_counter() - began, prompt=(ids, cut),
                               constrained=json_schema is not None, recorder=recorder)


def _stream_logprobs(generator: Any, recorder: Any) -> Callable[[int], TokenLogprob | None]:
    """The entry of a streamed token (None for end-of-sequence, padding, or no recorder)."""
    from training.constrained import step_logprob

    skip = {generator.tokenizer.pad_token_id, generator.tokenizer.eos_token_id}

    def entry(token_id: int) -> TokenLogprob | None:
        if recorder is None or token_id in skip or not recorder.steps:
            return None
        return step_logprob(recorder.steps[-1][0], token_id, recorder.top,
                            lambda i: generator.tokenizer.decode([i]),
                            generator.grammars.token_bytes)

    return entry


def _token_streamer(base: type) -> type:
    """`TextIteratorStreamer` sending the text of every token as it comes (the stock one holds
    punctuation back until the next space); only an incomplete UTF-8 character waits. With
    `logprobs` set (token id -> entry or None) each token's entry is queued before its text."""

    class TokenTextStreamer(base):  # type: ignore[misc, valid-type]
        logprobs: Callable[[int], TokenLogprob | None] | None = None

        def put(self, value: Any) -> None:
            if len(value.shape) > 1:
                if value.shape[0] > 1:
                    raise ValueError("a stream generates one chat")
                value = value[0]
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            tokens = value.tolist()
            for token_id in tokens if self.logprobs else ():
                entry = self.logprobs(token_id)
                if entry is not None:
                    self.text_queue.put(entry, timeout=self.timeout)
            self.token_cache.extend(tokens)
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd") or len(text) <= self.print_len:
                return
            printable, self.print_len = text[self.print_len:], len(text)
            self.on_finalized_text(printable)

    return TokenTextStreamer


# --- the runner --------------------------------------------------------------------------------

_END = object()


@dataclass(eq=False)
class _GenerateJob:
    chat: Chat
    decoding: DecodingSettings
    future: asyncio.Future[tuple[Generation, int]]
    options: GenerateOptions = NO_OPTIONS


@dataclass(eq=False)
class _StreamJob:
    chat: Chat
    decoding: DecodingSettings
    options: GenerateOptions = NO_OPTIONS
    pieces: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)


BatchObserver = Callable[[int], None]


class ModelRunner:
    """The queue, the batching worker and the engine thread of one served model."""

    def __init__(self, engine: Engine, *, batching: bool, max_batch_size: int,
                 max_wait_ms: float, on_batch: BatchObserver | None = None,
                 on_queue_depth: BatchObserver | None = None) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size if batching else 1
        self.max_wait_s = max_wait_ms / 1000 if batching else 0.0
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._queue: asyncio.Queue[_GenerateJob | _StreamJob] = asyncio.Queue()
        self._deferred: deque[_GenerateJob | _StreamJob] = deque()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gxplab-engine")
        self._worker: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Requests waiting for the engine (not counting the batch being generated)."""
        return self._queue.qsize() + len(self._deferred)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def close(self) -> None:
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def constrained(self) -> bool:
        """Whether the engine generates under a JSON schema and gives logprobs."""
        return bool(getattr(self.engine, "constrained", False))

    async def generate(self, chat: Chat, decoding: DecodingSettings,
                       options: GenerateOptions = NO_OPTIONS) -> tuple[Generation, int]:
        """The chat's answer, and how many requests were generated together with it."""
        future: asyncio.Future[tuple[Generation, int]] = \
            asyncio.get_running_loop().create_future()
        self._put(_GenerateJob(chat, decoding, future, options))
        return await future

    async def stream(self, chat: Chat, decoding: DecodingSettings,
                     options: GenerateOptions = NO_OPTIONS
                     ) -> AsyncIterator[str | TokenLogprob | Generation]:
        """The engine's stream of the chat, generated alone when its turn comes."""
        job = _StreamJob(chat, decoding, options)
        self._put(job)
        try:
            while True:
                item = await job.pieces.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    def _put(self, job: _GenerateJob | _StreamJob) -> None:
        self._queue.put_nowait(job)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_queue_depth:
            self._on_queue_depth(self.queue_depth)

    async def _next(self) -> _GenerateJob | _StreamJob:
        return self._deferred.popleft() if self._deferred else await self._queue.get()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._next()
            if isinstance(job, _StreamJob):
                self._report_depth()
                await loop.run_in_executor(self._executor, self._pump, job, loop)
                continue
            batch = [job]
            held: list[_GenerateJob | _StreamJob] = []
            # Deferred requests first (they waited longest), then new ones until the deadline.
            while self._deferred and len(batch) < self.max_batch_size:
                other = self._deferred.popleft()
                (batch if _joins(other, job) else held).append(other)
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            other = await self._queue.get()
                    except TimeoutError:
                        break
                else:
                    other = self._queue.get_nowait()
                (batch if _joins(other, job) else held).append(other)
            self._deferred.extendleft(reversed(held))
            self._report_depth()
            await self._run_batch(batch, loop)

    async def _run_batch(self, batch: list[_GenerateJob], loop: asyncio.AbstractEventLoop, *,
                         observe: bool = True) -> None:
        live = [job for job in batch if not job.future.done()]  # a client may have gone
        if not live:
            return
        if self._on_batch and observe:
            self._on_batch(len(live))
        try:
            generations = await loop.run_in_executor(self._executor, self._generate, live)
            if len(generations) != len(live):
                raise RuntimeError(f"the engine answered {len(generations)} of {len(live)} chats")
        except Exception as err:
            if len(live) > 1:  # one bad request (e.g. too long a prompt) fails only itself
                for job in live:
                    await self._run_batch([job], loop, observe=False)
                return
            if not live[0].future.done():
                live[0].future.set_exception(err)
            return
        for job, generation in zip(live, generations, strict=True):
            if not job.future.done():
                job.future.set_result((generation, len(live)))

    def _generate(self, jobs: list[_GenerateJob]) -> list[Generation]:
        """Engine thread: one batch (options only passed when a job has some)."""
        chats = [job.chat for job in jobs]
        if all(job.options.plain for job in jobs):
            return self.engine.generate(chats, jobs[0].decoding)
        options = jobs[0].options
        return self.engine.generate(  # type: ignore[call-arg]
            chats, jobs[0].decoding, json_schemas=[job.options.json_schema for job in jobs],
            logprobs=options.logprobs, top_logprobs=options.top_logprobs)

    def _pump(self, job: _StreamJob, loop: asyncio.AbstractEventLoop) -> None:
        """Engine thread: forward the stream's items to the request's queue."""
        put = job.pieces.put_nowait
        o = job.options
        pieces = iter(self.engine.stream(job.chat, job.decoding) if o.plain else
                      self.engine.stream(job.chat, job.decoding,  # type: ignore[call-arg]
                                         json_schema=o.json_schema, logprobs=o.logprobs,
                                         top_logprobs=o.top_logprobs))
        try:
            for item in pieces:
                if job.cancelled.is_set():
                    break
                loop.call_soon_threadsafe(put, item)
        except Exception as err:
            loop.call_soon_threadsafe(put, err)
        finally:
            close = getattr(pieces, "close", None)
            if close:
                close()
            loop.call_soon_threadsafe(put, _END)


def _joins(other: _GenerateJob | _StreamJob, first: _GenerateJob) -> bool:
    return isinstance(other, _GenerateJob) and other.decoding == first.decoding \
        and other.options.batch_key() == first.options.batch_key()
