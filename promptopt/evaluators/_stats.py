"""Statistics for comparing prompts: bootstrap intervals, paired tests, racing.

Everything here is numpy plus the standard library (``statistics.NormalDist`` for the normal
distribution), so it needs no optional dependency; the tests check the Wilcoxon test against
scipy where scipy is installed.

Scores are per-example numbers (usually in [0, 1]). A score of ``None`` means the example could
not be scored (the LM call failed): the functions taking mappings drop such examples; the ones
taking plain sequences refuse ``None``/NaN rather than guess.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Literal, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np

from promptopt.errors import ConfigError
from promptopt.evaluators._base import EvalResult

__all__ = [
    "ConfidenceInterval",
    "PairedTestResult",
    "bootstrap_ci",
    "paired_test",
    "paired_test_by_id",
    "SuccessiveHalving",
    "RaceRound",
    "RaceResult",
    "race",
]

_NORMAL = NormalDist()
# Resampling is done in chunks so that memory stays bounded (about 16 MB of indices) whatever
# the sample size and number of resamples.
_CHUNK_CELLS = 2_000_000

PairedMethod = Literal["bootstrap", "permutation", "wilcoxon", "mcnemar"]
DropRule = Literal["hoeffding", "bernstein"]


# --------------------------------------------------------------------------------------------
# Input checking
# --------------------------------------------------------------------------------------------


def _as_scores(scores: Sequence[float] | np.ndarray, what: str = "scores") -> np.ndarray:
    try:
        arr = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} must be a sequence of numbers ({exc}).",
            fix="Pass plain floats; drop examples whose score is None (failed calls) first, e.g. use EvalResult.scores.",
        ) from None
    if arr.ndim != 1:
        raise ConfigError(f"{what} must be one-dimensional, got shape {arr.shape}.", fix="Pass one score per example.")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(
            f"{what} contain NaN or infinite values.",
            fix="Drop examples that could not be scored (score None/NaN) before computing statistics.",
        )
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence={confidence} is not in (0, 1).", fix="Use e.g. confidence=0.95.")


def _check_resamples(n_resamples: int) -> None:
    if int(n_resamples) < 100:
        raise ConfigError(f"n_resamples={n_resamples} is too small.", fix="Use at least 100 resamples (10000 is the default).")


def _bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``x``."""
    n = len(x)
    out = np.empty(n_resamples)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = x[idx].mean(axis=1)
    return out


# --------------------------------------------------------------------------------------------
# Bootstrap confidence interval
# --------------------------------------------------------------------------------------------


class ConfidenceInterval(NamedTuple):
    """``(mean, low, high)``; unpacks like a tuple."""

    mean: float
    low: float
    high: float


def bootstrap_ci(
    scores: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    method: Literal["percentile", "bca"] = "percentile",
) -> ConfidenceInterval:
    """Bootstrap confidence interval of the mean score.

    ``method="percentile"``: the plain percentile bootstrap. ``"bca"``: bias-corrected and
    accelerated (Efron 1987), better coverage for skewed scores at small n. With n=0 every
    field is NaN; with n=1 (or constant scores) the interval collapses onto the mean, because
    resampling cannot show any spread there.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    if method not in ("percentile", "bca"):
        raise ConfigError(f"Unknown bootstrap method {method!r}.", fix="Use method='percentile' or method='bca'.")
    x = _as_scores(scores)
    n = len(x)
    if n == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1 or np.all(x == x[0]):
        return ConfidenceInterval(mean, mean, mean)
    rng = np.random.default_rng(seed)
    boot = _bootstrap_means(x, int(n_resamples), rng)
    alpha = 1.0 - confidence
    lo_q, hi_q = alpha / 2, 1.0 - alpha / 2
    if method == "bca":
        lo_q, hi_q = _bca_quantiles(x, boot, mean, lo_q, hi_q)
    low, high = np.quantile(boot, [lo_q, hi_q])
    return ConfidenceInterval(mean, float(low), float(high))


def _bca_quantiles(x: np.ndarray, boot: np.ndarray, mean: float, lo_q: float, hi_q: float) -> tuple[float, float]:
    # Bias correction: how far the bootstrap distribution's median sits from the estimate.
    # Half of the exact ties count as below so that discrete scores (0/1) are not biased.
    prop = (np.sum(boot < mean) + 0.5 * np.sum(boot == mean)) / len(boot)
    if not 0.0 < prop < 1.0:
        return lo_q, hi_q
    z0 = _NORMAL.inv_cdf(prop)
    # Acceleration from the jackknife; leave-one-out means have a closed form.
    n = len(x)
    jack = (x.sum() - x) / (n - 1)
    d = jack.mean() - jack
    denom = 6.0 * float(np.sum(d**2)) ** 1.5
    a = float(np.sum(d**3)) / denom if denom > 0 else 0.0

    z_lo, z_hi = z0 + _NORMAL.inv_cdf(lo_q), z0 + _NORMAL.inv_cdf(hi_q)
    if 1.0 - a * z_lo <= 0 or 1.0 - a * z_hi <= 0:
        # Extreme acceleration (a few outliers in a tiny sample): the BCa map is undefined.
        return lo_q, hi_q
    return _NORMAL.cdf(z0 + z_lo / (1.0 - a * z_lo)), _NORMAL.cdf(z0 + z_hi / (1.0 - a * z_hi))


# --------------------------------------------------------------------------------------------
# Paired tests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedTestResult:
    """A paired comparison of A and B on the same examples.

    ``mean_diff`` is mean(A - B); ``ci_low``/``ci_high`` its percentile-bootstrap interval
    (whatever the test); ``p_value`` is two-sided, for the null "A and B score the same".
    """

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    method: str
    confidence: float = 0.95

    @property
    def significant(self) -> bool:
        """p < 1 - confidence (False when there is no data)."""
        return bool(self.p_value < 1.0 - self.confidence)


def paired_test(
    scores_a: Sequence[float] | np.ndarray,
    scores_b: Sequence[float] | np.ndarray,
    *,
    method: PairedMethod = "bootstrap",
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedTestResult:
    """Two-sided paired test of A against B, scores aligned by position.

    - ``bootstrap``: resamples the differences after centring them on zero (the null), p is the
      share of resampled means at least as far from zero as the observed one.
    - ``permutation``: sign-flip test on the differences; exact (all sign patterns) when they
      number at most ``n_resamples``, Monte Carlo otherwise.
    - ``wilcoxon``: signed-rank test, zero differences dropped; exact null distribution when
      there are at most 50 non-zero differences without ties (13 with ties), normal approximation
      with tie correction otherwise (scipy's defaults).
    - ``mcnemar``: exact McNemar (binomial) test on the discordant pairs; scores must be 0/1.

    Monte Carlo p-values use the (k + 1) / (B + 1) estimate, which never reports p = 0.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    if method not in ("bootstrap", "permutation", "wilcoxon", "mcnemar"):
        raise ConfigError(
            f"Unknown paired test {method!r}.", fix="Use method='bootstrap', 'permutation', 'wilcoxon' or 'mcnemar'."
        )
    a = _as_scores(scores_a, "scores_a")
    b = _as_scores(scores_b, "scores_b")
    if len(a) != len(b):
        raise ConfigError(
            f"Paired scores differ in length ({len(a)} vs {len(b)}).",
            fix="Score both candidates on the same examples in the same order, or use paired_test_by_id.",
        )
    n = len(a)
    if n == 0:
        return PairedTestResult(math.nan, math.nan, math.nan, math.nan, 0, method, confidence)
    d = a - b
    ci = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, seed=seed)
    rng = np.random.default_rng(seed + 1)
    if method == "mcnemar":
        p = _mcnemar_p(a, b)
    elif n == 1:
        # A single pair cannot show a difference: every exact test gives p = 1 here.
        p = 1.0
    elif method == "bootstrap":
        p = _bootstrap_p(d, int(n_resamples), rng)
    elif method == "permutation":
        p = _sign_flip_p(d, int(n_resamples), rng)
    else:
        p = _wilcoxon_p(d)
    return PairedTestResult(ci.mean, ci.low, ci.high, float(min(1.0, p)), n, method, confidence)


def _scores_by_id(results: Mapping[str, float | None] | EvalResult) -> dict[str, float]:
    if isinstance(results, EvalResult):
        items = [(r.example_id, r.score) for r in results.results]
    else:
        items = list(results.items())
    return {str(k): float(v) for k, v in items if v is not None and not (isinstance(v, float) and math.isnan(v))}


def paired_test_by_id(
    results_a: Mapping[str, float | None] | EvalResult,
    results_b: Mapping[str, float | None] | EvalResult,
    **kwargs: Any,
) -> PairedTestResult:
    """:func:`paired_test` on the examples both sides scored, aligned by example id.

    Accepts ``{example_id: score}`` mappings or :class:`EvalResult` s; examples with a ``None``
    score (failed calls) on either side are left out.
    """
    sa, sb = _scores_by_id(results_a), _scores_by_id(results_b)
    ids = sorted(sa.keys() & sb.keys())
    return paired_test([sa[i] for i in ids], [sb[i] for i in ids], **kwargs)


def _tolerance(d: np.ndarray) -> float:
    # Sums of the same numbers in another order differ by rounding; count those as ties.
    return 1e-9 * max(1.0, float(np.abs(d).sum()))


def _bootstrap_p(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> float:
    observed = abs(float(d.mean()))
    centred = d - d.mean()
    if np.all(centred == 0):
        # Constant non-zero differences: no resample can reach the observed mean under the
        # null, so the estimate is its floor.
        return 1.0 if observed == 0 else 1.0 / (n_resamples + 1)
    boot = _bootstrap_means(centred, n_resamples, rng)
    k = int(np.sum(np.abs(boot) >= observed - _tolerance(d) / len(d)))
    return (k + 1) / (n_resamples + 1)


def _sign_flip_p(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> float:
    nz = d[d != 0]
    m = len(nz)
    if m == 0:
        return 1.0
    observed = abs(float(nz.sum()))
    tol = _tolerance(nz)
    if 2**m <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        stats = np.abs(signs @ nz)
        return float(np.mean(stats >= observed - tol))
    k = 0
    chunk = max(1, _CHUNK_CELLS // m)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        signs = rng.choice((-1.0, 1.0), size=(size, m))
        k += int(np.sum(np.abs(signs @ nz) >= observed - tol))
    return (k + 1) / (n_resamples + 1)


def _average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks 1..n with ties given their average rank, and the size of each tie group."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    boundaries = np.flatnonzero(np.diff(sx) != 0) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    ranks = np.empty(len(x))
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks, ends - starts


def _wilcoxon_p(d: np.ndarray) -> float:
    nz = d[d != 0]
    m = len(nz)
    if m == 0:
        return 1.0
    ranks, tie_sizes = _average_ranks(np.abs(nz))
    r_plus = float(ranks[nz > 0].sum())
    has_ties = bool(np.any(tie_sizes > 1))
    if not has_ties and m <= 50:
        # Exact null distribution of W+ over the 2^m sign patterns of ranks 1..m, by counting
        # subsets of {1..m} per sum (a polynomial product, O(m^3)).
        total = m * (m + 1) // 2
        counts = np.zeros(total + 1)
        counts[0] = 1.0
        for r in range(1, m + 1):
            counts[r:] = counts[r:] + counts[:-r].copy()
        probs = counts / counts.sum()
        w = int(round(r_plus))
        return float(min(1.0, 2.0 * min(probs[: w + 1].sum(), probs[w:].sum())))
    if has_ties and m <= 13:
        signs = np.array(list(itertools.product((1.0, 0.0), repeat=m)))
        stats = signs @ ranks
        mean = m * (m + 1) / 4.0
        dev = abs(r_plus - mean)
        return float(np.mean(np.abs(stats - mean) >= dev - 1e-9))
    mean = m * (m + 1) / 4.0
    var = m * (m + 1) * (2 * m + 1) / 24.0 - float(np.sum(tie_sizes**3 - tie_sizes)) / 48.0
    if var <= 0:
        return 1.0
    z = (r_plus - mean) / math.sqrt(var)
    return 2.0 * _NORMAL.cdf(-abs(z))


def _mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    binary = np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()
    if not binary:
        raise ConfigError(
            "The McNemar test needs 0/1 scores (correct/incorrect).",
            fix="Use method='bootstrap', 'permutation' or 'wilcoxon' for graded scores.",
        )
    n01 = int(np.sum((a == 1) & (b == 0)))
    n10 = int(np.sum((a == 0) & (b == 1)))
    k, n = min(n01, n10), n01 + n10
    if n == 0:
        return 1.0
    # Exact two-sided binomial tail under p = 1/2, summed in log space so that large counts
    # neither overflow nor underflow.
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    log_tail = float(np.logaddexp.reduce(log_terms)) - n * math.log(2.0)
    return min(1.0, 2.0 * math.exp(log_tail))


# --------------------------------------------------------------------------------------------
# Racing: successive halving over example batches
# --------------------------------------------------------------------------------------------


@dataclass
class RaceRound:
    """What one round did: who ran, on how many examples in all, and who was dropped why."""

    index: int
    candidates: list[int]
    n_examples: int
    n_new_examples: int
    dropped_by_bound: list[int] = field(default_factory=list)
    dropped_by_halving: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "candidates": list(self.candidates),
            "n_examples": self.n_examples,
            "n_new_examples": self.n_new_examples,
            "dropped_by_bound": list(self.dropped_by_bound),
            "dropped_by_halving": list(self.dropped_by_halving),
        }


class SuccessiveHalving:
    """Successive halving over examples (Jamieson & Talwalkar 2016; the inner loop of
    Hyperband), as an ask/tell state machine.

    Round r scores every surviving candidate on the next slice of examples, so that after it
    each survivor has been scored on the first ``min_batch * eta**r`` examples (the same
    examples for everyone: comparisons stay paired). Then only the best ``1/eta`` of the round's
    candidates by mean score stay (at least one; ties go to the lower candidate index). The race
    ends when one candidate remains or the examples run out; ``winner`` is then the survivor
    with the best mean.

    ``drop_rule`` adds a statistical elimination after each round, in the manner of Hoeffding
    races (Maron & Moore 1994) and F-race: a candidate whose upper confidence bound falls below
    the leader's lower bound is dropped at once, even beyond the halving quota. ``"hoeffding"``
    uses Hoeffding's bound on ``score_range``; ``"bernstein"`` the empirical Bernstein bound
    (Audibert et al. 2007), much tighter when scores vary little. The error probability
    ``1 - confidence`` is split over candidates and rounds (union bound).

    Example order is shuffled with ``seed`` (pass ``shuffle=False`` to keep the given order).
    A score of ``None`` (failed call) leaves that example out of the candidate's mean.
    """

    def __init__(
        self,
        n_candidates: int,
        example_ids: Sequence[str],
        *,
        min_batch: int,
        eta: int = 2,
        seed: int = 0,
        shuffle: bool = True,
        drop_rule: DropRule | None = None,
        confidence: float = 0.95,
        score_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if int(n_candidates) < 1:
            raise ConfigError(f"n_candidates={n_candidates}: nothing to race.", fix="Race at least one candidate.")
        ids = [str(i) for i in example_ids]
        if not ids:
            raise ConfigError("No examples to race on.", fix="Pass at least one example id.")
        if len(set(ids)) != len(ids):
            raise ConfigError("Duplicate example ids in the race.", fix="Give every example a unique id.")
        if int(min_batch) < 1:
            raise ConfigError(f"min_batch={min_batch} must be at least 1.", fix="Use e.g. min_batch=5.")
        if int(eta) < 2:
            raise ConfigError(f"eta={eta} must be at least 2.", fix="Use eta=2 (halving) or eta=3 (keep a third).")
        if drop_rule not in (None, "hoeffding", "bernstein"):
            raise ConfigError(f"Unknown drop_rule {drop_rule!r}.", fix="Use None, 'hoeffding' or 'bernstein'.")
        _check_confidence(confidence)
        lo, hi = float(score_range[0]), float(score_range[1])
        if not hi > lo:
            raise ConfigError(f"score_range={score_range} is empty.", fix="Pass (min, max) with max > min, e.g. (0, 1).")
        self.n_candidates = int(n_candidates)
        self.min_batch = int(min_batch)
        self.eta = int(eta)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_rule = drop_rule
        self.confidence = float(confidence)
        self.score_range = (lo, hi)
        self.example_ids: tuple[str, ...] = tuple(ids)
        order = list(ids)
        if self.shuffle:
            perm = np.random.default_rng(self.seed).permutation(len(order))
            order = [order[i] for i in perm]
        self.order: tuple[str, ...] = tuple(order)
        # Rounds halving alone needs to reach one survivor; the drop rule's union bound uses it.
        self.max_rounds = 0
        k = self.n_candidates
        while k > 1:
            k = max(1, k // self.eta)
            self.max_rounds += 1
        self._scores: dict[int, dict[str, float]] = {c: {} for c in range(self.n_candidates)}
        self._survivors: list[int] = list(range(self.n_candidates))
        self._round = 0
        self._n_seen = 0  # examples every survivor has been asked about
        self._n_evaluations = 0
        self._pending: list[tuple[int, list[str]]] | None = None
        self.rounds: list[RaceRound] = []

    # --- state ----------------------------------------------------------------------------
    @property
    def survivors(self) -> list[int]:
        return list(self._survivors)

    @property
    def done(self) -> bool:
        return len(self._survivors) <= 1 or self._n_seen >= len(self.order)

    @property
    def winner(self) -> int | None:
        """The best survivor once the race is done (None before)."""
        if not self.done:
            return None
        return self._ranked(self._survivors)[0]

    @property
    def leader(self) -> int:
        """The best survivor so far (by mean; index breaks ties)."""
        return self._ranked(self._survivors)[0]

    @property
    def n_evaluations(self) -> int:
        """(candidate, example) pairs asked for so far."""
        return self._n_evaluations

    @property
    def round(self) -> int:
        return self._round

    def means(self) -> dict[int, float]:
        """Mean score of every candidate over what it was scored on (NaN if nothing)."""
        return {c: self._mean(c) for c in range(self.n_candidates)}

    def n_scored(self) -> dict[int, int]:
        return {c: len(s) for c, s in self._scores.items()}

    def _mean(self, c: int) -> float:
        s = self._scores[c]
        return sum(s.values()) / len(s) if s else math.nan

    def _ranked(self, cands: Sequence[int]) -> list[int]:
        def key(c: int) -> tuple[float, int]:
            m = self._mean(c)
            return (-m if not math.isnan(m) else math.inf, c)

        return sorted(cands, key=key)

    # --- ask/tell -------------------------------------------------------------------------
    def _target(self) -> int:
        return min(len(self.order), self.min_batch * self.eta**self._round)

    def next_batch(self) -> list[tuple[int, list[str]]]:
        """The (candidate index, example ids) pairs to score this round; [] when done.
        Asking again before :meth:`tell` returns the same batch."""
        if self.done:
            return []
        if self._pending is None:
            new_ids = list(self.order[self._n_seen : self._target()])
            self._pending = [(c, list(new_ids)) for c in self._survivors]
        return [(c, list(ids)) for c, ids in self._pending]

    def tell(self, scores: Mapping[int, Mapping[str, float | None]]) -> None:
        """Record the scores of the pending batch: ``{candidate: {example_id: score}}``.

        Every pending candidate must be present; example ids outside its batch are refused.
        ``None`` (or an id left out) means the example could not be scored."""
        if self._pending is None:
            raise ConfigError("tell() called with no batch pending.", fix="Call next_batch() first, then tell() its scores.")
        pending = dict(self._pending)
        missing = sorted(set(pending) - set(scores))
        extra = sorted(set(scores) - set(pending))
        if missing or extra:
            raise ConfigError(
                f"tell() got candidates {sorted(scores)} but the pending batch is {sorted(pending)}.",
                fix="Pass the scores of exactly the candidates next_batch() returned.",
            )
        lo, hi = self.score_range
        for c, ex_scores in scores.items():
            allowed = set(pending[c])
            for eid, s in ex_scores.items():
                if eid not in allowed:
                    raise ConfigError(
                        f"Candidate {c} got a score for example {eid!r}, which is not in its batch.",
                        fix="Report only the example ids next_batch() asked for.",
                    )
                if s is None:
                    continue
                s = float(s)
                if not math.isfinite(s):
                    raise ConfigError(f"Score {s} for candidate {c}, example {eid!r} is not finite.", fix="Pass None for examples that could not be scored.")
                if self.drop_rule is not None and not lo - 1e-9 <= s <= hi + 1e-9:
                    raise ConfigError(
                        f"Score {s} is outside score_range={self.score_range}, which the {self.drop_rule} bound relies on.",
                        fix="Set score_range to the true range of the metric.",
                    )
                self._scores[int(c)][eid] = s
        batch_size = len(self._pending[0][1])
        self._n_evaluations += batch_size * len(self._pending)
        self._n_seen += batch_size
        self._pending = None
        self._advance(batch_size)

    def _advance(self, batch_size: int) -> None:
        before = list(self._survivors)
        record = RaceRound(self._round, before, self._n_seen, batch_size)
        alive = before
        if self.drop_rule is not None and len(alive) > 1:
            alive = self._drop_by_bound(alive)
            record.dropped_by_bound = [c for c in before if c not in alive]
        keep = max(1, len(before) // self.eta)
        if self._n_seen >= len(self.order):
            # Out of examples: nothing left to learn, stop halving; winner is the best mean.
            keep = len(alive)
        ranked = self._ranked(alive)
        self._survivors = sorted(ranked[:keep])
        record.dropped_by_halving = [c for c in ranked[keep:]]
        self.rounds.append(record)
        self._round += 1

    def _half_width(self, c: int, delta: float) -> float:
        s = list(self._scores[c].values())
        n = len(s)
        if n == 0:
            return math.inf
        span = self.score_range[1] - self.score_range[0]
        log_term = math.log(3.0 / delta) if self.drop_rule == "bernstein" else math.log(2.0 / delta)
        if self.drop_rule == "hoeffding":
            return span * math.sqrt(log_term / (2.0 * n))
        var = float(np.var(s))
        return math.sqrt(2.0 * var * log_term / n) + 3.0 * span * log_term / n

    def _drop_by_bound(self, alive: list[int]) -> list[int]:
        delta = (1.0 - self.confidence) / (self.n_candidates * max(1, self.max_rounds))
        bounds = {c: (self._mean(c), self._half_width(c, delta)) for c in alive}
        leader = self._ranked(alive)[0]
        m_lead, h_lead = bounds[leader]
        leader_low = m_lead - h_lead
        kept = [c for c in alive if c == leader or not (bounds[c][0] + bounds[c][1] < leader_low)]
        return kept

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe state; :meth:`from_dict` restores it exactly (for resuming a run)."""
        return {
            "n_candidates": self.n_candidates,
            "example_ids": list(self.example_ids),
            "min_batch": self.min_batch,
            "eta": self.eta,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_rule": self.drop_rule,
            "confidence": self.confidence,
            "score_range": list(self.score_range),
            "scores": {str(c): dict(s) for c, s in self._scores.items()},
            "survivors": list(self._survivors),
            "round": self._round,
            "n_seen": self._n_seen,
            "n_evaluations": self._n_evaluations,
            "rounds": [r.to_dict() for r in self.rounds],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SuccessiveHalving":
        sh = cls(
            data["n_candidates"],
            data["example_ids"],
            min_batch=data["min_batch"],
            eta=data["eta"],
            seed=data["seed"],
            shuffle=data["shuffle"],
            drop_rule=data["drop_rule"],
            confidence=data["confidence"],
            score_range=tuple(data["score_range"]),  # type: ignore[arg-type]
        )
        sh._scores = {int(c): {str(k): float(v) for k, v in s.items()} for c, s in data["scores"].items()}
        sh._survivors = [int(c) for c in data["survivors"]]
        sh._round = int(data["round"])
        sh._n_seen = int(data["n_seen"])
        sh._n_evaluations = int(data["n_evaluations"])
        sh.rounds = [RaceRound(**r) for r in data["rounds"]]
        return sh


C = TypeVar("C")
E = TypeVar("E")


@dataclass
class RaceResult:
    """The outcome of :func:`race`. ``full_cost`` is what scoring every candidate on every
    example would have taken, for comparison with ``n_evaluations``."""

    winner_index: int
    winner: Any
    survivors: list[int]
    means: dict[int, float]
    n_scored: dict[int, int]
    n_evaluations: int
    full_cost: int
    rounds: list[RaceRound]


EvaluateFn = Callable[[list[Any], list[Any]], Sequence[Any]]


def _example_id(example: Any, index: int) -> str:
    eid = getattr(example, "id", None)
    return str(eid) if eid is not None else str(index)


def race(
    evaluate_fn: EvaluateFn,
    candidates: Sequence[C],
    examples: Sequence[E],
    *,
    min_batch: int,
    eta: int = 2,
    seed: int = 0,
    shuffle: bool = True,
    drop_rule: DropRule | None = None,
    confidence: float = 0.95,
    score_range: tuple[float, float] = (0.0, 1.0),
) -> RaceResult:
    """Race ``candidates`` on ``examples`` with :class:`SuccessiveHalving` and return the winner.

    ``evaluate_fn(candidates, examples)`` scores the given candidates on the given examples in
    one go (an :class:`~promptopt.evaluators.Evaluator`'s ``evaluate`` fits) and returns, per
    candidate in order, either an :class:`EvalResult` (matched by example id) or a sequence of
    scores aligned with the examples (``None`` = could not be scored). Examples are identified
    by their ``id`` attribute when they have one, else by position.
    """
    ids = [_example_id(e, i) for i, e in enumerate(examples)]
    by_id = dict(zip(ids, examples))
    sh = SuccessiveHalving(
        len(candidates),
        ids,
        min_batch=min_batch,
        eta=eta,
        seed=seed,
        shuffle=shuffle,
        drop_rule=drop_rule,
        confidence=confidence,
        score_range=score_range,
    )
    while not sh.done:
        batch = sh.next_batch()
        cand_idx = [c for c, _ in batch]
        batch_ids = batch[0][1]
        results = evaluate_fn([candidates[c] for c in cand_idx], [by_id[i] for i in batch_ids])
        if len(results) != len(cand_idx):
            raise ConfigError(
                f"evaluate_fn returned {len(results)} results for {len(cand_idx)} candidates.",
                fix="Return one result (EvalResult or list of scores) per candidate, in order.",
            )
        told: dict[int, dict[str, float | None]] = {}
        for c, res in zip(cand_idx, results):
            if isinstance(res, EvalResult):
                got = {r.example_id: r.score for r in res.results}
                told[c] = {i: got.get(i) for i in batch_ids}
            else:
                vals = list(res)
                if len(vals) != len(batch_ids):
                    raise ConfigError(
                        f"evaluate_fn returned {len(vals)} scores for {len(batch_ids)} examples.",
                        fix="Return one score per example, aligned with the examples passed in.",
                    )
                told[c] = dict(zip(batch_ids, vals))
        sh.tell(told)
    win = sh.winner
    assert win is not None  # done implies a winner
    return RaceResult(
        winner_index=win,
        winner=candidates[win],
        survivors=sh.survivors,
        means=sh.means(),
        n_scored=sh.n_scored(),
        n_evaluations=sh.n_evaluations,
        full_cost=len(candidates) * len(ids),
        rounds=list(sh.rounds),
    )
