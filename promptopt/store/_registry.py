"""The prompt registry: production code loads a published candidate by name.

``load_prompt("sentiment")`` returns the latest version published under that name (``promptopt
register RUN NAME``); ``load_prompt("sentiment", version=2)`` a given one; ``load_prompt(run_id)``
the best candidate of a run. Also home of the one rule that picks a run's best candidate,
shared with export.
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any

from promptopt.errors import ConfigError, StoreCorruptedError, StoreError, UnknownNameError
from promptopt.prompt import Candidate
from promptopt.store._base import CandidateRecord, RunRecord, Storage

__all__ = ["load_prompt", "DEFAULT_STORE_PATH"]

DEFAULT_STORE_PATH = ".promptopt/store.sqlite"
"""Where the CLI keeps its store (relative to the working directory); ``$PROMPTOPT_STORE`` overrides it."""


@dataclass(frozen=True)
class SplitStats:
    n: int  # evaluations stored (failed ones included)
    n_scored: int
    mean: float | None  # over scored examples; None when none is scored
    n_errors: int
    n_unparsed: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "n": self.n, "n_scored": self.n_scored, "n_errors": self.n_errors, "n_unparsed": self.n_unparsed}


@dataclass(frozen=True)
class Ranked:
    record: CandidateRecord
    index: int  # insertion order: the tie-breaker (the earlier candidate wins)
    stats: dict[str, SplitStats] = field(default_factory=dict)

    def mean(self, split: str) -> float | None:
        s = self.stats.get(split)
        return s.mean if s else None

    def n_scored(self, split: str) -> int:
        s = self.stats.get(split)
        return s.n_scored if s else 0


def rank_run(store: Storage, run_id: str) -> list[Ranked]:
    """Every candidate of a run with its per-split statistics (two queries in all)."""
    records = store.get_candidates(run_id)
    acc: dict[tuple[str, str], list[Any]] = {}
    for ev in store.get_evaluations(run_id):
        acc.setdefault((ev.candidate_hash, ev.split), []).append(ev.result)
    out = []
    for i, rec in enumerate(records):
        stats = {}
        for (h, split), results in acc.items():
            if h != rec.hash:
                continue
            scores = [float(r.score) for r in results if r.score is not None]
            stats[split] = SplitStats(
                n=len(results),
                n_scored=len(scores),
                mean=math.fsum(scores) / len(scores) if scores else None,
                n_errors=sum(1 for r in results if r.error is not None),
                n_unparsed=sum(1 for r in results if r.error is None and not r.parsed),
            )
        out.append(Ranked(rec, i, stats))
    return out


def leaderboard(ranked: list[Ranked], split: str = "val") -> list[Ranked]:
    """Best first. Candidates scored on the most examples come first (a lucky minibatch must
    not outrank a full evaluation), then by mean score, then by age; unscored ones last."""
    n_max = max((r.n_scored(split) for r in ranked), default=0)

    def key(r: Ranked) -> tuple[int, int, float, int]:
        mean = r.mean(split)
        if mean is None:
            return (2, 0, 0.0, r.index)
        return (0 if r.n_scored(split) == n_max else 1, -r.n_scored(split), -mean, r.index)

    return sorted(ranked, key=key)


def select_best(run: RunRecord, ranked: list[Ranked]) -> tuple[Ranked, str] | None:
    """The run's best candidate and how it was chosen.

    1. ``summary``: the candidate the loop declared best when the run finished (chosen on val).
    2. ``val``: among candidates scored on the most val examples, the highest mean.
    3. ``test``: the same on test, for runs that only hold test evaluations.

    The test split never overrides a val-based choice: the loop also scores the baseline on
    test, and picking whichever did better there would select on the held-out set.
    """
    by_hash = {r.record.hash: r for r in ranked}
    declared = ((run.summary or {}).get("best") or {}).get("candidate") or {}
    if isinstance(declared, dict) and declared.get("hash") in by_hash:
        return by_hash[declared["hash"]], "summary"
    for split in ("val", "test"):
        board = leaderboard(ranked, split)
        if board and board[0].mean(split) is not None:
            return board[0], split
    return None


def _resolve_store(store: Storage | str | os.PathLike[str] | None) -> tuple[Storage, bool]:
    from promptopt.store import open_store

    if isinstance(store, Storage):
        return store, False
    spec: str | os.PathLike[str] = store if store is not None else os.environ.get("PROMPTOPT_STORE") or DEFAULT_STORE_PATH
    text = os.fspath(spec)
    if "://" not in text and text != ":memory:" and not pathlib.Path(text).expanduser().is_file():
        # Opening would create an empty store: a wrong path must fail, not load nothing.
        raise ConfigError(
            f"No promptopt store at {text}.",
            fix="Pass store=PATH_OR_URL (or set $PROMPTOPT_STORE) to the store your runs were written to.",
        )
    return open_store(spec), True


def load_prompt(
    name_or_run: str,
    *,
    store: Storage | str | os.PathLike[str] | None = None,
    version: int | None = None,
) -> Candidate:
    """The candidate registered under ``name_or_run`` (the latest version, or ``version``), or,
    when no prompt has that name, the best candidate of the run with that id (or unique id
    prefix). ``store``: a Storage, a path or URL; default ``$PROMPTOPT_STORE`` or
    ``.promptopt/store.sqlite``.

    For deployment without a database, export the prompt (``promptopt export``) and read it
    with :func:`promptopt.store.load_candidate_file`.
    """
    if not isinstance(name_or_run, str) or not name_or_run.strip():
        raise ConfigError(f"Invalid prompt name or run id {name_or_run!r}.", fix="Pass a registered prompt name or a run id.")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ConfigError(f"Invalid prompt version {version!r}.", fix="Versions are integers from 1; omit it for the latest.")
    st, owned = _resolve_store(store)
    try:
        names = dict(st.list_prompts())
        if name_or_run in names:
            run_id, candidate_hash, _ = st.get_registered_prompt(name_or_run, version)
            return st.get_candidate(run_id, candidate_hash).candidate
        if version is not None:
            raise UnknownNameError(
                f"No prompt registered under {name_or_run!r} in {st!r}.",
                fix=f"Registered names: {', '.join(sorted(names)) or 'none yet'}. Publish one with `promptopt register RUN_ID NAME`.",
            )
        try:
            run = st.get_run(name_or_run)
        except StoreCorruptedError:
            raise  # the run is there but damaged: say so, not "unknown name"
        except StoreError as exc:
            if "ambiguous" in exc.message:
                raise
            raise UnknownNameError(
                f"{name_or_run!r} is neither a registered prompt nor a run in {st!r}.",
                fix=f"Registered names: {', '.join(sorted(names)) or 'none yet'}; list run ids with `promptopt show`.",
            ) from None
        best = select_best(run, rank_run(st, run.id))
        if best is None:
            raise StoreError(
                f"Run {run.id} has no scored candidate to load.",
                fix=f"Finish the run first (`promptopt resume {run.id}`), or load another run or a registered name.",
            )
        return best[0].record.candidate
    finally:
        if owned:
            st.close()
