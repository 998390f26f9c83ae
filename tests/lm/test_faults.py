"""FaultyLM: fault statistics, determinism, fresh draws per attempt, and a limiter surviving it."""

from __future__ import annotations

import pytest

from promptopt.errors import ConfigError, LMTransientError, UnknownNameError
from promptopt.lm import FAULT_KINDS, FaultyLM, LimitedLM, ScriptedLM

from _lm_helpers import chat


def outcomes(lm: FaultyLM, n: int) -> list[str]:
    """What each of n distinct requests got: a raised error's text, or the answer."""
    seen = []
    for i in range(n):
        try:
            seen.append(lm.complete([chat(f"q{i}")])[0].text)
        except LMTransientError as exc:
            seen.append(f"raised: {exc.message}")
    return seen


def test_fault_rate_and_kind_mix_match_the_settings():
    lm = FaultyLM(ScriptedLM(lambda r: "clean answer"), rate=0.2, seed=1)
    seen = outcomes(lm, 3000)
    total = sum(lm.injected.values())
    assert 0.17 * 3000 <= total <= 0.23 * 3000
    assert set(lm.injected) == set(FAULT_KINDS)
    for kind in FAULT_KINDS:  # uniform over the kinds: ~1/6 each
        assert 0.11 <= lm.injected[kind] / total <= 0.22, (kind, lm.injected)
    assert sum(s.startswith("raised:") for s in seen) == sum(lm.injected[k] for k in ("429", "500", "timeout", "reset"))
    assert seen.count("") == lm.injected["empty"]
    assert sum(s not in ("", "clean answer") and not s.startswith("raised:") for s in seen) == lm.injected["garbage"]


def test_faults_are_deterministic_per_seed():
    run = lambda seed: outcomes(FaultyLM(ScriptedLM(lambda r: "a"), rate=0.3, seed=seed), 300)  # noqa: E731
    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_retry_gets_a_fresh_draw_and_the_limiter_recovers():
    def survive(seed: int):
        faulty = FaultyLM(ScriptedLM(lambda r: "ok"), rate=0.5, kinds=("429", "500", "reset", "timeout"), seed=seed)
        out = LimitedLM(faulty, max_retries=10, backoff_base=0.0, backoff_max=0.0).complete([chat(f"q{i}") for i in range(200)])
        return out, faulty

    out, faulty = survive(3)
    assert all(r.ok and r.text == "ok" for r in out)  # 0.5^11 chance per request to exhaust retries
    attempts = [r.attempts for r in out]
    assert max(attempts) > 1 and sum(a - 1 for a in attempts) == sum(faulty.injected.values())
    assert 0.35 <= sum(a == 1 for a in attempts) / 200 <= 0.65  # half succeed at first try
    assert [r.attempts for r in survive(3)[0]] == attempts  # reproducible


def test_injected_429_carries_retry_after():
    lm = FaultyLM(ScriptedLM(lambda r: "x"), rate=1.0, kinds=("429",), retry_after=2.5)
    with pytest.raises(LMTransientError) as info:
        lm.complete([chat("q")])
    assert info.value.retry_after == 2.5 and "429" in str(info.value)


def test_empty_answers_keep_the_protocol_shape():
    lm = FaultyLM(ScriptedLM(lambda r: "x"), rate=1.0, kinds=("empty",))
    out = lm.complete([chat("q", n=3)])[0]
    assert out.ok and out.texts == ["", "", ""] and out.usage.completion_tokens == 0


def test_identity_differs_from_the_clean_model():
    inner = ScriptedLM(lambda r: "x", identity="clean")
    assert FaultyLM(inner).identity.startswith("clean+faults(")
    assert FaultyLM(inner).identity != inner.identity


def test_bad_settings_are_clear_errors():
    with pytest.raises(UnknownNameError, match="404"):
        FaultyLM(ScriptedLM(lambda r: "x"), kinds=("429", "404"))
    with pytest.raises(ConfigError, match="rate must be in"):
        FaultyLM(ScriptedLM(lambda r: "x"), rate=1.5)
