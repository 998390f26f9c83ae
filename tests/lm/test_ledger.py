"""Ledger and LedgeredLM: arithmetic, caps, consistency after a cap, sharing between LMs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from promptopt.errors import BudgetExceeded, ConfigError, LMTransientError
from promptopt.lm import CachedLM, Ledger, LedgeredLM, LimitedLM, LMRequest, LMResponse, ScriptedLM, Usage

from _lm_helpers import chat


def priced(request: LMRequest) -> LMResponse:
    """3 prompt tokens, 2 completion tokens, $0.01 per call."""
    return LMResponse(texts=["ok"] * request.n, usage=Usage(3, 2), model="priced", cost_usd=0.01, latency_s=0.0)


def test_counts_calls_tokens_cost_failures_and_retries():
    attempts: dict[str, int] = {}

    def flaky(request: LMRequest) -> LMResponse:
        text = request.message_dicts[-1]["content"]
        attempts[text] = attempts.get(text, 0) + 1
        if text == "retry-once" and attempts[text] == 1:
            raise LMTransientError("429", retry_after=None)
        if text == "always-fails":
            raise LMTransientError("500")
        return priced(request)

    ledger = Ledger()
    lm = LedgeredLM(LimitedLM(ScriptedLM(flaky), max_retries=2, backoff_base=0.001), ledger)
    out = lm.complete([chat("plain"), chat("retry-once"), chat("always-fails")])
    assert [r.ok for r in out] == [True, True, False]
    snap = ledger.snapshot()
    assert snap["calls"] == 3
    assert snap["failed_calls"] == 1
    assert snap["retries"] == 1 + 2  # one retry for retry-once, two for always-fails
    assert snap["prompt_tokens"] == 6 and snap["completion_tokens"] == 4
    assert snap["cost_usd"] == pytest.approx(0.02)
    assert snap["seconds"] > 0
    assert set(snap) == {"calls", "cache_hits", "failed_calls", "retries", "prompt_tokens", "completion_tokens", "cost_usd", "seconds"}


def test_max_calls_raises_before_sending_and_state_stays_consistent(tmp_path):
    backend = ScriptedLM(priced)
    ledger = Ledger(max_calls=5)
    lm = CachedLM(LedgeredLM(backend, ledger), tmp_path / "c.sqlite")
    lm.complete([chat(f"a{i}") for i in range(4)])
    with pytest.raises(BudgetExceeded) as info:
        lm.complete([chat(f"b{i}") for i in range(3)])  # needs 3, only 1 left
    err = info.value
    assert err.cap == "max_calls" and err.limit == 5 and err.used == 4
    assert "max_calls=5" in str(err) and "this batch needs 3 more" in str(err)
    assert "Raise max_calls" in err.fix
    assert backend.n_calls == 4  # nothing of the refused batch was sent
    assert ledger.snapshot()["calls"] == 4 and lm.count() == 4
    assert ledger.remaining() == {"max_calls": 1}
    # What fits still runs; cached answers are free even past the cap.
    lm.complete([chat("b0")])
    lm.complete([chat(f"a{i}") for i in range(4)] + [chat("b0")])
    assert ledger.snapshot()["calls"] == 5 and ledger.snapshot()["cache_hits"] == 5
    with pytest.raises(BudgetExceeded):
        lm.complete([chat("c")])


@pytest.mark.parametrize(
    ("cap", "limit", "used"),
    [("max_prompt_tokens", 6, 6), ("max_completion_tokens", 4, 4), ("max_tokens", 10, 10), ("max_cost_usd", 0.02, 0.02)],
)
def test_token_and_cost_caps_are_checked_before_each_batch(cap, limit, used):
    backend = ScriptedLM(priced)
    ledger = Ledger(**{cap: limit})
    lm = LedgeredLM(backend, ledger)
    lm.complete([chat("a")])
    lm.complete([chat("b")])  # reaches the cap exactly
    with pytest.raises(BudgetExceeded) as info:
        lm.complete([chat("c")])
    assert info.value.cap == cap and info.value.used == pytest.approx(used) and info.value.limit == pytest.approx(limit)
    assert backend.n_calls == 2
    with pytest.raises(BudgetExceeded):
        ledger.check()


def test_seconds_cap():
    ledger = Ledger(max_seconds=0.02)
    lm = LedgeredLM(ScriptedLM(lambda r: "ok", latency_s=0.03), ledger)
    lm.complete([chat("a")])
    with pytest.raises(BudgetExceeded) as info:
        lm.complete([chat("b")])
    assert info.value.cap == "max_seconds" and info.value.used >= 0.03


def test_concurrent_batches_never_exceed_max_calls():
    backend = ScriptedLM(priced, latency_s=0.002)
    ledger = Ledger(max_calls=50)
    lm = LedgeredLM(backend, ledger)
    refused = []

    def worker(k: int) -> None:
        for j in range(5):
            try:
                lm.complete([chat(f"{k}-{j}-{i}") for i in range(3)])
            except BudgetExceeded:
                refused.append(1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 8 x 5 batches of 3 = 120 calls wanted; exactly 16 batches (48 calls) fit under 50.
    assert backend.n_calls == ledger.snapshot()["calls"] == 48
    assert len(refused) == 40 - 16


def test_shared_ledger_keeps_a_breakdown_per_lm():
    ledger = Ledger(max_calls=4)
    task = LedgeredLM(ScriptedLM(priced, identity="task-model"), ledger)
    proposer = LedgeredLM(ScriptedLM(priced, identity="proposer"), ledger, name="proposer")
    task.complete([chat("a"), chat("b")])
    proposer.complete([chat("p")])
    with pytest.raises(BudgetExceeded):
        proposer.complete([chat("q"), chat("r")])
    by_lm = ledger.by_lm()
    assert by_lm["task-model"]["calls"] == 2 and by_lm["proposer"]["calls"] == 1
    assert ledger.snapshot()["calls"] == 3
    assert ledger.snapshot()["cost_usd"] == pytest.approx(0.03)


def test_async_batches_are_booked():
    ledger = Ledger(max_calls=3)
    lm = LedgeredLM(ScriptedLM(priced), ledger)
    asyncio.run(lm.acomplete([chat("a"), chat("b")]))
    with pytest.raises(BudgetExceeded):
        asyncio.run(lm.acomplete([chat("c"), chat("d")]))
    assert ledger.snapshot()["calls"] == 2


def test_negative_cap_is_a_config_error():
    with pytest.raises(ConfigError, match="max_calls=-1"):
        Ledger(max_calls=-1)
