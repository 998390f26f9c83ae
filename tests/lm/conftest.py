"""Fixtures of the LM layer's tests (the embedded model fixture, embedded_backend, is in tests/conftest.py)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

import pytest

from _lm_helpers import FakeOpenAIServer


@pytest.fixture
def fake_server():
    """A local OpenAI-compatible HTTP endpoint whose answers each test scripts."""
    server = FakeOpenAIServer()
    try:
        yield server
    finally:
        server.close()
