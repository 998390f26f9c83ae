"""The one LM protocol: a batch of chat requests in, one response per request out.

Everything above ``lm/`` (evaluators, strategies, the loop) talks to models only through
:class:`LM`. Backends (embedded llama.cpp, litellm, torch) and wrappers (cache, ledger,
limiter, fault injection) all implement it, so they compose freely.

Failures are data: a request that still fails after the limiter's retries comes back as an
:class:`LMResponse` whose ``error`` is set (and ``texts`` is empty). Only systemic faults
raise: non-retryable configuration errors (:class:`~promptopt.errors.LMConfigError`) and
budget caps (:class:`~promptopt.errors.BudgetExceeded`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

__all__ = ["Message", "LMRequest", "LMResponse", "TokenLogprob", "Usage", "LM", "BaseLM", "canonical_json"]

Message = dict[str, str]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``."""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces), used for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class LMRequest:
    """One chat completion request. Immutable and hashable, so it can key a cache.

    ``sample_id`` does not change what the backend is asked; it changes the cache key, so that
    asking again with a new ``sample_id`` draws a fresh sample on purpose.
    ``logprobs``: when true, backends that can return per-token log-probabilities do.
    """

    messages: tuple[tuple[tuple[str, str], ...], ...]
    temperature: float = 0.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    n: int = 1
    logprobs: bool = False
    seed: int | None = None
    sample_id: int = 0

    @classmethod
    def chat(
        cls,
        messages: Sequence[Message],
        *,
        temperature: float = 0.0,
        max_tokens: int = 128,
        stop: Sequence[str] = (),
        n: int = 1,
        logprobs: bool = False,
        seed: int | None = None,
        sample_id: int = 0,
    ) -> "LMRequest":
        frozen = tuple(tuple(sorted(m.items())) for m in messages)
        return cls(frozen, float(temperature), int(max_tokens), tuple(stop), int(n), bool(logprobs), seed, int(sample_id))

    @property
    def message_dicts(self) -> list[Message]:
        return [dict(m) for m in self.messages]

    def params(self) -> dict[str, Any]:
        """Sampling parameters (everything except messages), as plain data."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "n": self.n,
            "logprobs": self.logprobs,
            "seed": self.seed,
            "sample_id": self.sample_id,
        }

    def cache_key(self, lm_identity: str) -> str:
        """Content address of this request sent to the backend identified by ``lm_identity``.

        ``lm_identity`` is backend + model (+ anything that changes outputs, never credentials).
        """
        payload = {"lm": lm_identity, "messages": self.message_dicts, "params": self.params()}
        return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class TokenLogprob:
    token: str
    logprob: float


@dataclass
class LMResponse:
    """The answer to one :class:`LMRequest`.

    ``texts`` holds ``request.n`` samples. ``error``/``error_type`` are set when the request
    failed (after retries): the failure is data, recorded per example by the evaluator.
    ``cached`` is true when the response came from the cache (it then cost nothing).
    """

    texts: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reasons: list[str] = field(default_factory=list)
    logprobs: list[list[TokenLogprob]] | None = None
    model: str = ""
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    attempts: int = 1
    error: str | None = None
    error_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """The first sample ('' when the request failed)."""
        return self.texts[0] if self.texts else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LMResponse":
        data = dict(data)
        data["usage"] = Usage(**data.get("usage", {}))
        if data.get("logprobs") is not None:
            data["logprobs"] = [[TokenLogprob(**t) for t in sample] for sample in data["logprobs"]]
        return cls(**data)

    @classmethod
    def failure(cls, error: BaseException | str, *, model: str = "", attempts: int = 1, latency_s: float = 0.0) -> "LMResponse":
        if isinstance(error, BaseException):
            return cls(model=model, attempts=attempts, latency_s=latency_s, error=str(error), error_type=type(error).__name__)
        return cls(model=model, attempts=attempts, latency_s=latency_s, error=error, error_type="Error")


@runtime_checkable
class LM(Protocol):
    """The one LM protocol.

    ``identity`` names backend and model (and any setting that changes outputs, never a
    credential); it is part of every cache key.
    """

    identity: str

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        """Answer every request; the i-th response answers the i-th request."""
        ...

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        ...


class BaseLM:
    """Convenience base: implement ``complete``; ``acomplete`` runs it in a worker thread."""

    identity: str = "base"

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:  # pragma: no cover - abstract
        raise NotImplementedError

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        return await asyncio.to_thread(self.complete, list(requests))

    def close(self) -> None:
        """Release resources (model weights, connections). Safe to call twice."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"
