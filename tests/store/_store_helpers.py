"""Small builders shared by the store tests."""

from __future__ import annotations

import os

import pytest

from promptopt.evaluators._base import ExampleResult
from promptopt.prompt import Candidate, Demo
from promptopt.store import Storage

POSTGRES_URL = os.environ.get("PROMPTOPT_TEST_POSTGRES_URL")
BACKENDS = ["memory", "sqlite", "postgres"]


def wipe_postgres(url: str) -> None:
    import sqlalchemy as sa

    from promptopt.store._sql import _normalise_url, metadata

    engine = sa.create_engine(_normalise_url(url))
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
    finally:
        engine.dispose()


def skip_without_postgres(backend: str) -> None:
    if backend == "postgres" and not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need PROMPTOPT_TEST_POSTGRES_URL (a database the tests may wipe)")
    if backend == "postgres":
        pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: pip install 'promptopt[postgres]'")

def new_run(store: Storage, **overrides) -> str:
    kwargs = dict(name="test run", strategy="ape", strategy_params={"n": 4}, config={"model": "m"}, seed=7)
    kwargs.update(overrides)
    return store.create_run(**kwargs)


def cand(i: int | str, **kw) -> Candidate:
    return Candidate(instruction=f"Instruction {i}", **kw)


def ok(example_id: str, score: float = 1.0, **kw) -> ExampleResult:
    kw.setdefault("output", f"out {example_id}")
    kw.setdefault("prediction", "p")
    return ExampleResult(example_id=example_id, score=score, **kw)


def failed(example_id: str, **kw) -> ExampleResult:
    kw.setdefault("error_type", "LMTransientError")
    return ExampleResult(example_id=example_id, score=None, output="", prediction=None, error="timeout", **kw)


def rich_candidate() -> Candidate:
    return Candidate(
        instruction="Classify the sentiment.\nAnswer with one word.",
        demos=(
            Demo.make({"text": "great movie", "lang": "en"}, "positive", example_id="t1", source="train"),
            Demo.make({"text": "awful ✗", "lang": "en"}, "negative", example_id=None, source="generated"),
        ),
        demo_format="inline",
        parts=(("output_format", "One word."), ("prefix", "Answer:")),
        input_template="Text: {{ text }}",
    )
