"""TaskEvaluator: one grouped batch, results in order, failures as data, unparsed answers flagged."""

from __future__ import annotations

import asyncio
import json
import math
import pathlib

import pytest

from promptopt.errors import ConfigError, DataError, LMError, TemplateError
from promptopt.evaluators import Evaluator, TaskEvaluator
from promptopt.lm._scripted import ScriptedLM
from promptopt.lm._types import LMRequest, LMResponse, Usage
from promptopt.prompt import Candidate, Demo
from promptopt.task import Example, Task

TEST_DATA = pathlib.Path(__file__).resolve().parents[1] / "data"

REVIEWS = {"good film": "positive", "awful plot": "negative", "fine acting": "positive", "dull": "negative"}
EXAMPLES = [Example(f"e{i}", {"input": text}, label, choices=("negative", "positive")) for i, (text, label) in enumerate(REVIEWS.items())]
TASK = Task("sentiment", train=EXAMPLES[:1], val=EXAMPLES, test=EXAMPLES, parser="label", metric="normalized_exact")


def query(req: LMRequest) -> str:
    return req.message_dicts[-1]["content"]


def system(req: LMRequest) -> str:
    first = req.message_dicts[0]
    return first["content"] if first["role"] == "system" else ""


def oracle(req: LMRequest) -> str:
    """Right answer for candidates whose instruction says 'right', wrong for the others."""
    label = REVIEWS[query(req)]
    if "right" in system(req):
        return f"The sentiment is {label}."
    return "negative" if label == "positive" else "positive"


def test_is_an_evaluator():
    assert isinstance(TaskEvaluator(TASK, ScriptedLM(oracle)), Evaluator)


def test_one_batch_grouped_by_candidate_and_results_in_original_order():
    lm = ScriptedLM(oracle)
    cands = [Candidate("be right"), Candidate("be wrong"), Candidate("be right, really")]
    results = TaskEvaluator(TASK, lm).evaluate(cands, EXAMPLES)

    seen = [(system(r), query(r)) for r in lm.calls]
    assert seen == [(c.instruction, e.inputs["input"]) for c in cands for e in EXAMPLES]
    assert [r.candidate for r in results] == cands
    for res in results:
        assert [x.example_id for x in res.results] == [e.id for e in EXAMPLES]
    assert [r.mean for r in results] == [1.0, 0.0, 1.0]
    right = results[0].results
    assert [x.prediction for x in right] == [e.output for e in EXAMPLES]
    assert right[0].output == "The sentiment is positive."
    assert all(x.parsed and x.score == 1.0 and not x.failed for x in right)


def test_lm_is_called_once_with_the_whole_batch():
    batches = []

    class Recording(ScriptedLM):
        def complete(self, requests):
            batches.append(len(requests))
            return super().complete(requests)

    TaskEvaluator(TASK, Recording(oracle)).evaluate([Candidate("be right"), Candidate("be wrong")], EXAMPLES)
    assert batches == [8]


def test_build_requests_are_exactly_what_the_lm_sees_with_sampling_params():
    lm = ScriptedLM(oracle)
    ev = TaskEvaluator(TASK, lm, temperature=0.7, max_tokens=5, stop=["\n"])
    cands = [Candidate("be right", demos=(Demo.make({"input": "nice"}, "positive"),)), Candidate("be wrong")]
    requests = ev.build_requests(cands, EXAMPLES[:2])
    ev.evaluate(cands, EXAMPLES[:2])
    assert lm.calls == requests
    assert {(r.temperature, r.max_tokens, r.stop) for r in requests} == {(0.7, 5, ("\n",))}
    assert requests[0].message_dicts == [
        {"role": "system", "content": "be right"},
        {"role": "user", "content": "nice"},
        {"role": "assistant", "content": "positive"},
        {"role": "user", "content": "good film"},
    ]


def test_result_fields_come_from_the_response():
    def responder(req):
        return LMResponse(texts=["positive"], usage=Usage(11, 2), model="m", cost_usd=0.25, latency_s=0.5, cached=True)

    lm = ScriptedLM(responder, identity="scripted:x")
    ev = TaskEvaluator(TASK, lm)
    (res,) = ev.evaluate([Candidate("c")], EXAMPLES[:1])
    (row,) = res.results
    (req,) = ev.build_requests([Candidate("c")], EXAMPLES[:1])
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd, row.latency_s, row.cached) == (11, 2, 0.25, 0.5, True)
    assert row.cache_key == req.cache_key("scripted:x")
    assert row.cache_key != req.cache_key("scripted:y")


def test_failed_calls_are_recorded_not_scored_zero():
    def responder(req):
        if query(req) in ("awful plot", "dull"):
            return LMResponse.failure(TimeoutError("read timed out"), model="scripted", attempts=3)
        return "positive"

    (res,) = TaskEvaluator(TASK, ScriptedLM(responder), feedback=True).evaluate([Candidate("c")], EXAMPLES)
    by_id = res.by_id()
    for failed in ("e1", "e3"):
        row = by_id[failed]
        assert row.score is None and row.failed
        assert row.error == "read timed out" and row.error_type == "TimeoutError"
        assert row.output == "" and row.prediction is None and row.feedback is None
    assert res.n_errors == 2
    assert res.n_unparsed == 0
    assert res.mean == 1.0  # over the two scored examples only
    assert res.scores == [1.0, 1.0]


def test_all_calls_failed_gives_nan_mean_not_zero():
    (res,) = TaskEvaluator(TASK, ScriptedLM(lambda r: LMResponse.failure("boom"))).evaluate([Candidate("c")], EXAMPLES)
    assert res.n_errors == len(EXAMPLES)
    assert math.isnan(res.mean)


def test_unparsed_answers_are_flagged_and_score_zero():
    answers = {"good film": "I cannot tell.", "awful plot": "negative", "fine acting": "positive or negative", "dull": ""}
    (res,) = TaskEvaluator(TASK, ScriptedLM(lambda r: answers[query(r)])).evaluate([Candidate("c")], EXAMPLES)
    rows = res.results
    assert [r.parsed for r in rows] == [False, True, False, False]
    assert [r.prediction for r in rows] == [None, "negative", None, None]
    assert [r.score for r in rows] == [0.0, 1.0, 0.0, 0.0]
    assert rows[0].output == "I cannot tell."
    assert res.n_unparsed == 3 and res.n_errors == 0
    assert res.mean == 0.25


def test_feedback_for_wrong_and_unparsed_answers_only():
    answers = {"good film": "positive", "awful plot": "positive", "fine acting": "Well, hmm.", "dull": "negative"}
    lm = ScriptedLM(lambda r: answers[query(r)])
    (res,) = TaskEvaluator(TASK, lm, feedback=True).evaluate([Candidate("c")], EXAMPLES)
    fb = [r.feedback for r in res.results]
    assert fb[0] is None and fb[3] is None
    assert fb[1] == "expected 'negative', got 'positive'"
    assert "expected 'positive'" in fb[2] and "no answer could be read" in fb[2] and "Well, hmm." in fb[2]
    (plain,) = TaskEvaluator(TASK, lm).evaluate([Candidate("c")], EXAMPLES)
    assert all(r.feedback is None for r in plain.results)


def test_feedback_reports_partial_credit():
    task = Task("qa", [], EXAMPLES, EXAMPLES, metric="f1", parser="raw")
    ex = Example("q", {"input": "good film"}, "the red cat")
    (res,) = TaskEvaluator(task, ScriptedLM(lambda r: "red dog"), feedback=True).evaluate([Candidate("c")], [ex])
    assert res.results[0].score == pytest.approx(0.5)
    assert res.results[0].feedback == "expected 'the red cat', got 'red dog' (partial credit 0.50)"


def test_bad_template_raises_before_any_call():
    lm = ScriptedLM(oracle)
    bad = Candidate("be right", input_template="{{ review }}")
    with pytest.raises(TemplateError) as err:
        TaskEvaluator(TASK, lm).evaluate([Candidate("be right"), bad], EXAMPLES)
    assert bad.short_hash in str(err.value) and "'review'" in str(err.value)
    assert lm.n_calls == 0


def test_unsafe_template_raises_before_any_call():
    lm = ScriptedLM(oracle)
    with pytest.raises(TemplateError, match="Unsafe"):
        TaskEvaluator(TASK, lm).evaluate([Candidate("c", input_template="{{ input.__class__ }}")], EXAMPLES)
    assert lm.n_calls == 0


def test_unlabelled_examples_with_reference_metric_fail_before_any_call():
    lm = ScriptedLM(oracle)
    unlabelled = [Example("u1", {"input": "good film"}, choices=("negative", "positive"))]
    with pytest.raises(DataError, match="u1"):
        TaskEvaluator(TASK, lm).evaluate([Candidate("c")], unlabelled)
    assert lm.n_calls == 0


def test_callable_metric_and_parser_on_unlabelled_examples():
    task = Task("free", [], EXAMPLES, EXAMPLES, parser=lambda text, ex: text.upper() or None, metric=lambda p, ex: float(p.isupper()))
    unlabelled = [Example("u1", {"input": "x"}), Example("u2", {"input": "y"})]
    (res,) = TaskEvaluator(task, ScriptedLM(lambda r: "shout" if query(r) == "x" else "123"), feedback=True).evaluate(
        [Candidate("c")], unlabelled
    )
    assert [(r.prediction, r.score) for r in res.results] == [("SHOUT", 1.0), ("123", 0.0)]
    assert res.results[1].feedback == "scored 0.00: got '123' from the output '123'"


def test_crashing_user_parser_is_a_config_error_naming_the_example():
    def parser(text, example):
        return text.split()[3]

    task = Task("t", [], EXAMPLES, EXAMPLES, parser=parser, metric="exact")
    with pytest.raises(ConfigError, match="e0") as err:
        TaskEvaluator(task, ScriptedLM(lambda r: "too short")).evaluate([Candidate("c")], EXAMPLES)
    assert "IndexError" in str(err.value)


def test_identical_requests_are_sent_once():
    lm = ScriptedLM(lambda r: LMResponse(texts=["positive"], usage=Usage(3, 1), cost_usd=0.1, latency_s=0.2))
    cand = Candidate("same")
    results = TaskEvaluator(TASK, lm).evaluate([cand, Candidate("other"), cand], EXAMPLES[:2])
    assert lm.n_calls == 4
    first, _, again = results
    assert [r.cached for r in first.results] == [False, False]
    assert [(r.cached, r.cost_usd, r.latency_s) for r in again.results] == [(True, 0.0, 0.0)] * 2
    assert [r.prediction for r in again.results] == [r.prediction for r in first.results]
    assert [r.cache_key for r in again.results] == [r.cache_key for r in first.results]


def test_empty_inputs_make_no_call():
    lm = ScriptedLM(oracle)
    ev = TaskEvaluator(TASK, lm)
    assert ev.evaluate([], EXAMPLES) == []
    (res,) = ev.evaluate([Candidate("c")], [])
    assert res.results == [] and lm.n_calls == 0


def test_wrong_number_of_responses_is_an_lm_error():
    class Short(ScriptedLM):
        def complete(self, requests):
            return super().complete(requests)[:-1]

    with pytest.raises(LMError, match="3 responses for 4 requests"):
        TaskEvaluator(TASK, Short(oracle)).evaluate([Candidate("c")], EXAMPLES)


def test_aevaluate_matches_evaluate():
    cands = [Candidate("be right"), Candidate("be wrong")]
    sync = TaskEvaluator(TASK, ScriptedLM(oracle)).evaluate(cands, EXAMPLES)
    lm = ScriptedLM(oracle)
    asynced = asyncio.run(TaskEvaluator(TASK, lm).aevaluate(cands, EXAMPLES))
    assert [[r.to_dict() for r in e.results] for e in asynced] == [[r.to_dict() for r in e.results] for e in sync]
    assert lm.n_calls == 8


def test_choice_parser_with_numeric_bbh_style_task():
    ex = Example(
        "d1",
        {"input": "What is the date tomorrow?\nOptions:\n(A) 12/11/1937\n(B) 12/25/1937"},
        "(B)",
        accepted=("(B)", "12/25/1937"),
        choices=("(A)", "(B)"),
    )
    task = Task("date", [], [ex], [ex], parser="choice", metric="choice")
    outs = iter(["**Answer:** (B) 12/25/1937", "12/25/1937", "A", "hmm"])
    ev = TaskEvaluator(task, ScriptedLM(lambda r: next(outs)))
    res = ev.evaluate([Candidate("a"), Candidate("b"), Candidate("c"), Candidate("d")], [ex])
    assert [(r.results[0].prediction, r.results[0].score) for r in res] == [("(B)", 1.0), ("(B)", 1.0), ("(A)", 0.0), (None, 0.0)]


def test_constructor_validates():
    with pytest.raises(ConfigError):
        TaskEvaluator(TASK, ScriptedLM(oracle), max_tokens=0)
    with pytest.raises(ConfigError):
        TaskEvaluator(Task("t", [], EXAMPLES, EXAMPLES, metric="bleu"), ScriptedLM(oracle))


# --- the real embedded model ---------------------------------------------------------------------------


@pytest.mark.embedded
def test_embedded_three_chat_demos_beat_zero_shot(embedded_backend):
    data = json.loads((TEST_DATA / "instruction_induction" / "execute" / "sentiment.json").read_text())["examples"]
    examples = [Example(k, {"input": v["input"]}, v["output"], choices=("negative", "positive")) for k, v in data.items()]
    train, test = examples[:3], examples[-20:]
    task = Task("sentiment", train=train, val=test, test=test, parser="label", metric="normalized_exact")
    demos = tuple(Demo.make(e.inputs, e.output, example_id=e.id) for e in train)
    zero = Candidate("Classify the sentiment.")
    chat = Candidate("Classify the sentiment.", demos=demos)
    zero_res, chat_res = TaskEvaluator(task, embedded_backend, max_tokens=8).evaluate([zero, chat], test)

    assert zero_res.n_errors == chat_res.n_errors == 0
    assert all(r.cache_key and r.prompt_tokens > 0 for r in chat_res.results)
    assert chat_res.mean >= 0.55, [r.output for r in chat_res.results]
    assert chat_res.mean >= zero_res.mean + 0.4
    assert chat_res.n_unparsed < zero_res.n_unparsed
