"""Fixtures shared by the store tests: every storage backend behind one parametrised fixture.

PostgreSQL runs only when ``PROMPTOPT_TEST_POSTGRES_URL`` points at a database the tests may
wipe (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/promptopt_test``).
"""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from _store_helpers import POSTGRES_URL, skip_without_postgres, wipe_postgres
from promptopt.store import MemoryStorage, SQLStorage, Storage



@pytest.fixture
def make_store(request, tmp_path) -> Iterator[Callable[[], Storage]]:
    """A factory of stores of the parametrised backend; every store it made is closed after the
    test. For SQL backends, calling it twice opens the *same* database twice (as two processes
    would)."""
    backend = request.param
    skip_without_postgres(backend)
    opened: list[Storage] = []
    if backend == "postgres":
        wipe_postgres(POSTGRES_URL)  # type: ignore[arg-type]
    memory = MemoryStorage() if backend == "memory" else None

    def factory() -> Storage:
        if backend == "memory":
            store: Storage = memory  # type: ignore[assignment]
        elif backend == "sqlite":
            store = SQLStorage(f"sqlite:///{tmp_path / 'store.sqlite'}")
        else:
            store = SQLStorage(POSTGRES_URL)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store) -> Storage:
    return make_store()
