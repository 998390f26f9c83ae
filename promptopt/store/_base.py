"""The storage interface and its written invariants.

Invariants every implementation keeps (the contract tests in ``tests/store/`` check each):

1. **Idempotent writes.** A candidate is identified within a run by its content hash; adding it
   again is a no-op that returns False. An evaluation is identified by
   (run, candidate hash, split, example id); adding it again is a no-op, except that a stored
   *failed* evaluation (``error`` set) is replaced by a later successful one.
2. **Finished records are immutable.** A successful evaluation never changes once written.
3. **Atomic batches.** ``add_evaluations`` writes all of its rows or none (one transaction).
4. **Safe under threads and processes.** SQLite runs in WAL mode with a busy timeout; every
   write is one short transaction; in-memory storage uses a lock.
5. **Ordered reads.** Candidates come back in insertion order, evaluations in insertion order.
6. **Versioned schema.** The schema version is stored; opening a store written by a newer
   version raises :class:`~promptopt.errors.SchemaVersionError`; older versions are migrated.
7. **Plain data only.** Everything is stored as JSON (no pickle), credentials never.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

from promptopt.evaluators._base import ExampleResult
from promptopt.prompt import Candidate

__all__ = ["RunRecord", "CandidateRecord", "EvaluationRecord", "EventRecord", "Storage", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

RUN_STATUSES = ("created", "running", "completed", "failed", "interrupted", "budget_exhausted")


@dataclass
class RunRecord:
    id: str
    name: str
    strategy: str
    strategy_params: dict[str, Any]
    config: dict[str, Any]
    seed: int
    status: str = "created"
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class CandidateRecord:
    run_id: str
    candidate: Candidate
    parents: list[str] = field(default_factory=list)
    strategy: str = ""
    step: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def hash(self) -> str:
        return self.candidate.hash


@dataclass
class EvaluationRecord:
    run_id: str
    candidate_hash: str
    split: str
    result: ExampleResult
    created_at: float = 0.0


@dataclass
class EventRecord:
    """Anything else a run wants to keep: failed proposals with their raw text, step markers,
    pairwise judgements. ``payload`` is JSON data."""

    run_id: str
    step: int
    kind: str
    payload: dict[str, Any]
    created_at: float = 0.0


class Storage(abc.ABC):
    """Where runs, candidates, evaluations and events live. See the module docstring for the invariants."""

    # --- runs ---------------------------------------------------------------------------
    @abc.abstractmethod
    def create_run(
        self,
        *,
        name: str,
        strategy: str,
        strategy_params: dict[str, Any],
        config: dict[str, Any],
        seed: int,
        run_id: str | None = None,
    ) -> str:
        """Create a run and return its id (a new unique id unless ``run_id`` is given;
        raises StoreError if that id exists)."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """Raises StoreError (naming the fix: list runs with ``promptopt show``) if unknown.
        Accepts a unique prefix of the id, like git."""

    @abc.abstractmethod
    def list_runs(self) -> list[RunRecord]: ...

    @abc.abstractmethod
    def update_run(self, run_id: str, *, status: str | None = None, summary: dict[str, Any] | None = None) -> None: ...

    # --- candidates ---------------------------------------------------------------------
    @abc.abstractmethod
    def add_candidate(
        self,
        run_id: str,
        candidate: Candidate,
        *,
        parents: Sequence[str] = (),
        strategy: str = "",
        step: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Add a candidate; False (and nothing changed) if the run already has its hash."""

    @abc.abstractmethod
    def get_candidates(self, run_id: str) -> list[CandidateRecord]: ...

    @abc.abstractmethod
    def get_candidate(self, run_id: str, candidate_hash: str) -> CandidateRecord: ...

    # --- evaluations --------------------------------------------------------------------
    @abc.abstractmethod
    def add_evaluations(self, run_id: str, candidate_hash: str, split: str, results: Sequence[ExampleResult]) -> int:
        """Add evaluations in one transaction; returns how many rows were new (or replaced a failure)."""

    @abc.abstractmethod
    def get_evaluations(
        self, run_id: str, *, candidate_hash: str | None = None, split: str | None = None
    ) -> list[EvaluationRecord]: ...

    # --- events and strategy state ------------------------------------------------------
    @abc.abstractmethod
    def add_event(self, run_id: str, step: int, kind: str, payload: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def get_events(self, run_id: str, kind: str | None = None) -> list[EventRecord]: ...

    @abc.abstractmethod
    def set_state(self, run_id: str, key: str, value: Any) -> None:
        """Keep JSON-serialisable strategy state that must survive a crash."""

    @abc.abstractmethod
    def get_state(self, run_id: str, key: str, default: Any = None) -> Any: ...

    # --- prompt registry ----------------------------------------------------------------
    @abc.abstractmethod
    def register_prompt(self, name: str, run_id: str, candidate_hash: str) -> int:
        """Publish a candidate under ``name``; returns the new version number (1, 2, ...)."""

    @abc.abstractmethod
    def get_registered_prompt(self, name: str, version: int | None = None) -> tuple[str, str, int]:
        """(run_id, candidate_hash, version) of ``name`` (latest version by default)."""

    # --- housekeeping -------------------------------------------------------------------
    def check_integrity(self) -> list[str]:
        """Problems found (empty list = healthy). Used by ``promptopt doctor``."""
        return []

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
