"""A scripted LM for tests and drills: a Python function answers each request.

Not a mock of any backend: it implements the LM protocol for real, so every wrapper (cache,
ledger, limiter, fault injection) runs unchanged on top of it.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

from promptopt.lm._types import BaseLM, LMRequest, LMResponse, Usage

__all__ = ["ScriptedLM"]

Responder = Callable[[LMRequest], "str | list[str] | LMResponse"]


class ScriptedLM(BaseLM):
    """Answers with ``responder(request)``: a string (every sample the same), a list of ``n``
    strings, or a full :class:`LMResponse`. A responder that raises makes the call raise, as a
    real backend would (wrap it in a limiter to turn transient errors into retries/failures).

    Token usage is estimated as whitespace-separated words (prompt: all message contents).
    ``calls`` records every request actually answered; ``latency_s`` sleeps per request.
    """

    def __init__(self, responder: Responder, *, identity: str = "scripted", latency_s: float = 0.0) -> None:
        self.responder = responder
        self.identity = identity
        self.latency_s = latency_s
        self.calls: list[LMRequest] = []
        self._lock = threading.Lock()

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        out = []
        for req in requests:
            if self.latency_s:
                time.sleep(self.latency_s)
            with self._lock:
                self.calls.append(req)
            answer = self.responder(req)
            if isinstance(answer, LMResponse):
                out.append(answer)
                continue
            texts = [answer] * req.n if isinstance(answer, str) else list(answer)
            prompt_tokens = sum(len(m["content"].split()) for m in req.message_dicts)
            completion_tokens = sum(len(t.split()) for t in texts)
            out.append(
                LMResponse(
                    texts=texts,
                    usage=Usage(prompt_tokens, completion_tokens),
                    finish_reasons=["stop"] * len(texts),
                    model=self.identity,
                    latency_s=self.latency_s,
                )
            )
        return out

    @property
    def n_calls(self) -> int:
        return len(self.calls)
