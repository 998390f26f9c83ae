"""SQL storage through SQLAlchemy Core: a SQLite file by default, PostgreSQL for shared use.

Concurrency (invariant 4). SQLite runs in WAL mode, so readers never block the writer and the
writer never blocks readers. Every write is one short ``BEGIN IMMEDIATE`` transaction: it takes
the write lock up front, so two writers queue on the busy timeout instead of deadlocking (a
deferred transaction that reads first and then tries to write cannot wait for the lock, it
fails at once with "database is locked"). PostgreSQL needs none of this; its unique
constraints make the ``ON CONFLICT`` inserts idempotent under any number of writers.

Bulk writes are single statements: ``add_evaluations`` of N rows is one multi-row
``INSERT ... ON CONFLICT ... RETURNING`` in one transaction.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy import event, exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from promptopt.errors import (
    ConfigError,
    DependencyMissingError,
    PromptOptError,
    SchemaVersionError,
    StoreCorruptedError,
    StoreError,
    NotFoundError,
)
from promptopt.evaluators._base import ExampleResult
from promptopt.prompt import Candidate
from promptopt.store._base import (
    RUN_STATUSES,
    SCHEMA_VERSION,
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

__all__ = ["SQLStorage"]

# --- schema ------------------------------------------------------------------------------


class _JSONText(sa.types.TypeDecorator):  # type: ignore[type-arg]
    """JSON kept as text with promptopt's own encoder: identical bytes on SQLite and PostgreSQL,
    NaN written as null, and a clear StoreError (not a driver error) for non-JSON values."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else _encode_json(value, "value")

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return _decode_json(value, "JSON column")


metadata = sa.MetaData()
# Tables that grow with every evaluation get 64-bit ids on PostgreSQL; on SQLite the id must be
# declared INTEGER to alias the rowid (and it is 64-bit anyway).
_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

meta_t = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

runs_t = sa.Table(
    "runs",
    metadata,
    # ``pk`` only orders runs by creation; ``id`` is the public key.
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("strategy_params", _JSONText, nullable=False),
    sa.Column("config", _JSONText, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("summary", _JSONText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

candidates_t = sa.Table(
    "candidates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("content", _JSONText, nullable=False),
    sa.Column("parents", _JSONText, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("metadata", _JSONText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("run_id", "hash", name="uq_candidates_run_hash"),
)

evaluations_t = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(128), nullable=False),
    sa.Column("candidate_hash", sa.String(64), nullable=False),
    sa.Column("split", sa.String(64), nullable=False),
    sa.Column("example_id", sa.Text, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("prediction", sa.Text, nullable=True),
    sa.Column("parsed", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("error_type", sa.Text, nullable=True),
    sa.Column("feedback", sa.Text, nullable=True),
    sa.Column("cache_key", sa.Text, nullable=True),
    sa.Column("cached", sa.Boolean, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("run_id", "candidate_hash", "split", "example_id", name="uq_evaluations_key"),
    sa.ForeignKeyConstraint(["run_id", "candidate_hash"], ["candidates.run_id", "candidates.hash"], name="fk_evaluations_candidate"),
)

events_t = sa.Table(
    "events",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id"), nullable=False, index=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(128), nullable=False),
    sa.Column("payload", _JSONText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

state_t = sa.Table(
    "state",
    metadata,
    sa.Column("run_id", sa.String(128), sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", _JSONText, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

prompts_t = sa.Table(
    "prompts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(128), nullable=False),
    sa.Column("candidate_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("name", "version", name="uq_prompts_name_version"),
    sa.ForeignKeyConstraint(["run_id", "candidate_hash"], ["candidates.run_id", "candidates.hash"], name="fk_prompts_candidate"),
)

_TABLES = ("meta", "runs", "candidates", "evaluations", "events", "state", "prompts")
_EVAL_COLUMNS = (
    "score", "output", "prediction", "parsed", "error", "error_type", "feedback", "cache_key", "cached",
    "prompt_tokens", "completion_tokens", "cost_usd", "latency_s",
)

# --- migrations ---------------------------------------------------------------------------
# _MIGRATIONS[v] upgrades a store from schema v to v + 1. They run in order, inside the one
# transaction that opens the store, together with the version bump: a failed migration
# leaves the store exactly as it was.


def _migrate_0_to_1(conn: Connection) -> None:
    """v0 was the pre-release layout, identical to v1 except for the version row; nothing to change."""


_MIGRATIONS: dict[int, Callable[[Connection], None]] = {0: _migrate_0_to_1}

# --- error mapping ------------------------------------------------------------------------

_CORRUPT_MARKERS = ("file is not a database", "malformed", "disk image", "file is encrypted")
_LOCKED_MARKERS = ("database is locked", "database table is locked", "database is busy")
_READONLY_MARKERS = ("readonly database", "read-only", "unable to open database", "permission denied")


def _driver_message(exc: BaseException) -> str:
    # The driver's own text; SQLAlchemy's str() would add the SQL and its parameters (model
    # outputs, possibly long) to every message.
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _is_locked(exc: BaseException) -> bool:
    return any(m in _driver_message(exc).lower() for m in _LOCKED_MARKERS)


def _sqlite_path(url: sa.URL) -> str | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") and "mode=memory" in db:
        return None
    return db


def _normalise_url(spec: str | os.PathLike[str] | sa.URL) -> sa.URL:
    if isinstance(spec, sa.URL):
        url = spec
    elif isinstance(spec, os.PathLike) or "://" not in str(spec):
        path = pathlib.Path(os.fspath(spec)).expanduser()
        url = sa.URL.create("sqlite", database=str(path.resolve()) if str(spec) != ":memory:" else ":memory:")
    else:
        try:
            url = sa.make_url(str(spec))
        except sa_exc.ArgumentError:
            raise ConfigError(
                "The store URL could not be parsed.",
                fix="Use a path, sqlite:///path/to/store.sqlite or postgresql+psycopg://user:password@host/dbname.",
            ) from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        # The [postgres] extra installs psycopg 3; a bare postgresql:// would mean psycopg2.
        driver = url.drivername.partition("+")[2] or "psycopg"
        url = url.set(drivername=f"postgresql+{driver}")
    elif backend == "sqlite":
        if url.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise ConfigError(
                f"SQLite driver {url.drivername!r} is not supported.",
                fix="Use sqlite:///path/to/store.sqlite (the standard library driver).",
            )
    else:
        raise ConfigError(
            f"Database backend {backend!r} is not supported by the store.",
            fix="Use a SQLite path or sqlite:/// URL, or a postgresql+psycopg:// URL.",
        )
    return url


def _check_sqlite_path(path: str) -> None:
    """Fail with the path named before SQLite fails with 'unable to open database file'."""
    p = pathlib.Path(path)
    parent = p.parent
    fix = "Point --store at a file in an existing, writable directory (or create the directory first)."
    if p.is_dir():
        raise ConfigError(f"The store path {p} is a directory, not a database file.", fix="Give a file path, e.g. " + str(p / "store.sqlite") + ".")
    if not parent.exists():
        raise ConfigError(f"Cannot create the store {p}: directory {parent} does not exist.", fix=fix)
    if not parent.is_dir():
        raise ConfigError(f"Cannot create the store {p}: {parent} is not a directory.", fix=fix)
    if p.exists() and not os.access(p, os.R_OK | os.W_OK):
        raise ConfigError(f"The store file {p} is not readable and writable by this user.", fix="Fix its permissions, or point --store elsewhere.")
    # WAL mode creates store-wal and store-shm beside the file, so the directory must be writable too.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"The store directory {parent} is not writable by this user.", fix=fix)


class SQLStorage(Storage):
    """Storage in a SQL database.

    ``url``: ``sqlite:///path/to/store.sqlite`` (a plain path works too), or
    ``postgresql+psycopg://user:password@host/dbname`` (needs ``pip install 'promptopt[postgres]'``).
    ``busy_timeout_s``: how long a SQLite writer waits for another process's write to finish.
    """

    def __init__(self, url: str | os.PathLike[str] | sa.URL, *, busy_timeout_s: float = 30.0) -> None:
        self._url = _normalise_url(url)
        self._display = self._url.render_as_string(hide_password=True)
        self._dialect = self._url.get_backend_name()
        self._busy_timeout_s = float(busy_timeout_s)
        self._closed = False
        # An in-memory SQLite database lives in one connection shared by all threads, which
        # sqlite3 does not allow concurrently: serialise every operation on it.
        self._serial: threading.RLock | None = None
        self._path: str | None = None
        if self._dialect == "sqlite":
            self._path = _sqlite_path(self._url)
            if self._path is not None:
                _check_sqlite_path(self._path)
                self._display = self._path
            else:
                self._serial = threading.RLock()
        self._engine = self._create_engine()
        self._stmts = self._build_statements()
        try:
            self._init_schema()
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLStorage({self._display!r})"

    @property
    def url(self) -> str:
        """The store's URL with any password hidden."""
        return self._url.render_as_string(hide_password=True)

    # --- engine -------------------------------------------------------------------------
    def _create_engine(self) -> Engine:
        if self._dialect == "sqlite":
            if self._path is None:
                engine = sa.create_engine(self._url, poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False})
            else:
                engine = sa.create_engine(
                    self._url,
                    connect_args={"timeout": self._busy_timeout_s, "check_same_thread": False},
                    pool_size=8,
                    max_overflow=16,
                )
            self._install_sqlite_hooks(engine)
        else:
            try:
                engine = sa.create_engine(self._url, pool_pre_ping=True)
            except ImportError as exc:
                driver = self._url.get_driver_name()
                fix = "pip install 'promptopt[postgres]'"
                if driver != "psycopg":
                    fix += f" and use a postgresql+psycopg:// URL (or install the {driver} driver yourself)"
                raise DependencyMissingError(f"The PostgreSQL driver {driver} is not installed ({exc.name or exc}).", fix=fix + ".") from None
        self._install_fork_guard(engine)
        return engine

    def _install_sqlite_hooks(self, engine: Engine) -> None:
        busy_ms = int(self._busy_timeout_s * 1000)
        file_backed = self._path is not None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, record: Any) -> None:
            # Take transaction control away from the sqlite3 module: it would otherwise open
            # deferred transactions on its own; we emit BEGIN / BEGIN IMMEDIATE below.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cur.execute("PRAGMA foreign_keys = ON")
                if file_backed:
                    _enable_wal(cur)
                    # Durable across process crashes in WAL mode; only a power cut can lose
                    # the last commits. FULL would fsync every one of many small writes.
                    cur.execute("PRAGMA synchronous = NORMAL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            if conn.get_execution_options().get("promptopt_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

    @staticmethod
    def _install_fork_guard(engine: Engine) -> None:
        # A forked child (multiprocessing, executors) must not use its parent's connections.
        @event.listens_for(engine, "connect")
        def _remember_pid(dbapi_conn: Any, record: Any) -> None:
            record.info["pid"] = os.getpid()

        @event.listens_for(engine, "checkout")
        def _check_pid(dbapi_conn: Any, record: Any, proxy: Any) -> None:
            if record.info.get("pid") != os.getpid():
                record.dbapi_connection = proxy.dbapi_connection = None
                raise sa_exc.DisconnectionError("connection was opened in another process")

    # --- transactions and errors --------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"The store {self._display} is closed.", fix="Open it again with open_store(...).")

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except PromptOptError:
            raise
        except (sa_exc.DBAPIError, sqlite3.Error) as exc:
            raise self._translate(exc, action) from exc

    def _translate(self, exc: BaseException, action: str) -> PromptOptError:
        msg = _driver_message(exc)
        low = msg.lower()
        if self._dialect == "sqlite":
            if any(m in low for m in _CORRUPT_MARKERS):
                return StoreCorruptedError(
                    f"The store {self._display} is not a readable promptopt SQLite database ({msg}).",
                    fix="Restore it from a backup, or point --store at another file.",
                )
            if any(m in low for m in _LOCKED_MARKERS):
                return StoreError(
                    f"The store {self._display} stayed locked for more than {self._busy_timeout_s:g} s while trying to {action}.",
                    fix="Another process holds a long write transaction on it: wait for it to finish, or raise busy_timeout_s.",
                )
            if any(m in low for m in _READONLY_MARKERS):
                return ConfigError(
                    f"Cannot write the store {self._display} ({msg}).",
                    fix="Make the file and its directory writable, or point --store elsewhere.",
                )
        if isinstance(exc, sa_exc.OperationalError) and self._dialect == "postgresql":
            return StoreError(
                f"Cannot {action} on {self._display}: {msg}.",
                fix="Check that the PostgreSQL server is running and the URL (host, port, user, password, database) is right.",
            )
        return StoreError(f"Could not {action} in {self._display}: {msg}.", fix="Run `promptopt doctor` on the store; report a bug if it is healthy.")

    @contextlib.contextmanager
    def _tx(self, action: str, *, write: bool) -> Iterator[Connection]:
        """One transaction: BEGIN IMMEDIATE (SQLite) for writes, committed on success."""
        self._check_open()
        lock = self._serial if self._serial is not None else contextlib.nullcontext()
        with self._guard(action), lock, self._engine.connect() as conn:
            if write:
                conn.execution_options(promptopt_write=True)
            with conn.begin():
                yield conn

    # --- schema -------------------------------------------------------------------------
    def _init_schema(self) -> None:
        # Opening a current store only reads; the write lock is taken only to create or migrate.
        with self._tx("open the store", write=False) as conn:
            if self._ensure_schema(conn, may_write=False):
                return
        with self._tx("open the store", write=True) as conn:
            if self._dialect == "postgresql":
                # Serialise concurrent first opens (CREATE TABLE is not idempotent under races).
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('promptopt.schema'))"))
            self._ensure_schema(conn, may_write=True)

    def _ensure_schema(self, conn: Connection, *, may_write: bool) -> bool:
        """Check the schema; create or migrate it when ``may_write``. False: a write is needed."""
        existing = set(sa.inspect(conn).get_table_names())
        if "meta" not in existing:
            clash = sorted(existing & set(_TABLES))
            foreign = sorted(t for t in existing if not t.startswith("sqlite_"))
            if clash or (self._dialect == "sqlite" and foreign):
                raise StoreError(
                    f"{self._display} is a database but not a promptopt store (it has tables {', '.join(foreign[:8])} and no 'meta' table).",
                    fix="Point --store at a new file, or at a database used only by promptopt.",
                )
            if not may_write:
                return False
            metadata.create_all(conn)
            conn.execute(sa.insert(meta_t), [{"key": "schema_version", "value": str(SCHEMA_VERSION)}, {"key": "created_at", "value": repr(time.time())}])
            return True
        raw = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar()
        try:
            found = int(raw)  # type: ignore[arg-type]
            if found < 0:
                raise ValueError(found)
        except (TypeError, ValueError):
            raise StoreCorruptedError(
                f"The store {self._display} has no valid schema version (meta.schema_version = {raw!r}).",
                fix="Restore it from a backup, or point --store at another file.",
            ) from None
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"The store {self._display} was written by schema v{found}, this promptopt reads up to v{SCHEMA_VERSION}.",
                fix="Upgrade promptopt (pip install -U promptopt) to open it.",
            )
        if found == SCHEMA_VERSION:
            return True
        if not may_write:
            return False
        for v in range(found, SCHEMA_VERSION):
            step = _MIGRATIONS.get(v)
            if step is None:
                raise SchemaVersionError(
                    f"The store {self._display} uses schema v{found}, which this promptopt cannot migrate (no step from v{v}).",
                    fix="Open it with the promptopt version that wrote it and export the runs you need.",
                )
            step(conn)
        conn.execute(sa.update(meta_t).where(meta_t.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
        return True

    def schema_version(self) -> int:
        with self._tx("read the schema version", write=False) as conn:
            return int(conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar_one())

    def _build_statements(self) -> dict[str, Any]:
        # Built once: constructing an ON CONFLICT statement costs more than running it.
        def insert(table: sa.Table) -> Any:
            return (pg_dialect if self._dialect == "postgresql" else sqlite_dialect).insert(table)

        ev = insert(evaluations_t)
        st = insert(state_t)
        return {
            "run": insert(runs_t).on_conflict_do_nothing(index_elements=["id"]).returning(runs_t.c.id),
            "candidates": insert(candidates_t).on_conflict_do_nothing(index_elements=["run_id", "hash"]).returning(candidates_t.c.hash),
            # Invariants 1 and 2: a new row goes in; an existing row is replaced only when it is
            # a failure and the new one is not. The replaced row keeps its id, hence its position.
            "evaluations": ev.on_conflict_do_update(
                index_elements=["run_id", "candidate_hash", "split", "example_id"],
                set_={**{col: ev.excluded[col] for col in _EVAL_COLUMNS}, "created_at": ev.excluded.created_at},
                where=evaluations_t.c.error.is_not(None) & ev.excluded.error.is_(None),
            ).returning(evaluations_t.c.id),
            "state": st.on_conflict_do_update(
                index_elements=["run_id", "key"], set_={"value": st.excluded.value, "updated_at": st.excluded.updated_at}
            ),
        }

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
        if run_id is not None:
            _check_run_id(run_id)
        values = {
            "name": str(name),
            "strategy": str(strategy),
            "strategy_params": _redact(dict(strategy_params)),
            "config": _redact(dict(config)),
            "seed": int(seed),
            "status": "created",
            "summary": {},
        }
        # Validate JSON before the transaction so a bad config fails with its own message.
        _encode_json(values["strategy_params"], "strategy_params")
        _encode_json(values["config"], "config")
        stmt = self._stmts["run"]
        for _ in range(8):
            rid = run_id if run_id is not None else _new_run_id()
            now = time.time()
            with self._tx("create a run", write=True) as conn:
                created = conn.execute(stmt, {**values, "id": rid, "created_at": now, "updated_at": now}).scalar()
            if created is not None:
                return rid
            if run_id is not None:
                raise StoreError(
                    f"A run with id {run_id!r} already exists in {self._display}.",
                    fix="Choose another run id, or continue that run with `promptopt resume`.",
                )
        raise StoreError("Could not find a free run id after 8 tries.", fix="Report this bug; run ids carry 24 random bits.")

    @staticmethod
    def _run_record(row: Any) -> RunRecord:
        return RunRecord(
            id=row.id,
            name=row.name,
            strategy=row.strategy,
            strategy_params=row.strategy_params,
            config=row.config,
            seed=int(row.seed),
            status=row.status,
            summary=row.summary,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_run(self, run_id: str) -> RunRecord:
        if not isinstance(run_id, str) or not run_id:
            raise NotFoundError(f"Invalid run id {run_id!r}.", fix="List runs with `promptopt show`.")
        # substr, not LIKE: LIKE is case-insensitive on SQLite and treats % and _ as wildcards.
        stmt = (
            sa.select(runs_t)
            .where(sa.func.substr(runs_t.c.id, 1, len(run_id)) == run_id)
            .order_by(sa.case((runs_t.c.id == run_id, 0), else_=1), runs_t.c.pk)
            .limit(6)
        )
        with self._tx("read a run", write=False) as conn:
            rows = conn.execute(stmt).all()
        if rows and (rows[0].id == run_id or len(rows) == 1):
            return self._run_record(rows[0])
        if not rows:
            raise NotFoundError(f"No run {run_id!r} in {self._display}.", fix="List runs with `promptopt show`.")
        ids = [r.id for r in rows]
        raise NotFoundError(
            f"Run id prefix {run_id!r} is ambiguous: it matches {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}.",
            fix="Type more characters of the id (list runs with `promptopt show`).",
        )

    def list_runs(self) -> list[RunRecord]:
        with self._tx("list runs", write=False) as conn:
            return [self._run_record(r) for r in conn.execute(sa.select(runs_t).order_by(runs_t.c.pk))]

    def update_run(self, run_id: str, *, status: str | None = None, summary: dict[str, Any] | None = None) -> None:
        if status is not None:
            _check_status(status)
        new_summary = _redact(dict(summary)) if summary is not None else None
        if new_summary is not None:
            _encode_json(new_summary, "summary")
        with self._tx("update a run", write=True) as conn:
            # FOR UPDATE: two writers merging summaries on PostgreSQL must not lose keys (SQLite
            # already holds the write lock here).
            current = conn.execute(sa.select(runs_t.c.summary).where(runs_t.c.id == run_id).with_for_update()).first()
            if current is None:
                raise NotFoundError(f"No run {run_id!r} in {self._display}.", fix="Use the full run id (list runs with `promptopt show`).")
            values: dict[str, Any] = {"updated_at": time.time()}
            if status is not None:
                values["status"] = status
            if new_summary is not None:
                values["summary"] = {**(current.summary or {}), **new_summary}
            conn.execute(sa.update(runs_t).where(runs_t.c.id == run_id).values(**values))

    def _run_exists(self, run_id: str) -> bool:
        with self._tx("read a run", write=False) as conn:
            return conn.execute(sa.select(runs_t.c.pk).where(runs_t.c.id == run_id)).first() is not None

    def _missing_run(self, run_id: str) -> StoreError:
        return StoreError(f"No run {run_id!r} in {self._display}.", fix="Create the run first, or use the full id of an existing run (`promptopt show`).")

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
        rows: dict[str, dict[str, Any]] = {}
        hashes: list[str] = []
        now = time.time()
        for r in records:
            if r.run_id != run_id:
                raise StoreError(f"Candidate record of run {r.run_id!r} passed to run {run_id!r}.", fix="Group records by run.")
            if not isinstance(r.candidate, Candidate):
                raise StoreError(f"Expected a Candidate, got {type(r.candidate).__name__}.", fix="Pass promptopt.Candidate objects.")
            h = r.candidate.hash
            hashes.append(h)
            meta = dict(r.metadata or {})
            _encode_json(meta, "candidate metadata")
            rows.setdefault(h, {
                "run_id": run_id,
                "hash": h,
                "content": r.candidate.to_dict(),
                "parents": [str(p) for p in r.parents],
                "strategy": str(r.strategy),
                "step": int(r.step),
                "metadata": meta,
                "created_at": now,
            })
        if not rows:
            return []
        stmt = self._stmts["candidates"]
        try:
            with self._tx("add candidates", write=True) as conn:
                new = {row.hash for row in conn.execute(stmt, list(rows.values()))}
        except StoreError as exc:
            if isinstance(exc.__cause__, sa_exc.IntegrityError) and not self._run_exists(run_id):
                raise self._missing_run(run_id) from None
            raise
        flags = []
        for h in hashes:
            flags.append(h in new)
            new.discard(h)  # a hash repeated in the batch is new only the first time
        return flags

    @staticmethod
    def _cand_record(row: Any) -> CandidateRecord:
        return CandidateRecord(
            run_id=row.run_id,
            candidate=Candidate.from_dict(row.content),
            parents=list(row.parents),
            strategy=row.strategy,
            step=int(row.step),
            metadata=row.metadata,
            created_at=row.created_at,
        )

    def get_candidates(self, run_id: str) -> list[CandidateRecord]:
        stmt = sa.select(candidates_t).where(candidates_t.c.run_id == run_id).order_by(candidates_t.c.id)
        with self._tx("read candidates", write=False) as conn:
            return [self._cand_record(r) for r in conn.execute(stmt)]

    def get_candidate(self, run_id: str, candidate_hash: str) -> CandidateRecord:
        if not isinstance(candidate_hash, str) or not candidate_hash:
            raise StoreError(f"Invalid candidate hash {candidate_hash!r}.", fix="Pass a candidate hash or a unique prefix of it.")
        c = candidates_t.c
        stmt = (
            sa.select(candidates_t)
            .where(c.run_id == run_id, sa.func.substr(c.hash, 1, len(candidate_hash)) == candidate_hash)
            .order_by(sa.case((c.hash == candidate_hash, 0), else_=1), c.id)
            .limit(2)
        )
        with self._tx("read a candidate", write=False) as conn:
            rows = conn.execute(stmt).all()
        if rows and (rows[0].hash == candidate_hash or len(rows) == 1):
            return self._cand_record(rows[0])
        if rows:
            raise NotFoundError(f"Candidate hash prefix {candidate_hash!r} is ambiguous in run {run_id}.", fix="Give more characters of the hash.")
        raise NotFoundError(
            f"Candidate {candidate_hash[:12]!r} is not in run {run_id!r}.",
            fix="Add the candidate with add_candidate first, or list candidates with `promptopt show RUN`.",
        )

    # --- evaluations --------------------------------------------------------------------
    def add_evaluations(self, run_id: str, candidate_hash: str, split: str, results: Sequence[ExampleResult]) -> int:
        if not isinstance(split, str) or not split:
            raise StoreError(f"split must be a non-empty string, got {split!r}.", fix="Pass the split name, e.g. 'val'.")
        rows = _dedupe_results([_normalise_result(r) for r in results])
        if not rows:
            return 0
        now = time.time()
        params = [
            {
                "run_id": run_id,
                "candidate_hash": candidate_hash,
                "split": split,
                "example_id": r.example_id,
                **{col: getattr(r, col) for col in _EVAL_COLUMNS},
                "created_at": now,
            }
            for r in rows
        ]
        stmt = self._stmts["evaluations"]
        try:
            with self._tx("add evaluations", write=True) as conn:
                return len(conn.execute(stmt, params).all())
        except StoreError as exc:
            if isinstance(exc.__cause__, sa_exc.IntegrityError):
                if not self._run_exists(run_id):
                    raise self._missing_run(run_id) from None
                raise NotFoundError(
                    f"Candidate {candidate_hash[:12]!r} is not in run {run_id!r}.",
                    fix="Add the candidate with add_candidate before its evaluations.",
                ) from None
            raise

    def get_evaluations(
        self, run_id: str, *, candidate_hash: str | None = None, split: str | None = None
    ) -> list[EvaluationRecord]:
        t = evaluations_t
        # Read as plain tuples: named access on SQLAlchemy rows costs more than building the records.
        cols = [t.c.candidate_hash, t.c.split, t.c.created_at, t.c.example_id, *(t.c[name] for name in _EVAL_COLUMNS)]
        stmt = sa.select(*cols).where(t.c.run_id == run_id)
        if candidate_hash is not None:
            stmt = stmt.where(t.c.candidate_hash == candidate_hash)
        if split is not None:
            stmt = stmt.where(t.c.split == split)
        stmt = stmt.order_by(t.c.id)
        with self._tx("read evaluations", write=False) as conn:
            rows = conn.execute(stmt).tuples().all()
        out = []
        for h, sp, created, ex, score, output, pred, parsed, err, err_type, fb, key, cached, pt, ct, cost, lat in rows:
            result = ExampleResult(
                example_id=ex, score=score, output=output, prediction=pred, parsed=bool(parsed), error=err, error_type=err_type,
                feedback=fb, cache_key=key, cached=bool(cached), prompt_tokens=pt, completion_tokens=ct, cost_usd=cost, latency_s=lat,
            )
            out.append(EvaluationRecord(run_id, h, sp, result, created))
        return out

    # --- events and state ---------------------------------------------------------------
    def add_event(self, run_id: str, step: int, kind: str, payload: dict[str, Any]) -> None:
        if not isinstance(kind, str) or not kind:
            raise StoreError(f"event kind must be a non-empty string, got {kind!r}.", fix="Name the event kind.")
        payload = dict(payload)
        _encode_json(payload, f"payload of event {kind!r}")
        try:
            with self._tx("add an event", write=True) as conn:
                conn.execute(sa.insert(events_t), {"run_id": run_id, "step": int(step), "kind": kind, "payload": payload, "created_at": time.time()})
        except StoreError as exc:
            if isinstance(exc.__cause__, sa_exc.IntegrityError):
                raise self._missing_run(run_id) from None
            raise

    def get_events(self, run_id: str, kind: str | None = None) -> list[EventRecord]:
        stmt = sa.select(events_t).where(events_t.c.run_id == run_id)
        if kind is not None:
            stmt = stmt.where(events_t.c.kind == kind)
        with self._tx("read events", write=False) as conn:
            rows = conn.execute(stmt.order_by(events_t.c.id)).all()
        return [EventRecord(r.run_id, int(r.step), r.kind, r.payload, r.created_at) for r in rows]

    def set_state(self, run_id: str, key: str, value: Any) -> None:
        if not isinstance(key, str) or not key:
            raise StoreError(f"state key must be a non-empty string, got {key!r}.", fix="Name the state key.")
        _encode_json(value, f"state {key!r}")
        stmt = self._stmts["state"]
        try:
            with self._tx("save strategy state", write=True) as conn:
                conn.execute(stmt, {"run_id": run_id, "key": key, "value": value, "updated_at": time.time()})
        except StoreError as exc:
            if isinstance(exc.__cause__, sa_exc.IntegrityError):
                raise self._missing_run(run_id) from None
            raise

    def get_state(self, run_id: str, key: str, default: Any = None) -> Any:
        stmt = sa.select(state_t.c.value).where(state_t.c.run_id == run_id, state_t.c.key == key)
        with self._tx("read strategy state", write=False) as conn:
            row = conn.execute(stmt).first()
        return default if row is None else row.value

    # --- prompt registry ----------------------------------------------------------------
    def register_prompt(self, name: str, run_id: str, candidate_hash: str) -> int:
        _check_prompt_name(name)
        full_hash = self.get_candidate(run_id, candidate_hash).hash
        p = prompts_t.c
        # On PostgreSQL two registrations of one name can race to the same next version; the
        # unique constraint rejects the loser, which then retries with the new latest version.
        for attempt in range(5):
            try:
                with self._tx("register a prompt", write=True) as conn:
                    latest = conn.execute(
                        sa.select(p.version, p.run_id, p.candidate_hash).where(p.name == name).order_by(p.version.desc()).limit(1)
                    ).first()
                    if latest is not None and (latest.run_id, latest.candidate_hash) == (run_id, full_hash):
                        return int(latest.version)  # publishing the same candidate again is a no-op
                    version = 1 if latest is None else int(latest.version) + 1
                    conn.execute(sa.insert(prompts_t), {"name": name, "version": version, "run_id": run_id, "candidate_hash": full_hash, "created_at": time.time()})
                    return version
            except StoreError as exc:
                if not isinstance(exc.__cause__, sa_exc.IntegrityError) or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def get_registered_prompt(self, name: str, version: int | None = None) -> tuple[str, str, int]:
        p = prompts_t.c
        stmt = sa.select(p.run_id, p.candidate_hash, p.version).where(p.name == name)
        stmt = stmt.where(p.version == version) if version is not None else stmt.order_by(p.version.desc()).limit(1)
        with self._tx("read the prompt registry", write=False) as conn:
            row = conn.execute(stmt).first()
            latest = None
            if row is None:
                latest = conn.execute(sa.select(sa.func.max(p.version)).where(p.name == name)).scalar()
        if row is not None:
            return row.run_id, row.candidate_hash, int(row.version)
        if latest is not None:
            raise StoreError(f"Prompt {name!r} has no version {version!r}.", fix=f"Its versions are 1 to {latest}; omit the version for the latest.")
        known = ", ".join(n for n, _ in self.list_prompts()[:20]) or "none yet"
        raise StoreError(
            f"No prompt registered under {name!r}.",
            fix=f"Registered names: {known}. Publish one with `promptopt register RUN_ID {name}`.",
        )

    def list_prompts(self) -> list[tuple[str, int]]:
        p = prompts_t.c
        stmt = sa.select(p.name, sa.func.max(p.version)).group_by(p.name).order_by(p.name)
        with self._tx("read the prompt registry", write=False) as conn:
            return [(name, int(v)) for name, v in conn.execute(stmt)]

    # --- housekeeping -------------------------------------------------------------------
    def check_integrity(self, *, stale_after_s: float = 6 * 3600) -> list[str]:
        """Problems found, one line each (empty = healthy): SQLite's own integrity check, the
        schema version, dangling references, duplicate keys, candidates whose content does not
        match their hash, and half-written runs (marked completed with no candidates, or marked
        running with no write for ``stale_after_s`` seconds: a process that died)."""
        self._check_open()
        problems: list[str] = []

        def check(label: str, fn: Callable[[Connection], None]) -> None:
            try:
                lock = self._serial if self._serial is not None else contextlib.nullcontext()
                with lock, self._engine.connect() as conn, conn.begin():
                    fn(conn)
            except PromptOptError as exc:
                problems.append(f"{label}: {exc.message}")
            except (sa_exc.DBAPIError, sqlite3.Error) as exc:
                problems.append(f"{label}: {_driver_message(exc)}")

        def sqlite_checks(conn: Connection) -> None:
            for (line,) in conn.exec_driver_sql("PRAGMA integrity_check").all():
                if line != "ok":
                    problems.append(f"sqlite integrity_check: {line}")
            for row in conn.exec_driver_sql("PRAGMA foreign_key_check").all():
                problems.append(f"foreign key violation: table {row[0]} row {row[1]} points at missing {row[2]}")

        def schema_checks(conn: Connection) -> None:
            missing = sorted(set(_TABLES) - set(sa.inspect(conn).get_table_names()))
            if missing:
                problems.append(f"missing tables: {', '.join(missing)}")
                return
            raw = conn.execute(sa.select(meta_t.c.value).where(meta_t.c.key == "schema_version")).scalar()
            if raw != str(SCHEMA_VERSION):
                problems.append(f"schema version is {raw!r}, expected {SCHEMA_VERSION}")

        def reference_checks(conn: Connection) -> None:
            r, c, e, ev, st, pr = runs_t.c, candidates_t.c, evaluations_t.c, events_t.c, state_t.c, prompts_t.c
            no_run = lambda col: ~sa.exists().where(r.id == col)  # noqa: E731
            no_cand = lambda run_col, hash_col: ~sa.exists().where(c.run_id == run_col, c.hash == hash_col)  # noqa: E731
            for what, stmt in (
                ("candidates", sa.select(c.run_id, sa.func.count()).where(no_run(c.run_id)).group_by(c.run_id)),
                ("evaluations", sa.select(e.run_id, sa.func.count()).where(no_cand(e.run_id, e.candidate_hash)).group_by(e.run_id)),
                ("events", sa.select(ev.run_id, sa.func.count()).where(no_run(ev.run_id)).group_by(ev.run_id)),
                ("state rows", sa.select(st.run_id, sa.func.count()).where(no_run(st.run_id)).group_by(st.run_id)),
                ("registered prompts", sa.select(pr.run_id, sa.func.count()).where(no_cand(pr.run_id, pr.candidate_hash)).group_by(pr.run_id)),
            ):
                for run_id, n in conn.execute(stmt):
                    target = "candidate" if what in ("evaluations", "registered prompts") else "run"
                    problems.append(f"{n} {what} of run {run_id} point at a missing {target}")
            for what, cols in (
                ("candidates", (c.run_id, c.hash)),
                ("evaluations", (e.run_id, e.candidate_hash, e.split, e.example_id)),
                ("registered prompts", (pr.name, pr.version)),
                ("runs", (r.id,)),
            ):
                for row in conn.execute(sa.select(*cols, sa.func.count()).group_by(*cols).having(sa.func.count() > 1)):
                    problems.append(f"duplicate {what} rows for key {tuple(row[:-1])!r} ({row[-1]} copies)")

        def content_checks(conn: Connection) -> None:
            # Read the JSON text raw: one bad row must be reported, not abort the whole check.
            raw = sa.select(candidates_t.c.run_id, candidates_t.c.hash, sa.cast(candidates_t.c.content, sa.Text))
            for run_id, h, text in conn.execute(raw):
                try:
                    actual = Candidate.from_dict(_decode_json(text, "candidate content")).hash
                except PromptOptError as exc:
                    problems.append(f"run {run_id}: candidate {h[:12]} content is unreadable ({exc.message})")
                    continue
                if actual != h:
                    problems.append(f"run {run_id}: candidate {h[:12]} content hashes to {actual[:12]} (edited or damaged)")
            for run_id, status in conn.execute(sa.select(runs_t.c.id, runs_t.c.status)):
                if status not in RUN_STATUSES:
                    problems.append(f"run {run_id} has unknown status {status!r}")

        def run_checks(conn: Connection) -> None:
            r, c, e, ev = runs_t.c, candidates_t.c, evaluations_t.c, events_t.c
            n_cands = sa.select(sa.func.count()).where(c.run_id == r.id).scalar_subquery()
            for (run_id,) in conn.execute(sa.select(r.id).where(r.status == "completed", n_cands == 0)):
                problems.append(f"run {run_id} is marked completed but has no candidates (half-written run)")
            def latest(col: Any, run_col: Any) -> Any:
                return sa.select(sa.func.max(col)).where(run_col == r.id).scalar_subquery()

            stmt = sa.select(r.id, r.updated_at, latest(c.created_at, c.run_id), latest(e.created_at, e.run_id), latest(ev.created_at, ev.run_id))
            cutoff = time.time() - stale_after_s
            for run_id, *times in conn.execute(stmt.where(r.status == "running")):
                last = max(t or 0.0 for t in times)
                if last < cutoff:
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
                    problems.append(
                        f"run {run_id} is marked running but has written nothing since {when} (its process probably died): "
                        f"`promptopt resume {run_id}` finishes it"
                    )

        if self._dialect == "sqlite":
            check("sqlite", sqlite_checks)
        check("schema", schema_checks)
        if not any(p.startswith("missing tables") for p in problems):
            check("references", reference_checks)
            check("content", content_checks)
            check("runs", run_checks)
        return problems

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.dispose()


def _is_locked_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and _is_locked(exc)


@retry(retry=retry_if_exception(_is_locked_error), wait=wait_random_exponential(multiplier=0.01, max=0.5), stop=stop_after_delay(30), reraise=True)
def _enable_wal(cur: sqlite3.Cursor) -> None:
    # Switching to WAL needs a moment of exclusive access; when many processes open a new store
    # at once, the losers can get SQLITE_BUSY without the busy handler being consulted.
    mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != "wal":
        cur.execute("PRAGMA journal_mode = WAL")
