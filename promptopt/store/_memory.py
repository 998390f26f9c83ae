"""In-process storage: the reference implementation of the Storage invariants.

Nothing survives the process. Mutable values are kept as JSON text and decoded on every read,
so callers can never change a stored record through a reference (in or out), and a record reads
back exactly as it would from SQL (tuples become lists, NaN becomes None).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from promptopt.errors import NotFoundError, StoreError
from promptopt.evaluators._base import ExampleResult
from promptopt.prompt import Candidate
from promptopt.store._base import (
    CandidateRecord,
    EvaluationRecord,
    EventRecord,
    RunRecord,
    Storage,
    _check_prompt_name,
    _check_run_id,
    _check_status,
    _decode_json,
    _dedupe_results,
    _encode_json,
    _new_run_id,
    _normalise_result,
    _redact,
)

__all__ = ["MemoryStorage"]


@dataclass
class _Run:
    id: str
    name: str
    strategy: str
    strategy_params: str
    config: str
    seed: int
    status: str
    summary: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class _Cand:
    candidate: Candidate  # frozen, safe to share
    parents: tuple[str, ...]
    strategy: str
    step: int
    metadata: str
    created_at: float


@dataclass(frozen=True)
class _Event:
    step: int
    kind: str
    payload: str
    created_at: float


@dataclass(frozen=True)
class _Eval:
    candidate_hash: str
    split: str
    result: ExampleResult  # a private copy; copied again on the way out
    created_at: float


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise StoreError(f"{what} must be a non-empty string, got {value!r}.", fix=f"Pass a non-empty {what}.")
    return value


class MemoryStorage(Storage):
    """Thread-safe storage in process memory (one lock around every operation)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._cands: dict[str, dict[str, _Cand]] = {}
        self._evals: dict[str, list[_Eval]] = {}
        self._eval_pos: dict[str, dict[tuple[str, str, str], int]] = {}
        self._events: dict[str, list[_Event]] = {}
        self._state: dict[tuple[str, str], str] = {}
        self._prompts: dict[str, list[tuple[str, str, float]]] = {}

    def __repr__(self) -> str:
        return f"MemoryStorage(runs={len(self._runs)})"

    # --- internals ----------------------------------------------------------------------
    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            raise NotFoundError(f"No run {run_id!r} in this in-memory store.", fix="Create the run first, or list runs with `promptopt show`.")
        return run

    def _cand(self, run_id: str, candidate_hash: str) -> tuple[str, _Cand]:
        cands = self._cands.get(run_id, {})
        if candidate_hash in cands:
            return candidate_hash, cands[candidate_hash]
        matches = [h for h in cands if candidate_hash and h.startswith(candidate_hash)]
        if len(matches) == 1:
            return matches[0], cands[matches[0]]
        if matches:
            raise NotFoundError(
                f"Candidate hash prefix {candidate_hash!r} is ambiguous in run {run_id}.",
                fix="Give more characters of the hash.",
            )
        raise NotFoundError(
            f"Candidate {candidate_hash[:12]!r} is not in run {run_id!r}.",
            fix="Add the candidate with add_candidate first, or list candidates with `promptopt show RUN`.",
        )

    @staticmethod
    def _run_record(r: _Run) -> RunRecord:
        return RunRecord(
            id=r.id,
            name=r.name,
            strategy=r.strategy,
            strategy_params=_decode_json(r.strategy_params, "strategy_params"),
            config=_decode_json(r.config, "config"),
            seed=r.seed,
            status=r.status,
            summary=_decode_json(r.summary, "summary"),
            created_at=r.created_at,
            updated_at=r.updated_at,
        )

    @staticmethod
    def _cand_record(run_id: str, h: str, c: _Cand) -> CandidateRecord:
        return CandidateRecord(
            run_id=run_id,
            candidate=c.candidate,
            parents=list(c.parents),
            strategy=c.strategy,
            step=c.step,
            metadata=_decode_json(c.metadata, "candidate metadata"),
            created_at=c.created_at,
        )

    # --- runs ---------------------------------------------------------------------------
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
        params_json = _encode_json(_redact(dict(strategy_params)), "strategy_params")
        config_json = _encode_json(_redact(dict(config)), "config")
        with self._lock:
            if run_id is not None:
                _check_run_id(run_id)
                if run_id in self._runs:
                    raise StoreError(
                        f"A run with id {run_id!r} already exists.",
                        fix="Choose another run id, or continue that run with `promptopt resume`.",
                    )
            else:
                run_id = _new_run_id()
                while run_id in self._runs:
                    run_id = _new_run_id()
            now = time.time()
            self._runs[run_id] = _Run(run_id, str(name), str(strategy), params_json, config_json, int(seed), "created", "{}", now, now)
            self._cands[run_id] = {}
            self._evals[run_id] = []
            self._eval_pos[run_id] = {}
            self._events[run_id] = []
            return run_id

    def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            if not isinstance(run_id, str) or not run_id:
                raise NotFoundError(f"Invalid run id {run_id!r}.", fix="List runs with `promptopt show`.")
            if run_id in self._runs:
                return self._run_record(self._runs[run_id])
            matches = [rid for rid in self._runs if rid.startswith(run_id)]
            if len(matches) == 1:
                return self._run_record(self._runs[matches[0]])
            if not matches:
                raise NotFoundError(f"No run {run_id!r} in this in-memory store.", fix="List runs with `promptopt show`.")
            raise NotFoundError(
                f"Run id prefix {run_id!r} is ambiguous: it matches {', '.join(matches[:5])}{', ...' if len(matches) > 5 else ''}.",
                fix="Type more characters of the id (list runs with `promptopt show`).",
            )

    def list_runs(self) -> list[RunRecord]:
        with self._lock:
            return [self._run_record(r) for r in self._runs.values()]

    def update_run(self, run_id: str, *, status: str | None = None, summary: dict[str, Any] | None = None) -> None:
        if status is not None:
            _check_status(status)
        summary_new = _decode_json(_encode_json(_redact(dict(summary)), "summary"), "summary") if summary is not None else None
        with self._lock:
            run = self._run(run_id)
            if summary_new is not None:
                merged = _decode_json(run.summary, "summary")
                merged.update(summary_new)
                run.summary = _encode_json(merged, "summary")
            if status is not None:
                run.status = status
            run.updated_at = time.time()

    # --- candidates ---------------------------------------------------------------------
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
        rec = CandidateRecord(run_id, candidate, list(parents), strategy, step, dict(metadata or {}))
        return self.add_candidates(run_id, [rec])[0]

    def add_candidates(self, run_id: str, records: Sequence[CandidateRecord]) -> list[bool]:
        prepared = []
        for r in records:
            if r.run_id != run_id:
                raise StoreError(f"Candidate record of run {r.run_id!r} passed to run {run_id!r}.", fix="Group records by run.")
            if not isinstance(r.candidate, Candidate):
                raise StoreError(f"Expected a Candidate, got {type(r.candidate).__name__}.", fix="Pass promptopt.Candidate objects.")
            item = _Cand(
                candidate=r.candidate,
                parents=tuple(str(p) for p in r.parents),
                strategy=str(r.strategy),
                step=int(r.step),
                metadata=_encode_json(dict(r.metadata or {}), "candidate metadata"),
                created_at=0.0,
            )
            prepared.append((r.candidate.hash, item))
        with self._lock:
            self._run(run_id)
            cands = self._cands[run_id]
            now = time.time()
            flags = []
            for h, item in prepared:
                if h in cands:
                    flags.append(False)
                else:
                    cands[h] = dataclasses.replace(item, created_at=now)
                    flags.append(True)
            return flags

    def get_candidates(self, run_id: str) -> list[CandidateRecord]:
        with self._lock:
            return [self._cand_record(run_id, h, c) for h, c in self._cands.get(run_id, {}).items()]

    def get_candidate(self, run_id: str, candidate_hash: str) -> CandidateRecord:
        with self._lock:
            h, c = self._cand(run_id, candidate_hash)
            return self._cand_record(run_id, h, c)

    # --- evaluations --------------------------------------------------------------------
    def add_evaluations(self, run_id: str, candidate_hash: str, split: str, results: Sequence[ExampleResult]) -> int:
        _check_text(split, "split")
        # Validate the whole batch before touching anything: all rows or none (invariant 3).
        rows = _dedupe_results([_normalise_result(r) for r in results])
        with self._lock:
            self._run(run_id)
            if candidate_hash not in self._cands[run_id]:
                raise NotFoundError(
                    f"Candidate {candidate_hash[:12]!r} is not in run {run_id!r}.",
                    fix="Add the candidate with add_candidate before its evaluations.",
                )
            evals, pos = self._evals[run_id], self._eval_pos[run_id]
            now = time.time()
            changed = 0
            for r in rows:
                key = (candidate_hash, split, r.example_id)
                i = pos.get(key)
                if i is None:
                    pos[key] = len(evals)
                    evals.append(_Eval(candidate_hash, split, r, now))
                    changed += 1
                elif evals[i].result.failed and not r.failed:
                    # A failure is replaced in place: it keeps its position (as the SQL row keeps its id).
                    evals[i] = _Eval(candidate_hash, split, r, now)
                    changed += 1
            return changed

    def get_evaluations(
        self, run_id: str, *, candidate_hash: str | None = None, split: str | None = None
    ) -> list[EvaluationRecord]:
        with self._lock:
            return [
                EvaluationRecord(run_id, e.candidate_hash, e.split, dataclasses.replace(e.result), e.created_at)
                for e in self._evals.get(run_id, [])
                if (candidate_hash is None or e.candidate_hash == candidate_hash) and (split is None or e.split == split)
            ]

    # --- events and state ---------------------------------------------------------------
    def add_event(self, run_id: str, step: int, kind: str, payload: dict[str, Any]) -> None:
        _check_text(kind, "event kind")
        payload_json = _encode_json(dict(payload), f"payload of event {kind!r}")
        with self._lock:
            self._run(run_id)
            self._events[run_id].append(_Event(int(step), kind, payload_json, time.time()))

    def get_events(self, run_id: str, kind: str | None = None) -> list[EventRecord]:
        with self._lock:
            return [
                EventRecord(run_id, e.step, e.kind, _decode_json(e.payload, "event payload"), e.created_at)
                for e in self._events.get(run_id, [])
                if kind is None or e.kind == kind
            ]

    def set_state(self, run_id: str, key: str, value: Any) -> None:
        _check_text(key, "state key")
        value_json = _encode_json(value, f"state {key!r}")
        with self._lock:
            self._run(run_id)
            self._state[(run_id, key)] = value_json

    def get_state(self, run_id: str, key: str, default: Any = None) -> Any:
        with self._lock:
            text = self._state.get((run_id, key))
        return default if text is None else _decode_json(text, f"state {key!r}")

    # --- prompt registry ----------------------------------------------------------------
    def register_prompt(self, name: str, run_id: str, candidate_hash: str) -> int:
        _check_prompt_name(name)
        with self._lock:
            self._run(run_id)
            full_hash, _ = self._cand(run_id, candidate_hash)
            versions = self._prompts.setdefault(name, [])
            if versions and versions[-1][:2] == (run_id, full_hash):
                return len(versions)  # publishing the same candidate again is a no-op
            versions.append((run_id, full_hash, time.time()))
            return len(versions)

    def get_registered_prompt(self, name: str, version: int | None = None) -> tuple[str, str, int]:
        with self._lock:
            versions = self._prompts.get(name)
            if not versions:
                known = ", ".join(sorted(self._prompts)) or "none yet"
                raise StoreError(
                    f"No prompt registered under {name!r}.",
                    fix=f"Registered names: {known}. Publish one with `promptopt register RUN_ID {name}`.",
                )
            if version is None:
                version = len(versions)
            if not isinstance(version, int) or not 1 <= version <= len(versions):
                raise StoreError(
                    f"Prompt {name!r} has no version {version!r}.",
                    fix=f"Its versions are 1 to {len(versions)}; omit the version for the latest.",
                )
            run_id, h, _ = versions[version - 1]
            return run_id, h, version

    def list_prompts(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(name, len(v)) for name, v in sorted(self._prompts.items())]

    # --- housekeeping -------------------------------------------------------------------
    def check_integrity(self, *, stale_after_s: float = 6 * 3600) -> list[str]:
        problems: list[str] = []
        cutoff = time.time() - stale_after_s
        with self._lock:
            for run in self._runs.values():
                if run.status != "running":
                    continue
                times = [run.updated_at]
                times += [c.created_at for c in self._cands[run.id].values()]
                times += [e.created_at for e in self._evals[run.id]] + [e.created_at for e in self._events[run.id]]
                if max(times) < cutoff:
                    problems.append(f"run {run.id} is marked running but has written nothing for {time.time() - max(times):.0f} s")
            for run_id, cands in self._cands.items():
                for h, c in cands.items():
                    if c.candidate.hash != h:
                        problems.append(f"run {run_id}: candidate {h[:12]} has content hashing to {c.candidate.hash[:12]}")
                for e in self._evals.get(run_id, []):
                    if e.candidate_hash not in cands:
                        problems.append(f"run {run_id}: evaluation of {e.result.example_id!r} points at missing candidate {e.candidate_hash[:12]}")
                run = self._runs.get(run_id)
                if run is not None and run.status == "completed" and not cands:
                    problems.append(f"run {run_id} is marked completed but has no candidates (half-written run)")
            for name, versions in self._prompts.items():
                for i, (run_id, h, _) in enumerate(versions, 1):
                    if h not in self._cands.get(run_id, {}):
                        problems.append(f"prompt {name} v{i} points at missing candidate {h[:12]} of run {run_id}")
        return problems

    def close(self) -> None:
        """Nothing to release; the records stay readable (a run's owner may still inspect them)."""
