"""Fault injection: a wrapper that makes an LM fail like real providers do, reproducibly.

For tests and for drills ("does my run survive 20% of 429s and garbage answers?"). Put it right
above the backend, under the limiter, so the limiter's retries see its errors:
``CachedLM(LedgeredLM(LimitedLM(FaultyLM(backend))))``.
"""

from __future__ import annotations

import hashlib
import random
import string
import threading
from collections import Counter
from typing import Any, Sequence

from promptopt.errors import ConfigError, LMTransientError, UnknownNameError
from promptopt.lm._types import LMRequest, LMResponse, Usage
from promptopt.lm._wrapper import WrapperLM

__all__ = ["FaultyLM", "FAULT_KINDS"]

FAULT_KINDS = ("429", "500", "timeout", "reset", "empty", "garbage")
_RAISING = {
    "429": "HTTP 429 Too Many Requests (injected fault)",
    "500": "HTTP 500 Internal Server Error (injected fault)",
    "timeout": "Request timed out (injected fault)",
    "reset": "Connection reset by peer (injected fault)",
}
_GARBAGE_ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n\u00e9\u4e2d\ufffd"


class FaultyLM(WrapperLM):
    """Fails a fraction ``rate`` of attempts with one of ``kinds``, deterministically.

    The draw depends only on (``seed``, the request's cache key, the attempt number for that
    request), so a run is reproducible and a retried request gets a fresh draw, as with a flaky
    server. ``429``/``500``/``timeout``/``reset`` raise :class:`~promptopt.errors.LMTransientError`
    (``429`` carries ``retry_after``); ``empty`` and ``garbage`` return a "successful" response
    with empty or random text, which the evaluator must survive. ``injected`` counts faults by kind.

    The identity gains a ``+faults`` suffix so injected answers never land in the cache entries
    of the clean model.
    """

    def __init__(
        self,
        lm: Any,
        rate: float = 0.2,
        kinds: Sequence[str] = FAULT_KINDS,
        seed: int = 0,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(lm)
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"Fault rate must be in [0, 1], got {rate}.", fix="Pass rate=0.2 for 20% of attempts failing.")
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise UnknownNameError(f"Unknown fault kind(s) {unknown or list(kinds)}.", fix=f"Choose kinds among {', '.join(FAULT_KINDS)}.")
        self.rate = float(rate)
        self.kinds = tuple(kinds)
        self.seed = int(seed)
        self.retry_after = retry_after
        self.identity = f"{lm.identity}+faults(rate={self.rate:g},kinds={'|'.join(self.kinds)},seed={self.seed})"
        self.injected: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _draw(self, request: LMRequest) -> tuple[str | None, random.Random]:
        key = request.cache_key(self.inner.identity)
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] += 1
        digest = hashlib.sha256(f"{self.seed}:{key}:{attempt}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        kind = rng.choice(self.kinds) if rng.random() < self.rate else None
        if kind is not None:
            with self._lock:
                self.injected[kind] += 1
        return kind, rng

    def _plan(self, requests: Sequence[LMRequest]) -> list[tuple[str | None, random.Random]]:
        draws = [self._draw(r) for r in requests]
        for kind, _ in draws:
            if kind in _RAISING:
                # A failing batch call fails as a whole, as a real HTTP call would.
                raise LMTransientError(_RAISING[kind], fix="Injected by FaultyLM; the limiter retries it.", retry_after=self.retry_after if kind == "429" else None)
        return draws

    def _inject(self, requests: Sequence[LMRequest], draws: list[tuple[str | None, random.Random]], answers: list[LMResponse]) -> list[LMResponse]:
        out = []
        for request, (kind, rng), answer in zip(requests, draws, answers):
            if kind == "empty":
                answer = LMResponse(texts=[""] * request.n, usage=Usage(answer.usage.prompt_tokens, 0), finish_reasons=["stop"] * request.n, model=answer.model, latency_s=answer.latency_s)
            elif kind == "garbage":
                texts = ["".join(rng.choice(_GARBAGE_ALPHABET) for _ in range(rng.randint(1, 40))) for _ in range(request.n)]
                answer = LMResponse(texts=texts, usage=answer.usage, finish_reasons=["length"] * request.n, model=answer.model, latency_s=answer.latency_s)
            out.append(answer)
        return out

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        draws = self._plan(requests)
        return self._inject(requests, draws, list(self.inner.complete(requests)))

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        draws = self._plan(requests)
        return self._inject(requests, draws, list(await self.inner.acomplete(requests)))
