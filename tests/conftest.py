"""Shared fixtures. litellm must never try to download its price map in tests."""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PROMPTOPT_NO_PROGRESS", "1")

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"


def shared_data_dir() -> pathlib.Path | None:
    """../shared/data beside the repo (CI has it), or $PROMPTOPT_SHARED_DATA."""
    env = os.environ.get("PROMPTOPT_SHARED_DATA")
    candidates = [pathlib.Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path_factory, monkeypatch):
    """Tests never touch the user's LM cache."""
    monkeypatch.setenv("PROMPTOPT_CACHE_DIR", str(tmp_path_factory.mktemp("lmcache")))


@pytest.fixture(scope="session")
def embedded_backend():
    """One in-process SmolLM2 for the whole session (loading it costs ~0.5 s)."""
    from promptopt.lm._llamacpp import LlamaCppLM

    lm = LlamaCppLM()
    yield lm
    lm.close()
