"""Statistics: bootstrap intervals, paired tests and racing, checked on synthetic data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from promptopt.errors import ConfigError
from promptopt.evaluators._base import EvalResult, ExampleResult
from promptopt.evaluators._stats import (
    SuccessiveHalving,
    bootstrap_ci,
    paired_test,
    paired_test_by_id,
    race,
)
from promptopt.prompt import Candidate
from promptopt.task import Example

# --------------------------------------------------------------------------------------------
# bootstrap_ci
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time(method):
    true_mean, reps, hits = 0.6, 300, 0
    for rep in range(reps):
        data = np.random.default_rng(1000 + rep).normal(true_mean, 0.25, size=50)
        ci = bootstrap_ci(data, n_resamples=2000, seed=rep, method=method)
        assert ci.low <= ci.mean <= ci.high
        hits += ci.low <= true_mean <= ci.high
    coverage = hits / reps
    # Nominal 0.95; 300 replications give a standard error of ~0.013.
    assert 0.91 <= coverage <= 0.985, coverage


def test_bootstrap_ci_width_shrinks_with_n_and_is_reproducible():
    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.5, size=20).astype(float)
    big = rng.binomial(1, 0.5, size=2000).astype(float)
    ci_small, ci_big = bootstrap_ci(small), bootstrap_ci(big)
    assert (ci_big.high - ci_big.low) < (ci_small.high - ci_small.low) / 5
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    mean, low, high = bootstrap_ci([0.0, 1.0, 1.0, 1.0])  # unpacks as a tuple
    assert mean == 0.75 and low < 0.75 < high


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    assert tuple(bootstrap_ci([0.7])) == (0.7, 0.7, 0.7)
    assert tuple(bootstrap_ci([1.0, 1.0, 1.0])) == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ConfigError):
        bootstrap_ci([1.0, None])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        bootstrap_ci([1.0, 0.0], confidence=1.5)


def test_bca_shifts_the_interval_for_skewed_scores():
    data = np.random.default_rng(7).exponential(1.0, size=40)
    pct = bootstrap_ci(data, method="percentile")
    bca = bootstrap_ci(data, method="bca")
    assert pct.mean == bca.mean
    # Right-skewed data: BCa moves both ends up relative to the percentile interval.
    assert bca.low > pct.low and bca.high > pct.high


# --------------------------------------------------------------------------------------------
# paired_test
# --------------------------------------------------------------------------------------------


def _paired(seed: int, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.5, 0.2, size=n)  # per-example difficulty, shared by A and B
    a = base + shift + rng.normal(0, 0.1, size=n)
    b = base + rng.normal(0, 0.1, size=n)
    return a, b


@pytest.mark.parametrize("method", ["bootstrap", "permutation", "wilcoxon"])
def test_paired_test_detects_a_real_difference(method):
    a, b = _paired(0, 40, shift=0.15)
    res = paired_test(a, b, method=method, n_resamples=5000)
    assert res.p_value < 0.001
    assert res.significant
    assert res.n == 40
    assert res.ci_low < res.mean_diff < res.ci_high
    assert res.ci_low > 0.05  # the CI excludes zero, around the true 0.15
    assert res.mean_diff == pytest.approx(float(np.mean(a - b)))


@pytest.mark.parametrize("method", ["bootstrap", "permutation", "wilcoxon"])
def test_paired_test_false_positive_rate_is_near_alpha(method):
    reps = 150
    pvals = [paired_test(*_paired(100 + s, 30, shift=0.0), method=method, n_resamples=1000, seed=s).p_value for s in range(reps)]
    rate = float(np.mean(np.array(pvals) < 0.05))
    assert rate <= 0.1, rate
    assert float(np.median(pvals)) > 0.3  # p is roughly uniform under the null


def test_mcnemar_matches_the_hand_computed_exact_value():
    # 10 examples only A gets right, 2 only B gets right, 8 both right, 5 both wrong.
    a = [1] * 10 + [0] * 2 + [1] * 8 + [0] * 5
    b = [0] * 10 + [1] * 2 + [1] * 8 + [0] * 5
    res = paired_test(a, b, method="mcnemar")
    # Two-sided exact binomial: 2 * P(X <= 2 | n=12, p=1/2) = 2 * (1 + 12 + 66) / 4096.
    assert res.p_value == pytest.approx(158 / 4096, rel=1e-12)
    assert res.mean_diff == pytest.approx(8 / 25)
    assert paired_test([1, 0, 1], [1, 0, 1], method="mcnemar").p_value == 1.0
    # Large counts neither overflow nor underflow.
    big = paired_test([1] * 600 + [0] * 400, [0] * 600 + [1] * 400, method="mcnemar").p_value
    assert 0 < big < 1e-9
    with pytest.raises(ConfigError, match="0/1"):
        paired_test([0.5, 1.0], [1.0, 0.0], method="mcnemar")


def test_permutation_test_is_exact_for_small_samples():
    # Three positive differences: of the 8 sign patterns, 2 reach |sum| = 6.
    assert paired_test([3, 2, 1], [0, 0, 0], method="permutation").p_value == pytest.approx(2 / 8)
    assert paired_test([1, 1, 1, 1, 1], [0, 0, 0, 0, 0], method="permutation").p_value == pytest.approx(2 / 32)


def test_wilcoxon_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(5)
    a = rng.normal(0.3, 1, size=20)
    b = rng.normal(0, 1, size=20)
    assert paired_test(a, b, method="wilcoxon").p_value == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)
    # Graded scores with many ties and zero differences, n > 50: normal approximation.
    a = rng.integers(0, 5, size=120) / 4
    b = rng.integers(0, 5, size=120) / 4
    assert paired_test(a, b, method="wilcoxon").p_value == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)
    # Small samples with ties and zeros: exact over all sign patterns.
    for seed in range(4):
        r = np.random.default_rng(seed)
        a, b = r.integers(0, 4, size=10) / 3, r.integers(0, 4, size=10) / 3
        assert paired_test(a, b, method="wilcoxon").p_value == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-9)


def test_paired_test_edge_cases_and_errors():
    empty = paired_test([], [])
    assert empty.n == 0 and math.isnan(empty.p_value) and not empty.significant
    for method in ("bootstrap", "permutation", "wilcoxon"):
        one = paired_test([1.0], [0.0], method=method)
        assert one.p_value == 1.0 and one.mean_diff == 1.0
    assert paired_test([0.5, 0.2, 0.9], [0.5, 0.2, 0.9]).p_value == 1.0
    with pytest.raises(ConfigError, match="length"):
        paired_test([1.0, 0.0], [1.0])
    with pytest.raises(ConfigError, match="Unknown"):
        paired_test([1.0], [0.0], method="ttest")  # type: ignore[arg-type]


def test_paired_test_by_id_aligns_on_shared_scored_examples():
    a = {"x": 1.0, "y": 1.0, "z": 0.0, "only_a": 1.0, "failed": None}
    b = {"z": 1.0, "y": 0.0, "x": 0.0, "only_b": 0.0, "failed": 1.0}
    res = paired_test_by_id(a, b, method="permutation")
    assert res.n == 3
    assert res.mean_diff == pytest.approx((1 + 1 - 1) / 3)
    ev_a = EvalResult(Candidate("a"), [ExampleResult("x", 1.0), ExampleResult("y", None, error="timeout")])
    ev_b = EvalResult(Candidate("b"), [ExampleResult("x", 0.0), ExampleResult("y", 1.0)])
    assert paired_test_by_id(ev_a, ev_b).n == 1


# --------------------------------------------------------------------------------------------
# Successive halving
# --------------------------------------------------------------------------------------------


def _bernoulli_matrix(means: list[float], n_examples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((len(means), n_examples)) < np.array(means)[:, None]).astype(float)


def _drive(sh: SuccessiveHalving, matrix: np.ndarray, ids: list[str]) -> None:
    col = {eid: j for j, eid in enumerate(ids)}
    while not sh.done:
        batch = sh.next_batch()
        sh.tell({c: {e: float(matrix[c, col[e]]) for e in eids} for c, eids in batch})


def test_racing_keeps_the_best_bernoulli_candidate_at_a_fraction_of_the_cost():
    means = [0.25 + 0.02 * i for i in range(15)] + [0.8]  # the best is last: no index advantage
    ids = [f"ex{i}" for i in range(200)]
    wins = 0
    for seed in range(40):
        matrix = _bernoulli_matrix(means, len(ids), seed)
        sh = SuccessiveHalving(len(means), ids, min_batch=10, eta=2, seed=seed)
        _drive(sh, matrix, ids)
        wins += sh.winner == 15
        # 16x10 + 8x10 + 4x20 + 2x40 (cumulative 10, 20, 40, 80 examples).
        assert sh.n_evaluations == 400
        assert [len(r.candidates) for r in sh.rounds] == [16, 8, 4, 2]
        assert [r.n_examples for r in sh.rounds] == [10, 20, 40, 80]
    assert wins >= 36  # >= 90%
    assert 400 < 16 * 200 / 5  # full evaluation costs 3200 calls


def test_eta_three_keeps_a_third():
    ids = [str(i) for i in range(100)]
    matrix = _bernoulli_matrix([0.1 * i for i in range(9)], 100, 0)
    sh = SuccessiveHalving(9, ids, min_batch=5, eta=3, shuffle=False)
    _drive(sh, matrix, ids)
    assert [len(r.candidates) for r in sh.rounds] == [9, 3]
    assert [r.n_examples for r in sh.rounds] == [5, 15]
    assert sh.n_evaluations == 9 * 5 + 3 * 10


def test_ties_are_broken_by_lower_index_and_batches_are_shared():
    ids = ["a", "b", "c", "d"]
    sh = SuccessiveHalving(4, ids, min_batch=2, eta=2, shuffle=False)
    batch = sh.next_batch()
    assert batch == sh.next_batch()  # asking again returns the same pending batch
    assert [c for c, _ in batch] == [0, 1, 2, 3]
    assert all(eids == ["a", "b"] for _, eids in batch)
    sh.tell({0: {"a": 0.0, "b": 1.0}, 1: {"a": 1.0, "b": 0.0}, 2: {"a": 1.0, "b": 0.0}, 3: {"a": 0.0, "b": 0.0}})
    assert sh.survivors == [0, 1]
    assert sh.rounds[0].dropped_by_halving == [2, 3]
    batch = sh.next_batch()
    assert batch == [(0, ["c", "d"]), (1, ["c", "d"])]
    sh.tell({0: {"c": 1.0, "d": 1.0}, 1: {"c": 1.0, "d": 1.0}})
    assert sh.done and sh.winner == 0


def test_running_out_of_examples_ends_the_race_with_the_best_mean():
    ids = [str(i) for i in range(12)]
    sh = SuccessiveHalving(8, ids, min_batch=4, eta=2, shuffle=False)
    matrix = np.zeros((8, 12))
    matrix[5, :] = 1.0
    matrix[6, :6] = 1.0
    _drive(sh, matrix, ids)
    # Rounds ask for cumulative 4, 8, 12 examples; the last takes what is left.
    assert [r.n_examples for r in sh.rounds] == [4, 8, 12]
    assert sh.winner == 5
    assert sh.next_batch() == []


def test_failed_examples_are_left_out_of_the_mean():
    sh = SuccessiveHalving(2, ["a", "b", "c"], min_batch=3, shuffle=False)
    with pytest.raises(ConfigError, match="next_batch"):
        sh.tell({0: {}, 1: {}})
    sh.next_batch()
    sh.tell({0: {"a": 1.0, "b": None}, 1: {"a": 0.5, "b": 0.5, "c": 0.5}})
    assert sh.means() == {0: 1.0, 1: 0.5}
    assert sh.n_scored() == {0: 1, 1: 3}
    assert sh.winner == 0


def test_tell_refuses_scores_that_do_not_match_the_batch():
    sh = SuccessiveHalving(2, ["a", "b", "c", "d"], min_batch=2, shuffle=False)
    sh.next_batch()
    with pytest.raises(ConfigError, match="pending"):
        sh.tell({0: {"a": 1.0}})
    with pytest.raises(ConfigError, match="not in its batch"):
        sh.tell({0: {"c": 1.0}, 1: {"a": 1.0}})
    with pytest.raises(ConfigError, match="finite"):
        sh.tell({0: {"a": float("nan")}, 1: {"a": 1.0}})


def test_hoeffding_rule_drops_hopeless_candidates_beyond_the_halving_quota():
    ids = [str(i) for i in range(80)]
    matrix = np.zeros((4, 80))
    matrix[0, :] = 1.0
    plain = SuccessiveHalving(4, ids, min_batch=20, shuffle=False)
    _drive(plain, matrix, ids)
    raced = SuccessiveHalving(4, ids, min_batch=20, shuffle=False, drop_rule="hoeffding")
    _drive(raced, matrix, ids)
    assert plain.winner == raced.winner == 0
    assert plain.n_evaluations == 4 * 20 + 2 * 20
    assert raced.n_evaluations == 4 * 20
    assert raced.rounds[0].dropped_by_bound == [1, 2, 3]


def test_drop_rules_keep_candidates_they_cannot_separate():
    ids = [str(i) for i in range(40)]
    matrix = _bernoulli_matrix([0.5, 0.5, 0.5, 0.5], 40, 3)
    for rule in ("hoeffding", "bernstein"):
        sh = SuccessiveHalving(4, ids, min_batch=10, drop_rule=rule)
        _drive(sh, matrix, ids)
        assert all(not r.dropped_by_bound for r in sh.rounds)


def test_bernstein_rule_separates_low_variance_scores():
    ids = [str(i) for i in range(200)]
    matrix = np.full((4, 200), 0.6)
    matrix[0, :] = 0.8
    sh = SuccessiveHalving(4, ids, min_batch=200, drop_rule="bernstein")
    hoeff = SuccessiveHalving(4, ids, min_batch=200, drop_rule="hoeffding", score_range=(0.0, 1.0))
    _drive(sh, matrix, ids)
    _drive(hoeff, matrix, ids)
    # Same data, same confidence: only the variance-aware bound can separate 0.8 from 0.6 here.
    assert sh.rounds[0].dropped_by_bound == [1, 2, 3]
    assert hoeff.rounds[0].dropped_by_bound == []
    assert sh.winner == hoeff.winner == 0
    with pytest.raises(ConfigError, match="score_range"):
        bad = SuccessiveHalving(2, ["a"], min_batch=1, drop_rule="hoeffding")
        bad.next_batch()
        bad.tell({0: {"a": 3.0}, 1: {"a": 0.0}})


def test_state_round_trips_through_json_mid_race():
    ids = [f"e{i}" for i in range(60)]
    matrix = _bernoulli_matrix([0.2, 0.4, 0.5, 0.6, 0.7, 0.3], 60, 11)
    col = {e: j for j, e in enumerate(ids)}
    a = SuccessiveHalving(6, ids, min_batch=5, seed=4, drop_rule="hoeffding")
    batch = a.next_batch()
    a.tell({c: {e: float(matrix[c, col[e]]) for e in eids} for c, eids in batch})
    b = SuccessiveHalving.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b.to_dict() == a.to_dict()
    assert b.next_batch() == a.next_batch()
    _drive(a, matrix, ids)
    _drive(b, matrix, ids)
    assert a.winner == b.winner and a.n_evaluations == b.n_evaluations


def test_single_candidate_needs_no_race_and_bad_configs_are_refused():
    sh = SuccessiveHalving(1, ["a"], min_batch=1)
    assert sh.done and sh.winner == 0 and sh.next_batch() == []
    with pytest.raises(ConfigError):
        SuccessiveHalving(3, [], min_batch=1)
    with pytest.raises(ConfigError):
        SuccessiveHalving(3, ["a", "a"], min_batch=1)
    with pytest.raises(ConfigError):
        SuccessiveHalving(3, ["a"], min_batch=1, eta=1)
    with pytest.raises(ConfigError):
        SuccessiveHalving(3, ["a"], min_batch=0)


def test_race_drives_an_evaluator_returning_eval_results():
    examples = [Example(id=f"q{i}", inputs={"input": str(i)}, output=str(i)) for i in range(64)]
    quality = {"bad": 0.0, "meh": 0.5, "good": 1.0, "worse": 0.1}
    candidates = [Candidate(name) for name in quality]
    calls: list[tuple[int, int]] = []

    def evaluate(cands, exs):
        calls.append((len(cands), len(exs)))
        out = []
        for cand in cands:
            q = quality[cand.instruction]
            results = [ExampleResult(ex.id, float(int(ex.id[1:]) % 10 < q * 10)) for ex in exs]
            out.append(EvalResult(cand, results))
        return out

    res = race(evaluate, candidates, examples, min_batch=8, eta=2, seed=1)
    assert res.winner.instruction == "good" and res.winner_index == 2
    assert calls == [(4, 8), (2, 8)]  # one batched call per round
    assert res.n_evaluations == 48 and res.full_cost == 256
    assert res.means[2] == 1.0


def test_race_accepts_score_lists_and_checks_their_shape():
    def evaluate(cands, exs):
        return [[float(c) for _ in exs] for c in cands]

    res = race(evaluate, [0.1, 0.9, 0.5], ["x", "y", "z", "w"], min_batch=2, shuffle=False)
    assert res.winner == 0.9

    with pytest.raises(ConfigError, match="one score per example"):
        race(lambda cands, exs: [[1.0] for _ in cands], [0, 1], ["x", "y"], min_batch=2)
    with pytest.raises(ConfigError, match="per candidate"):
        race(lambda cands, exs: [], [0, 1], ["x", "y"], min_batch=2)
