"""PE2: the three-part meta-prompt (two-step description, full template, reasoning template) over a
batch of failures, verbalised step size and momentum, beam search with back-tracking, induction
initialisation, failures from the train split, failed proposals, and a run on the embedded model."""

from __future__ import annotations

import collections
import pathlib

import pytest

from promptopt.errors import ConfigError
from promptopt.lm._scripted import ScriptedLM
from promptopt.optimizers import PE2
from promptopt.run import optimize
from promptopt.store import open_store
from promptopt.task import Example, Task

PAIRS = [
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
    ("early", "late"), ("open", "closed"), ("rich", "poor"), ("strong", "weak"), ("young", "old"), ("wet", "dry"),
    ("high", "low"), ("hard", "soft"), ("full", "empty"), ("loud", "quiet"), ("near", "far"), ("thick", "thin"),
    ("clean", "dirty"), ("true", "false"), ("first", "last"), ("win", "lose"), ("push", "pull"), ("day", "night"),
]
GOLD = dict(PAIRS)
INDEX = {w: i for i, (w, _) in enumerate(PAIRS)}

P0 = "Repeat the word."
P1 = "Write the antonym of the word."
P2 = "Write the opposite word, the antonym."


def make_task() -> Task:
    examples = [Example(id=f"w{i}", inputs={"input": w}, output=a) for i, (w, a) in enumerate(PAIRS)]
    return Task.from_examples("toy-antonyms", examples, split=(8, 8, 8), seed=0, metric="normalized_exact")


def quality(instruction: str) -> float:
    text = instruction.lower()
    if "antonym" in text and "opposite" in text:
        return 1.0
    if "antonym" in text:
        return 0.5
    return 0.0


def task_model(request) -> str:
    msgs = request.message_dicts
    system = next((m["content"] for m in msgs if m["role"] == "system"), "")
    word = msgs[-1]["content"].strip()
    q = quality(system)
    right = q == 1.0 or (q == 0.5 and INDEX[word] % 2 == 0)
    return GOLD[word] if right else f"The word is {word}"


def current_prompt(text: str) -> str:
    return text.split("## Current Prompt\n", 1)[1].split("\n", 1)[0]


def proposer(request) -> str:
    """A prompt engineer that reasons, then edits P0 -> P1 -> P2."""
    last = request.message_dicts[-1]["content"]
    if "For each example, provide reasoning" in last:
        return "### Example 1\nIs the output correct compared to the label: no. The prompt should ask for the antonym."
    if last.startswith("Now please carefully review your reasoning"):
        return {P0: P1, P1: P2}.get(current_prompt(last), P2)
    if last.startswith("Now please summarize"):
        step = last.split("At step ", 1)[1].split(",", 1)[0]
        return f"* At step {step}, the prompt has limitations such as vagueness. Changes to the prompt include asking for antonyms."
    if "What was the instruction?" in last:
        return ["The instruction was to repeat the word.", "to write the antonym of the word"][request.sample_id % 2]
    raise AssertionError(f"unexpected meta-prompt {last[:80]!r}")


def recs_by_instruction(store, run_id):
    return {r.candidate.instruction: r for r in store.get_candidates(run_id)}


def test_edits_follow_failures_to_the_best_prompt_with_lineage():
    task = make_task()
    store = open_store(None)
    strat = PE2(instructions=[P0], steps=2, beam_width=1, expansion=1, batch_size=2, failure_split="val")
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    recs = recs_by_instruction(store, res.run_id)
    assert res.best.instruction == P2 and res.best_val_score == pytest.approx(1.0)
    assert recs[P1].parents == [recs[P0].hash] and recs[P2].parents == [recs[P1].hash]
    assert recs[P1].metadata["t"] == 1 and recs[P2].metadata["t"] == 2
    assert "antonym" in recs[P1].metadata["reasoning"]
    # Every example of a batch is a failure of the parent prompt.
    for child, parent in ((P1, P0), (P2, P1)):
        batch = recs[child].metadata["batch"]
        assert len(batch) == 2
        results = {ev.result.example_id: ev.result.score for ev in store.get_evaluations(res.run_id, candidate_hash=recs[parent].hash, split="val")}
        assert all(results[i] == 0.0 for i in batch)
    assert res.evaluations_used == 3 * len(task.val)


def test_meta_prompt_holds_failed_examples_full_template_step_size_and_history():
    task = make_task()
    prop = ScriptedLM(proposer)
    strat = PE2(instructions=[P0], steps=2, beam_width=1, expansion=1, batch_size=2, step_size=7, max_words=40, momentum=True, failure_split="val")
    optimize(task, strat, model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=None, seed=1, cache=False, evaluate_test=False)
    examine = [r for r in prop.calls if "For each example, provide reasoning" in r.message_dicts[-1]["content"]]
    refine = [r for r in prop.calls if r.message_dicts[-1]["content"].startswith("Now please carefully review")]
    summaries = [r for r in prop.calls if r.message_dicts[-1]["content"].startswith("Now please summarize")]
    assert len(examine) == len(refine) == len(summaries) == 2

    first = examine[0].message_dicts
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user"]
    assert "The process consists of two main steps" in first[1]["content"] and "## Step 2" in first[1]["content"]
    assert "along with 2 example(s)" in first[1]["content"]
    body = first[3]["content"]
    assert f"## Prompt\n{P0}" in body
    assert "## Full Template" in body and f"[system]\n{P0}\n[user]\n<input>\n[assistant]\n<output>" in body
    # The failed examples: input, the task model's output, the label.
    blocks = body.split("### Example ")[1:3]
    for block in blocks:
        word = block.split("Input: ", 1)[1].split("\n", 1)[0]
        assert f"Output: The word is {word}" in block and f"Label: {GOLD[word]}" in block
    assert "Is the prompt correctly describing the task shown by the input-label pair" in body
    assert examine[0].temperature == 0.0

    first_refine = refine[0].message_dicts
    assert first_refine[4]["role"] == "assistant" and "antonym" in first_refine[4]["content"]  # its own reasoning
    text = first_refine[5]["content"]
    assert "* You are allowed to change up to 7 words in the original prompt." in text
    assert "* The total length of the prompt should be less than 40 words." in text
    assert "## Prompt Refinement History" not in text  # P0 has no past yet
    assert refine[0].temperature == pytest.approx(0.7) and refine[0].max_tokens == 300

    # Step 2 edits P1: the history shows P0, its dev accuracy, and the summary of the P0 -> P1 edit.
    second = refine[1].message_dicts[-1]["content"]
    assert "## Prompt Refinement History from the Past" in second
    assert f'At step 0, the prompt was "{P0}" (accuracy on the dev set: 0.00)' in second
    assert "At step 1, the prompt has limitations such as vagueness" in second
    assert current_prompt(second) == P1


def test_beam_keeps_the_best_of_all_timestamps_and_expands_each():
    task = make_task()
    prop = ScriptedLM(proposer)
    store = open_store(None)
    strat = PE2(instructions=[P0, P1, "Say something."], steps=1, beam_width=2, expansion=2, batch_size=1, failure_split="val")
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    refine = [r for r in prop.calls if r.message_dicts[-1]["content"].startswith("Now please carefully review")]
    edited = collections.Counter(current_prompt(r.message_dicts[-1]["content"]) for r in refine)
    # P0 and "Say something." tie at 0.0; the beam of 2 is P1 (0.5) and the first-recorded of them.
    assert edited == {P1: 2, P0: 2}
    assert {r.sample_id for r in refine} == {0, 1}
    recs = recs_by_instruction(store, res.run_id)
    beam = store.get_events(res.run_id, "pe2_beam")[0].payload["beam"]
    assert [b["hash"] for b in beam] == [recs[P1].hash, recs[P0].hash]
    assert beam[0]["score"] > 0.0 == beam[1]["score"]
    # P0's edits give P1 (already known) and P1's give P2 twice: one new candidate, deduplicated.
    assert [r.candidate.instruction for r in recs.values() if r.metadata.get("kind") == "edit"] == [P2]
    assert store.get_events(res.run_id, "proposals")[-1].payload == {"strategy": "pe2", "t": 1, "requested": 4, "new": 1, "duplicates": 3}


def test_failures_from_the_train_split_are_evaluated_through_the_loop():
    task = make_task()
    store = open_store(None)
    strat = PE2(instructions=[P1], steps=1, beam_width=1, expansion=2, batch_size=2, failure_pool=6)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    recs = recs_by_instruction(store, res.run_id)
    train_evals = store.get_evaluations(res.run_id, candidate_hash=recs[P1].hash, split="train")
    assert 0 < len(train_evals) <= 6  # at most failure_pool training examples were run
    failures = {ev.result.example_id for ev in train_evals if ev.result.score == 0.0}
    child = recs[P2]
    assert child.metadata["batch_split"] == "train" and set(child.metadata["batch"]) <= failures
    assert res.evaluations_used == len(train_evals) + 2 * len(task.val)


def test_induction_initialisation_uses_p_init():
    task = make_task()
    prop = ScriptedLM(proposer)
    store = open_store(None)
    strat = PE2(n_init=4, demos_per_init=3, steps=0)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    init = [r for r in prop.calls if "What was the instruction?" in r.message_dicts[-1]["content"]]
    assert len(init) == 4 and [r.sample_id for r in init] == [0, 1, 2, 3]
    assert init[0].message_dicts[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert "I gave a friend an instruction and 3 inputs." in init[0].message_dicts[1]["content"]
    assert "It has to be less than 50 tokens." in init[0].message_dicts[1]["content"]
    recs = recs_by_instruction(store, res.run_id)
    assert set(recs) == {"Repeat the word.", "Write the antonym of the word"}
    assert all(r.metadata["init"] == "induction" and len(r.metadata["demo_ids"]) == 3 for r in recs.values())
    assert res.best.instruction == "Write the antonym of the word"


def test_unusable_replies_are_failed_proposals():
    task = make_task()
    store = open_store(None)

    def empty_refine(request):
        if request.message_dicts[-1]["content"].startswith("Now please carefully review"):
            return "```\n```"
        return proposer(request)

    strat = PE2(instructions=[P0], steps=2, beam_width=1, expansion=2, batch_size=1, failure_split="val")
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(empty_refine), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    failed = [e.payload for e in store.get_events(res.run_id, "failed_proposal")]
    assert len(failed) == 4 and all(f["raw"] == "```\n```" and f["reason"] == "no prompt in the reply" for f in failed)
    assert [r.candidate.instruction for r in store.get_candidates(res.run_id)] == [P0]


def test_bad_parameters_fail_at_setup():
    task = make_task()
    for params, pattern in [({"failure_split": "test"}, "failure_split"), ({"beam_width": 0}, "positive integer"), ({"instructions": "x"}, "list of strings")]:
        with pytest.raises(ConfigError, match=pattern) as info:
            optimize(task, PE2(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), store=None, cache=False)
        assert info.value.fix


@pytest.mark.embedded
def test_embedded_model_completes_a_small_run(embedded_backend):
    from promptopt.data import load_instruction_induction

    root = pathlib.Path(__file__).resolve().parents[1] / "data" / "instruction_induction"
    task = load_instruction_induction("sentiment", root, split=(4, 4), seed=0)
    store = open_store(None)
    strat = PE2(n_init=2, demos_per_init=3, steps=1, beam_width=1, expansion=1, batch_size=1, failure_split="val", reasoning_max_tokens=48, max_tokens=32)
    res = optimize(task, strat, model=embedded_backend, proposer_model=embedded_backend, budget=40, store=store, seed=0, cache=False, evaluate_test=False, max_tokens=8)
    recs = store.get_candidates(res.run_id)
    assert res.best is not None
    assert recs and all(r.strategy == "pe2" for r in recs)
    hashes = {r.hash for r in recs}
    edits = [r for r in recs if r.metadata.get("kind") == "edit"]
    failed = store.get_events(res.run_id, "failed_proposal")
    assert edits or failed  # a 135M proposer may not produce a usable edit; then it is recorded
    assert all(r.parents and r.parents[0] in hashes and r.metadata["reasoning"] for r in edits)


def test_resume_replays_to_the_same_run(tmp_path):
    from promptopt.run import resume

    task = make_task()
    params = dict(instructions=[P0], steps=2, beam_width=1, expansion=2, batch_size=1, failure_pool=6, momentum=True)
    ref_store = open_store(str(tmp_path / "ref.sqlite"))
    ref = optimize(task, PE2(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=ref_store, seed=2, cache=False, evaluate_test=False)

    store = open_store(str(tmp_path / "crash.sqlite"))

    def crash(info):
        if info.step == 1:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        optimize(task, PE2(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=2, cache=False, evaluate_test=False, callbacks=[crash])
    run = store.list_runs()[0]
    before = len(store.get_evaluations(run.id))
    lm = ScriptedLM(task_model)
    res = resume(run.id, store=store, task=task, model=lm, proposer_model=ScriptedLM(proposer), cache=False)
    assert lm.n_calls == res.evaluations_used - before > 0
    assert [(c.hash, c.parents) for c in store.get_candidates(run.id)] == [(c.hash, c.parents) for c in ref_store.get_candidates(ref.run_id)]
    assert res.best.hash == ref.best.hash
