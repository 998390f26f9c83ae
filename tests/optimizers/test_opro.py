"""OPRO: the meta-prompt (instruction-score pairs ascending, 0-100 scores, top-k history,
exemplars with <INS>), 8 samples at temperature 1.0, square-bracket parsing, dedup, failed
proposals, and a run on the embedded model."""

from __future__ import annotations

import pathlib
import re

import pytest

from promptopt.errors import ConfigError
from promptopt.lm._scripted import ScriptedLM
from promptopt.optimizers import OPRO
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


def make_task() -> Task:
    examples = [Example(id=f"w{i}", inputs={"input": w}, output=a) for i, (w, a) in enumerate(PAIRS)]
    return Task.from_examples("toy-antonyms", examples, split=(8, 8, 8), seed=0, metric="normalized_exact")


def quality(instruction: str) -> float:
    """Accuracy grows with the keywords present: 'antonym', 'opposite', 'single word' (1/3 each)."""
    text = instruction.lower()
    return sum(k in text for k in ("antonym", "opposite", "single word")) / 3


def task_model(request) -> str:
    msgs = request.message_dicts
    system = next((m["content"] for m in msgs if m["role"] == "system"), "")
    word = msgs[-1]["content"].strip()
    # Correct on the first quality * 24 words of the list: a score that rises with the keywords.
    return GOLD[word] if INDEX[word] % 3 < round(quality(system) * 3) else word


def val_score(task: Task, instruction: str) -> float:
    return sum(INDEX[ex.inputs["input"]] % 3 < round(quality(instruction) * 3) for ex in task.val) / len(task.val)


def shown(meta_prompt: str) -> list[tuple[str, int]]:
    return [(t, int(s)) for t, s in re.findall(r"\ntext:\n(.*?)\nscore:\n(\d+)\n", meta_prompt)]


def proposer(request) -> str:
    """An optimizer that adds one missing keyword to the best instruction shown (the last one)."""
    text = request.message_dicts[-1]["content"]
    best = shown(text)[-1][0]
    missing = [k for k in ("antonym", "opposite", "single word") if k not in best.lower()]
    if not missing:
        return f"[{best} Be careful {request.sample_id}.]"
    return f"Here is my text: [{best} Use the {missing[request.sample_id % len(missing)]}.]"


def test_meta_prompt_lists_instructions_ascending_with_integer_scores_and_exemplars():
    task = make_task()
    prop = ScriptedLM(proposer)
    initial = ["Write the antonym, the opposite.", "Repeat.", "Write the antonym, the opposite, a single word.", "Write the antonym."]
    optimize(task, OPRO(instructions=initial, steps=1), model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=None, seed=0, cache=False, evaluate_test=False)
    assert len(prop.calls) == 8
    assert [r.sample_id for r in prop.calls] == list(range(8))
    assert all(r.temperature == 1.0 for r in prop.calls)
    meta = prop.calls[0].message_dicts[-1]["content"]
    assert meta.startswith("I have some texts along with their corresponding scores. The texts are arranged in ascending order")
    expected = sorted(((t, round(100 * val_score(task, t))) for t in initial), key=lambda p: p[1])
    assert len({s for _, s in expected}) == 4 and 0 < expected[1][1] < expected[2][1] < 100  # distinct, non-trivial
    assert shown(meta) == expected
    # Three exemplars from the train split, <INS> where the instruction goes (before the input).
    blocks = re.findall(r"\ninput:\n<INS>\n(.*?)\noutput:\n(.*?)\n", meta)
    assert len(blocks) == 3 and all(GOLD[w] == a for w, a in blocks)
    assert {w for w, _ in blocks} <= {ex.inputs["input"] for ex in task.train}
    assert meta.index("text:") < meta.index("<INS>")
    assert meta.rstrip().endswith("Write your new text that is different from the old ones and has a score as high as possible. Write the text in square brackets.")


def test_finds_the_best_instruction_within_budget_and_keeps_lineage():
    task = make_task()
    store = open_store(None)
    res = optimize(task, OPRO(instructions=["Repeat the word."], proposals_per_step=2), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer),
                   budget=8 * len(task.val), store=store, seed=0, cache=False, evaluate_test=False)
    assert res.best_val_score == pytest.approx(1.0)
    assert all(k in res.best.instruction.lower() for k in ("antonym", "opposite", "single word"))
    recs = {r.hash: r for r in store.get_candidates(res.run_id)}
    best = recs[res.best.hash]
    assert best.metadata["kind"] == "proposal" and best.parents and all(p in recs for p in best.parents)
    # Parents are the instructions the meta-prompt showed, best first.
    assert best.parents[0] == max(best.parents, key=lambda h: sum(1 for r in store.get_evaluations(res.run_id, candidate_hash=h) if r.result.score == 1.0))
    assert res.evaluations_used <= 8 * len(task.val)


def test_history_keeps_the_top_k_and_drops_those_below_the_threshold():
    task = make_task()
    prop = ScriptedLM(proposer)
    initial = ["Repeat.", "Write the antonym.", "Write the antonym, the opposite.", "Write the antonym, the opposite, a single word.", "Say it."]
    strat = OPRO(instructions=initial, steps=1, proposals_per_step=1, max_num_instructions=3, score_threshold=0.5, n_exemplars=0)
    optimize(task, strat, model=ScriptedLM(task_model), proposer_model=prop, budget=None, store=None, seed=0, cache=False, evaluate_test=False)
    meta = prop.calls[0].message_dicts[-1]["content"]
    scores = {t: val_score(task, t) for t in initial}
    assert scores["Write the antonym."] < 0.5 <= scores["Write the antonym, the opposite."]
    # Top 3: antonym, antonym+opposite, all three; the first is under the threshold.
    assert [t for t, _ in shown(meta)] == ["Write the antonym, the opposite.", "Write the antonym, the opposite, a single word."]
    assert "<INS>" not in meta


def test_unbracketed_placeholder_and_duplicate_proposals():
    task = make_task()
    store = open_store(None)
    replies = ["no brackets at all", "[Write <INS> here]", "[repeat the word.]", "[]", "[write the antonym.]", "[Write the antonym.]"]

    def odd(request):
        return replies[request.sample_id]

    strat = OPRO(instructions=["Repeat the word."], steps=1, proposals_per_step=6)
    res = optimize(task, strat, model=ScriptedLM(task_model), proposer_model=ScriptedLM(odd), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    failed = {e.payload["raw"]: e.payload["reason"] for e in store.get_events(res.run_id, "failed_proposal")}
    assert failed == {
        "no brackets at all": "no text in square brackets",
        "[Write <INS> here]": "contains the placeholder 'INS'",
        "[]": "empty text in square brackets",
    }
    # "[repeat the word.]" polishes to the initial instruction; the two antonym replies are one.
    assert [r.candidate.instruction for r in store.get_candidates(res.run_id)] == ["Repeat the word.", "Write the antonym."]
    assert store.get_events(res.run_id, "proposals")[0].payload["duplicates"] == 2


def test_bad_parameters_fail_at_setup():
    task = make_task()
    for params, pattern in [({"exemplar_selection": "hardest"}, "exemplar_selection"), ({"n_exemplars": 99}, "training examples"), ({"score_threshold": 2}, "score_threshold")]:
        with pytest.raises(ConfigError, match=pattern) as info:
            optimize(task, OPRO(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), store=None, cache=False)
        assert info.value.fix


@pytest.mark.embedded
def test_embedded_model_completes_a_small_run(embedded_backend):
    from promptopt.data import load_instruction_induction

    root = pathlib.Path(__file__).resolve().parents[1] / "data" / "instruction_induction"
    task = load_instruction_induction("sentiment", root, split=(4, 4), seed=0)
    store = open_store(None)
    strat = OPRO(instructions=["Classify the sentiment."], steps=2, proposals_per_step=3, max_tokens=32, n_exemplars=2)
    res = optimize(task, strat, model=embedded_backend, proposer_model=embedded_backend, budget=40, store=store, seed=0, cache=False, evaluate_test=False, max_tokens=8)
    recs = store.get_candidates(res.run_id)
    assert res.best is not None and recs[0].candidate.instruction == "Classify the sentiment."
    proposals = [r for r in recs if r.metadata.get("kind") == "proposal"]
    failed = store.get_events(res.run_id, "failed_proposal")
    assert len(proposals) + len(failed) + sum(e.payload["duplicates"] for e in store.get_events(res.run_id, "proposals")) == 6
    hashes = {r.hash for r in recs}
    assert all(r.parents and set(r.parents) <= hashes for r in proposals)
    assert all(f.payload["raw"] or "failed" in f.payload["reason"] for f in failed)


def test_resume_replays_to_the_same_run(tmp_path):
    from promptopt.run import resume

    task = make_task()
    params = dict(instructions=["Repeat the word."], steps=4, proposals_per_step=2)
    ref_store = open_store(str(tmp_path / "ref.sqlite"))
    ref = optimize(task, OPRO(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=ref_store, seed=1, cache=False, evaluate_test=False)

    store = open_store(str(tmp_path / "crash.sqlite"))

    def crash(info):
        if info.step == 2:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        optimize(task, OPRO(**params), model=ScriptedLM(task_model), proposer_model=ScriptedLM(proposer), budget=None, store=store, seed=1, cache=False, evaluate_test=False, callbacks=[crash])
    run = store.list_runs()[0]
    before = len(store.get_evaluations(run.id))
    lm = ScriptedLM(task_model)
    res = resume(run.id, store=store, task=task, model=lm, proposer_model=ScriptedLM(proposer), cache=False)
    assert lm.n_calls == res.evaluations_used - before > 0
    assert [c.hash for c in store.get_candidates(run.id)] == [c.hash for c in ref_store.get_candidates(ref.run_id)]
    assert res.best.hash == ref.best.hash and res.best_val_score == pytest.approx(1.0)
