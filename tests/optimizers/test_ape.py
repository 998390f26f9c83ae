"""APE: forward induction, UCB bandit over minibatches, top-k selection, Monte Carlo resampling,
log-probability scoring, failed proposals, replay on resume, and a run on the embedded model."""

from __future__ import annotations

import collections
import pathlib

import pytest

from promptopt.errors import ConfigError
from promptopt.lm._scripted import ScriptedLM
from promptopt.lm._types import LMResponse
from promptopt.optimizers import APE, make_strategy
from promptopt.prompt import Candidate
from promptopt.run import optimize, resume
from promptopt.store import open_store
from promptopt.task import Example, Task

PAIRS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("early", "late"), ("open", "closed"), ("rich", "poor"), ("strong", "weak"), ("young", "old"), ("wet", "dry"),
    ("high", "low"), ("hard", "soft"), ("full", "empty"), ("loud", "quiet"), ("near", "far"), ("thick", "thin"),
    ("clean", "dirty"), ("true", "false"), ("first", "last"), ("win", "lose"), ("push", "pull"), ("day", "night"),
    ("good", "bad"), ("long", "short"), ("in", "out"), ("left", "right"), ("buy", "sell"), ("give", "take"),
    ("come", "go"), ("love", "hate"), ("brave", "afraid"), ("sweet", "sour"), ("warm", "cool"), ("wide", "narrow"),
]
GOLD = dict(PAIRS)
INDEX = {w: i for i, (w, _) in enumerate(PAIRS)}


def make_task(split=(12, 12, 12)) -> Task:
    examples = [Example(id=f"w{i}", inputs={"input": w}, output=a) for i, (w, a) in enumerate(PAIRS)]
    return Task.from_examples("toy-antonyms", examples, split=split, seed=0, metric="normalized_exact")


def quality(instruction: str) -> float:
    """The known accuracy landscape: 'opposite' + 'antonym' -> 1.0, 'antonym' -> 0.5,
    'opposite' -> 1/3, anything else -> 0."""
    text = instruction.lower()
    if "antonym" in text and "opposite" in text:
        return 1.0
    if "antonym" in text:
        return 0.5
    if "opposite" in text:
        return 1 / 3
    return 0.0


def task_model(request) -> str:
    msgs = request.message_dicts
    system = next((m["content"] for m in msgs if m["role"] == "system"), "")
    word = msgs[-1]["content"].strip()
    q = quality(system)
    i = INDEX[word]
    right = q == 1.0 or (q == 0.5 and i % 2 == 0) or (0 < q < 0.5 and i % 3 == 0)
    return GOLD[word] if right else word


FORWARD = ["to write the antonym of the word", "to write the opposite antonym of each word", "to repeat the word", "to say hello"]


def proposer(request) -> str:
    text = request.message_dicts[-1]["content"]
    if text.startswith("I gave a friend an instruction"):
        return FORWARD[request.sample_id % len(FORWARD)]
    if text.startswith("Generate a variation of the following instruction"):
        original = text.split("Input: ", 1)[1].split("\n", 1)[0]
        return f"{original} Give the opposite." if request.sample_id == 0 else f"{original} Now."
    raise AssertionError(f"unexpected proposer prompt: {text[:80]!r}")


def val_counts(store, run_id):
    counts = collections.Counter()
    for ev in store.get_evaluations(run_id, split="val"):
        counts[ev.candidate_hash] += 1
    return counts


def by_instruction(store, run_id):
    return {rec.candidate.instruction: rec for rec in store.get_candidates(run_id)}


def test_forward_generation_uses_the_paper_template_and_records_the_pool():
    task = make_task()
    prop = ScriptedLM(proposer)
    store = open_store(None)
    strat = APE(n_subsamples=2, demos_per_subsample=5, proposals_per_subsample=4, minibatch_size=3, bandit_rounds=4, top_k=2)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    forward = [r for r in prop.calls if r.message_dicts[-1]["content"].startswith("I gave a friend")]
    assert len(forward) == 8
    first = forward[0]
    text = first.message_dicts[-1]["content"]
    assert "I gave a friend an instruction and five inputs." in text
    assert text.rstrip().endswith("The instruction was")
    assert text.count("\nOutput: ") == 5
    assert first.temperature == pytest.approx(0.9) and first.max_tokens == 50
    # Two subsamples show different demos; distinct sample ids draw distinct samples.
    assert forward[0].message_dicts != forward[4].message_dicts
    assert [r.sample_id for r in forward[:4]] == [0, 1, 2, 3]
    demo_words = {line.split(": ", 1)[1] for line in text.split("\n") if line.startswith("Input: ")}
    assert demo_words <= {ex.inputs["input"] for ex in task.train}
    # 8 proposals, 4 distinct: every one recorded with the demos it came from, cleaned of "to ".
    recs = by_instruction(store, res.run_id)
    assert set(recs) == {"Write the antonym of the word", "Write the opposite antonym of each word", "Repeat the word", "Say hello"}
    for rec in recs.values():
        assert rec.parents == [] and rec.metadata["kind"] == "forward" and len(rec.metadata["demo_ids"]) == 5
    assert res.best.instruction == "Write the opposite antonym of each word"
    assert res.best_val_score == pytest.approx(1.0)


def test_bandit_spends_more_evaluations_on_better_arms():
    task = make_task(split=(6, 24, 6))
    store = open_store(None)
    strat = APE(n_subsamples=1, demos_per_subsample=3, proposals_per_subsample=4, minibatch_size=2, arms_per_round=1, bandit_rounds=14, top_k=1)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    recs = by_instruction(store, res.run_id)
    # Evaluations per arm when the bandit stopped (before the kept arm is completed on val) ...
    pulls = store.get_events(res.run_id, "ape_round")[0].payload["counts"]
    best, half, zero1, zero2 = (pulls[recs[t].hash] for t in ("Write the opposite antonym of each word", "Write the antonym of the word", "Repeat the word", "Say hello"))
    assert best + half + zero1 + zero2 == 14 * 2
    assert best >= 3 * max(half, zero1, zero2)
    assert zero1 == zero2 == 2  # one minibatch each, then never again
    # ... and in the store: the kept arm completed on the whole split, the rest left early.
    counts = val_counts(store, res.run_id)
    assert counts[recs["Write the opposite antonym of each word"].hash] == len(task.val)
    for text in ("Write the antonym of the word", "Repeat the word", "Say hello"):
        assert counts[recs[text].hash] == pulls[recs[text].hash] < len(task.val)
    assert res.evaluations_used == sum(counts.values()) < 2 * len(task.val)
    assert res.best.instruction == "Write the opposite antonym of each word"
    assert store.get_events(res.run_id, "ape_round")[0].payload["kept"] == [recs["Write the opposite antonym of each word"].hash]


def test_ucb_first_round_is_random_then_unpulled_arms_go_first():
    task = make_task()
    store = open_store(None)
    strat = APE(n_subsamples=1, demos_per_subsample=3, proposals_per_subsample=4, minibatch_size=1, arms_per_round=1, bandit_rounds=4, top_k=1)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    counts = val_counts(store, res.run_id)
    kept = store.get_events(res.run_id, "ape_round")[0].payload["kept"][0]
    # Four rounds of one arm with one example: every arm pulled exactly once before any repeat.
    pulled = {h: c for h, c in counts.items() if h != kept}
    assert sorted(pulled.values()) == [1, 1, 1]


def test_monte_carlo_rounds_resample_around_the_kept_candidates():
    task = make_task()
    store = open_store(None)

    def forward_without_best(request):
        text = request.message_dicts[-1]["content"]
        if text.startswith("I gave a friend"):
            return ["to write the antonym", "to repeat the word"][request.sample_id % 2]
        return proposer(request)

    prop = ScriptedLM(forward_without_best)
    strat = APE(n_subsamples=1, demos_per_subsample=3, proposals_per_subsample=2, minibatch_size=4, bandit_rounds=3, top_k=1, rounds=1, variations_per_candidate=2)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    resample = [r for r in prop.calls if r.message_dicts[-1]["content"].startswith("Generate a variation")]
    assert len(resample) == 2
    assert "Input: Write the antonym\n\nOutput:" in resample[0].message_dicts[-1]["content"]
    recs = by_instruction(store, res.run_id)
    child = recs["Write the antonym Give the opposite."]
    assert child.parents == [recs["Write the antonym"].hash]
    assert child.metadata["kind"] == "resample" and child.metadata["round"] == 1
    assert res.best.instruction == "Write the antonym Give the opposite."
    assert res.best_val_score == pytest.approx(1.0)


class LogprobLM(ScriptedLM):
    """A scripted white-box model: log P(gold | prompt) is high when the instruction is good."""

    def __init__(self, responder):
        super().__init__(responder)
        self.scored: list[tuple[str, str]] = []

    def score_continuation(self, messages, continuation):
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        self.scored.append((system, continuation))
        assert continuation == GOLD[messages[-1]["content"]]
        return -1.0 - 10.0 * (1.0 - quality(system))


def test_logprob_scoring_ranks_by_gold_output_log_probability_without_spending_evaluations():
    task = make_task()
    store = open_store(None)
    lm = LogprobLM(task_model)
    strat = APE(n_subsamples=1, demos_per_subsample=3, proposals_per_subsample=4, score="logprob", minibatch_size=3, bandit_rounds=6, top_k=1)
    res = optimize(task, strat, model=lm, proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    assert lm.scored and len(lm.scored) <= 6 * 2 * 3
    assert res.best.instruction == "Write the opposite antonym of each word"
    # Only the kept candidate was run through the task model (execution accuracy on val).
    assert res.evaluations_used == len(task.val)
    events = store.get_events(res.run_id, "logprob_scores")
    assert events and all(isinstance(v, float) for e in events for s in e.payload["scores"].values() for v in s.values())


def test_logprob_needs_a_white_box_model():
    with pytest.raises(ConfigError, match="log-probabilities"):
        optimize(make_task(), APE(score="logprob", proposals_per_subsample=1), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), store=None, cache=False)


def test_unparseable_and_failed_proposals_are_recorded_not_raised():
    task = make_task()
    store = open_store(None)

    def flaky(request):
        if request.sample_id == 0:
            return "   \n  "
        if request.sample_id == 1:
            return LMResponse.failure("HTTP 503 from the proposer")
        return proposer(request)

    strat = APE(n_subsamples=1, demos_per_subsample=3, proposals_per_subsample=4, minibatch_size=4, bandit_rounds=2, top_k=1)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(flaky), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    failed = [e.payload for e in store.get_events(res.run_id, "failed_proposal")]
    assert len(failed) == 2
    assert any(f["raw"] == "   \n  " and "no instruction" in f["reason"] for f in failed)
    assert any("503" in f["reason"] for f in failed)
    assert len(store.get_candidates(res.run_id)) == 2


@pytest.mark.parametrize(
    "reply, kwargs, expected",
    [
        ("to write the opposite of the word.\nInput: hot\nOutput: cold", {"first_line": True, "strip_to": True}, "Write the opposite of the word."),
        ('The instruction was "reverse the letters"', {"first_line": True, "strip_to": True}, "Reverse the letters"),
        ("Here is the revised prompt:\n\nTranslate the word into French.", {}, "Translate the word into French."),
        ("```\n## New Prompt\nName the first letter.\n```", {}, "Name the first letter."),
        ("Give the plural.\n\nThis prompt is better because it is shorter.", {}, "Give the plural."),
        ("   ", {}, ""),
    ],
)
def test_replies_are_cleaned_to_the_instruction(reply, kwargs, expected):
    from promptopt.optimizers.ape import _clean_instruction

    assert _clean_instruction(reply, **kwargs) == expected


def test_bad_parameters_fail_at_setup_with_a_fix():
    task = make_task()
    for params, pattern in [
        ({"score": "bleu"}, "unknown score"),
        ({"demos_per_subsample": 50}, "training examples"),
        ({"minibatch_size": 0}, "positive integer"),
        ({"rounds": -1}, "rounds"),
    ]:
        with pytest.raises(ConfigError, match=pattern) as info:
            optimize(task, make_strategy("ape", params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), store=None, cache=False)
        assert info.value.fix


def test_same_seed_same_run_and_resume_replays(tmp_path):
    task = make_task()
    params = dict(n_subsamples=2, demos_per_subsample=3, proposals_per_subsample=4, minibatch_size=2, arms_per_round=2, bandit_rounds=6, top_k=2, rounds=1, variations_per_candidate=2)
    ref_store = open_store(str(tmp_path / "ref.sqlite"))
    ref = optimize(task, APE(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=ref_store, seed=5, cache=False, evaluate_test=False)

    store = open_store(str(tmp_path / "crash.sqlite"))
    calls = {"n": 0}

    def crash_after_three(info):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        optimize(task, APE(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=5, cache=False, evaluate_test=False, callbacks=[crash_after_three])
    run = store.list_runs()[0]
    before = len(store.get_evaluations(run.id))
    lm = ScriptedLM(task_model)
    res = resume(run.id, store=store, task=task, model=lm, proposer_model=ScriptedLM(proposer), cache=False)
    assert lm.n_calls == res.evaluations_used - before  # stored work was not redone
    assert [c.hash for c in store.get_candidates(run.id)] == [c.hash for c in ref_store.get_candidates(ref.run_id)]
    assert res.best.hash == ref.best.hash and res.evaluations_used == ref.evaluations_used


@pytest.mark.embedded
def test_embedded_model_completes_a_small_run(embedded_backend):
    from promptopt.data import load_instruction_induction

    root = pathlib.Path(__file__).resolve().parents[1] / "data" / "instruction_induction"
    task = load_instruction_induction("sentiment", root, split=(6, 4), seed=0)
    store = open_store(None)
    strat = APE(n_subsamples=1, demos_per_subsample=3, proposals_per_subsample=3, max_tokens=24, minibatch_size=2, bandit_rounds=3, top_k=1, rounds=1, variations_per_candidate=1)
    res = optimize(task, strat, model=embedded_backend, proposer_model=embedded_backend, budget=24, store=store, seed=0, cache=False, evaluate_test=False, max_tokens=8)
    recs = store.get_candidates(res.run_id)
    assert res.best is not None and res.best.instruction
    assert recs and all(r.strategy == "ape" for r in recs)
    forward = [r for r in recs if r.metadata.get("kind") == "forward"]
    assert forward and all(len(r.metadata["demo_ids"]) == 3 for r in forward)
    variations = [r for r in recs if r.metadata.get("kind") == "resample"]
    by_hash = {r.hash for r in recs}
    assert all(r.parents and r.parents[0] in by_hash for r in variations)
    assert 0 < res.evaluations_used <= 24
