"""``make_lm``: one call builds the standard stack ``CachedLM(LedgeredLM(LimitedLM(backend)))``.

The order matters: the cache is outermost so hits cost nothing and never reach the ledger; the
ledger sits above the limiter so it books one call per request however many retries it took
(retries are counted separately); the limiter sits on the backend to retry its raw errors.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from promptopt.errors import ConfigError
from promptopt.lm._cache import CachedLM
from promptopt.lm._ledger import Ledger, LedgeredLM
from promptopt.lm._limiter import LimitedLM
from promptopt.lm._litellm import LiteLLM
from promptopt.lm._llamacpp import LlamaCppLM
from promptopt.lm._types import BaseLM

__all__ = ["make_lm", "make_backend", "default_cache_path"]

_EMBEDDED = "embedded"


def default_cache_path() -> Path:
    """``$PROMPTOPT_CACHE_DIR/lm_cache.sqlite``, by default ``~/.cache/promptopt/lm_cache.sqlite``."""
    folder = os.environ.get("PROMPTOPT_CACHE_DIR")
    return (Path(folder).expanduser() if folder else Path.home() / ".cache" / "promptopt") / "lm_cache.sqlite"


def _check_kwargs(cls: type, kwargs: dict[str, Any], model: str) -> None:
    accepted = [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {', '.join(unknown)} for model {model!r} ({cls.__name__}).",
            fix=f"{cls.__name__} accepts: {', '.join(accepted)}.",
        )


def make_backend(model: str = _EMBEDDED, **backend_kwargs: Any) -> BaseLM:
    """The bare backend for a model string (no cache, ledger or limiter).

    ``"embedded"``: SmolLM2-135M-Instruct in-process; ``"embedded:/path/x.gguf"`` or any path
    ending in ``.gguf``: that GGUF in-process; anything else: a litellm model string.
    """
    model = (model or "").strip()
    if not model:
        raise ConfigError("Empty model string.", fix="Pass 'embedded', a path to a .gguf file, or a litellm model string such as openai/gpt-4o-mini.")
    if model == _EMBEDDED or model.startswith(_EMBEDDED + ":") or model.lower().endswith(".gguf"):
        path = model.split(":", 1)[1] if model.startswith(_EMBEDDED + ":") else (None if model == _EMBEDDED else model)
        _check_kwargs(LlamaCppLM, backend_kwargs, model)
        return LlamaCppLM(path or None, **backend_kwargs)
    _check_kwargs(LiteLLM, backend_kwargs, model)
    return LiteLLM(model, **backend_kwargs)


def make_lm(
    model: str = _EMBEDDED,
    *,
    cache: str | os.PathLike[str] | bool | None = True,
    ledger: Ledger | None = None,
    max_concurrency: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    max_retries: int = 4,
    timeout_s: float | None = None,
    **backend_kwargs: Any,
) -> CachedLM | LedgeredLM:
    """Build ``CachedLM(LedgeredLM(LimitedLM(backend)))`` for ``model``.

    ``cache``: True or ``"default"`` for the default file (:func:`default_cache_path`), a path or
    SQLAlchemy URL, or None/False for no cache. ``ledger``: share one across LMs to count (and cap) them
    together; a fresh unlimited one otherwise; either way it is the result's ``.ledger``.
    ``max_concurrency``: backend calls in flight; default 1 for in-process models (one CPU
    context; measured fastest) and 8 for remote ones. ``backend_kwargs`` go to
    :class:`LlamaCppLM` (n_ctx, n_threads, seed, chat_format) or :class:`LiteLLM` (api_base,
    api_key, timeout, extra).
    """
    backend = make_backend(model, **backend_kwargs)
    if max_concurrency is None:
        max_concurrency = 1 if isinstance(backend, LlamaCppLM) else 8
    limited = LimitedLM(backend, max_concurrency=max_concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries, timeout_s=timeout_s)
    stack = LedgeredLM(limited, ledger if ledger is not None else Ledger())
    if cache is None or cache is False:
        return stack
    return CachedLM(stack, default_cache_path() if cache is True or cache == "default" else cache)
