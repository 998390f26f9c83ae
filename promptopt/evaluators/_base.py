"""Evaluation results: per example, never a silent zero.

An :class:`ExampleResult` records what the model said, what the parser read, the score, and
(when the LM call failed) the error. ``score`` is None exactly when the example could not be
scored because the call failed; an answer that could not be parsed scores 0 and is flagged
``parsed=False`` (that is the model's fault, not the infrastructure's).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from promptopt.prompt import Candidate
from promptopt.task import Example

__all__ = ["ExampleResult", "EvalResult", "Evaluator"]


@dataclass
class ExampleResult:
    example_id: str
    score: float | None
    output: str = ""
    prediction: str | None = None
    parsed: bool = True
    error: str | None = None
    error_type: str | None = None
    feedback: str | None = None
    cache_key: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExampleResult":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class EvalResult:
    """The results of one candidate on a set of examples."""

    candidate: Candidate
    results: list[ExampleResult] = field(default_factory=list)

    @property
    def scored(self) -> list[ExampleResult]:
        return [r for r in self.results if r.score is not None]

    @property
    def n_errors(self) -> int:
        return sum(1 for r in self.results if r.failed)

    @property
    def n_unparsed(self) -> int:
        return sum(1 for r in self.results if not r.failed and not r.parsed)

    @property
    def mean(self) -> float:
        """Mean score over examples that could be scored (NaN if none could)."""
        s = self.scored
        return sum(r.score for r in s) / len(s) if s else math.nan  # type: ignore[misc]

    @property
    def scores(self) -> list[float]:
        return [float(r.score) for r in self.scored]  # type: ignore[arg-type]

    def by_id(self) -> dict[str, ExampleResult]:
        return {r.example_id: r for r in self.results}


@runtime_checkable
class Evaluator(Protocol):
    """Scores candidates on examples. Implementations batch all (candidate, example) calls
    into one LM batch, ordered so that calls sharing a prompt prefix run back to back."""

    def evaluate(self, candidates: Sequence[Candidate], examples: Sequence[Example]) -> list[EvalResult]:
        ...
