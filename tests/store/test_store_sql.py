"""SQL-specific behaviour: SQLite setup, bulk statements, processes, schema versions, damaged
files, bad paths, URLs and drivers."""

from __future__ import annotations

import multiprocessing as mp
import os
import pathlib
import random
import sqlite3
import sys
import time

import pytest
import sqlalchemy as sa

from _store_helpers import POSTGRES_URL, cand, failed, new_run, ok, skip_without_postgres, wipe_postgres
from promptopt.errors import (
    ConfigError,
    DependencyMissingError,
    PromptOptError,
    SchemaVersionError,
    StoreCorruptedError,
    StoreError,
)
from promptopt.store import SCHEMA_VERSION, CandidateRecord, MemoryStorage, SQLStorage, open_store
from promptopt.store import _sql


@pytest.fixture
def db(tmp_path) -> pathlib.Path:
    return tmp_path / "store.sqlite"


def raw(path: pathlib.Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- SQLite setup and statements ----------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_busy_timeout_and_foreign_keys(db):
    store = SQLStorage(db)
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()
    assert raw(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file


def _statements(store: SQLStorage) -> list[str]:
    seen: list[str] = []
    sa.event.listen(store._engine, "before_cursor_execute", lambda conn, cur, stmt, *a: seen.append(stmt.strip().split()[0:2]))
    return seen  # type: ignore[return-value]


def test_bulk_writes_are_one_statement_in_one_immediate_transaction(db):
    store = SQLStorage(db)
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    seen = _statements(store)
    assert store.add_evaluations(rid, c.hash, "val", [ok(f"e{i}", i % 2) for i in range(50)]) == 50
    assert [" ".join(s) for s in seen] == ["BEGIN IMMEDIATE", "INSERT INTO"]
    seen.clear()
    assert len(store.get_evaluations(rid)) == 50
    assert [s[0] for s in seen] == ["BEGIN", "SELECT"]  # reads take no write lock
    seen.clear()
    store.add_candidates(rid, [CandidateRecord(rid, cand(i)) for i in range(2, 30)])
    assert [" ".join(s) for s in seen] == ["BEGIN IMMEDIATE", "INSERT INTO"]
    store.close()


def test_data_persists_across_reopen(db):
    with SQLStorage(db) as store:
        rid = new_run(store)
        store.add_candidate(rid, cand(1))
        store.add_evaluations(rid, cand(1).hash, "val", [ok("a")])
        store.register_prompt("p", rid, cand(1).hash)
    with open_store(str(db)) as store:
        assert store.get_run(rid).name == "test run"
        assert store.get_evaluations(rid)[0].result.score == 1.0
        assert store.get_registered_prompt("p") == (rid, cand(1).hash, 1)


def test_readers_are_not_blocked_by_a_writer_holding_the_lock(db):
    with SQLStorage(db) as store:
        rid = new_run(store)
    holder = raw(db)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    holder.execute("UPDATE runs SET name = 'being renamed'")
    try:
        with SQLStorage(db, busy_timeout_s=0.2) as store:  # opening a current store takes no write lock
            assert store.get_run(rid).name == "test run"  # WAL: readers see the last commit
            t0 = time.perf_counter()
            with pytest.raises(StoreError, match="stayed locked") as err:
                store.add_event(rid, 0, "x", {})
            assert time.perf_counter() - t0 >= 0.15  # it waited on the busy timeout, then said so
            assert "busy_timeout_s" in (err.value.fix or "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_closed_store_refuses_work(db):
    store = SQLStorage(db)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_runs()


def test_in_memory_sqlite_url_is_thread_safe():
    import threading

    store = SQLStorage("sqlite://")
    rid = new_run(store)
    errors = []

    def work(t):
        try:
            for j in range(10):
                c = cand(f"{t}-{j}")
                store.add_candidate(rid, c)
                store.add_evaluations(rid, c.hash, "val", [ok("a"), ok("b")])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(store.get_evaluations(rid)) == 80
    store.close()


# --- many processes on one store ----------------------------------------------------------

N_PROCS, N_CANDS, N_EVALS = 8, 20, 10  # 200 evaluations and 20 candidates per process


def _process_worker(url: str, rid: str, k: int, barrier, results) -> None:
    try:
        barrier.wait(60)
        store = SQLStorage(url)  # every process opens the store at the same moment
        shared = cand("shared by all")
        shared_new = store.add_candidate(rid, shared)
        shared_rows = store.add_evaluations(rid, shared.hash, "val", [ok(f"s{i}") for i in range(5)])
        rows = 0
        for j in range(N_CANDS):
            c = cand(f"proc {k} cand {j}")
            assert store.add_candidate(rid, c, step=j, metadata={"proc": k})
            if j % 2:
                # Many tiny transactions: the worst case for lock contention.
                for i in range(N_EVALS):
                    rows += store.add_evaluations(rid, c.hash, "val", [ok(f"e{i}", (i + j) % 2)])
            else:
                rows += store.add_evaluations(rid, c.hash, "val", [failed(f"e{i}") if i < 3 else ok(f"e{i}") for i in range(N_EVALS)])
                rows += store.add_evaluations(rid, c.hash, "val", [ok(f"e{i}", 0.5) for i in range(3)])  # replaces the failures
            store.add_event(rid, j, "tick", {"proc": k})
            # Read-modify-write: two writers that both read before writing would lose a key
            # (or, with deferred SQLite transactions, fail with "database is locked").
            store.update_run(rid, summary={f"proc-{k}-{j}": j})
        store.set_state(rid, f"proc-{k}", {"done": N_CANDS})
        store.close()
        results.put((k, shared_new, shared_rows, rows, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((k, None, None, None, f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_eight_processes_write_one_store_without_loss(backend, db):
    skip_without_postgres(backend)
    if backend == "postgres":
        wipe_postgres(POSTGRES_URL)  # type: ignore[arg-type]
        url = POSTGRES_URL
    else:
        url = f"sqlite:///{db}"
    with SQLStorage(url) as store:  # type: ignore[arg-type]
        rid = new_run(store)
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(url, rid, k, barrier, results)) for k in range(N_PROCS)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    elapsed = time.perf_counter() - t0
    errors = [o[4] for o in out if o[4]]
    assert not errors, errors  # in particular no "database is locked"
    assert sum(o[1] for o in out) == 1  # exactly one process created the shared candidate
    assert sum(o[2] for o in out) == 5
    assert sum(o[3] for o in out) == N_PROCS * N_CANDS * N_EVALS + N_PROCS * (N_CANDS // 2) * 3
    with SQLStorage(url) as store:  # type: ignore[arg-type]
        assert len(store.get_candidates(rid)) == N_PROCS * N_CANDS + 1
        evs = store.get_evaluations(rid)
        assert len(evs) == N_PROCS * N_CANDS * N_EVALS + 5
        assert not any(e.result.failed for e in evs)
        assert len(store.get_events(rid, "tick")) == N_PROCS * N_CANDS
        assert all(store.get_state(rid, f"proc-{k}") == {"done": N_CANDS} for k in range(N_PROCS))
        assert store.get_run(rid).summary == {f"proc-{k}-{j}": j for k in range(N_PROCS) for j in range(N_CANDS)}
        assert store.check_integrity() == []
    print(f"{backend}: {N_PROCS} processes, {len(evs)} evaluations in {elapsed:.2f}s")


# --- schema versions ----------------------------------------------------------------------


def _set_version(path: pathlib.Path, value: str) -> None:
    con = raw(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    con.close()


def test_schema_version_is_stored(db):
    with SQLStorage(db) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert raw(db).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (str(SCHEMA_VERSION),)


def test_newer_schema_is_refused_and_left_untouched(db):
    SQLStorage(db).close()
    _set_version(db, "99")
    with pytest.raises(SchemaVersionError) as err:
        SQLStorage(db)
    assert f"written by schema v99, this promptopt reads up to v{SCHEMA_VERSION}" in err.value.message
    assert "upgrade" in (err.value.fix or "").lower()
    assert isinstance(err.value, ConfigError)
    assert raw(db).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("99",)


def test_older_schema_is_migrated_in_place(db):
    with SQLStorage(db) as store:
        rid = new_run(store)
        store.add_candidate(rid, cand(1))
    _set_version(db, "0")
    calls = []
    original = _sql._MIGRATIONS[0]
    _sql._MIGRATIONS[0] = lambda conn: (calls.append(conn.in_transaction()), original(conn))
    try:
        with SQLStorage(db) as store:
            assert store.schema_version() == SCHEMA_VERSION
            assert [r.hash for r in store.get_candidates(rid)] == [cand(1).hash]
    finally:
        _sql._MIGRATIONS[0] = original
    assert calls == [True]  # ran once, inside a transaction


def test_failed_migration_leaves_the_store_as_it_was(db, monkeypatch):
    SQLStorage(db).close()
    _set_version(db, "0")

    def broken(conn):
        conn.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("migration bug")

    monkeypatch.setitem(_sql._MIGRATIONS, 0, broken)
    with pytest.raises(RuntimeError, match="migration bug"):
        SQLStorage(db)
    con = raw(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("0",)
    assert con.execute("SELECT name FROM sqlite_master WHERE name='half_done'").fetchone() is None
    monkeypatch.undo()
    with SQLStorage(db) as store:
        assert store.schema_version() == SCHEMA_VERSION


def test_missing_migration_step_and_garbage_version(db, monkeypatch):
    SQLStorage(db).close()
    _set_version(db, "0")
    monkeypatch.delitem(_sql._MIGRATIONS, 0)
    with pytest.raises(SchemaVersionError, match="cannot migrate"):
        SQLStorage(db)
    _set_version(db, "not-a-number")
    with pytest.raises(StoreCorruptedError) as err:
        SQLStorage(db)
    assert err.value.fix


def test_foreign_sqlite_database_is_not_taken_over(db):
    con = raw(db)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a promptopt store") as err:
        SQLStorage(db)
    assert err.value.fix
    assert raw(db).execute("SELECT name FROM sqlite_master WHERE name='runs'").fetchone() is None


# --- damaged files ------------------------------------------------------------------------


def test_random_bytes_file_is_reported_as_corrupted(db):
    db.write_bytes(random.Random(0).randbytes(8192))
    with pytest.raises(StoreCorruptedError) as err:
        open_store(str(db))
    assert str(db) in err.value.message
    assert "backup" in (err.value.fix or "")
    assert "Traceback" not in str(err.value)


def test_damaged_pages_never_escape_as_raw_sqlite_errors(db):
    with SQLStorage(db) as store:
        rid = new_run(store)
        for i in range(30):
            c = cand(f"{i} " + "x" * 500)
            store.add_candidate(rid, c)
            store.add_evaluations(rid, c.hash, "val", [ok(f"e{k}", output="y" * 200) for k in range(20)])
    con = raw(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    data = bytearray(db.read_bytes())
    rng = random.Random(1)
    for page in range(2, len(data) // page_size, 3):  # keep the header page, scribble on others
        start = page * page_size + 8
        data[start:start + 64] = rng.randbytes(64)
    db.write_bytes(bytes(data))
    try:
        store = SQLStorage(db)
    except StoreCorruptedError:
        return
    problems = store.check_integrity()
    assert problems and any("integrity_check" in p or "malformed" in p for p in problems)
    for op in (store.list_runs, lambda: store.get_evaluations(rid), lambda: store.get_candidates(rid)):
        try:
            op()
        except PromptOptError as exc:
            assert isinstance(exc, (StoreCorruptedError, StoreError))
    store.close()


def test_integrity_check_finds_dangling_rows_tampering_and_dead_runs(db):
    with SQLStorage(db) as store:
        rid = new_run(store)
        store.add_candidate(rid, cand(1))
        store.add_evaluations(rid, cand(1).hash, "val", [ok("a")])
        store.update_run(rid, status="running")
        assert store.check_integrity() == []
    con = raw(db)
    con.execute("PRAGMA foreign_keys = OFF")
    con.execute(
        "INSERT INTO evaluations (run_id, candidate_hash, split, example_id, score, output, parsed, cached, prompt_tokens,"
        " completion_tokens, cost_usd, latency_s, created_at) VALUES (?, 'deadbeef', 'val', 'x', 1, '', 1, 0, 0, 0, 0, 0, 0)",
        (rid,),
    )
    con.execute("UPDATE candidates SET content = replace(content, 'Instruction 1', 'Instruction ONE')")
    con.execute("UPDATE runs SET updated_at = 1000")
    con.execute("UPDATE candidates SET created_at = 1000")
    con.execute("UPDATE evaluations SET created_at = 1000")
    con.close()
    with SQLStorage(db) as store:
        problems = store.check_integrity()
    text = "\n".join(problems)
    assert "foreign key violation: table evaluations" in text
    assert f"1 evaluations of run {rid} point at a missing candidate" in text
    assert "hashes to" in text
    assert "marked running" in text and f"promptopt resume {rid}" in text


# --- paths and URLs -----------------------------------------------------------------------


def test_missing_directory_is_a_config_error_naming_the_path(tmp_path):
    target = tmp_path / "nope" / "store.sqlite"
    with pytest.raises(ConfigError) as err:
        open_store(str(target))
    assert str(tmp_path / "nope") in err.value.message and err.value.fix
    assert not (tmp_path / "nope").exists()  # not created behind the user's back


def test_parent_that_is_a_file_or_path_that_is_a_directory(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        SQLStorage(tmp_path / "afile" / "store.sqlite")
    with pytest.raises(ConfigError, match="is a directory"):
        SQLStorage(tmp_path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_directory_is_a_config_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError) as err:
            SQLStorage(ro / "store.sqlite")
        assert str(ro) in err.value.message
    finally:
        ro.chmod(0o700)


def test_open_store_specs(tmp_path):
    assert isinstance(open_store(None), MemoryStorage)
    assert isinstance(open_store(":memory:"), MemoryStorage)
    mem = MemoryStorage()
    assert open_store(mem) is mem
    for spec in (str(tmp_path / "a.db"), tmp_path / "b.sqlite", f"sqlite:///{tmp_path / 'c.anything'}", str(tmp_path / "plainname")):
        store = open_store(spec)
        assert isinstance(store, SQLStorage)
        new_run(store)
        store.close()
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.sqlite").exists() and (tmp_path / "c.anything").exists()
    with pytest.raises(ConfigError):
        open_store("  ")
    with pytest.raises(ConfigError):
        open_store(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not supported"):
        open_store("mysql://u:p@h/db")
    with pytest.raises(ConfigError):
        open_store("sqlite+aiosqlite:///x.db")


def test_home_relative_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with open_store("~/store.sqlite") as store:
        new_run(store)
    assert (tmp_path / "store.sqlite").exists()


def test_missing_psycopg_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(DependencyMissingError) as err:
        SQLStorage("postgresql+psycopg://u:secret@localhost/db")
    assert "promptopt[postgres]" in (err.value.fix or "")
    with pytest.raises(DependencyMissingError):
        open_store("postgresql://u@localhost/db")  # bare postgresql:// means psycopg 3 too


def test_password_never_appears_in_errors_or_repr():
    pytest.importorskip("psycopg")
    url = "postgresql+psycopg://bob:s3cr3t-pw@127.0.0.1:1/db?connect_timeout=2"
    with pytest.raises(StoreError) as err:
        SQLStorage(url)
    assert "s3cr3t-pw" not in str(err.value) and "127.0.0.1" in str(err.value)
    assert err.value.fix and "running" in err.value.fix


def test_postgres_url_repr_hides_password():
    skip_without_postgres("postgres")
    wipe_postgres(POSTGRES_URL)  # type: ignore[arg-type]
    url = sa.make_url(POSTGRES_URL).set(password="visible-if-leaked")  # trust auth ignores it
    with SQLStorage(url) as store:
        assert "visible-if-leaked" not in repr(store) and "visible-if-leaked" not in store.url
        assert store.schema_version() == SCHEMA_VERSION
