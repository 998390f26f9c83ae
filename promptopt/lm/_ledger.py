"""The ledger: what LM work cost (calls, tokens, dollars, seconds) and the hard budget caps.

The ledger sits *below* the cache (``CachedLM(LedgeredLM(LimitedLM(backend)))``): cache hits
never reach it as calls, so they cost nothing; the cache reports them separately so the run can
show its hit rate. Several LMs (task model, proposer, judge) can share one :class:`Ledger`; it
keeps a breakdown per LM.

Caps: ``max_calls`` is enforced exactly. A batch reserves its calls before anything is sent; a
batch that would exceed the cap raises :class:`~promptopt.errors.BudgetExceeded` before any of
its requests is sent, so the counters, the cache and the returned answers always agree. Token,
dollar and time caps can only be known after a call: they are checked before each batch (a batch
started under the cap may end slightly over it).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Sequence

from promptopt.errors import BudgetExceeded, ConfigError
from promptopt.lm._types import LMRequest, LMResponse, Message
from promptopt.lm._wrapper import WrapperLM, partial_of

__all__ = ["Ledger", "LedgeredLM"]


@dataclass
class _Counts:
    calls: int = 0
    cache_hits: int = 0
    failed_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0

    def add(self, other: "_Counts") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


_CAPS = ("max_calls", "max_prompt_tokens", "max_completion_tokens", "max_tokens", "max_cost_usd", "max_seconds")


class Ledger:
    """Counts LM work and enforces hard caps. Thread safe; share one across LMs.

    ``calls`` are requests that reached a backend (failed ones included; ``failed_calls`` is the
    subset that failed after retries); ``retries`` are extra attempts (``attempts - 1``);
    ``seconds`` is wall time spent waiting on backends, summed over batches.
    """

    def __init__(
        self,
        max_calls: int | None = None,
        max_prompt_tokens: int | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
        max_seconds: float | None = None,
    ) -> None:
        caps = dict(zip(_CAPS, (max_calls, max_prompt_tokens, max_completion_tokens, max_tokens, max_cost_usd, max_seconds)))
        for name, value in caps.items():
            if value is not None and value < 0:
                raise ConfigError(f"Budget cap {name}={value} is negative.", fix=f"Pass {name} >= 0, or None for no cap.")
        self.caps: dict[str, float | None] = caps
        self._by_lm: dict[str, _Counts] = {}
        self._reserved_calls = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading

    def _totals(self) -> _Counts:
        total = _Counts()
        for counts in self._by_lm.values():
            total.add(counts)
        return total

    def snapshot(self) -> dict[str, Any]:
        """Totals: calls, cache_hits, failed_calls, retries, prompt_tokens, completion_tokens, cost_usd, seconds."""
        with self._lock:
            return asdict(self._totals())

    def by_lm(self) -> dict[str, dict[str, Any]]:
        """The same counters per LM name (its identity unless named otherwise)."""
        with self._lock:
            return {name: asdict(counts) for name, counts in self._by_lm.items()}

    @staticmethod
    def _used(totals: _Counts, cap: str) -> float:
        return {
            "max_calls": totals.calls,
            "max_prompt_tokens": totals.prompt_tokens,
            "max_completion_tokens": totals.completion_tokens,
            "max_tokens": totals.prompt_tokens + totals.completion_tokens,
            "max_cost_usd": totals.cost_usd,
            "max_seconds": totals.seconds,
        }[cap]

    def remaining(self) -> dict[str, float]:
        """What is left under each cap that is set (calls in flight count as used)."""
        with self._lock:
            totals = self._totals()
            left = {cap: limit - self._used(totals, cap) for cap, limit in self.caps.items() if limit is not None}
            if "max_calls" in left:
                left["max_calls"] -= self._reserved_calls
            return left

    # ------------------------------------------------------------------ enforcing

    def _exceeded(self, cap: str, limit: float, used: float, detail: str) -> BudgetExceeded:
        return BudgetExceeded(
            f"LM budget exhausted: {cap}={limit:g} ({detail}).",
            fix=f"Raise {cap} (or drop the cap) and resume the run; answers obtained so far are cached and will not be paid for again.",
            cap=cap,
            limit=float(limit),
            used=float(used),
        )

    def _check_locked(self, calls: int) -> None:
        totals = self._totals()
        for cap, limit in self.caps.items():
            if limit is None:
                continue
            used = self._used(totals, cap)
            if cap == "max_calls":
                if used + self._reserved_calls + calls > limit:
                    detail = f"{used:g} calls made, {self._reserved_calls} in flight, this batch needs {calls} more"
                    raise self._exceeded(cap, limit, used, detail)
            elif used >= limit:
                raise self._exceeded(cap, limit, used, f"{used:g} used")

    def check(self) -> None:
        """Raise :class:`BudgetExceeded` if any cap is already reached (no call reserved)."""
        with self._lock:
            self._check_locked(0)

    def reserve(self, calls: int) -> None:
        """Reserve ``calls`` backend calls, or raise :class:`BudgetExceeded` (nothing reserved)."""
        with self._lock:
            self._check_locked(calls)
            self._reserved_calls += calls

    def settle(self, name: str, reserved: int, responses: Sequence[LMResponse], seconds: float) -> None:
        """Release a reservation and book what the backend actually answered."""
        counts = _Counts(seconds=seconds)
        for response in responses:
            counts.calls += 1
            counts.failed_calls += 0 if response.ok else 1
            counts.retries += max(response.attempts - 1, 0)
            counts.prompt_tokens += response.usage.prompt_tokens
            counts.completion_tokens += response.usage.completion_tokens
            counts.cost_usd += response.cost_usd
        with self._lock:
            self._reserved_calls -= reserved
            self._by_lm.setdefault(name, _Counts()).add(counts)

    def record_cache_hits(self, name: str, n: int) -> None:
        with self._lock:
            self._by_lm.setdefault(name, _Counts()).cache_hits += n

    def __repr__(self) -> str:
        caps = ", ".join(f"{k}={v:g}" for k, v in self.caps.items() if v is not None)
        return f"Ledger({caps})"


@dataclass
class _Booking:
    responses: list[LMResponse] = field(default_factory=list)


class LedgeredLM(WrapperLM):
    """Books every backend call of ``lm`` in ``ledger`` (under ``name``, default: the LM's identity)
    and enforces the ledger's caps before each batch."""

    def __init__(self, lm: Any, ledger: Ledger | None = None, *, name: str | None = None) -> None:
        super().__init__(lm)
        self._ledger = ledger if ledger is not None else Ledger()
        self.name = name or lm.identity

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    def record_cache_hits(self, n: int) -> None:
        self._ledger.record_cache_hits(self.name, n)

    @contextmanager
    def _booking(self, n: int) -> Iterator[_Booking]:
        """Reserve ``n`` calls, then book what the wrapped LM answered, even when it raises."""
        self._ledger.reserve(n)
        booking = _Booking()
        started = time.perf_counter()
        try:
            yield booking
        except BaseException as exc:
            answered = [r for r in partial_of(exc, n) if r is not None]
            self._ledger.settle(self.name, n, answered, time.perf_counter() - started)
            raise
        self._ledger.settle(self.name, n, booking.responses, time.perf_counter() - started)

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        if not requests:
            return []
        with self._booking(len(requests)) as booking:
            booking.responses = list(self.inner.complete(requests))
        return booking.responses

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        if not requests:
            return []
        with self._booking(len(requests)) as booking:
            booking.responses = list(await self.inner.acomplete(requests))
        return booking.responses

    def _score_continuation(self, messages: Sequence[Message], continuation: str) -> float:
        """Forwarded to the backend; booked as one call (it runs the model once)."""
        with self._booking(1) as booking:
            value = super()._score_continuation(messages, continuation)
            booking.responses = [LMResponse()]
        return value
