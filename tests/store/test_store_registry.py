"""load_prompt: by registered name (latest or a version) or by run id (prefix), from any store spec."""

from __future__ import annotations

import pytest

from _store_helpers import cand, new_run, ok
from promptopt.errors import ConfigError, StoreError, UnknownNameError
from promptopt.store import MemoryStorage, SQLStorage, Storage, load_prompt


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStorage() if request.param == "memory" else SQLStorage(tmp_path / "store.sqlite")
    yield s
    s.close()


def two_runs(store: Storage) -> tuple[str, str]:
    a = new_run(store, run_id="run-20250101-000000-aaaaaa")
    for i, score in ((1, 0.2), (2, 0.9), (3, 0.5)):
        store.add_candidate(a, cand(i))
        store.add_evaluations(a, cand(i).hash, "val", [ok(f"v{k}", score) for k in range(4)])
    b = new_run(store, run_id="run-20250102-000000-bbbbbb")
    store.add_candidate(b, cand(4))
    store.add_evaluations(b, cand(4).hash, "val", [ok("v0", 0.7)])
    return a, b


def test_load_by_name_latest_and_version(store):
    a, b = two_runs(store)
    store.register_prompt("sentiment", a, cand(1).hash)
    store.register_prompt("sentiment", b, cand(4).hash)
    assert load_prompt("sentiment", store=store) == cand(4)
    assert load_prompt("sentiment", store=store, version=1) == cand(1)
    with pytest.raises(StoreError, match="no version 3"):
        load_prompt("sentiment", store=store, version=3)
    for bad in (0, -1, True, "2"):
        with pytest.raises(ConfigError):
            load_prompt("sentiment", store=store, version=bad)  # type: ignore[arg-type]


def test_load_by_run_id_or_prefix_gives_the_best_candidate(store):
    a, b = two_runs(store)
    assert load_prompt(a, store=store) == cand(2)
    assert load_prompt("run-20250102", store=store) == cand(4)
    with pytest.raises(StoreError, match="ambiguous"):
        load_prompt("run-2025", store=store)


def test_unknown_names_are_clear(store):
    a, _ = two_runs(store)
    store.register_prompt("qa", a, cand(2).hash)
    with pytest.raises(UnknownNameError) as err:
        load_prompt("sentimnet", store=store)
    assert "neither a registered prompt nor a run" in err.value.message
    assert "qa" in (err.value.fix or "") and "promptopt show" in (err.value.fix or "")
    with pytest.raises(UnknownNameError):
        load_prompt("sentimnet", store=store, version=1)
    with pytest.raises(ConfigError):
        load_prompt("", store=store)


def test_run_without_scores_cannot_be_loaded(store):
    rid = new_run(store)
    store.add_candidate(rid, cand(1))
    with pytest.raises(StoreError, match="no scored candidate") as err:
        load_prompt(rid, store=store)
    assert "resume" in (err.value.fix or "")


def test_store_given_as_path_url_or_environment(tmp_path, monkeypatch):
    path = tmp_path / "prompts.sqlite"
    with SQLStorage(path) as st:
        a, _ = two_runs(st)
        st.register_prompt("sentiment", a, cand(3).hash)
    assert load_prompt("sentiment", store=str(path)) == cand(3)
    assert load_prompt("sentiment", store=path) == cand(3)
    assert load_prompt("sentiment", store=f"sqlite:///{path}") == cand(3)
    monkeypatch.setenv("PROMPTOPT_STORE", str(path))
    assert load_prompt("sentiment") == cand(3)
    # The default path relative to the working directory.
    monkeypatch.delenv("PROMPTOPT_STORE")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".promptopt").mkdir()
    path.rename(tmp_path / ".promptopt" / "store.sqlite")
    assert load_prompt(a) == cand(2)


def test_missing_store_file_is_not_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTOPT_STORE", raising=False)
    with pytest.raises(ConfigError, match="No promptopt store") as err:
        load_prompt("sentiment")
    assert "PROMPTOPT_STORE" in (err.value.fix or "")
    with pytest.raises(ConfigError):
        load_prompt("sentiment", store=tmp_path / "nope.sqlite")
    assert list(tmp_path.iterdir()) == []
