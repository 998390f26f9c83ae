"""Where runs, candidates, evaluations and events live, and the prompt registry on top.

``open_store(None)`` keeps everything in memory; ``open_store("runs.sqlite")`` opens (or
creates) a SQLite file; ``open_store("postgresql+psycopg://...")`` a shared PostgreSQL
database. ``load_prompt(name)`` gives production code the candidate published under a name.
"""

from __future__ import annotations

import os

from promptopt.errors import ConfigError
from promptopt.store._base import (
    SCHEMA_VERSION,
    CandidateRecord,
    EvaluationRecord,
    EventRecord,
    RunRecord,
    Storage,
)
from promptopt.store._export import export_run, load_candidate_file
from promptopt.store._memory import MemoryStorage
from promptopt.store._registry import DEFAULT_STORE_PATH, load_prompt
from promptopt.store._sql import SQLStorage

__all__ = [
    "Storage",
    "RunRecord",
    "CandidateRecord",
    "EvaluationRecord",
    "EventRecord",
    "SCHEMA_VERSION",
    "MemoryStorage",
    "SQLStorage",
    "open_store",
    "export_run",
    "load_candidate_file",
    "load_prompt",
    "DEFAULT_STORE_PATH",
]


def open_store(spec: Storage | str | os.PathLike[str] | None = None) -> Storage:
    """Open a store from a spec.

    ``None`` or ``":memory:"``: a new :class:`MemoryStorage`. A string with ``://``: a SQLAlchemy
    URL (``sqlite:///path``, ``postgresql+psycopg://user:password@host/db``). Anything else: the
    path of a SQLite file, created if missing (its directory must exist). A :class:`Storage` is
    returned as is.
    """
    if isinstance(spec, Storage):
        return spec
    if spec is None or (isinstance(spec, str) and spec.strip() == ":memory:"):
        return MemoryStorage()
    if isinstance(spec, str):
        if not spec.strip():
            raise ConfigError("The store path is empty.", fix="Give a file path or a database URL, or None for an in-memory store.")
        return SQLStorage(spec.strip())
    if isinstance(spec, os.PathLike):
        return SQLStorage(spec)
    raise ConfigError(
        f"Cannot open a store from {type(spec).__name__}.",
        fix="Pass None, ':memory:', a path, a SQLAlchemy URL or a Storage object.",
    )
