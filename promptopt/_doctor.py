"""``promptopt doctor STORE``: say whether a store is healthy, without creating one.

Opening a path that does not exist would create an empty store (and report it healthy), so a
mistyped path must fail first. A file that cannot be opened as a store (not a database,
damaged beyond opening, written by a newer schema, another program's database) is a finding,
not a crash: it is reported like any other problem. Everything else is
:meth:`Storage.check_integrity`.
"""

from __future__ import annotations

import os
import pathlib

from promptopt.errors import ConfigError, SchemaVersionError, StoreCorruptedError, StoreError

__all__ = ["diagnose"]

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_path(spec: str) -> list[str]:
    path = pathlib.Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"No store at {path}: the file does not exist.",
            fix="Pass the path of an existing store (the CLI's default is .promptopt/store.sqlite); doctor never creates one.",
        )
    if path.is_dir():
        raise ConfigError(f"{path} is a directory, not a store file.", fix=f"Pass the store file inside it, e.g. {path / 'store.sqlite'}.")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"The store {path} is not readable by this user.", fix="Fix its permissions, or run doctor as its owner.")
    with path.open("rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if not head:
        return [f"{path} is an empty file, not a store (a store that was never written, or was truncated to nothing)"]
    if head != _SQLITE_MAGIC:
        return [f"{path} is not a SQLite database (its first bytes are {head[:8]!r}): not a store, or its header is destroyed"]
    return []


def diagnose(spec: str) -> list[str]:
    """Problems found in the store ``spec`` (a path or SQLAlchemy URL); empty when healthy.

    Raises :class:`~promptopt.errors.ConfigError` when ``spec`` names no store at all.
    """
    from promptopt.store import open_store

    if not spec or not spec.strip():
        raise ConfigError("No store given.", fix="Pass the store's path or URL: promptopt doctor .promptopt/store.sqlite")
    spec = spec.strip()
    if spec == ":memory:":
        raise ConfigError("An in-memory store has nothing to check.", fix="Pass the path or URL of a persistent store.")
    if "://" not in spec:
        problems = _check_path(spec)
        if problems:
            return problems
    try:
        store = open_store(spec)
    except (StoreCorruptedError, SchemaVersionError) as exc:
        return [f"cannot open the store: {exc.message} ({exc.fix})" if exc.fix else f"cannot open the store: {exc.message}"]
    except StoreError as exc:
        return [f"cannot open the store: {exc.message}"]
    try:
        return list(store.check_integrity())
    finally:
        store.close()
