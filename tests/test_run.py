"""The shared loop: ask/evaluate/tell, budget, store dedup, resume by replay, test scores."""

from __future__ import annotations

import math
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from promptopt.errors import ConfigError, UnknownNameError
from promptopt.lm._scripted import ScriptedLM
from promptopt.optimizers import RandomSearch, Strategy, Trial, make_strategy, register_strategy
from promptopt.prompt import Candidate
from promptopt.run import optimize, resume
from promptopt.store import open_store
from promptopt.task import Example, Task

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_task(n: int = 60, seed: int = 0) -> Task:
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    examples = [
        Example(id=f"ex{i}", inputs={"input": f"review {i}: {words[i % 6]}"}, output="positive" if i % 6 < 3 else "negative")
        for i in range(n)
    ]
    return Task.from_examples("toy-sentiment", examples, split=(0.3, 0.3, 0.4), seed=seed, metric="normalized_exact")


def oracle(request) -> str:
    """A model that answers correctly only when the prompt shows at least 2 demos, and only
    with the inline format when it shows exactly 2: a known, learnable accuracy landscape."""
    msgs = request.message_dicts
    text = msgs[-1]["content"]
    n_demo_turns = sum(1 for m in msgs if m["role"] == "assistant")
    n_inline = text.count("Output:") - 1 if "Output:" in text else 0
    n_demos = max(n_demo_turns, n_inline)
    word = text.strip().split()[-2] if n_inline else text.strip().split()[-1]
    truth = "positive" if word in ("good", "great", "fine") else "negative"
    if n_demos >= 3 or (n_demos == 2 and n_inline == 2):
        return truth
    return "I think it is neutral"


def test_random_search_finds_demo_candidates_and_reports_test_scores():
    task = make_task()
    lm = ScriptedLM(oracle)
    strat = RandomSearch(instructions=["Classify."], demo_counts=[0, 1, 3], n_candidates=6, batch_size=3)
    res = optimize(task, strat, model=lm, budget=500, store=None, seed=1, cache=False)
    assert res.status == "completed"
    assert res.best is not None and len(res.best.demos) == 3
    assert res.best_val_score == pytest.approx(1.0)
    assert res.baseline.demos == () and res.baseline.instruction == "Classify."
    assert res.baseline_test.score == pytest.approx(0.0)
    assert res.best_test.score == pytest.approx(1.0)
    assert res.best_test.n == len(task.test)
    # 6 candidates x full val + test for baseline and best
    assert lm.n_calls == 6 * len(task.val) + 2 * len(task.test) - (len(task.test) if res.best == res.baseline else 0)
    assert res.evaluations_used == 6 * len(task.val)
    d = res.to_dict()
    assert set(d) >= {"run_id", "strategy", "baseline", "best", "ledger"}
    assert set(d["ledger"]) == {"calls", "cache_hits", "failed_calls", "prompt_tokens", "completion_tokens", "cost_usd", "seconds"}


def test_budget_truncates_and_stops():
    task = make_task()
    lm = ScriptedLM(oracle)
    strat = RandomSearch(demo_counts=[0, 3], n_candidates=10, batch_size=2)
    res = optimize(task, strat, model=lm, budget=25, store=None, seed=0, cache=False, evaluate_test=False)
    assert res.stop_reason == "budget"
    assert res.evaluations_used == 25
    assert lm.n_calls == 25


def test_same_seed_same_result_and_different_seed_differs():
    task = make_task()
    runs = []
    for seed in (3, 3, 4):
        strat = RandomSearch(demo_counts=[0, 1, 2, 3], n_candidates=5, batch_size=5)
        store = open_store(None)
        optimize(task, strat, model=ScriptedLM(oracle), budget=None, store=store, seed=seed, cache=False, evaluate_test=False)
        run = store.list_runs()[0]
        runs.append([c.hash for c in store.get_candidates(run.id)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_failures_are_recorded_not_zero():
    from promptopt.lm._types import LMResponse

    task = make_task()

    def flaky(req):
        if "review 1:" in req.message_dicts[-1]["content"]:
            return LMResponse.failure("HTTP 500 from upstream")
        return oracle(req)

    store = open_store(None)
    strat = RandomSearch(demo_counts=[3], n_candidates=1, batch_size=1, include_zero_shot=False)
    optimize(task, strat, model=ScriptedLM(flaky), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    run = store.list_runs()[0]
    evals = store.get_evaluations(run.id)
    failed = [e for e in evals if e.result.failed]
    if "ex1" in {e.id for e in task.val}:
        assert len(failed) == 1 and failed[0].result.score is None and "500" in failed[0].result.error
    assert all(e.result.score == 1.0 for e in evals if not e.result.failed)


def test_unknown_strategy_and_bad_params():
    with pytest.raises(UnknownNameError, match="Unknown strategy 'nope'"):
        make_strategy("nope")
    with pytest.raises(ConfigError, match="Bad parameters for strategy 'random_search'"):
        make_strategy("random_search", {"bogus": 1})
    with pytest.raises(ConfigError, match="budget must be positive"):
        optimize(make_task(), "random_search", model=ScriptedLM(oracle), budget=0, store=None, cache=False)
    with pytest.raises(ConfigError, match="demo_counts asks for up to 99"):
        optimize(make_task(), RandomSearch(demo_counts=[99]), model=ScriptedLM(oracle), store=None, cache=False)


def test_strategy_rebuilt_from_stored_name_and_params():
    strat = RandomSearch(instructions=["a", "b"], demo_counts=[2], n_candidates=3)
    rebuilt = make_strategy(strat.name, strat.get_params())
    assert rebuilt.get_params() == strat.get_params()
    assert type(rebuilt) is RandomSearch


@register_strategy
class _Crashing(RandomSearch):
    """Random search whose process 'dies' (KeyboardInterrupt, like Ctrl-C) after ``ARMED`` tells."""

    name = "test_crashing"
    ARMED = 0

    def tell(self, history, results):
        if _Crashing.ARMED:
            _Crashing.ARMED -= 1
            if _Crashing.ARMED == 0:
                raise KeyboardInterrupt("simulated crash")


def test_resume_replays_without_reevaluating(tmp_path):
    task = make_task()
    params = dict(demo_counts=[0, 1, 2, 3], n_candidates=9, batch_size=3)
    ref_store = open_store(str(tmp_path / "ref.sqlite"))
    ref = optimize(task, _Crashing(**params), model=ScriptedLM(oracle), budget=None, store=ref_store, seed=7, cache=False)

    store = open_store(str(tmp_path / "crash.sqlite"))
    _Crashing.ARMED = 2
    with pytest.raises(KeyboardInterrupt):
        optimize(task, _Crashing(**params), model=ScriptedLM(oracle), budget=None, store=store, seed=7, cache=False)
    run = store.list_runs()[0]
    assert run.status == "interrupted"
    assert len(store.get_evaluations(run.id)) == 6 * len(task.val)

    lm2 = ScriptedLM(oracle)
    res = resume(run.id, store=store, task=task, model=lm2, cache=False)
    assert res.status == "completed"
    n_test = len(task.test) * (1 if res.best.hash == res.baseline.hash else 2)
    assert lm2.n_calls == 3 * len(task.val) + n_test  # only step 3 and the test split were new
    evals = store.get_evaluations(run.id)
    keys = [(e.candidate_hash, e.split, e.result.example_id) for e in evals]
    assert len(keys) == len(set(keys))
    assert [c.hash for c in store.get_candidates(run.id)] == [c.hash for c in ref_store.get_candidates(ref.run_id)]
    assert res.best.hash == ref.best.hash
    assert res.best_test.score == ref.best_test.score
    assert res.evaluations_used == ref.evaluations_used


def test_resume_needs_task_when_built_in_python():
    task = make_task()
    store = open_store(None)
    res = optimize(task, RandomSearch(n_candidates=1, batch_size=1), model=ScriptedLM(oracle), store=store, cache=False)
    with pytest.raises(ConfigError, match="Pass the same task again"):
        resume(res.run_id, store=store, model=ScriptedLM(oracle))


def test_callback_stops_run():
    task = make_task()
    seen = []

    def stop_after_first(info):
        seen.append((info.step, info.n_candidates, info.evaluations_used))
        return True

    res = optimize(task, RandomSearch(n_candidates=8, batch_size=2), model=ScriptedLM(oracle), store=None, cache=False,
                   callbacks=[stop_after_first], evaluate_test=False)
    assert res.stop_reason == "callback"
    assert seen == [(0, 2, 2 * len(task.val))]  # zero-shot + 1 sampled (batch_size=2)


class _Minibatch(Strategy):
    """Evaluates one candidate on growing example subsets; checks partial results are passed back."""

    name = "test_minibatch"

    def __init__(self, *, sizes=(3, 6)):
        self.sizes = sizes

    def ask(self, history):
        if history.step >= len(self.sizes):
            return []
        ids = tuple(e.id for e in self.context.task.val[: self.sizes[history.step]])
        return [Trial(Candidate(instruction="x"), ids)]

    def tell(self, history, results):
        assert len(results[0].results) == self.sizes[history.step]


def test_minibatch_trials_reuse_earlier_examples():
    task = make_task()
    lm = ScriptedLM(oracle)
    res = optimize(task, _Minibatch(), model=lm, store=None, cache=False, evaluate_test=False, budget=None)
    assert lm.n_calls == 6  # 3 then only the 3 new ones
    assert res.evaluations_used == 6
