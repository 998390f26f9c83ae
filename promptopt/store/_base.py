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
import dataclasses
import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from promptopt.errors import NotFoundError, StoreCorruptedError, StoreError
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

    def add_candidates(self, run_id: str, records: Sequence[CandidateRecord]) -> list[bool]:
        """Add many candidates (one transaction where the backend has them); one flag per record,
        True where it was new. ``records[i].run_id`` must be ``run_id``."""
        return [
            self.add_candidate(run_id, r.candidate, parents=r.parents, strategy=r.strategy, step=r.step, metadata=r.metadata)
            for r in records
        ]

    @abc.abstractmethod
    def get_candidates(self, run_id: str) -> list[CandidateRecord]: ...

    @abc.abstractmethod
    def get_candidate(self, run_id: str, candidate_hash: str) -> CandidateRecord:
        """Accepts a unique prefix of the hash (e.g. the 12-character short hash)."""

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

    @abc.abstractmethod
    def list_prompts(self) -> list[tuple[str, int]]:
        """Registered prompt names with their latest version, sorted by name."""

    # --- housekeeping -------------------------------------------------------------------
    def check_integrity(self, *, stale_after_s: float = 6 * 3600) -> list[str]:
        """Problems found, one line each (empty list = healthy). Used by ``promptopt doctor``.
        A run marked ``running`` that wrote nothing for ``stale_after_s`` seconds is reported
        as half-written (its process probably died)."""
        return []

    def close(self) -> None:
        """Release connections. Safe to call twice."""

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers shared by the implementations ----------------------------------------------
# Both storages run every value through the same normalisation, so a record reads back the
# same from memory as from SQL (the contract tests compare them).

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _new_run_id() -> str:
    """``run-YYYYMMDD-HHMMSS-<6 hex>`` in UTC: sortable by time, unique across processes."""
    return time.strftime("run-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def _check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise NotFoundError(
            f"Invalid run id {run_id!r}.",
            fix="Use 1-128 characters from letters, digits and . _ : - (starting with a letter or digit), or let the store pick one.",
        )
    return run_id


def _check_status(status: str) -> str:
    if status not in RUN_STATUSES:
        raise StoreError(f"Unknown run status {status!r}.", fix=f"Use one of: {', '.join(RUN_STATUSES)}.")
    return status


def _plain(obj: Any) -> Any:
    # JSON has no NaN/inf (and PostgreSQL rejects them): non-finite floats are stored as null,
    # which is how "no score" is written everywhere else. numpy scalars/arrays become plain data.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return _plain(obj.tolist())
    return obj  # json.dumps rejects it below, with the type named


def _encode_json(value: Any, what: str) -> str:
    try:
        return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(
            f"{what} is not plain JSON data: {exc}.",
            fix="Store only str, int, float, bool, None, lists and dicts (convert other objects first); the store never pickles.",
        ) from None


def _decode_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreCorruptedError(
            f"Stored {what} is not valid JSON ({exc}).",
            fix="The store was edited by hand or damaged: run `promptopt doctor` on it and restore it from a backup.",
        ) from None


# Keys whose values are credentials. Deliberately exact names and a few suffixes: a broad
# pattern such as "*token*" would also hide ordinary settings like max_tokens or eos_token.
_SECRET_KEYS = frozenset(
    {
        "api_key", "apikey", "api_secret", "secret", "secret_key", "client_secret", "password", "passwd",
        "authorization", "access_token", "refresh_token", "auth_token", "bearer_token", "id_token",
        "session_token", "hf_token", "github_token", "private_key", "aws_secret_access_key",
        "aws_session_token", "credentials",
    }
)
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_secret", "_password", "_secret_key", "_access_token", "_auth_token")
_URL_PASSWORD_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?P<tail>@)")
REDACTED = "***"


def _is_secret_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "_")
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def _redact(obj: Any) -> Any:
    """A copy of run settings with credentials masked: values under secret-looking keys, and
    passwords inside URLs (``postgresql://user:pw@host`` -> ``postgresql://user:***@host``)."""
    if isinstance(obj, dict):
        return {k: (REDACTED if _is_secret_key(k) and v not in (None, "") else _redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v) for v in obj]
    if isinstance(obj, str) and "://" in obj and "@" in obj:
        return _URL_PASSWORD_RE.sub(lambda m: m["head"] + REDACTED + m["tail"], obj)
    return obj


def _normalise_result(r: ExampleResult) -> ExampleResult:
    """A validated copy with the types the SQL columns give back (float score, int tokens...)."""
    if not isinstance(r, ExampleResult):
        raise StoreError(f"Expected an ExampleResult, got {type(r).__name__}.", fix="Pass the evaluator's ExampleResult objects.")
    if not isinstance(r.example_id, str) or not r.example_id:
        raise StoreError(f"Evaluation with invalid example id {r.example_id!r}.", fix="Every example needs a non-empty string id.")
    score = None if r.score is None else float(r.score)
    if score is not None and not math.isfinite(score):
        raise StoreError(
            f"Example {r.example_id!r} has a non-finite score ({r.score!r}).",
            fix="Metrics must return a finite number; a failed call is recorded with error set and score None.",
        )
    return dataclasses.replace(
        r,
        score=score,
        output="" if r.output is None else str(r.output),
        prediction=None if r.prediction is None else str(r.prediction),
        parsed=bool(r.parsed),
        error=None if r.error is None else str(r.error),
        error_type=None if r.error_type is None else str(r.error_type),
        feedback=None if r.feedback is None else str(r.feedback),
        cache_key=None if r.cache_key is None else str(r.cache_key),
        cached=bool(r.cached),
        prompt_tokens=int(r.prompt_tokens or 0),
        completion_tokens=int(r.completion_tokens or 0),
        cost_usd=float(r.cost_usd or 0.0),
        latency_s=float(r.latency_s or 0.0),
    )


def _dedupe_results(results: Sequence[ExampleResult]) -> list[ExampleResult]:
    """Within one batch, the same rule as across batches: the first row of an example stays,
    unless it failed and a later one succeeded."""
    kept: dict[str, ExampleResult] = {}
    for r in results:
        old = kept.get(r.example_id)
        if old is None or (old.failed and not r.failed):
            kept[r.example_id] = r
    return list(kept.values())


_PROMPT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def _check_prompt_name(name: str) -> str:
    if not isinstance(name, str) or not _PROMPT_NAME_RE.match(name):
        raise StoreError(
            f"Invalid prompt name {name!r}.",
            fix="Use 1-200 characters from letters, digits and . _ / - (starting with a letter or digit).",
        )
    if name.startswith("run-"):
        raise StoreError(
            f"Prompt name {name!r} looks like a run id.",
            fix="Choose a name that does not start with 'run-', so load_prompt can tell names from run ids.",
        )
    return name
