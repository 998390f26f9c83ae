"""The one optimization loop: ask, evaluate, record, tell.

Resume is replay: the loop restarts the strategy from step 0 against the same store. Every
(candidate, split, example) already stored is read back instead of evaluated, and proposer
calls come back from the LM cache, so a resumed run does no paid work twice and, given the
same seed, ends in the same state as an uninterrupted one. The budget counts the evaluations
*touched* in this execution (stored or new), so replay spends it exactly as the first run did.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from promptopt.errors import BudgetExceeded, ConfigError, PromptOptError
from promptopt.evaluators._base import EvalResult, Evaluator, ExampleResult
from promptopt.lm._types import LM
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, examples_by_id, make_strategy
from promptopt.prompt import Candidate
from promptopt.store._base import CandidateRecord, Storage
from promptopt.task import Task

__all__ = ["optimize", "resume", "OptimizationResult", "TestScore", "Callback"]

Callback = Callable[["StepInfo"], "bool | None"]
"""Called after every step; returning True stops the run (status 'completed', reason 'callback')."""


@dataclass
class StepInfo:
    run_id: str
    step: int
    n_candidates: int
    evaluations_used: int
    budget: int | None
    best_hash: str | None
    best_val_score: float
    history: History


@dataclass
class TestScore:
    score: float
    ci_low: float
    ci_high: float
    n: int
    n_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"test_score": _nan_to_none(self.score), "ci": [_nan_to_none(self.ci_low), _nan_to_none(self.ci_high)], "n": self.n, "n_errors": self.n_errors}


@dataclass
class OptimizationResult:
    run_id: str
    strategy: str
    status: str
    best: Candidate | None
    best_val_score: float
    baseline: Candidate
    baseline_test: TestScore | None
    best_test: TestScore | None
    ledger: dict[str, Any] = field(default_factory=dict)
    n_candidates: int = 0
    evaluations_used: int = 0
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The shape of ``promptopt optimize --json-out``."""
        return {
            "run_id": self.run_id,
            "strategy": self.strategy,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "baseline": {**(self.baseline_test.to_dict() if self.baseline_test else {"test_score": None, "ci": [None, None]}), "candidate": self.baseline.to_dict()},
            "best": {
                **(self.best_test.to_dict() if self.best_test else {"test_score": None, "ci": [None, None]}),
                "val_score": _nan_to_none(self.best_val_score),
                "candidate": self.best.to_dict() if self.best else None,
            },
            "n_candidates": self.n_candidates,
            "evaluations_used": self.evaluations_used,
            "ledger": {k: self.ledger.get(k, 0) for k in ("calls", "cache_hits", "failed_calls", "prompt_tokens", "completion_tokens", "cost_usd", "seconds")},
        }

    @classmethod
    def from_summary(cls, summary: dict[str, Any]) -> "OptimizationResult":
        def test_score(d: dict[str, Any]) -> TestScore | None:
            if d.get("test_score") is None and not d.get("n"):
                return None
            low, high = d.get("ci") or [None, None]
            return TestScore(_none_to_nan(d.get("test_score")), _none_to_nan(low), _none_to_nan(high), d.get("n", 0), d.get("n_errors", 0))

        best = summary["best"]
        return cls(
            run_id=summary["run_id"],
            strategy=summary["strategy"],
            status=summary.get("status", ""),
            best=Candidate.from_dict(best["candidate"]) if best.get("candidate") else None,
            best_val_score=_none_to_nan(best.get("val_score")),
            baseline=Candidate.from_dict(summary["baseline"]["candidate"]),
            baseline_test=test_score(summary["baseline"]),
            best_test=test_score(best),
            ledger=summary.get("ledger", {}),
            n_candidates=summary.get("n_candidates", 0),
            evaluations_used=summary.get("evaluations_used", 0),
            stop_reason=summary.get("stop_reason", ""),
        )


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _none_to_nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


class _Loop:
    def __init__(
        self,
        *,
        task: Task,
        strategy: Strategy,
        evaluator: Evaluator,
        task_lm: LM,
        proposer_lm: LM,
        store: Storage,
        run_id: str,
        seed: int,
        budget: int | None,
        max_steps: int | None,
        baseline: Candidate,
        callbacks: Sequence[Callback],
        ledger: Any,
        judge: Any,
        progress: bool,
        evaluate_test: bool,
    ) -> None:
        self.task = task
        self.strategy = strategy
        self.evaluator = evaluator
        self.task_lm = task_lm
        self.proposer_lm = proposer_lm
        self.store = store
        self.run_id = run_id
        self.seed = seed
        self.budget = budget
        self.max_steps = max_steps
        self.baseline = baseline
        self.callbacks = list(callbacks)
        self.ledger = ledger
        self.judge = judge
        self.progress = progress and not os.environ.get("PROMPTOPT_NO_PROGRESS")
        self.evaluate_test = evaluate_test
        self.history = History(store, run_id, task)
        # Everything a previous execution of this run already stored: read back instead of
        # evaluated again. Failed evaluations are not reused: they are retried.
        self.stored: dict[tuple[str, str], dict[str, ExampleResult]] = {}
        for ev in store.get_evaluations(run_id):
            if not ev.result.failed:
                self.stored.setdefault((ev.candidate_hash, ev.split), {})[ev.result.example_id] = ev.result
        self.stored_candidates = {rec.hash for rec in store.get_candidates(run_id)}
        self.touched: set[tuple[str, str, str]] = set()
        self._bar: Any = None
        self._bar_task: Any = None

    # --- evaluation through the store ----------------------------------------------------
    @property
    def evaluations_used(self) -> int:
        return len(self.touched)

    def _remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.evaluations_used

    def evaluate_trials(self, trials: Sequence[Trial], *, count_budget: bool = True) -> list[EvalResult]:
        """Record each trial's candidate, evaluate what the store lacks, return full results.

        When the budget cannot cover a trial, it is evaluated on the examples that fit (in the
        order asked) and ``self.exhausted`` is set; strategies then see partial results."""
        plan: list[tuple[Trial, list[str]]] = []
        for trial in trials:
            self._record_candidate(trial)
            examples = examples_by_id(self.task, trial.split, trial.example_ids)
            ids = [e.id for e in examples]
            if count_budget:
                fitting = []
                for ex_id in ids:
                    key = (trial.candidate.hash, trial.split, ex_id)
                    if key in self.touched:
                        fitting.append(ex_id)
                        continue
                    remaining = self._remaining()
                    if remaining is not None and remaining <= 0:
                        self.exhausted = True
                        break
                    self.touched.add(key)
                    fitting.append(ex_id)
                ids = fitting
            plan.append((trial, ids))

        # Group work by split so that one LM batch holds every missing (candidate, example) pair:
        # the evaluator orders it candidate by candidate, so shared prompt prefixes run back to back.
        by_split: dict[str, dict[str, tuple[Candidate, list[str]]]] = {}
        for trial, ids in plan:
            seen = self.history.results(trial.candidate, trial.split)
            from_store = self.stored.get((trial.candidate.hash, trial.split), {})
            reused = [from_store[i] for i in ids if (i not in seen or seen[i].failed) and i in from_store]
            if reused:
                self.history._add_results(trial.candidate.hash, trial.split, reused)
                seen = self.history.results(trial.candidate, trial.split)
            missing = [i for i in ids if i not in seen or seen[i].failed]
            if not missing:
                continue
            entry = by_split.setdefault(trial.split, {}).setdefault(trial.candidate.hash, (trial.candidate, []))
            entry[1].extend(i for i in missing if i not in entry[1])

        for split, work in by_split.items():
            self._evaluate_missing(split, work)

        return [self.history.eval_result(trial.candidate, trial.split, ids) for trial, ids in plan]

    def _evaluate_missing(self, split: str, work: dict[str, tuple[Candidate, list[str]]]) -> None:
        # One evaluator call per group of candidates sharing the same example list keeps the batch
        # rectangular; the common case (all candidates on the same ids) is a single batch.
        groups: dict[tuple[str, ...], list[Candidate]] = {}
        for cand, ids in work.values():
            groups.setdefault(tuple(ids), []).append(cand)
        for ids, cands in groups.items():
            examples = examples_by_id(self.task, split, ids)
            try:
                results = self.evaluator.evaluate(cands, examples)
            except BudgetExceeded:
                raise
            for er in results:
                self.store.add_evaluations(self.run_id, er.candidate.hash, split, er.results)
                self.history._add_results(er.candidate.hash, split, er.results)
            self._advance_bar(len(ids) * len(cands))

    def _record_candidate(self, trial: Trial) -> None:
        if self.history.has(trial.candidate):
            return
        if trial.candidate.hash not in self.stored_candidates:
            self.stored_candidates.add(trial.candidate.hash)
            self.store.add_candidate(
                self.run_id,
                trial.candidate,
                parents=list(trial.parents),
                strategy=self.strategy.name,
                step=self.history.step,
                metadata=trial.metadata,
            )
        self.history._add_candidate(
            CandidateRecord(self.run_id, trial.candidate, list(trial.parents), self.strategy.name, self.history.step, dict(trial.metadata))
        )

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> OptimizationResult:
        self.exhausted = False
        context = StrategyContext(
            task=self.task,
            task_lm=self.task_lm,
            proposer_lm=self.proposer_lm,
            evaluator=self.evaluator,
            seed=self.seed,
            judge=self.judge,
            evaluate=self.evaluate_trials,
        )
        self.strategy.setup(context)
        self.store.update_run(self.run_id, status="running")
        stop_reason = "strategy_done"
        status = "completed"
        self._start_bar()
        try:
            step = 0
            while True:
                if self.max_steps is not None and step >= self.max_steps:
                    stop_reason = "max_steps"
                    break
                self.history.step = step
                trials = self.strategy.ask(self.history)
                if not trials:
                    break
                results = self.evaluate_trials(trials)
                self.strategy.tell(self.history, results)
                if self._run_callbacks(step):
                    stop_reason = "callback"
                    break
                if self.exhausted or (self.budget is not None and self._remaining() <= 0):  # type: ignore[operator]
                    stop_reason = "budget"
                    break
                step += 1
        except BudgetExceeded as exc:
            stop_reason = f"ledger_cap:{exc.cap}"
            if not self.history.candidates() or self.history.best() is None:
                self.store.update_run(self.run_id, status="budget_exhausted", summary={"stop_reason": stop_reason, "error": str(exc)})
                self._stop_bar()
                raise
        except BaseException:
            self._stop_bar()
            # A crash or Ctrl-C leaves status 'running'/'interrupted'; `resume` picks it up.
            try:
                self.store.update_run(self.run_id, status="interrupted")
            except Exception:  # noqa: BLE001 - never hide the original error
                pass
            raise
        self._stop_bar()
        return self._finish(status, stop_reason)

    def _run_callbacks(self, step: int) -> bool:
        if not self.callbacks:
            return False
        best = self.history.best()
        info = StepInfo(
            run_id=self.run_id,
            step=step,
            n_candidates=len(self.history.candidates()),
            evaluations_used=self.evaluations_used,
            budget=self.budget,
            best_hash=best.hash if best else None,
            best_val_score=self.history.score(best.hash) if best else math.nan,
            history=self.history,
        )
        return any(bool(cb(info)) for cb in self.callbacks)

    def _finish(self, status: str, stop_reason: str) -> OptimizationResult:
        from promptopt.evaluators._stats import bootstrap_ci

        best_rec = self.history.best()
        best = best_rec.candidate if best_rec else None
        baseline_test = best_test = None
        if self.evaluate_test:
            trials = [Trial(self.baseline, None, "test", metadata={"role": "baseline"})]
            if best is not None and best.hash != self.baseline.hash:
                trials.append(Trial(best, None, "test", metadata={"role": "best"}))
            try:
                results = self.evaluate_trials(trials, count_budget=False)
            except BudgetExceeded as exc:
                results = []
                stop_reason = f"{stop_reason}; test evaluation stopped by ledger cap {exc.cap}"
            scores = {}
            for er in results:
                mean, low, high = bootstrap_ci(er.scores, seed=self.seed)
                scores[er.candidate.hash] = TestScore(mean, low, high, len(er.results), er.n_errors)
            baseline_test = scores.get(self.baseline.hash)
            best_test = scores.get(best.hash) if best is not None else None
        result = OptimizationResult(
            run_id=self.run_id,
            strategy=self.strategy.name,
            status=status,
            best=best,
            best_val_score=self.history.score(best.hash) if best else math.nan,
            baseline=self.baseline,
            baseline_test=baseline_test,
            best_test=best_test,
            ledger=self.ledger.snapshot() if self.ledger is not None else {},
            n_candidates=len(self.history.candidates()),
            evaluations_used=self.evaluations_used,
            stop_reason=stop_reason,
        )
        self.store.update_run(self.run_id, status=status, summary=result.to_dict())
        return result

    # --- progress ----------------------------------------------------------------------
    def _start_bar(self) -> None:
        if not self.progress:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        self._bar.start()
        self._bar_task = self._bar.add_task(f"{self.strategy.name} {self.run_id}", total=self.budget)

    def _advance_bar(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._bar_task, n)

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _check_templates(task: Task, baseline: Candidate | None) -> None:
    """Fail at run start on a bad task or baseline template: the baseline is only evaluated at
    the end, after the search has spent its budget."""
    from promptopt._render import candidate_renderer, check_template

    sources = [task.metadata.get("input_template"), baseline.input_template if baseline is not None else None]
    if not any(isinstance(s, str) for s in sources):
        return
    examples = [*task.train, *task.val, *task.test]
    # A template may read any input field every example has (not only task.input_fields).
    fields = set.intersection(*(set(map(str, e.inputs)) for e in examples)) if examples else set(task.input_fields)
    for source in sources:
        if isinstance(source, str):
            check_template(source, fields)
    # Some unsafe operations (attribute filters, huge repetitions) are refused only while rendering.
    for candidate in [Candidate(), *([baseline] if baseline is not None else [])]:
        candidate_renderer(candidate, task)(examples[0].inputs)


class _LedgerSince:
    """The counters a shared ledger gained since this run started (a prebuilt LM may serve
    several runs, or a resumed run's earlier executions)."""

    def __init__(self, ledger: Any) -> None:
        self.ledger = ledger
        self.start = ledger.snapshot()

    def snapshot(self) -> dict[str, Any]:
        now = self.ledger.snapshot()
        return {k: v - self.start.get(k, 0) for k, v in now.items()}


def _default_baseline(task: Task, strategy: Strategy) -> Candidate:
    """Zero-shot with the first instruction the strategy was given (or the task description)."""
    instructions = getattr(strategy, "instructions", None) or []
    first = instructions[0] if instructions else task.description
    return Candidate(instruction=first or "")


def _open_store(store: Storage | str | None) -> Storage:
    from promptopt.store import open_store

    if isinstance(store, Storage):
        return store
    return open_store(store)


def optimize(
    task: Task,
    strategy: Strategy | str = "random_search",
    *,
    model: str | LM = "embedded",
    proposer_model: str | LM | None = None,
    judge_model: str | LM | None = None,
    budget: int | None = 200,
    store: Storage | str | None = None,
    seed: int = 0,
    run_name: str | None = None,
    baseline: Candidate | None = None,
    max_steps: int | None = None,
    callbacks: Iterable[Callback] = (),
    evaluator: Evaluator | None = None,
    cache: str | None | bool = True,
    ledger_caps: dict[str, float] | None = None,
    max_tokens: int = 64,
    progress: bool = True,
    evaluate_test: bool = True,
    strategy_params: dict[str, Any] | None = None,
) -> OptimizationResult:
    """Optimize a prompt for ``task`` with ``strategy``; return the best candidate and scores.

    ``budget``: task-model evaluations (one example scored by one candidate) the search may
    spend, store hits included (so a resumed run spends it identically). The final test
    evaluation of baseline and best is extra. ``ledger_caps``: hard caps on real spend
    (``max_calls``, ``max_tokens``, ``max_cost_usd``, ``max_seconds``) over every model.
    """
    task.validate()
    if budget is not None and budget <= 0:
        raise ConfigError(f"budget must be positive, got {budget}.", fix="Give a positive number of evaluations, or None for no limit.")
    _check_templates(task, baseline)
    strat = make_strategy(strategy, strategy_params) if isinstance(strategy, str) else strategy
    if isinstance(strategy, Strategy) and strategy_params:
        raise ConfigError("strategy_params given with a Strategy object.", fix="Pass parameters to the strategy's constructor instead.")
    storage = _open_store(store)
    config = {
        "task": task.metadata.get("source"),
        "task_name": task.name,
        "model": model if isinstance(model, str) else getattr(model, "identity", repr(model)),
        "proposer_model": (proposer_model if isinstance(proposer_model, str) or proposer_model is None else getattr(proposer_model, "identity", "")),
        "judge_model": (judge_model if isinstance(judge_model, str) or judge_model is None else getattr(judge_model, "identity", "")),
        "budget": budget,
        "max_steps": max_steps,
        "max_tokens": max_tokens,
        "ledger_caps": ledger_caps or {},
        "baseline": baseline.to_dict() if baseline is not None else None,
        "evaluate_test": evaluate_test,
    }
    run_id = storage.create_run(name=run_name or task.name, strategy=strat.name, strategy_params=strat.get_params(), config=config, seed=seed)
    try:
        return _execute(run_id, task, strat, storage, config, seed, model, proposer_model, judge_model, baseline, callbacks, evaluator, cache, progress)
    except ConfigError as exc:
        # A bad setting found before the loop started (ledger caps, model, strategy parameters):
        # close the run as failed with the reason, instead of leaving it 'created' forever.
        try:
            if storage.get_run(run_id).status == "created":
                storage.update_run(run_id, status="failed", summary={"stop_reason": "config_error", "error": exc.message})
        except PromptOptError:  # never hide the original error
            pass
        raise


def resume(
    run_id: str,
    *,
    store: Storage | str | None,
    task: Task | None = None,
    model: str | LM | None = None,
    proposer_model: str | LM | None = None,
    judge_model: str | LM | None = None,
    callbacks: Iterable[Callback] = (),
    evaluator: Evaluator | None = None,
    cache: str | None | bool = True,
    progress: bool = True,
) -> OptimizationResult:
    """Finish a run that stopped (crash, kill, Ctrl-C, budget) without redoing stored work.

    The strategy is rebuilt from its stored name and parameters; the task from its stored
    source spec (or ``task=`` when it was built in Python)."""
    storage = _open_store(store)
    run = storage.get_run(run_id)
    config = run.config
    if task is None:
        if not config.get("task"):
            raise ConfigError(
                f"Run {run.id} was started with a Task built in Python; its data source is unknown.",
                fix="Pass the same task again: resume(run_id, store=..., task=task).",
            )
        from promptopt.data import load_task

        task = load_task(**config["task"])
    strat = make_strategy(run.strategy, run.strategy_params)
    baseline = Candidate.from_dict(config["baseline"]) if config.get("baseline") else None
    return _execute(
        run.id,
        task,
        strat,
        storage,
        config,
        run.seed,
        model if model is not None else config["model"],
        proposer_model if proposer_model is not None else config.get("proposer_model"),
        judge_model if judge_model is not None else config.get("judge_model"),
        baseline,
        callbacks,
        evaluator,
        cache,
        progress,
    )


def _execute(
    run_id: str,
    task: Task,
    strategy: Strategy,
    storage: Storage,
    config: dict[str, Any],
    seed: int,
    model: str | LM,
    proposer_model: str | LM | None,
    judge_model: str | LM | None,
    baseline: Candidate | None,
    callbacks: Iterable[Callback],
    evaluator: Evaluator | None,
    cache: str | None | bool,
    progress: bool,
) -> OptimizationResult:
    from promptopt.evaluators import TaskEvaluator
    from promptopt.lm import Ledger, make_lm

    caps = config.get("ledger_caps") or {}
    ledger = Ledger(**caps)
    cache_arg: Any = None if cache is False or cache is None else (cache if isinstance(cache, str) else "default")

    def build(spec: str | LM | None, fallback: LM | None) -> LM | None:
        if spec is None:
            return fallback
        if isinstance(spec, str):
            return make_lm(spec, cache=cache_arg, ledger=ledger)
        return spec

    task_lm = build(model, None)
    assert task_lm is not None
    # A prebuilt LM stack (make_lm(...), or wrappers around a LedgeredLM) counts its calls in its
    # own ledger, not in the fresh one above: report what that ledger counted during this run.
    own_ledger = None if isinstance(model, str) else getattr(task_lm, "ledger", None)
    if isinstance(own_ledger, Ledger):
        ledger = _LedgerSince(own_ledger)  # type: ignore[assignment]
    # The same model string shares one backend (one embedded model in memory, one KV cache).
    proposer_lm = task_lm if proposer_model in (None, model) else build(proposer_model, task_lm)
    judge_lm = None if judge_model is None else (task_lm if judge_model == model else build(judge_model, task_lm))
    judge = None
    if judge_lm is not None:
        from promptopt.evaluators import PairwiseJudge

        judge = PairwiseJudge(judge_lm)
    evaluator = evaluator or TaskEvaluator(task, task_lm, max_tokens=int(config.get("max_tokens", 64)))
    base = baseline or _default_baseline(task, strategy)
    loop = _Loop(
        task=task,
        strategy=strategy,
        evaluator=evaluator,
        task_lm=task_lm,
        proposer_lm=proposer_lm,  # type: ignore[arg-type]
        store=storage,
        run_id=run_id,
        seed=seed,
        budget=config.get("budget"),
        max_steps=config.get("max_steps"),
        baseline=base,
        callbacks=list(callbacks),
        ledger=ledger,
        judge=judge,
        progress=progress,
        evaluate_test=bool(config.get("evaluate_test", True)),
    )
    return loop.run()
