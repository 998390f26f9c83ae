"""Content-addressed response cache on SQLite (or any SQLAlchemy database).

Key: ``LMRequest.cache_key(lm.identity)``: the model identity, the messages and every sampling
parameter, never a credential; ``sample_id`` changes the key so a fresh sample can be drawn on
purpose. Value: the response as JSON (never pickle). Only successful responses are written, a
batch's rows in one transaction, so a crash leaves either the whole batch or none of it.

SQLite runs in WAL mode with a busy timeout, so several threads and processes can share one
cache file (readers never block the writer). Rows are insert-if-absent: when two processes race
on a sampled (temperature > 0) request, the first answer wins and every later reader sees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

from sqlalchemy import Column, Float, MetaData, String, Table, Text, create_engine, delete, event, func, insert, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateTable

from promptopt.errors import LMConfigError, LMError, StoreCorruptedError
from promptopt.lm._types import LMRequest, LMResponse, Message, canonical_json
from promptopt.lm._wrapper import WrapperLM, attach_partial, partial_of

__all__ = ["CachedLM"]

log = logging.getLogger(__name__)

_metadata = MetaData()
_table = Table(
    "lm_cache",
    _metadata,
    Column("key", String(64), primary_key=True),
    Column("response", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
T = TypeVar("T")
# sqlite3's own error escapes SQLAlchemy's wrapping when it is raised by the connect-time pragmas.
_DB_ERRORS = (DatabaseError, sqlite3.DatabaseError)
_IN_CHUNK = 500  # bound parameters per lookup; far below every SQLite build's limit
_BUSY_TIMEOUT_MS = 30_000


def _score_key(identity: str, messages: Sequence[Message], continuation: str) -> str:
    payload = {"lm": identity, "score_continuation": [dict(m) for m in messages], "continuation": continuation}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class CachedLM(WrapperLM):
    """Answers repeated requests from a content-addressed cache; misses go to ``lm``.

    ``path_or_url``: a file path (created with its folders) or an SQLAlchemy URL
    (``sqlite:///x.sqlite``, ``postgresql+psycopg://...``). Hits come back with ``cached=True``,
    ``cost_usd=0`` and ``latency_s=0``, and are reported to the ledger below (if any) as cache
    hits, never as calls. Identical requests inside one batch are sent once.
    ``score_continuation`` results are cached too.
    """

    def __init__(self, lm: Any, path_or_url: str | os.PathLike[str]) -> None:
        super().__init__(lm)
        self.location = str(path_or_url)
        self._engine = self._open(self.location)
        self._pid = os.getpid()
        self._pid_lock = threading.Lock()

    # ------------------------------------------------------------------ storage

    def _corrupted(self, error: BaseException) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"The LM cache {self.location} is not a readable cache database ({type(error).__name__}: {str(error).splitlines()[0]}).",
            fix=f"Delete the cache file {self.location} (it only holds cached model answers, which will be recomputed), or pass another cache path.",
        )

    def _open(self, location: str) -> Engine:
        if "://" in location:
            try:
                url = make_url(location)
            except ArgumentError as exc:
                raise LMConfigError(f"Invalid LM cache URL {location!r}: {exc}.", fix="Pass a file path or an SQLAlchemy URL such as sqlite:///path/to/cache.sqlite.") from None
        else:
            path = Path(location).expanduser()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LMConfigError(f"Cannot create the folder of the LM cache {path}: {exc}.", fix="Pass a writable cache path, or cache=None to disable caching.") from None
            url = make_url(f"sqlite:///{path}")
        is_sqlite = url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if is_sqlite and url.database in (None, "", ":memory:"):
            # One shared connection, or every thread would see its own empty in-memory database.
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        try:
            engine = create_engine(url, **kwargs)
        except SQLAlchemyError as exc:
            raise LMConfigError(f"Cannot open the LM cache {location}: {exc}.", fix="Check the cache URL and that its database driver is installed.") from None
        if is_sqlite:
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            # IF NOT EXISTS in one statement: create_all's check-then-create races when several
            # processes open a new cache file at once (the losers saw "table already exists").
            with engine.begin() as conn:
                conn.execute(CreateTable(_table, if_not_exists=True))
            with engine.connect() as conn:  # also checks an existing table has our columns
                conn.execute(select(_table.c.key, _table.c.response, _table.c.created_at).limit(0)).fetchall()
        except _DB_ERRORS as exc:
            engine.dispose()
            raise self._corrupted(exc) from None
        return engine

    @property
    def engine(self) -> Engine:
        # A forked child must not reuse the parent's pooled connections (SQLAlchemy's rule).
        if os.getpid() != self._pid:
            with self._pid_lock:
                if os.getpid() != self._pid:
                    self._engine.dispose(close=False)
                    self._pid = os.getpid()
        return self._engine

    def _get(self, keys: Iterable[str], decode: Callable[[dict[str, Any]], T]) -> dict[str, T]:
        """Rows for ``keys``, decoded; an unreadable row is dropped and counts as a miss."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, T] = {}
        bad: list[str] = []
        try:
            with self.engine.connect() as conn:
                for i in range(0, len(keys), _IN_CHUNK):
                    rows = conn.execute(select(_table.c.key, _table.c.response).where(_table.c.key.in_(keys[i : i + _IN_CHUNK])))
                    for key, text in rows:
                        try:
                            found[key] = decode(json.loads(text))
                        except (ValueError, TypeError, KeyError, AttributeError):
                            bad.append(key)
        except _DB_ERRORS as exc:
            raise self._corrupted(exc) from None
        if bad:
            log.warning("LM cache %s: %d unreadable row(s) dropped and recomputed", self.location, len(bad))
            self._delete(bad)
        return found

    def _delete(self, keys: list[str]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(_table).where(_table.c.key.in_(keys)))
        except _DB_ERRORS as exc:
            raise self._corrupted(exc) from None

    def _put(self, rows: dict[str, dict[str, Any]]) -> None:
        if not rows:
            return
        now = time.time()
        values = [{"key": k, "response": canonical_json(v), "created_at": now} for k, v in rows.items()]
        engine = self.engine
        dialect = engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        else:
            dialect_insert = None  # type: ignore[assignment]
        try:
            with engine.begin() as conn:  # one transaction: all rows or none
                if dialect_insert is not None:
                    conn.execute(dialect_insert(_table).on_conflict_do_nothing(index_elements=["key"]), values)
                else:
                    present = set(conn.execute(select(_table.c.key).where(_table.c.key.in_([v["key"] for v in values]))).scalars())
                    fresh = [v for v in values if v["key"] not in present]
                    if fresh:
                        conn.execute(insert(_table), fresh)
        except _DB_ERRORS as exc:
            raise self._corrupted(exc) from None

    def count(self) -> int:
        """Number of cached entries. (Not ``__len__``: an empty cache must not make the LM falsy.)"""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_table)).scalar_one())

    def clear(self) -> None:
        """Delete every cached entry."""
        with self.engine.begin() as conn:
            conn.execute(delete(_table))

    # ------------------------------------------------------------------ LM protocol

    def _plan(self, requests: Sequence[LMRequest]) -> tuple[list[str], dict[str, LMResponse], list[int]]:
        """Keys, hits (as returned responses), and the index of the first request of each missing key."""
        keys = [r.cache_key(self.identity) for r in requests]
        hits = self._get(keys, lambda row: _as_hit(LMResponse.from_dict(row)))
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in hits:
                first.setdefault(key, i)
        return keys, hits, list(first.values())

    def _merge(self, keys: list[str], hits: dict[str, LMResponse], misses: list[int], fresh: Sequence[LMResponse | None]) -> list[LMResponse | None]:
        """Store the successful fresh answers and assemble the batch in request order."""
        if len(fresh) != len(misses):
            raise LMError(
                f"{self.identity!r} returned {len(fresh)} responses for {len(misses)} requests.",
                fix="The LM below the cache breaks the LM protocol (one response per request); report it to its maintainer.",
            )
        answered = {keys[i]: r for i, r in zip(misses, fresh) if r is not None}
        self._put({k: r.to_dict() for k, r in answered.items() if r.ok})
        out: list[LMResponse | None] = []
        n_hits = 0
        seen: set[str] = set()
        for key in keys:
            if key in hits:
                out.append(hits[key])
                n_hits += 1
            elif key in answered:
                # A duplicate inside the batch costs nothing either: it is a hit on the first copy.
                duplicate = key in seen and answered[key].ok
                out.append(_as_hit(answered[key]) if duplicate else answered[key])
                n_hits += duplicate
            else:
                out.append(None)
            seen.add(key)
        if n_hits:
            self.record_cache_hits(n_hits)
        return out

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        if not requests:
            return []
        keys, hits, misses = self._plan(requests)
        fresh: list[LMResponse | None] = []
        if misses:
            try:
                fresh = list(self.inner.complete([requests[i] for i in misses]))
            except BaseException as exc:
                raise attach_partial(exc, self._merge(keys, hits, misses, partial_of(exc, len(misses))))
        return self._merge(keys, hits, misses, fresh)  # type: ignore[return-value]

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        if not requests:
            return []
        keys, hits, misses = self._plan(requests)
        fresh: list[LMResponse | None] = []
        if misses:
            try:
                fresh = list(await self.inner.acomplete([requests[i] for i in misses]))
            except BaseException as exc:
                raise attach_partial(exc, self._merge(keys, hits, misses, partial_of(exc, len(misses))))
        return self._merge(keys, hits, misses, fresh)  # type: ignore[return-value]

    def _score_continuation(self, messages: Sequence[Message], continuation: str) -> float:
        key = _score_key(self.identity, messages, continuation)
        hit = self._get([key], lambda row: float(row["logprob"])).get(key)
        if hit is not None:
            self.record_cache_hits(1)
            return hit
        value = super()._score_continuation(messages, continuation)
        self._put({key: {"logprob": value}})
        return value

    def close(self) -> None:
        self._engine.dispose()
        super().close()

    def __repr__(self) -> str:
        return f"CachedLM({self.inner!r}, {self.location!r})"


def _as_hit(response: LMResponse) -> LMResponse:
    return replace(response, cached=True, cost_usd=0.0, latency_s=0.0)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL: readers and one writer at once, across processes; NORMAL sync is crash-safe in WAL
        # (a power cut may lose the last commits, never corrupt the file): right for a cache.
        # busy_timeout first: switching to WAL takes a lock, which processes opening a new cache
        # file at the same moment must wait for instead of failing with "database is locked".
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
