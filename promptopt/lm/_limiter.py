"""The limiter: bounded concurrency, request/token rate limits, retries with backoff, timeouts.

:class:`LimitedLM` sits right above the backend (``CachedLM(LedgeredLM(LimitedLM(backend)))``)
and is the one place that turns transient backend errors into either a later success or a
failure *response* (failures are data). Non-retryable configuration errors propagate at once;
an unreachable backend (:class:`~promptopt.errors.LMUnavailableError`) propagates once its
retries are spent, carrying the answers already obtained for the batch.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Awaitable, Callable, Sequence

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from promptopt.errors import ConfigError, LMError, LMTransientError, LMUnavailableError
from promptopt.lm._types import LMRequest, LMResponse
from promptopt.lm._wrapper import WrapperLM, attach_partial, prefix_order

__all__ = ["LimitedLM", "estimate_tokens"]

Clock = Callable[[], float]
Sleep = Callable[[float], None]

_RETRYABLE = (LMTransientError, LMUnavailableError)
_SEGMENTS_PER_WORKER = 4


def estimate_tokens(request: LMRequest) -> int:
    """Upper-bound token estimate of a request before it is sent (tpm reservations).

    ~4 characters per token for the prompt (plus a few per message for the chat template),
    and the full ``max_tokens`` for each of the ``n`` samples; reconciled with the real usage
    once the call returns.
    """
    chars = sum(len(content) for m in request.messages for key, content in m if key == "content")
    return math.ceil(chars / 4) + 4 * len(request.messages) + request.max_tokens * request.n


class _Bucket:
    """A token bucket with reservations: ``take`` debits at once (the level may go negative)
    and returns how long the caller must wait before sending. First come, first served, and the
    same object serves threads and coroutines.

    The burst capacity is one second's worth (at least one unit): providers often enforce
    per-minute limits over shorter windows, so smooth beats bursty.
    """

    def __init__(self, per_minute: float, clock: Clock) -> None:
        if per_minute <= 0:
            raise ConfigError(f"A rate limit must be positive, got {per_minute}.", fix="Pass rpm/tpm > 0, or None for no limit.")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, amount: float) -> float:
        with self._lock:
            self._refill()
            self.level -= amount
            return 0.0 if self.level >= 0 else -self.level / self.rate

    def give(self, amount: float) -> None:
        """Return (amount > 0) or debit (amount < 0) units after the fact."""
        with self._lock:
            self._refill()
            self.level = min(self.capacity, self.level + amount)


class _CallTimeout(LMTransientError):
    pass


class LimitedLM(WrapperLM):
    """Bounded concurrency, rpm/tpm limits, retries and timeouts around an LM.

    A batch is cut into backend calls of ``batch_size`` requests, in prefix-grouped order, and
    the calls into contiguous segments run by up to ``max_concurrency`` workers (threads for
    :meth:`complete`, tasks for :meth:`acomplete`), so requests sharing a prompt prefix stay back
    to back on one worker. At most ``max_concurrency`` backend calls are in flight at any time,
    across all callers of :meth:`complete` (async callers share a separate bound per event loop).

    Retries: :class:`~promptopt.errors.LMTransientError` (and a call exceeding ``timeout_s``) is
    retried up to ``max_retries`` times with exponential backoff and jitter, waiting at least the
    server's ``retry_after``; after that the request comes back as ``LMResponse.failure`` with
    ``attempts`` set. :class:`~promptopt.errors.LMConfigError` propagates at once.
    :class:`~promptopt.errors.LMUnavailableError` is retried like a transient error and then
    propagates (nothing can succeed while the backend is down), carrying the batch's answers.

    A timed-out call cannot be killed: its thread finishes in the background and its result is
    dropped. ``clock``/``sleep`` are injectable so rate limits and backoff can be tested without
    waiting.
    """

    def __init__(
        self,
        lm: Any,
        *,
        max_concurrency: int = 1,
        rpm: float | None = None,
        tpm: float | None = None,
        max_retries: int = 4,
        timeout_s: float | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        batch_size: int = 1,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(lm)
        if max_concurrency < 1 or batch_size < 1 or max_retries < 0:
            raise ConfigError(
                f"Invalid limiter settings: max_concurrency={max_concurrency}, batch_size={batch_size}, max_retries={max_retries}.",
                fix="Use max_concurrency >= 1, batch_size >= 1 and max_retries >= 0.",
            )
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s}.", fix="Pass timeout_s > 0 seconds, or None for no timeout.")
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.timeout_s = timeout_s
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.batch_size = int(batch_size)
        self._clock = clock
        self._sleep = sleep
        self._rpm = _Bucket(rpm, clock) if rpm is not None else None
        self._tpm = _Bucket(tpm, clock) if tpm is not None else None
        self._backoff = wait_exponential_jitter(multiplier=self.backoff_base, max=self.backoff_max, jitter=self.backoff_base)
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._async_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ scheduling

    def _segments(self, requests: Sequence[LMRequest]) -> list[list[list[int]]]:
        """Backend calls (lists of request indices) in prefix order, cut into contiguous segments."""
        order = prefix_order(requests)
        calls = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        n_segments = min(len(calls), self.max_concurrency * _SEGMENTS_PER_WORKER) if self.max_concurrency > 1 else 1
        size = math.ceil(len(calls) / max(n_segments, 1))
        return [calls[i : i + size] for i in range(0, len(calls), size)]

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="promptopt-lm")
            return self._pool

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        if not requests:
            return []
        results: list[LMResponse | None] = [None] * len(requests)
        abort = threading.Event()
        errors: list[BaseException] = []

        def run_segment(segment: list[list[int]]) -> None:
            for call in segment:
                if abort.is_set():
                    return
                try:
                    answers = self._call([requests[i] for i in call])
                except BaseException as exc:  # systemic: stop scheduling, keep what was answered
                    errors.append(exc)
                    abort.set()
                    return
                for i, answer in zip(call, answers):
                    results[i] = answer

        segments = self._segments(requests)
        if len(segments) == 1:
            run_segment(segments[0])
        else:
            for future in [self._executor().submit(run_segment, s) for s in segments]:
                future.result()
        if errors:
            raise attach_partial(errors[0], results)
        return results  # type: ignore[return-value]

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        if not requests:
            return []
        results: list[LMResponse | None] = [None] * len(requests)
        errors: list[BaseException] = []

        async def run_segment(segment: list[list[int]]) -> None:
            for call in segment:
                if errors:
                    return
                try:
                    answers = await self._acall([requests[i] for i in call])
                except Exception as exc:
                    errors.append(exc)
                    return
                for i, answer in zip(call, answers):
                    results[i] = answer

        await asyncio.gather(*(run_segment(s) for s in self._segments(requests)))
        if errors:
            raise attach_partial(errors[0], results)
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ one backend call

    def _wait(self, state: RetryCallState) -> float:
        delay = self._backoff(state)
        error = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        return max(delay, float(retry_after)) if retry_after else delay

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "wait": self._wait,
            "retry": retry_if_exception_type(_RETRYABLE),
            "reraise": True,
        }

    def _reserve(self, requests: Sequence[LMRequest]) -> tuple[float, int]:
        """Debit the rate buckets; returns (seconds to wait, tokens reserved)."""
        wait, tokens = 0.0, 0
        if self._rpm is not None:
            wait = max(wait, self._rpm.take(len(requests)))
        if self._tpm is not None:
            tokens = sum(estimate_tokens(r) for r in requests)
            wait = max(wait, self._tpm.take(tokens))
        return wait, tokens

    def _settle(self, requests: Sequence[LMRequest], answers: list[LMResponse], reserved_tokens: int) -> list[LMResponse]:
        if len(answers) != len(requests):
            raise LMError(
                f"Backend {self.identity!r} returned {len(answers)} responses for {len(requests)} requests.",
                fix="The backend breaks the LM protocol (one response per request); report it to its maintainer.",
            )
        if self._tpm is not None:
            self._tpm.give(reserved_tokens - sum(a.usage.total_tokens for a in answers))
        return answers

    def _finish(self, requests: Sequence[LMRequest], answers: list[LMResponse] | None, error: LMTransientError | None, attempts: int, started: float) -> list[LMResponse]:
        if answers is None:
            assert error is not None
            latency = self._clock() - started
            return [LMResponse.failure(error, model=self.identity, attempts=attempts, latency_s=latency) for _ in requests]
        return [replace(a, attempts=attempts) if a.attempts != attempts else a for a in answers]

    def _call(self, requests: list[LMRequest]) -> list[LMResponse]:
        started, attempts = self._clock(), 0
        try:
            for attempt in Retrying(sleep=self._sleep, **self._retry_kwargs()):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    wait, tokens = self._reserve(requests)
                    if wait > 0:
                        self._sleep(wait)
                    with self._slots:
                        answers = self._send(requests)
                    answers = self._settle(requests, answers, tokens)
        except LMTransientError as exc:
            return self._finish(requests, None, exc, attempts, started)
        return self._finish(requests, answers, None, attempts, started)

    def _send(self, requests: list[LMRequest]) -> list[LMResponse]:
        if self.timeout_s is None:
            return list(self.inner.complete(requests))
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["answers"] = list(self.inner.complete(requests))
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc
            finally:
                done.set()

        # A daemon thread per call: a hung call must not hold a pool worker or block exit.
        threading.Thread(target=target, name="promptopt-lm-call", daemon=True).start()
        if not done.wait(self.timeout_s):
            raise _CallTimeout(
                f"Call to {self.identity!r} timed out after {self.timeout_s:g}s.",
                fix="Raise timeout_s, lower max_tokens, or check that the backend is not overloaded.",
            )
        if "error" in box:
            raise box["error"]
        return box["answers"]

    def _async_slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        slot = self._async_slots.get(loop)
        if slot is None:
            slot = self._async_slots[loop] = asyncio.Semaphore(self.max_concurrency)
        return slot

    async def _asleep(self, seconds: float) -> None:
        if self._sleep is time.sleep:
            await asyncio.sleep(seconds)
        else:  # an injected (test) clock: advance it, then yield to the loop
            self._sleep(seconds)
            await asyncio.sleep(0)

    async def _acall(self, requests: list[LMRequest]) -> list[LMResponse]:
        started, attempts = self._clock(), 0
        slot = self._async_slot()
        try:
            async for attempt in AsyncRetrying(sleep=self._asleep, **self._retry_kwargs()):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    wait, tokens = self._reserve(requests)
                    if wait > 0:
                        await self._asleep(wait)
                    async with slot:
                        answers = await self._asend(requests)
                    answers = self._settle(requests, answers, tokens)
        except LMTransientError as exc:
            return self._finish(requests, None, exc, attempts, started)
        return self._finish(requests, answers, None, attempts, started)

    async def _asend(self, requests: list[LMRequest]) -> list[LMResponse]:
        call: Awaitable[list[LMResponse]] = self.inner.acomplete(requests)
        if self.timeout_s is None:
            return list(await call)
        try:
            return list(await asyncio.wait_for(call, self.timeout_s))
        except asyncio.TimeoutError:
            raise _CallTimeout(
                f"Call to {self.identity!r} timed out after {self.timeout_s:g}s.",
                fix="Raise timeout_s, lower max_tokens, or check that the backend is not overloaded.",
            ) from None

    def _score_continuation(self, messages: Any, continuation: str) -> float:
        with self._slots:
            return super()._score_continuation(messages, continuation)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        super().close()
