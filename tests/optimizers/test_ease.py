"""EASE: OT pruning, the neural bandit, search quality against random k-shot, the joint
variant, resume by replay, configuration errors; the real MiniLM embedder; the embedded model."""

from __future__ import annotations

import itertools
import json
import math
import pathlib

import numpy as np
import pytest

from _exemplar_toys import GOOD_INSTRUCTION, demo_oracle, joint_oracle, make_task, quality, register_toy_embedder
from promptopt.errors import ConfigError, UnknownNameError
from promptopt.lm._scripted import ScriptedLM
from promptopt.optimizers import RandomSearch, make_strategy
from promptopt.optimizers._embed import HashingEmbedder, get_embedder
from promptopt.optimizers.ease import EASE, _NeuralUCB, ot_distances, ot_prune
from promptopt.run import optimize, resume
from promptopt.store import open_store

EMBEDDER = register_toy_embedder()
SENTIMENT = pathlib.Path(__file__).resolve().parents[1] / "data" / "instruction_induction" / "execute" / "sentiment.json"
# Small network and domain: the unit tests check behaviour, not the paper's scale.
FAST = dict(embedder=EMBEDDER, hidden_size=32, epochs=150, learning_rate=1e-2, domain_size=600, n_keep=60, eval_size=15, final_top=3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --- optimal transport ------------------------------------------------------------------------
def test_ot_distance_is_the_exact_transport_cost_and_ignores_order():
    e = np.eye(4)
    # One exemplar equal to one of two orthogonal targets: half the mass moves at cost 0, half at cost 1.
    assert ot_distances(np.array([[0]]), e, e[:2]) == pytest.approx([0.5])
    # Two exemplars equal to the two targets: a perfect matching, cost 0.
    d = ot_distances(np.array([[0, 1], [1, 0], [2, 3]]), e, e[:2])
    assert d[0] == pytest.approx(0.0) and d[1] == pytest.approx(0.0)
    assert d[2] == pytest.approx(1.0)


def test_ot_pruning_keeps_the_sets_closest_to_the_validation_distribution():
    rng = np.random.default_rng(0)
    near = _unit(np.array([1.0, 0, 0, 0]) + 0.15 * rng.normal(size=(6, 4)))
    far = _unit(np.array([0, 1.0, 0, 0]) + 0.15 * rng.normal(size=(6, 4)))
    pool = np.vstack([near, far])  # positions 0-5 near the validation data, 6-11 far from it
    target = _unit(np.array([1.0, 0, 0, 0]) + 0.15 * rng.normal(size=(20, 4)))
    sets = np.array(list(itertools.permutations(range(12), 3)))[rng.permutation(1320)[:300]]
    kept = ot_prune(sets, pool, target, keep=15)
    assert len(kept) == 15
    assert (sets[kept] < 6).all(), "every kept set is made of exemplars near the validation data"
    all_d = ot_distances(sets, pool, target)
    assert all_d[kept].max() <= np.sort(all_d)[14] + 1e-12
    assert all_d[kept].mean() < all_d.mean() - 0.2
    # permutations of one set have the same distance (OT sees a set; order is the bandit's job)
    perm = np.array([[0, 7, 3], [3, 0, 7], [7, 3, 0]])
    assert np.ptp(ot_distances(perm, pool, target)) == pytest.approx(0.0, abs=1e-12)


# --- the neural bandit ------------------------------------------------------------------------
def test_neural_ucb_learns_rewards_and_its_bonus_shrinks_where_it_has_chosen():
    rng = np.random.default_rng(1)
    w = rng.normal(size=16)
    X = rng.normal(size=(30, 16)).astype(np.float32)
    y = 1 / (1 + np.exp(-X @ w))
    bandit = _NeuralUCB(16, hidden_size=32, depth=2, lam=0.1, nu=1.0, epochs=600, lr=1e-2, tol=1e-4, style="ucb", device="cpu", seed=0)
    for x, r in zip(X[:20], y[:20]):
        bandit.add(x, float(r))
    bandit.fit(X)
    mu, bonus, G = bandit.score(X)
    assert np.corrcoef(mu[:20], y[:20])[0, 1] > 0.95  # fits what it saw
    assert np.corrcoef(mu[20:], y[20:])[0, 1] > 0.5  # and generalises to sets it did not see
    assert (bonus > 0).all()
    pick = bandit.choose(mu, bonus, np.ones(len(X), dtype=bool), np.random.default_rng(0))
    assert pick == int(np.argmax(mu + bonus))
    before = bonus[pick]
    bandit.update(G[pick])
    _, after, _ = bandit.score(X)
    assert after[pick] < before  # confidence grows where the bandit has been
    allowed = np.ones(len(X), dtype=bool)
    allowed[pick] = False
    assert bandit.choose(mu, bonus, allowed, np.random.default_rng(0)) != pick


def test_network_initialisation_is_seeded_and_leaves_the_global_generator_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = _NeuralUCB(8, hidden_size=8, depth=2, lam=0.1, nu=0.1, epochs=1, lr=1e-3, tol=0, style="ucb", device="cpu", seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = _NeuralUCB(8, hidden_size=8, depth=2, lam=0.1, nu=0.1, epochs=1, lr=1e-3, tol=0, style="ucb", device="cpu", seed=7)
    assert all(torch.equal(a.init_state[k], b.init_state[k]) for k in a.init_state)


# --- search -----------------------------------------------------------------------------------
def _true_quality(candidate) -> float:
    return quality([d.input_dict["input"] for d in candidate.demos])


def test_ease_finds_a_near_best_ordered_set_and_beats_random_k_shot():
    ease_q, random_q, ease_calls, random_calls = [], [], [], []
    for seed in range(3):
        task = make_task()
        lm = ScriptedLM(demo_oracle)
        ease = EASE(k=3, n_init=5, n_steps=24, **FAST)
        res = optimize(task, ease, model=lm, budget=600, store=None, seed=seed, cache=False, evaluate_test=False)
        ease_q.append(_true_quality(res.best))
        ease_calls.append(res.evaluations_used)
        assert len(res.best.demos) == 3 and res.best.demo_format == "chat"
        # the best is chosen on the whole validation split
        assert res.best_val_score == pytest.approx(sum(demo_oracle_score(res.best, task)) / len(task.val))

        lm = ScriptedLM(demo_oracle)
        rs = RandomSearch(demo_counts=[3], demo_formats=["chat"], n_candidates=24, batch_size=4, include_zero_shot=False)
        res = optimize(task, rs, model=lm, budget=600, store=None, seed=seed, cache=False, evaluate_test=False)
        random_q.append(_true_quality(res.best))
        random_calls.append(res.evaluations_used)
    # Random 3-shot sets score 0.18 on average; a set holding the three gold demos scores >= 0.6
    # (6 of the 1,320 ordered sets). EASE, with fewer task-model calls, finds better sets.
    assert max(ease_calls) <= min(random_calls)
    assert np.mean(ease_q) > np.mean(random_q)
    assert np.mean(ease_q) >= 0.6
    assert min(ease_q) >= 0.4


def demo_oracle_score(candidate, task):
    from promptopt._render import render_messages
    from promptopt.lm._types import LMRequest

    for ex in task.val:
        req = LMRequest.chat(render_messages(candidate, ex.inputs, task))
        yield float(demo_oracle(req) == ex.output)


def test_ease_records_bandit_metadata_and_spends_the_documented_budget():
    task = make_task()
    lm = ScriptedLM(demo_oracle)
    store = open_store(None)
    ease = EASE(k=3, n_init=4, n_steps=8, stop_at_perfect=False, **FAST)
    res = optimize(task, ease, model=lm, budget=None, store=store, seed=3, cache=False, evaluate_test=False)
    records = store.get_candidates(res.run_id)
    kinds = [r.metadata["kind"] for r in records]
    assert kinds[:4] == ["init"] * 4 and kinds[4:8] == ["bandit"] * 4
    assert set(kinds[8:]) == {"final"} or not kinds[8:]
    for r in records[4:8]:
        m = r.metadata
        assert m["kept"] == 60 and m["domain"] <= 600 and m["bonus"] > 0 and 0 < m["train_epochs"] <= 150
        assert len(m["demo_pool_indices"]) == 3
    # n_steps * eval_size, plus the final full-validation pass of the top 3
    assert res.evaluations_used == 8 * 15 + 3 * (len(task.val) - 15)
    assert lm.n_calls == res.evaluations_used
    assert len(ease.step_overhead_s) == 5 and all(s >= 0 for s in ease.step_overhead_s)
    (pool_event,) = store.get_events(res.run_id, "ease_pool")
    assert pool_event.payload["pool"] == len(task.train) and len(pool_event.payload["eval_ids"]) == 15


def test_ease_joint_variant_chooses_the_instruction_with_the_demos():
    task = make_task()
    instructions = ["Reply with anything.", GOOD_INSTRUCTION, "Say C."]
    store = open_store(None)
    ease = EASE(instructions=instructions, k=3, n_init=5, n_steps=20, instructions_per_set=3, **FAST)
    res = optimize(task, ease, model=ScriptedLM(joint_oracle), budget=None, store=store, seed=0, cache=False, evaluate_test=False)
    assert res.best.instruction == GOOD_INSTRUCTION
    cands = store.get_candidates(res.run_id)
    assert {c.candidate.instruction for c in cands} <= set(instructions)
    assert all(c.metadata["instruction_index"] == instructions.index(c.candidate.instruction) for c in cands if c.metadata["kind"] != "final")
    bandit = [c for c in cands if c.metadata["kind"] == "bandit"]
    late = bandit[len(bandit) // 2 :]
    assert sum(c.candidate.instruction == GOOD_INSTRUCTION for c in late) / len(late) > 0.5


def test_ease_resume_replays_the_same_choices_without_paying_twice():
    task = make_task()
    params = dict(k=3, n_init=4, n_steps=10, stop_at_perfect=False, **FAST)

    full_lm = ScriptedLM(demo_oracle)
    full_store = open_store(None)
    full = optimize(task, EASE(**params), model=full_lm, budget=None, store=full_store, seed=5, cache=False, evaluate_test=False)
    full_hashes = [c.hash for c in full_store.get_candidates(full.run_id)]

    def crash_at_step_4(info):
        if info.step == 4:
            raise KeyboardInterrupt

    lm = ScriptedLM(demo_oracle)
    store = open_store(None)
    with pytest.raises(KeyboardInterrupt):
        optimize(task, EASE(**params), model=lm, budget=None, store=store, seed=5, cache=False, evaluate_test=False, callbacks=[crash_at_step_4])
    (run,) = store.list_runs()
    assert run.status == "interrupted"
    before = lm.n_calls
    lm2 = ScriptedLM(demo_oracle)
    res = resume(run.id, store=store, task=task, model=lm2, cache=False)
    assert [c.hash for c in store.get_candidates(run.id)] == full_hashes
    assert res.best == full.best and res.best_val_score == full.best_val_score
    assert before + lm2.n_calls == full_lm.n_calls  # stored evaluations were not paid again
    rebuilt = make_strategy("ease", store.get_run(run.id).strategy_params)
    assert json.dumps(rebuilt.get_params(), sort_keys=True) == json.dumps(EASE(**params).get_params(), sort_keys=True)


@pytest.mark.parametrize(
    "params, fragment",
    [
        (dict(k=13), "k=13"),
        (dict(n_keep=700, domain_size=600), "n_keep=700"),
        (dict(bandit="thompson"), "bandit"),
        (dict(n_init=30, n_steps=20), "n_init=30"),
        (dict(exploration=-1.0), "exploration"),
        (dict(demo_format="xml"), "demo_format"),
        (dict(eval_size=0), "eval_size"),
    ],
)
def test_ease_rejects_bad_configuration_before_any_call(params, fragment):
    lm = ScriptedLM(demo_oracle)
    with pytest.raises(ConfigError) as err:
        optimize(make_task(), EASE(**{**FAST, **params}), model=lm, budget=10, store=None, cache=False, evaluate_test=False)
    assert fragment in str(err.value) and err.value.fix
    assert lm.n_calls == 0


def test_unknown_embedder_is_a_config_error_naming_the_known_ones():
    with pytest.raises(UnknownNameError) as err:
        optimize(make_task(), EASE(embedder="word2vec"), model=ScriptedLM(demo_oracle), budget=10, store=None, cache=False, evaluate_test=False)
    assert "minilm" in err.value.fix and "hashing" in err.value.fix


def test_hashing_embedder_is_deterministic_normalised_and_cached():
    emb = HashingEmbedder(dim=64)
    a = emb.embed(["Input: good film\nOutput: positive", "Input: bad film\nOutput: negative", "Input: good film\nOutput: positive"])
    assert a.shape == (3, 64) and np.allclose(np.linalg.norm(a, axis=1), 1.0)
    assert np.array_equal(a[0], a[2]) and emb.n_encoded == 2
    b = HashingEmbedder(dim=64).embed(["Input: good film\nOutput: positive"])
    assert np.array_equal(a[0], b[0])
    assert emb.embed([]).shape == (0, 64)


# --- the real MiniLM embedder -----------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    return get_embedder("minilm", "cpu")


def test_minilm_embeds_ordered_sets_by_meaning_and_order(minilm):
    texts = [
        "Input: a wonderful, moving film\nOutput: positive",
        "Input: a delightful and touching movie\nOutput: positive",
        "Input: 17 + 25\nOutput: 42",
    ]
    e = minilm.embed(texts)
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    forward, backward = minilm.embed(["\n\n".join(texts), "\n\n".join(reversed(texts))])
    assert not np.allclose(forward, backward, atol=1e-3), "a permutation of a set is a different point"
    n = minilm.n_encoded
    again = minilm.embed([texts[1]])
    assert np.array_equal(again[0], e[1]) and minilm.n_encoded == n  # served from the text-hash cache


def test_ease_runs_end_to_end_with_minilm(minilm):
    task = make_task()
    ease = EASE(
        k=3, n_init=3, n_steps=6, embedder="minilm", hidden_size=32, epochs=200, domain_size=300, n_keep=30, eval_size=10,
        final_top=1, stop_at_perfect=False,
    )
    res = optimize(task, ease, model=ScriptedLM(demo_oracle), budget=None, store=None, seed=0, cache=False, evaluate_test=False)
    assert res.best is not None and len(res.best.demos) == 3
    assert res.evaluations_used == 6 * 10 + (len(task.val) - 10)


# --- the embedded model -----------------------------------------------------------------------
@pytest.mark.embedded
def test_ease_beats_zero_shot_on_sentiment_with_the_embedded_model(embedded_backend):
    from promptopt.data import load_task

    task = load_task(SENTIMENT, format="ii", split=(24, 10, 20), seed=0)
    ease = EASE(
        instructions=["Classify the sentiment."], k=3, n_init=2, n_steps=4, eval_size=8, final_top=1,
        embedder="minilm", hidden_size=32, epochs=200, domain_size=400, n_keep=40,
    )
    res = optimize(task, ease, model=embedded_backend, budget=None, store=None, seed=0, cache=False, max_tokens=8)
    assert res.best is not None and len(res.best.demos) == 3
    assert res.best_test.score > res.baseline_test.score
    assert not math.isnan(res.best_val_score)
