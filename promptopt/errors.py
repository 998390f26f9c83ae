"""One error tree, rooted in :class:`PromptOptError`.

Every error carries a ``fix``: one sentence telling the user what to do. The CLI maps
:class:`ConfigError` (bad input) to exit code 2 and :class:`BudgetExceeded` to exit code 3.
"""

from __future__ import annotations

__all__ = [
    "PromptOptError",
    "ConfigError",
    "DataError",
    "TemplateError",
    "UnknownNameError",
    "LMError",
    "LMConfigError",
    "LMUnavailableError",
    "LMTransientError",
    "BudgetExceeded",
    "StoreError",
    "NotFoundError",
    "SchemaVersionError",
    "StoreCorruptedError",
    "DependencyMissingError",
]


class PromptOptError(Exception):
    """Base of every error promptopt raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} Fix: {fix}" if fix else message)


class ConfigError(PromptOptError):
    """The user's input (arguments, files, config) is wrong. CLI exit code 2."""


class DataError(ConfigError):
    """A dataset file is malformed, empty, or lacks a field."""


class TemplateError(ConfigError):
    """A prompt template does not parse, or uses an undefined variable, or tries something unsafe."""


class UnknownNameError(ConfigError):
    """An unknown strategy, metric, model provider, format... name."""


class DependencyMissingError(ConfigError):
    """An optional dependency (an extra) is needed but not installed."""


class LMError(PromptOptError):
    """A language-model backend failed."""


class LMConfigError(LMError, ConfigError):
    """Non-retryable: bad key, bad request, unknown model, missing model file. Fails at once."""


class LMUnavailableError(LMError):
    """The backend cannot be reached (connection refused, DNS) even after retries."""


class LMTransientError(LMError):
    """A retryable failure (429, 5xx, timeout, connection reset). Raised only by backends; the limiter retries it."""

    def __init__(self, message: str, *, fix: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, fix=fix)
        self.retry_after = retry_after


class BudgetExceeded(PromptOptError):
    """A hard cap of the ledger (calls, tokens, dollars, seconds) would be exceeded. CLI exit code 3."""

    def __init__(self, message: str, *, fix: str | None = None, cap: str = "", limit: float = 0.0, used: float = 0.0) -> None:
        super().__init__(message, fix=fix)
        self.cap = cap
        self.limit = limit
        self.used = used


class StoreError(PromptOptError):
    """The candidate store failed."""


class NotFoundError(StoreError, ConfigError):
    """A run, candidate or prompt name that the store does not hold (or an ambiguous prefix)."""


class SchemaVersionError(StoreError, ConfigError):
    """The store was written by a newer (or unknown) schema version."""


class StoreCorruptedError(StoreError, ConfigError):
    """The store file is not a readable database, or fails its integrity check."""
