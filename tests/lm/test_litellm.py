"""LiteLLM backend against a real local HTTP endpoint: wire format, error mapping, secrets."""

from __future__ import annotations

import asyncio

import pytest

from promptopt.errors import LMConfigError, LMTransientError, LMUnavailableError, UnknownNameError
from promptopt.lm import CachedLM, LimitedLM, LiteLLM, make_lm

from _lm_helpers import FakeOpenAIServer, chat, free_port

SECRET = "sk-test-3f9a1c77e2b94d0c"


def test_unknown_provider_lists_close_matches():
    with pytest.raises(UnknownNameError) as info:
        LiteLLM("opnai/gpt-4o-mini")
    assert "'opnai'" in str(info.value) and "openai" in str(info.value)
    assert "provider prefix" in info.value.fix


def test_bare_model_name_litellm_cannot_place_is_rejected():
    with pytest.raises(UnknownNameError, match="which provider serves"):
        LiteLLM("definitely-not-a-model-xyz")


def test_completion_over_http(fake_server: FakeOpenAIServer):
    fake_server.default_text = "positive"
    lm = LiteLLM("openai/smollm2", api_base=fake_server.api_base, api_key=SECRET)
    out = lm.complete([chat("great film", system="classify", max_tokens=5, stop=["\n"], seed=4)])[0]
    assert out.ok and out.text == "positive" and out.finish_reasons == ["stop"]
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (7, 2)
    assert out.cost_usd == 0.0  # a self-hosted model has no price
    body = fake_server.bodies[-1]
    assert body["messages"] == [{"role": "system", "content": "classify"}, {"role": "user", "content": "great film"}]
    assert body["max_tokens"] == 5 and body["stop"] == ["\n"] and body["seed"] == 4 and body["temperature"] == 0
    assert fake_server.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    assert lm.identity == f"litellm:openai/smollm2@{fake_server.api_base}"


@pytest.mark.parametrize("model", ["openai/o3-mini", "openai/gpt-5-mini", "hosted_vllm/qwen"])
def test_openai_compatible_servers_get_max_tokens_not_max_completion_tokens(fake_server: FakeOpenAIServer, model: str):
    # litellm alone sends max_completion_tokens for o-series/gpt-5 names, which llama-cpp-python's server ignores.
    LiteLLM(model, api_base=fake_server.api_base, api_key="sk-x").complete([chat("hi", max_tokens=3)])
    body = fake_server.bodies[-1]
    assert body["max_tokens"] == 3 and "max_completion_tokens" not in body


def test_n_samples_and_logprobs(fake_server: FakeOpenAIServer):
    lm = LiteLLM("openai/smollm2", api_base=fake_server.api_base, api_key="sk-x")
    out = lm.complete([chat("hi", n=3, temperature=0.8)])[0]
    assert fake_server.bodies[-1]["n"] == 3 and len(out.texts) == 3 and out.usage.completion_tokens == 6
    payload = FakeOpenAIServer.completion("yes", {"model": "smollm2"})
    payload["choices"][0]["logprobs"] = {"content": [{"token": "yes", "logprob": -0.25, "bytes": None, "top_logprobs": []}]}
    fake_server.replies.append((200, {}, payload))
    out = lm.complete([chat("hi", logprobs=True)])[0]
    assert fake_server.bodies[-1]["logprobs"] is True
    assert [(t.token, t.logprob) for t in out.logprobs[0]] == [("yes", -0.25)]


@pytest.mark.parametrize(
    ("status", "error", "fix_words"),
    [(401, LMConfigError, "API key"), (403, LMConfigError, "key may use"), (404, LMConfigError, "model name"), (400, LMConfigError, "parameters"), (500, LMTransientError, "Retried"), (503, LMTransientError, "Retried")],
)
def test_http_errors_map_onto_the_error_tree(fake_server: FakeOpenAIServer, status, error, fix_words):
    fake_server.error(status, f"upstream says no (key {SECRET})")
    lm = LiteLLM("openai/smollm2", api_base=fake_server.api_base, api_key=SECRET)
    with pytest.raises(error) as info:
        lm.complete([chat("hi")])
    assert type(info.value) is error
    assert fix_words in info.value.fix
    assert "upstream says no" in str(info.value)
    assert SECRET not in str(info.value) and "***" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_rate_limit_carries_retry_after_and_the_limiter_honours_it(fake_server: FakeOpenAIServer):
    fake_server.error(429, "slow down", {"retry-after": "3"})
    lm = LiteLLM("openai/smollm2", api_base=fake_server.api_base, api_key="sk-x")
    with pytest.raises(LMTransientError) as info:
        lm.complete([chat("hi")])
    assert info.value.retry_after == 3.0
    fake_server.error(429, "slow down", {"retry-after": "3"})
    sleeps: list[float] = []
    out = LimitedLM(lm, sleep=sleeps.append).complete([chat("hi")])
    assert out[0].ok and out[0].attempts == 2 and sleeps and sleeps[0] >= 3.0


def test_unreachable_server_is_unavailable_after_retries():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    lm = LimitedLM(LiteLLM("openai/smollm2", api_base=url, api_key=SECRET, timeout=5), max_retries=1, backoff_base=0.01)
    with pytest.raises(LMUnavailableError) as info:
        lm.complete([chat("hi")])
    assert url in str(info.value) and "connection refused" in str(info.value)
    assert "Start the server" in info.value.fix
    assert SECRET not in str(info.value)


def test_secret_never_reaches_identity_repr_or_cache(fake_server: FakeOpenAIServer, tmp_path):
    path = tmp_path / "c.sqlite"
    lm = make_lm("openai/smollm2", api_base=fake_server.api_base, api_key=SECRET, cache=str(path))
    assert lm.complete([chat("hi")])[0].ok
    assert lm.complete([chat("hi")])[0].cached
    for text in (lm.identity, repr(lm), repr(lm.inner), repr(vars(lm.inner.inner.inner))):
        assert SECRET not in text
    key = chat("hi").cache_key(lm.identity)
    assert key == chat("hi").cache_key(LiteLLM("openai/smollm2", api_base=fake_server.api_base, api_key="another-key").identity)
    for file in tmp_path.iterdir():  # the database and its WAL
        assert SECRET.encode() not in file.read_bytes()
    assert len(fake_server.bodies) == 1


def test_async_batch(fake_server: FakeOpenAIServer):
    lm = CachedLM(LiteLLM("openai/smollm2", api_base=fake_server.api_base, api_key="sk-x"), "sqlite://")
    out = asyncio.run(lm.acomplete([chat("a"), chat("b"), chat("a")]))
    assert [r.text for r in out] == ["ok", "ok", "ok"] and [r.cached for r in out] == [False, False, True]
    assert len(fake_server.bodies) == 2
