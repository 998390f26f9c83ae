"""make_lm: model strings, the stack it builds, the default cache location, bad input."""

from __future__ import annotations

import pytest

from promptopt.errors import ConfigError, LMConfigError, UnknownNameError
from promptopt.lm import CachedLM, Ledger, LedgeredLM, LimitedLM, LiteLLM, LlamaCppLM, default_cache_path, default_model_path, make_lm


def layers(lm) -> list[type]:
    out = []
    while lm is not None:
        out.append(type(lm))
        lm = getattr(lm, "inner", None)
    return out


def test_embedded_default_stack_and_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTOPT_CACHE_DIR", str(tmp_path / "cachedir"))
    lm = make_lm()
    assert layers(lm) == [CachedLM, LedgeredLM, LimitedLM, LlamaCppLM]
    assert default_cache_path() == tmp_path / "cachedir" / "lm_cache.sqlite"
    assert lm.location == str(default_cache_path()) and default_cache_path().exists()
    assert lm.inner.inner.max_concurrency == 1
    assert isinstance(lm.ledger, Ledger)
    assert lm.identity == lm.inner.inner.inner.identity
    assert callable(getattr(lm, "score_continuation", None))  # APE's log-prob scoring finds it through the stack
    assert make_lm(cache="default").location == lm.location


def test_default_cache_dir_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv("PROMPTOPT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_path() == tmp_path / ".cache" / "promptopt" / "lm_cache.sqlite"


@pytest.mark.parametrize("cache", [None, False])
def test_cache_can_be_disabled(cache):
    assert layers(make_lm("embedded", cache=cache)) == [LedgeredLM, LimitedLM, LlamaCppLM]


def test_gguf_paths_and_backend_options(tmp_path):
    link = tmp_path / "my-model.gguf"
    link.symlink_to(default_model_path())
    for spec in (f"embedded:{link}", str(link)):
        backend = make_lm(spec, cache=None, n_ctx=512).inner.inner
        assert isinstance(backend, LlamaCppLM) and backend.model_path == str(link) and backend.n_ctx == 512


def test_litellm_strings_and_a_shared_ledger(tmp_path):
    ledger = Ledger(max_calls=10)
    task = make_lm("openai/gpt-4o-mini", cache=str(tmp_path / "c.sqlite"), ledger=ledger, api_key="sk-x")
    judge = make_lm("anthropic/claude-3-5-haiku-latest", cache=None, ledger=ledger, api_key="sk-y", rpm=60)
    assert isinstance(task.inner.inner.inner, LiteLLM) and task.ledger is ledger and judge.ledger is ledger
    assert task.inner.inner.max_concurrency == 8
    assert getattr(task, "score_continuation", None) is None  # black-box: no log-prob scoring


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="Empty model string"):
        make_lm("  ")
    with pytest.raises(ConfigError) as info:
        make_lm("embedded", cache=None, api_base="http://x")
    assert "api_base" in str(info.value) and "n_ctx" in info.value.fix
    with pytest.raises(UnknownNameError):
        make_lm("nosuchprovider/model", cache=None)
    with pytest.raises(LMConfigError, match="Model file not found"):
        make_lm(str(tmp_path / "absent.gguf"), cache=None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LMConfigError, match="Cannot create the folder"):
        make_lm(cache=str(blocker / "sub" / "c.sqlite"))
