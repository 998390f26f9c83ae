"""The embedded llama.cpp backend: file checks (no model needed) and the real SmolLM2 (marked embedded)."""

from __future__ import annotations

import pytest

from promptopt.errors import LMConfigError
from promptopt.lm import CachedLM, Ledger, LedgeredLM, LimitedLM, LlamaCppLM, LMRequest, default_model_path

from _lm_helpers import chat

SENTIMENT = "Classify the sentiment of the review as positive or negative. Answer with one word."


def test_missing_model_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "model.gguf"
    with pytest.raises(LMConfigError) as info:
        LlamaCppLM(missing)
    assert str(missing) in str(info.value) and "existing .gguf" in info.value.fix


def test_file_that_is_not_gguf_is_rejected(tmp_path):
    bogus = tmp_path / "weights.gguf"
    bogus.write_bytes(b"PK\x03\x04 definitely a zip file")
    with pytest.raises(LMConfigError, match="not a GGUF file"):
        LlamaCppLM(bogus)


def test_identity_is_stable_and_path_free(tmp_path):
    default = default_model_path()
    identity = LlamaCppLM().identity
    assert identity.startswith("llamacpp:SmolLM2-135M-Instruct") and identity.endswith(":ctx2048")
    assert "/" not in identity
    copy = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    copy.symlink_to(default)
    assert LlamaCppLM(copy).identity == identity  # same bytes elsewhere: same cache entries
    assert LlamaCppLM(copy, n_ctx=1024).identity != identity


@pytest.mark.embedded
def test_real_completion_is_greedy_and_honours_max_tokens(embedded_backend):
    request = chat("A tender, heartfelt family drama.", system=SENTIMENT, max_tokens=6)
    first, second = embedded_backend.complete([request, request])
    assert first.ok and first.text.strip() and first.text == second.text
    assert 0 < first.usage.completion_tokens <= 6 and first.usage.prompt_tokens > 20
    assert first.model == embedded_backend.identity and first.latency_s > 0
    # Prompt evaluation uses the generation threads, not all cores (spinning threads stall on a busy machine).
    assert embedded_backend._llm.context_params.n_threads_batch == embedded_backend.n_threads
    stopped = embedded_backend.complete([chat("Count: one, two, three, four, five, six", max_tokens=30, stop=[","])])[0]
    assert "," not in stopped.text


@pytest.mark.embedded
def test_prefix_grouped_batch_answers_in_request_order(embedded_backend):
    reviews = ["A gorgeous, witty film.", "Dull and far too long."]
    systems = [SENTIMENT, "Say whether the review is positive or negative."]
    batch = [chat(review, system=system, max_tokens=4) for review in reviews for system in systems]  # interleaved
    together = embedded_backend.complete(batch)
    one_by_one = [embedded_backend.complete([r])[0] for r in batch]
    assert [r.text for r in together] == [r.text for r in one_by_one]


@pytest.mark.embedded
def test_cached_rerun_makes_zero_backend_calls(embedded_backend, tmp_path):
    ledger = Ledger()
    lm = CachedLM(LedgeredLM(LimitedLM(embedded_backend), ledger), tmp_path / "c.sqlite")
    batch = [chat(text, system=SENTIMENT, max_tokens=4) for text in ("Superb.", "Awful.")]
    first = lm.complete(batch)
    assert ledger.snapshot()["calls"] == 2
    second = lm.complete(batch)
    assert ledger.snapshot()["calls"] == 2 and ledger.snapshot()["cache_hits"] == 2
    assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)


@pytest.mark.embedded
def test_sampling_is_reproducible_and_sample_id_draws_anew(embedded_backend):
    def draw(**params):
        return embedded_backend.complete([chat("Write a word.", temperature=1.0, max_tokens=5, **params)])[0].texts

    first = draw(seed=1, n=2)
    assert draw(seed=1, n=2) == first  # a seed reproduces its samples, even after other calls
    # Each sample and each sample_id gets its own seed (deterministic, so this cannot flake).
    assert first[0] != first[1] and draw(seed=1, sample_id=1) != first[:1]


@pytest.mark.embedded
def test_score_continuation_prefers_plausible_text_and_matches_generation(embedded_backend):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    plausible = embedded_backend.score_continuation(messages, "The capital of France is Paris.")
    garbage = embedded_backend.score_continuation(messages, "Xq blorf zzt ungh vrak 77 ;;")
    assert plausible > garbage + 10
    assert embedded_backend.score_continuation(messages, "") == 0.0
    # Teacher forcing reads the same log-probabilities as generating the text did.
    generated = embedded_backend.complete([LMRequest.chat(messages, max_tokens=8, logprobs=True)])[0]
    assert generated.logprobs and len(generated.logprobs[0]) == generated.usage.completion_tokens
    expected = sum(t.logprob for t in generated.logprobs[0])
    assert embedded_backend.score_continuation(messages, generated.text) == pytest.approx(expected, abs=1e-3)


@pytest.mark.embedded
def test_scoring_needs_the_gguf_chat_template():
    lm = LlamaCppLM(chat_format="chatml")
    with pytest.raises(LMConfigError, match="GGUF's own chat template"):
        lm.score_continuation([{"role": "user", "content": "hi"}], "hello")
    lm.close()


@pytest.mark.embedded
def test_stack_exposes_scoring_and_caches_it(embedded_backend, tmp_path):
    ledger = Ledger()
    lm = CachedLM(LedgeredLM(LimitedLM(embedded_backend), ledger), tmp_path / "c.sqlite")
    messages = [{"role": "user", "content": "Name a colour."}]
    value = lm.score_continuation(messages, "Blue")
    assert value == lm.score_continuation(messages, "Blue") < 0
    assert ledger.snapshot()["calls"] == 1 and ledger.snapshot()["cache_hits"] == 1


@pytest.mark.embedded
def test_prompt_longer_than_the_context_is_a_failure_not_a_crash(tmp_path):
    small = LlamaCppLM(n_ctx=200)  # rounded up to 256, as llama.cpp does
    assert small.n_ctx == 256
    out = small.complete([chat("word " * 300, max_tokens=4), chat("hi", max_tokens=2)])
    assert not out[0].ok and out[0].error_type == "LMConfigError" and "n_ctx=256" in out[0].error
    assert out[1].ok
    small.close()
