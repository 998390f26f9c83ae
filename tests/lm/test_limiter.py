"""LimitedLM: rate limits on a fake clock, retries and their classification, timeouts, concurrency, order."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from promptopt.errors import LMConfigError, LMError, LMTransientError, LMUnavailableError
from promptopt.lm import LimitedLM, LMRequest, ScriptedLM
from promptopt.lm._limiter import estimate_tokens

from _lm_helpers import chat


class FakeClock:
    """Monotonic clock whose sleep advances time instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def limited(lm, clock: FakeClock, **kwargs) -> LimitedLM:
    return LimitedLM(lm, clock=clock, sleep=clock.sleep, **kwargs)


def failing_first(times: int, error: Exception):
    """A responder raising ``error`` on the first ``times`` attempts of each request."""
    seen: dict[str, int] = {}

    def respond(request: LMRequest) -> str:
        text = request.message_dicts[-1]["content"]
        seen[text] = seen.get(text, 0) + 1
        if seen[text] <= times:
            raise error
        return "ok"

    return respond


# ---------------------------------------------------------------- rate limits


def test_rpm_spaces_requests_on_the_clock():
    clock = FakeClock()
    lm = limited(ScriptedLM(lambda r: "ok"), clock, rpm=60)
    out = lm.complete([chat(f"q{i}") for i in range(10)])
    assert all(r.ok for r in out)
    assert clock.now == pytest.approx(9.0)  # one request per second after a one-request burst
    assert all(s == pytest.approx(1.0) for s in clock.sleeps)


def test_tpm_reserves_the_estimate_and_reconciles_with_real_usage():
    clock = FakeClock()
    backend = ScriptedLM(lambda r: "ok")  # usage: 4 prompt words + 1 completion word = 5 tokens
    lm = limited(backend, clock, tpm=600)  # 10 tokens/s, burst 10
    batch = [chat(f"w w w {i}", max_tokens=10) for i in range(20)]
    assert estimate_tokens(batch[0]) == 16
    lm.complete(batch)
    # Each call reserves 16 tokens (wait 0.6 s from a full burst of 10) and gets 11 back afterwards;
    # without reconciliation it would be 1.6 s per call (32 s).
    assert clock.now == pytest.approx(20 * 0.6)
    used = sum(len(m["content"].split()) + 1 for r in backend.calls for m in r.message_dicts)
    assert used / clock.now <= 10  # never faster than the limit


def test_no_limits_never_sleeps():
    clock = FakeClock()
    limited(ScriptedLM(lambda r: "ok"), clock).complete([chat(f"q{i}") for i in range(50)])
    assert clock.sleeps == []


def test_async_rpm_uses_the_same_bucket():
    clock = FakeClock()
    lm = limited(ScriptedLM(lambda r: "ok"), clock, rpm=120)
    out = asyncio.run(lm.acomplete([chat(f"q{i}") for i in range(9)]))
    assert all(r.ok for r in out)
    assert clock.now == pytest.approx(3.5)  # 2/s: a burst of 2 (one second's worth), then 7 spaced by 0.5 s


# ---------------------------------------------------------------- retries


def test_transient_errors_are_retried_with_exponential_backoff():
    clock = FakeClock()
    backend = ScriptedLM(failing_first(2, LMTransientError("HTTP 500")))
    out = limited(backend, clock, max_retries=4, backoff_base=0.5).complete([chat("q")])
    assert out[0].ok and out[0].text == "ok" and out[0].attempts == 3
    assert backend.n_calls == 3
    first, second = clock.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 1.5  # base * 2^k plus up to base of jitter


def test_exhausted_retries_become_a_failure_response():
    clock = FakeClock()
    backend = ScriptedLM(failing_first(99, LMTransientError("HTTP 503")))
    out = limited(backend, clock, max_retries=3, backoff_base=1.0, backoff_max=2.5).complete([chat("q"), chat("r")])
    assert [r.ok for r in out] == [False, False]
    assert out[0].attempts == 4 and out[0].error_type == "LMTransientError" and "503" in out[0].error
    assert out[0].texts == []
    assert backend.n_calls == 8
    assert max(clock.sleeps) <= 2.5  # capped by backoff_max


def test_retry_after_is_honoured():
    clock = FakeClock()
    backend = ScriptedLM(failing_first(1, LMTransientError("HTTP 429", retry_after=7.0)))
    out = limited(backend, clock, backoff_base=0.1).complete([chat("q")])
    assert out[0].ok and clock.sleeps == [pytest.approx(7.0)]


def test_config_errors_are_not_retried():
    clock = FakeClock()
    backend = ScriptedLM(failing_first(99, LMConfigError("bad key", fix="set OPENAI_API_KEY")))
    with pytest.raises(LMConfigError, match="bad key"):
        limited(backend, clock, max_retries=4).complete([chat("q")])
    assert backend.n_calls == 1 and clock.sleeps == []


def test_unavailable_backend_is_retried_then_raised_with_partial_answers():
    clock = FakeClock()

    def respond(request: LMRequest) -> str:
        if request.message_dicts[-1]["content"] == "b":
            raise LMUnavailableError("connection refused at http://127.0.0.1:9", fix="start it")
        return "ok"

    backend = ScriptedLM(respond)
    with pytest.raises(LMUnavailableError) as info:
        limited(backend, clock, max_retries=2).complete([chat("c"), chat("b"), chat("a")])
    assert backend.n_calls == 1 + 3  # "a" answered, "b" tried 3 times, "c" never sent
    partial = info.value.partial_responses
    assert partial[2].text == "ok" and partial[1] is None and partial[0] is None


def test_async_retries_and_failures():
    clock = FakeClock()
    backend = ScriptedLM(failing_first(1, LMTransientError("reset")))
    out = asyncio.run(limited(backend, clock, max_retries=2, max_concurrency=2).acomplete([chat("a"), chat("b")]))
    assert [r.attempts for r in out] == [2, 2] and all(r.ok for r in out)
    backend = ScriptedLM(failing_first(99, LMTransientError("reset")))
    out = asyncio.run(limited(backend, clock, max_retries=1).acomplete([chat("a")]))
    assert not out[0].ok and out[0].attempts == 2


# ---------------------------------------------------------------- timeouts


def test_a_call_over_timeout_counts_as_transient():
    backend = ScriptedLM(lambda r: "slow", latency_s=0.5)
    lm = LimitedLM(backend, timeout_s=0.05, max_retries=1, backoff_base=0.001)
    started = time.perf_counter()
    out = lm.complete([chat("q")])
    assert time.perf_counter() - started < 0.4
    assert not out[0].ok and out[0].attempts == 2 and "timed out after 0.05s" in out[0].error


def test_async_timeout():
    backend = ScriptedLM(lambda r: "slow", latency_s=0.2)
    lm = LimitedLM(backend, timeout_s=0.05, max_retries=0)
    out = asyncio.run(lm.acomplete([chat("q")]))
    assert not out[0].ok and "timed out" in out[0].error


def test_fast_call_under_timeout_succeeds():
    out = LimitedLM(ScriptedLM(lambda r: "fine"), timeout_s=5).complete([chat("q")])
    assert out[0].text == "fine" and out[0].attempts == 1


# ---------------------------------------------------------------- concurrency and order


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def respond(self, request: LMRequest) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.01)
        with self.lock:
            self.now -= 1
        return request.message_dicts[-1]["content"].upper()


@pytest.mark.parametrize("max_concurrency", [1, 3])
def test_concurrency_is_bounded_and_order_preserved(max_concurrency):
    gauge = Gauge()
    lm = LimitedLM(ScriptedLM(gauge.respond), max_concurrency=max_concurrency)
    batch = [chat(f"q{i}") for i in range(24)]
    out = lm.complete(batch)
    assert [r.text for r in out] == [f"Q{i}" for i in range(24)]
    assert gauge.peak == max_concurrency


def test_concurrency_bound_holds_across_callers():
    gauge = Gauge()
    lm = LimitedLM(ScriptedLM(gauge.respond), max_concurrency=2)
    threads = [threading.Thread(target=lm.complete, args=([chat(f"{k}-{i}") for i in range(5)],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gauge.peak == 2


def test_async_concurrency_bound():
    gauge = Gauge()
    lm = LimitedLM(ScriptedLM(gauge.respond), max_concurrency=3)
    out = asyncio.run(lm.acomplete([chat(f"q{i}") for i in range(15)]))
    assert [r.text for r in out] == [f"Q{i}" for i in range(15)]
    assert gauge.peak == 3


def test_requests_sharing_a_prefix_are_sent_back_to_back():
    backend = ScriptedLM(lambda r: r.message_dicts[0]["content"])
    batch = [chat(f"x{i}", system=sys_) for i in range(4) for sys_ in ("instruction B", "instruction A")]
    out = LimitedLM(backend).complete(batch)
    sent = [r.message_dicts[0]["content"] for r in backend.calls]
    assert sent == ["instruction A"] * 4 + ["instruction B"] * 4
    assert [r.text for r in out] == [r.message_dicts[0]["content"] for r in batch]


def test_backend_breaking_the_protocol_is_reported():
    class Broken(ScriptedLM):
        def complete(self, requests):
            return []

    with pytest.raises(LMError, match="returned 0 responses for 1 requests"):
        LimitedLM(Broken(lambda r: "x")).complete([chat("q")])


def test_batch_size_groups_requests_per_backend_call():
    sizes: list[int] = []

    class Recording(ScriptedLM):
        def complete(self, requests):
            sizes.append(len(requests))
            return super().complete(requests)

    out = LimitedLM(Recording(lambda r: "ok"), batch_size=3).complete([chat(f"q{i}") for i in range(7)])
    assert sizes == [3, 3, 1] and len(out) == 7 and all(r.ok for r in out)


def test_invalid_settings_and_non_lm_are_config_errors():
    from promptopt.errors import ConfigError

    with pytest.raises(ConfigError, match="max_concurrency=0"):
        LimitedLM(ScriptedLM(lambda r: "x"), max_concurrency=0)
    with pytest.raises(ConfigError, match="rate limit must be positive"):
        LimitedLM(ScriptedLM(lambda r: "x"), rpm=-5)
    with pytest.raises(LMConfigError, match="needs an LM"):
        LimitedLM("gpt-4o")
