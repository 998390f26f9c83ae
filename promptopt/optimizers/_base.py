"""The one ask/tell protocol every strategy speaks.

A strategy proposes :class:`Trial` s (a candidate and the examples to score it on); the shared
loop (:mod:`promptopt.run`) evaluates what the store does not already hold, records it, and
tells the strategy. Strategies read everything they know from the :class:`History`, a view of
the store, so a resumed run needs no special code: the loop replays the strategy from step 0,
proposer calls come back from the LM cache and evaluations from the store, at no cost.

scikit-learn rule: a strategy's constructor only stores its keyword arguments (one attribute
per parameter, same name); validation happens in :meth:`Strategy.setup` at run start. So a
strategy is rebuilt from its stored ``name`` and ``get_params()``.
"""

from __future__ import annotations

import abc
import hashlib
import inspect
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from promptopt.errors import ConfigError, UnknownNameError
from promptopt.evaluators._base import EvalResult, Evaluator, ExampleResult
from promptopt.lm._types import LM
from promptopt.prompt import Candidate
from promptopt.store._base import CandidateRecord, Storage
from promptopt.task import Example, Task

__all__ = ["Trial", "History", "StrategyContext", "Strategy", "register_strategy", "make_strategy", "STRATEGIES"]


@dataclass
class Trial:
    """Evaluate ``candidate`` on ``example_ids`` of ``split`` (None: the whole split).

    ``parents``: hashes of the candidates it was derived from (lineage). ``metadata``: anything
    the strategy wants stored with the candidate (e.g. the meta-prompt step, the proposer's
    reasoning)."""

    candidate: Candidate
    example_ids: tuple[str, ...] | None = None
    split: str = "val"
    parents: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


class History:
    """What a strategy knows about its run: candidates proposed and results seen so far, plus
    the current step. The loop fills it as the run (or its replay, on resume) proceeds, so a
    strategy replayed on resume sees exactly what it saw the first time. ``load=True`` fills it
    from the store at once (for reports and inspection)."""

    def __init__(self, store: Storage, run_id: str, task: Task, *, load: bool = False) -> None:
        self.store = store
        self.run_id = run_id
        self.task = task
        self.step = 0
        self._candidates: dict[str, CandidateRecord] = {}
        self._results: dict[tuple[str, str], dict[str, ExampleResult]] = {}
        if not load:
            return
        for rec in store.get_candidates(run_id):
            self._candidates[rec.hash] = rec
        for ev in store.get_evaluations(run_id):
            self._results.setdefault((ev.candidate_hash, ev.split), {})[ev.result.example_id] = ev.result

    # --- written by the loop ------------------------------------------------------------
    def _add_candidate(self, rec: CandidateRecord) -> None:
        self._candidates.setdefault(rec.hash, rec)

    def _add_results(self, candidate_hash: str, split: str, results: Sequence[ExampleResult]) -> None:
        bucket = self._results.setdefault((candidate_hash, split), {})
        for r in results:
            old = bucket.get(r.example_id)
            if old is None or old.failed:
                bucket[r.example_id] = r

    # --- read by strategies -------------------------------------------------------------
    def candidates(self) -> list[CandidateRecord]:
        return list(self._candidates.values())

    def has(self, candidate: Candidate | str) -> bool:
        key = candidate if isinstance(candidate, str) else candidate.hash
        return key in self._candidates

    def candidate(self, candidate_hash: str) -> CandidateRecord:
        return self._candidates[candidate_hash]

    def results(self, candidate: Candidate | str, split: str = "val") -> dict[str, ExampleResult]:
        key = candidate if isinstance(candidate, str) else candidate.hash
        return dict(self._results.get((key, split), {}))

    def eval_result(self, candidate: Candidate, split: str = "val", example_ids: Sequence[str] | None = None) -> EvalResult:
        res = self._results.get((candidate.hash, split), {})
        ids = list(example_ids) if example_ids is not None else list(res)
        return EvalResult(candidate, [res[i] for i in ids if i in res])

    def score(self, candidate: Candidate | str, split: str = "val") -> float:
        """Mean score over stored, scored examples of ``split`` (NaN when none)."""
        res = self.results(candidate, split)
        scored = [r.score for r in res.values() if r.score is not None]
        return sum(scored) / len(scored) if scored else math.nan

    def n_scored(self, candidate: Candidate | str, split: str = "val") -> int:
        return sum(1 for r in self.results(candidate, split).values() if r.score is not None)

    def leaderboard(self, split: str = "val", min_examples: int = 1) -> list[tuple[CandidateRecord, float]]:
        """Candidates with at least ``min_examples`` scored examples, best first (ties: earlier first)."""
        rows = []
        for idx, rec in enumerate(self._candidates.values()):
            if self.n_scored(rec.hash, split) >= min_examples:
                rows.append((rec, self.score(rec.hash, split), idx))
        rows.sort(key=lambda t: (-t[1], t[2]))
        return [(r, s) for r, s, _ in rows]

    def best(self, split: str = "val", min_examples: int | None = None) -> CandidateRecord | None:
        """Best candidate by mean score. By default only candidates scored on the most examples
        compete, so a lucky minibatch cannot beat a full evaluation."""
        if min_examples is None:
            counts = [self.n_scored(r.hash, split) for r in self._candidates.values()]
            min_examples = max(counts, default=0)
        board = self.leaderboard(split, max(1, min_examples))
        return board[0][0] if board else None

    def get_state(self, key: str, default: Any = None) -> Any:
        return self.store.get_state(self.run_id, key, default)

    def set_state(self, key: str, value: Any) -> None:
        self.store.set_state(self.run_id, key, value)

    def record_event(self, kind: str, payload: dict[str, Any]) -> None:
        self.store.add_event(self.run_id, self.step, kind, payload)


@dataclass
class StrategyContext:
    """What a strategy may use, handed over at run start. Strategies never import the loop."""

    task: Task
    task_lm: LM
    proposer_lm: LM
    evaluator: Evaluator
    seed: int = 0
    judge: Any = None
    evaluate: Callable[[Sequence[Trial]], list[EvalResult]] | None = None
    """Evaluate trials now (through the loop: recorded, budgeted, store-deduplicated). For
    strategies that must see scores inside one step (bandits, racing)."""

    def rng(self, step: int, salt: str = "") -> random.Random:
        """A generator determined by (seed, step, salt): replaying a run replays its draws."""
        digest = hashlib.sha256(f"{self.seed}:{step}:{salt}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))


class Strategy(abc.ABC):
    """Base of all strategies. Subclasses set ``name``, take explicit keyword arguments in
    ``__init__`` and store each as an attribute of the same name, and implement :meth:`ask`."""

    name: ClassVar[str] = ""

    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {
            p: getattr(self, p)
            for p in sig.parameters
            if p != "self" and sig.parameters[p].kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        }

    def setup(self, context: StrategyContext) -> None:
        """Validate parameters against the task and keep the context. Raise ConfigError naming the fix."""
        self.context = context

    @abc.abstractmethod
    def ask(self, history: History) -> list[Trial]:
        """Propose the next trials from the history. An empty list means the strategy is done."""

    def tell(self, history: History, results: list[EvalResult]) -> None:
        """Hook: the results of the trials just asked (one per trial, same order)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'.")
    STRATEGIES[cls.name] = cls
    return cls


def make_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Rebuild a strategy from its registered name and parameters."""
    import promptopt.optimizers  # noqa: F401  (registers the built-in strategies)

    if name not in STRATEGIES:
        raise UnknownNameError(f"Unknown strategy {name!r}.", fix=f"Use one of: {', '.join(sorted(STRATEGIES))}.")
    cls = STRATEGIES[name]
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ConfigError(f"Bad parameters for strategy {name!r}: {exc}.", fix=f"Its parameters are: {', '.join(allowed)}.") from exc


def examples_by_id(task: Task, split: str, example_ids: Sequence[str] | None) -> list[Example]:
    pool = task.split(split)
    if example_ids is None:
        return list(pool)
    index = {e.id: e for e in pool}
    missing = [i for i in example_ids if i not in index]
    if missing:
        raise ConfigError(f"Trial asks for unknown {split} example ids {missing[:5]}.", fix="Strategies must pick ids from the task's split.")
    return [index[i] for i in example_ids]
