"""Issue 4: a planted API key never appears in the cache, the store, logs, exports, result files,
console output or exception messages. The model is litellm talking to a local OpenAI-compatible
server on 127.0.0.1 that, like careless providers, quotes the Authorization header it got in its
401 and 500 error bodies; and a closed localhost port."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import traceback

import pytest

from _catalogue import GOOD_JSONL, run_cli
from _drills import EchoingOpenAIServer, closed_port, find_secret, planted_secret
from promptopt.errors import LMConfigError, LMUnavailableError
from promptopt.lm import CachedLM, Ledger, LedgeredLM, LimitedLM, LiteLLM, LMRequest
from promptopt.optimizers import RandomSearch
from promptopt.run import optimize, resume
from promptopt.store import export_run, open_store
from promptopt.task import Example, Task


@pytest.fixture
def all_logs():
    """Every logger at DEBUG into one buffer (the most a user could switch on), restored after."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    saved = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    saved_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lg in logging.Logger.manager.loggerDict.values():
        if isinstance(lg, logging.Logger):
            lg.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _task() -> Task:
    return Task.from_examples("secrets", [Example(f"e{i}", {"input": f"text {i}"}, "positive") for i in range(12)], split=(4, 4, 4))


def _exception_texts(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc) + str(getattr(exc, "fix", ""))


def test_planted_key_passed_as_argument_never_leaks(tmp_path, all_logs, capfd):
    secret = planted_secret()
    texts: dict[str, str] = {}
    store_path, cache_path = tmp_path / "store.sqlite", tmp_path / "cache.sqlite"
    # 500s (each quoting the key) that the limiter retries, some twice in a row so they are
    # recorded as failed examples; then valid answers.
    with EchoingOpenAIServer(script=[500, 500, 500, 200, 500, 500, 500, 500], default=200) as server:
        backend = LiteLLM("openai/drill", api_base=server.api_base, api_key=secret, timeout=10)
        lm = CachedLM(LedgeredLM(LimitedLM(backend, max_retries=1, sleep=lambda s: None), Ledger()), cache_path)
        texts["repr"] = repr(lm) + lm.identity + repr(backend)
        store = open_store(str(store_path))
        strat = RandomSearch(instructions=["Say positive."], demo_counts=[0, 1], n_candidates=2, batch_size=2)
        result = optimize(_task(), strat, model=lm, store=store, budget=None, progress=False, seed=0)
        texts["result"] = repr(result) + str(result.to_dict())
        evals = store.get_evaluations(result.run_id)
        failed = [e.result for e in evals if e.result.failed]
        assert failed, "the drill must record some failures (their error text quotes the server)"
        assert all("***" in r.error for r in failed)  # the server's echo is there, masked
        # Retry the failures, then export everything.
        resume(result.run_id, store=store, task=_task(), model=lm, progress=False)
        export_run(store, result.run_id, tmp_path / "export.json", what="all")
        export_run(store, result.run_id, tmp_path / "export.yaml", what="all")
        code, out = run_cli(["show", result.run_id, "--store", str(store_path)])
        texts["show"] = out
        # A bad key: the server answers 401 quoting it; the error is raised (systemic).
        server.script[:] = [401]
        with pytest.raises(LMConfigError) as info:
            lm.complete([LMRequest.chat([{"role": "user", "content": "one more"}])])
        texts["401 exception"] = _exception_texts(info.value)
        assert "Authentication failed" in info.value.message and "***" in info.value.message
        store.close()
        assert any(secret in a for a in server.seen_auth), "the key was really sent to the server"
    captured = capfd.readouterr()
    texts["stdout"], texts["stderr"], texts["logs"] = captured.out, captured.err, all_logs.getvalue()
    assert texts["logs"], "logging was captured"
    leaks = find_secret(secret, [tmp_path], texts)
    assert leaks == [], f"planted key found in {leaks}"
    # The artifacts were really there to search.
    names = {p.name for p in tmp_path.iterdir()}
    assert {"store.sqlite", "cache.sqlite", "export.json", "export.yaml"} <= names


def test_planted_key_from_the_environment_never_leaks_through_the_cli(tmp_path, all_logs, capfd, monkeypatch):
    """The CLI has no --api-key: the key comes from OPENAI_API_KEY, which litellm reads itself."""
    secret = planted_secret()
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    data = tmp_path / "data.jsonl"
    data.write_text(GOOD_JSONL)
    store, out_json, export = tmp_path / "store.sqlite", tmp_path / "result.json", tmp_path / "best.yaml"
    texts: dict[str, str] = {}
    with EchoingOpenAIServer(script=[500, 500], default=200) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.api_base)
        args = ["optimize", "--data", str(data), "--model", "openai/drill", "--store", str(store), "--json-out", str(out_json),
                "--budget-calls", "8", "--param", "n_candidates=2", "--param", "demo_counts=[0,1]", "--no-progress"]
        code, texts["optimize"] = run_cli(args)
        assert code == 0, texts["optimize"]
        run_id = open_store(str(store)).list_runs()[0].id
        code, texts["show"] = run_cli(["show", run_id, "--store", str(store)])
        assert code == 0
        code, texts["export"] = run_cli(["export", run_id, "--store", str(store), "--out", str(export), "--what", "all"])
        assert code == 0
        # The key is rejected: exit 2, the message says so without quoting it.
        server.default = 401
        code, texts["optimize 401"] = run_cli(args[:-1] + ["--seed", "5", "--no-progress"])
        assert code == 2 and "Authentication failed" in texts["optimize 401"]
        assert any(secret in a for a in server.seen_auth)
    captured = capfd.readouterr()
    texts["stdout"], texts["stderr"], texts["logs"] = captured.out, captured.err, all_logs.getvalue()
    cache_dir = pathlib.Path(os.environ["PROMPTOPT_CACHE_DIR"])
    assert any(cache_dir.iterdir()), "the CLI's LM cache was written"
    leaks = find_secret(secret, [tmp_path, cache_dir], texts)
    assert leaks == [], f"planted key found in {leaks}"


def test_unreachable_server_error_carries_no_key(monkeypatch):
    secret = planted_secret()
    monkeypatch.setenv("OPENAI_API_KEY", planted_secret())
    lm = LimitedLM(LiteLLM("openai/drill", api_base=f"http://127.0.0.1:{closed_port()}/v1", api_key=secret, timeout=5), max_retries=0)
    with pytest.raises(LMUnavailableError) as info:
        lm.complete([LMRequest.chat([{"role": "user", "content": "hi"}])])
    assert find_secret(secret, [], {"exception": _exception_texts(info.value)}) == []
    assert find_secret(os.environ["OPENAI_API_KEY"], [], {"exception": _exception_texts(info.value)}) == []
    assert "127.0.0.1" in info.value.message
