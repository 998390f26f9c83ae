"""Shared plumbing of the LM wrappers (cache, ledger, limiter, fault injection).

What every wrapper (and backend) needs and none should re-implement:

* :class:`WrapperLM`: forwards ``identity``, ``close``, ``score_continuation`` and the ledger
  lookup to the wrapped LM, so a stack built by ``make_lm`` behaves like its backend.
* partial results on abort: when a batch stops on a systemic error (unreachable server, bad key)
  after some requests were already answered, the error carries those answers
  (:func:`attach_partial` / :func:`partial_of`). The ledger counts them and the cache keeps
  them, so nothing that was paid for is lost or miscounted.
* prefix order: llama.cpp reuses the KV cache of the previous prompt's prefix, and servers with
  prefix caching do too; requests sharing a prefix must be sent back to back
  (:func:`prefix_order`). Measured on the embedded model: 11.1 calls/s grouped vs 1.8
  interleaved.
* per-sample seeds (:func:`derive_seed`), so a new ``sample_id`` really draws a new sample.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

from promptopt.errors import LMConfigError
from promptopt.lm._types import BaseLM, LMRequest, LMResponse, Message

if TYPE_CHECKING:  # pragma: no cover
    from promptopt.lm._ledger import Ledger

__all__ = ["WrapperLM", "attach_partial", "derive_seed", "partial_of", "prefix_key", "prefix_order"]

_PARTIAL_ATTR = "partial_responses"


def attach_partial(error: BaseException, responses: Sequence[LMResponse | None]) -> BaseException:
    """Record on ``error`` the responses already obtained for the batch it aborted (None = unanswered)."""
    setattr(error, _PARTIAL_ATTR, list(responses))
    return error


def partial_of(error: BaseException, n: int) -> list[LMResponse | None]:
    """The responses ``error`` carries for a batch of ``n`` requests (all None when it carries none)."""
    partial = getattr(error, _PARTIAL_ATTR, None)
    if partial is None or len(partial) != n:
        return [None] * n
    return list(partial)


def prefix_key(request: LMRequest) -> tuple[tuple[str, str], ...]:
    """Sort key putting requests with a common rendered prefix next to each other.

    Chat templates render messages in order, role first then content, so the lexicographic order
    of (role, content) pairs groups equal leading messages and, within a message, long common
    string prefixes (same instruction, different input).
    """
    return tuple((m.get("role", ""), m.get("content", "")) for m in (dict(pairs) for pairs in request.messages))


def prefix_order(requests: Sequence[LMRequest]) -> list[int]:
    """Indices of ``requests`` in prefix-grouped order (stable: ties keep submission order)."""
    return sorted(range(len(requests)), key=lambda i: prefix_key(requests[i]))


def derive_seed(base: int, sample_id: int, index: int) -> int:
    """Seed of sample ``index`` of a request: the request's own seed for its first sample, and a
    fresh reproducible seed per (sample_id, index) otherwise, so a new ``sample_id`` really draws
    a new sample."""
    if sample_id == 0 and index == 0:
        return base
    digest = hashlib.sha256(f"{base}:{sample_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class WrapperLM(BaseLM):
    """An LM that wraps another one and answers for the same model (same ``identity``)."""

    def __init__(self, inner: Any) -> None:
        if not hasattr(inner, "complete") or not hasattr(inner, "identity"):
            raise LMConfigError(
                f"{type(self).__name__} needs an LM (an object with .identity and .complete()), got {type(inner).__name__}.",
                fix="Pass a backend such as make_lm('embedded') or LlamaCppLM(), or any object implementing the LM protocol.",
            )
        self.inner = inner
        self.identity = inner.identity

    @property
    def ledger(self) -> "Ledger | None":
        """The ledger counting this stack's calls (None when the stack has no LedgeredLM)."""
        return getattr(self.inner, "ledger", None)

    def record_cache_hits(self, n: int) -> None:
        """Forward ``n`` cache hits to the ledger below, if any."""
        hook = getattr(self.inner, "record_cache_hits", None)
        if hook is not None:
            hook(n)

    @property
    def score_continuation(self) -> Callable[[Sequence[Message], str], float]:
        """Total log-probability of a continuation as the assistant reply (white-box backends only).

        Present exactly when the backend below has it, so ``getattr(lm, "score_continuation",
        None)`` tells whether a stack can score; wrappers hook in by overriding
        ``_score_continuation``.
        """
        if getattr(self.inner, "score_continuation", None) is None:
            raise AttributeError(f"{self.identity!r} cannot score continuations (no access to token log-probabilities)")
        return self._score_continuation

    def _score_continuation(self, messages: Sequence[Message], continuation: str) -> float:
        return float(self.inner.score_continuation(messages, continuation))

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()
