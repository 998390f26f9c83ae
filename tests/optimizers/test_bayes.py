"""bayes_joint: TPE converges on the best (instruction, demo set), bootstrapped demos, pruning,
periodic full evaluations fed to the study, proposed instructions, resume by replay, errors; and
a run on the embedded model."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from _exemplar_toys import GOLD, GOOD_INSTRUCTION, label, make_task, query_number, shown_demos
from promptopt.errors import ConfigError
from promptopt.lm._scripted import ScriptedLM
from promptopt.optimizers import make_strategy
from promptopt.optimizers.bayes import BayesJointSearch, _parse_instruction
from promptopt.run import optimize, resume
from promptopt.store import open_store

INSTRUCTIONS = ["Reply with anything.", GOOD_INSTRUCTION, "Say C.", "Be brief."]
SENTIMENT = pathlib.Path(__file__).resolve().parents[1] / "data" / "instruction_induction" / "execute" / "sentiment.json"


def gold_count(demo_inputs) -> int:
    return sum(g in demo_inputs for g in GOLD)


def oracle(request) -> str:
    """Accuracy grows with the gold demos shown and is 4x higher under GOOD_INSTRUCTION."""
    msgs = request.message_dicts
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    q = (0.25 + 0.75 * (system == GOOD_INSTRUCTION)) * (0.1 + 0.9 * gold_count(shown_demos(request)) / 3)
    n = query_number(request)
    return label(n) if (n * 0.6180339887498949) % 1.0 < q else "C"


def _inputs(demos) -> list[str]:
    return [d.input_dict["input"] for d in demos]


def _run(seed: int = 0, store=None, lm=None, **params):
    store = store if store is not None else open_store(None)
    defaults = dict(instructions=INSTRUCTIONS, n_demo_sets=8, n_bootstrap=0, n_trials=30, minibatch_size=8, full_eval_every=8)
    strategy = BayesJointSearch(**{**defaults, **params})
    lm = lm or ScriptedLM(oracle)
    res = optimize(make_task(n_train=8), strategy, model=lm, budget=None, store=store, seed=seed, cache=False, evaluate_test=False)
    return res, strategy, store, lm


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_converges_on_the_best_instruction_and_demo_set(seed):
    res, strategy, store, _ = _run(seed)
    counts = [gold_count(_inputs(s)) for s in strategy._demo_sets]
    assert res.best.instruction == GOOD_INSTRUCTION
    assert gold_count(_inputs(res.best.demos)) == max(counts) >= 1
    trials = [e.payload for e in store.get_events(res.run_id, "tpe_trial")]
    assert len(trials) == 30
    late = trials[15:]
    # uniform sampling would pick the good instruction a quarter of the time
    assert sum(t["instruction"] == INSTRUCTIONS.index(GOOD_INSTRUCTION) for t in late) / len(late) > 0.4
    assert sum(counts[t["demo_set"]] == max(counts) for t in late) / len(late) > sum(c == max(counts) for c in counts) / len(counts)


def test_search_space_holds_zero_shot_labelled_and_distinct_sets():
    res, strategy, store, _ = _run(0, n_trials=2)
    sets = strategy._demo_sets
    assert sets[0] == () and len(sets) == 8
    assert all(len(s) == 3 for s in sets[1:])
    assert len({tuple(_inputs(s)) for s in sets}) == 8
    assert all(d.source == "train" and d.output == label(int(d.input_dict["input"].split()[1])) for s in sets for d in s)
    (space,) = store.get_events(res.run_id, "bayes_space")
    assert space.payload["instructions"] == INSTRUCTIONS and space.payload["formats"] == ["chat", "inline"]
    # a zero-shot candidate has no format to choose: it is always the chat one
    assert all(c.candidate.demo_format == "chat" for c in store.get_candidates(res.run_id) if not c.candidate.demos)


def bootstrap_model(request) -> str:
    """Answers in its own words ('Answer: X'); right for even items, wrong for multiples of 3."""
    n = query_number(request)
    if n % 3 == 0:
        return "Answer: C"
    return f"Answer: {label(n)}"


def test_bootstrapped_demos_are_the_models_own_correct_answers():
    task = make_task(n_train=12)
    store = open_store(None)
    strategy = BayesJointSearch(instructions=[GOOD_INSTRUCTION], n_demo_sets=6, n_bootstrap=6, bootstrap_shots=3, n_trials=3, minibatch_size=4)
    res = optimize(task, strategy, model=ScriptedLM(bootstrap_model), budget=None, store=store, seed=4, cache=False, evaluate_test=False)
    train_evals = store.get_evaluations(res.run_id, split="train")
    assert len(train_evals) == 6  # one task-model call per bootstrapped example
    (teacher,) = [c for c in store.get_candidates(res.run_id) if c.metadata.get("role") == "bootstrap_teacher"]
    assert len(teacher.candidate.demos) == 3
    teacher_ids = {d.example_id for d in teacher.candidate.demos}
    assert not teacher_ids & {e.result.example_id for e in train_evals}, "teacher demos are not bootstrap targets"
    correct = {e.result.example_id for e in train_evals if e.result.score == 1.0}
    generated = {d.example_id: d for s in strategy._demo_sets for d in s if d.source == "generated"}
    assert generated, "some bootstrapped demos made it into the demo sets"
    assert set(generated) <= correct
    for ex_id, demo in generated.items():
        assert demo.output == f"Answer: {label(int(ex_id[1:]))}"  # the model's words, not the label
    (event,) = store.get_events(res.run_id, "bootstrap")
    assert event.payload["answered"] == 6 and event.payload["kept"] == len(correct)
    # The first set of demos is labelled only; later ones mix in generated demos.
    assert all(d.source == "train" for d in strategy._demo_sets[1])


def test_median_pruner_stops_weak_trials_after_part_of_the_minibatch():
    res, strategy, store, lm = _run(7, n_chunks=2, n_startup_trials=4)
    trials = [e.payload for e in store.get_events(res.run_id, "tpe_trial")]
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, "weak combinations are pruned"
    assert all(t["n_examples"] == 4 and t["minibatch"] == 8 for t in pruned)
    assert all(t["n_examples"] == 8 for t in trials if t["state"] == "complete")
    states = [t.state.name for t in strategy._study.trials]
    assert states.count("PRUNED") == len(pruned)
    # without pruning the same search evaluates more
    res2, _, _, lm2 = _run(7, prune=False)
    assert lm.n_calls < lm2.n_calls


def test_periodic_full_evaluations_are_fed_to_the_study_and_pick_the_best():
    res, strategy, store, _ = _run(0, full_eval_every=5, n_trials=20)
    task = make_task(n_train=8)
    full = [e.payload for e in store.get_events(res.run_id, "full_eval")]
    assert 1 <= len(full) <= 5
    assert all(f["n_examples"] == len(task.val) for f in full)
    added = [t for t in strategy._study.trials if t.number not in {p["number"] for p in (e.payload for e in store.get_events(res.run_id, "tpe_trial"))}]
    assert sorted(t.value for t in added) == sorted(f["value"] for f in full)
    assert res.best.hash in {f["candidate"] for f in full}
    assert res.best_val_score == max(f["value"] for f in full)


def proposer(request) -> str:
    return {
        0: "Instruction: Answer with the class of the item.",
        1: "   ",
        2: '"Answer with the class of the item."',
        3: "x" * 700,
    }[request.sample_id]


def test_proposed_instructions_join_the_space_and_unreadable_ones_are_recorded():
    task = make_task(n_train=8)
    store = open_store(None)
    prop_lm = ScriptedLM(proposer)
    strategy = BayesJointSearch(instructions=["Reply with anything."], n_proposed_instructions=4, n_bootstrap=0, n_trials=12, minibatch_size=8)
    res = optimize(task, strategy, model=ScriptedLM(oracle), proposer_model=prop_lm, budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    assert strategy._instructions == ["Reply with anything.", GOOD_INSTRUCTION]
    assert sorted(r.sample_id for r in prop_lm.calls) == [0, 1, 2, 3]
    assert all(r.temperature == pytest.approx(0.7) for r in prop_lm.calls)
    assert "item" in prop_lm.calls[0].message_dicts[0]["content"]  # grounded in training examples
    failed = [e.payload for e in store.get_events(res.run_id, "failed_proposal")]
    assert sorted(f["sample"] for f in failed) == [1, 3]
    assert any("longer than" in f["reason"] for f in failed)
    assert res.best.instruction == GOOD_INSTRUCTION


def test_parse_instruction():
    assert _parse_instruction("Instruction: Sort the words.\nExtra") == ("Sort the words.", "")
    assert _parse_instruction("“Reverse it.”") == ("Reverse it.", "")
    assert _parse_instruction("")[0] is None


def test_resume_replays_the_study_without_paying_twice():
    full_res, _, full_store, full_lm = _run(3)
    full_hashes = [c.hash for c in full_store.get_candidates(full_res.run_id)]

    def crash(info):
        if info.step == 12:
            raise KeyboardInterrupt

    store = open_store(None)
    lm = ScriptedLM(oracle)
    strategy = BayesJointSearch(instructions=INSTRUCTIONS, n_demo_sets=8, n_bootstrap=0, n_trials=30, minibatch_size=8, full_eval_every=8)
    task = make_task(n_train=8)
    with pytest.raises(KeyboardInterrupt):
        optimize(task, strategy, model=lm, budget=None, store=store, seed=3, cache=False, evaluate_test=False, callbacks=[crash])
    (run,) = store.list_runs()
    lm2 = ScriptedLM(oracle)
    res = resume(run.id, store=store, task=task, model=lm2, cache=False)
    assert [c.hash for c in store.get_candidates(run.id)] == full_hashes
    assert res.best == full_res.best and res.best_val_score == full_res.best_val_score
    assert lm.n_calls + lm2.n_calls == full_lm.n_calls
    rebuilt = make_strategy("bayes_joint", store.get_run(run.id).strategy_params)
    assert json.dumps(rebuilt.get_params(), sort_keys=True) == json.dumps(strategy.get_params(), sort_keys=True)


@pytest.mark.parametrize(
    "params, fragment",
    [
        (dict(minibatch_size=0), "minibatch_size"),
        (dict(minibatch_size=1.5), "minibatch_size"),
        (dict(demo_formats=["xml"]), "demo format"),
        (dict(k=20), "k=20"),
        (dict(n_trials=0), "n_trials"),
        (dict(n_demo_sets=1), "n_demo_sets"),
    ],
)
def test_bad_configuration_fails_before_any_call(params, fragment):
    lm = ScriptedLM(oracle)
    with pytest.raises(ConfigError) as err:
        optimize(make_task(n_train=8), BayesJointSearch(**params), model=lm, budget=10, store=None, cache=False, evaluate_test=False)
    assert fragment in str(err.value) and err.value.fix
    assert lm.n_calls == 0


def test_optuna_logging_is_left_as_the_user_set_it():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG)
    try:
        _run(0, n_trials=3)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)


@pytest.mark.embedded
def test_bayes_joint_beats_zero_shot_on_sentiment_with_the_embedded_model(embedded_backend):
    from promptopt.data import load_task

    task = load_task(SENTIMENT, format="ii", split=(24, 12, 20), seed=0)
    strategy = BayesJointSearch(
        instructions=["Classify the sentiment."], n_demo_sets=4, k=3, n_bootstrap=4, n_trials=6, minibatch_size=4,
        full_eval_every=0, demo_formats=["chat"],
    )
    res = optimize(task, strategy, model=embedded_backend, budget=None, store=None, seed=0, cache=False, max_tokens=8)
    assert res.best is not None and res.best.demos
    assert res.best_test.score > res.baseline_test.score
    assert not math.isnan(res.best_val_score)
