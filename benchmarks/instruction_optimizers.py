"""Instruction optimizers (APE, PE2, OPRO) against the random-search baseline, on the embedded model.

For each instruction-induction task of ``../shared/data/instruction_induction`` (the APE paper's
data; ``$PROMPTOPT_SHARED_DATA`` overrides the folder): train = the task's ``induce`` pairs (what
instructions are induced from, and demos/exemplars drawn from), val/test = a seeded split of its
``execute`` examples (``--val``/``--test``). Every strategy runs with SmolLM2-135M-Instruct as both
task model and proposer, at the same budget of task-model evaluations (``--budget``: one example
scored by one candidate; PE2's runs on training examples to find failures count too). Then the
baseline (the empty instruction, zero-shot) and each strategy's best candidate are scored on the
test split, with 95% bootstrap confidence intervals. Reported per run: val/test accuracy, task-
model and proposer calls and tokens, wall time, and the proposals the parser could not read.

    python benchmarks/instruction_optimizers.py                       # 6 tasks, val 20, test 30, budget 120
    python benchmarks/instruction_optimizers.py --tasks antonyms,sentiment --budget 60 --no-write

Writes benchmarks/results/instruction_optimizers.json and prints a table. The strategies' settings
are scaled down from the papers' so that each fits the budget (they are written in the JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
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
from promptopt.optimizers import APE, OPRO, PE2, RandomSearch, Strategy  # noqa: E402
from promptopt.prompt import Candidate  # noqa: E402
from promptopt.run import optimize  # noqa: E402
from promptopt.store import open_store  # noqa: E402
from promptopt.task import Task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "instruction_optimizers.json"
DEFAULT_TASKS = ("antonyms", "sentiment", "singular_to_plural", "first_word_letter", "translation_en-fr", "sum")
STRATEGIES = ("random_search", "ape", "pe2", "opro")
# A human-written instruction per default task, in the style of the instruction-induction
# annotations: the ceiling a zero-shot instruction reaches on this task model, for reference only
# (no strategy sees it).
REFERENCE_INSTRUCTIONS = {
    "antonyms": "Write a word that means the opposite of the input word.",
    "sentiment": "Determine whether the movie review is positive or negative.",
    "singular_to_plural": "Convert the input word to its plural form.",
    "first_word_letter": "Extract the first letter of the input word.",
    "translation_en-fr": "Translate the English word into French.",
    "sum": "Sum the two given numbers.",
}
# The default tasks' answers are one line of a few tokens: stopping at the newline keeps a 135M
# model from rambling on (the time of a run is mostly generated tokens).
EVAL_MAX_TOKENS = 16
EVAL_STOP = ("\n",)


def data_root() -> Path:
    env = os.environ.get("PROMPTOPT_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def make_strategy(name: str, budget: int, n_val: int) -> Strategy:
    """Each strategy scaled to spend about ``budget`` evaluations on a ``n_val`` validation split."""
    full = max(1, budget // n_val)  # how many candidates can be scored on the whole split
    if name == "random_search":
        return RandomSearch(demo_counts=(0, 1, 2, 3, 4), n_candidates=full, batch_size=3)
    if name == "ape":
        # Forward induction (2 x 5 demos x 4 samples), UCB bandit on minibatches of 4 for half the
        # budget, then the 3 best completed on val (at most the other half).
        return APE(
            n_subsamples=2, demos_per_subsample=5, proposals_per_subsample=4, minibatch_size=4,
            bandit_budget=budget // 2, top_k=max(1, min(3, (budget - budget // 2) // n_val)),
        )
    if name == "pe2":
        # Induction init of 2, then 2 timestamps of beam 2 x 1 edit: 6 prompts on val. Failures
        # are read from validation results (train runs would eat the small budget).
        return PE2(
            n_init=2, demos_per_init=5, steps=2, beam_width=2, expansion=1, batch_size=2,
            failure_split="val", reasoning_max_tokens=192, max_tokens=64,
        )
    if name == "opro":
        # 8 samples per step at temperature 1.0 as in the paper; a fixed number of steps bounds the
        # proposer calls when few replies hold a bracketed instruction (the budget ends it otherwise).
        return OPRO(instructions=[""], steps=5, proposals_per_step=8, max_tokens=48)
    raise SystemExit(f"unknown strategy {name!r}; use {', '.join(STRATEGIES)}")


def score(evaluator: TaskEvaluator, candidate: Candidate, task: Task, seed: int) -> dict[str, Any]:
    result = evaluator.evaluate([candidate], task.test)[0]
    mean, low, high = bootstrap_ci(result.scores, seed=seed)
    return {"test": _num(mean), "ci": [_num(low), _num(high)], "n": len(result.results), "n_errors": result.n_errors}


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def run_task(name: str, args: argparse.Namespace, backend: LlamaCppLM, console: Console) -> dict[str, Any]:
    task = load_instruction_induction(name, data_root() / "instruction_induction", split=(args.val, args.test), seed=args.seed)
    test_ledger = Ledger()
    test_lm = LedgeredLM(LimitedLM(backend), test_ledger, name="test")
    evaluator = TaskEvaluator(task, test_lm, max_tokens=EVAL_MAX_TOKENS, stop=EVAL_STOP)
    baseline = Candidate(instruction="")
    tested: dict[str, dict[str, Any]] = {baseline.hash: score(evaluator, baseline, task, args.seed)}
    out: dict[str, Any] = {"n_train": len(task.train), "n_val": len(task.val), "n_test": len(task.test), "baseline": tested[baseline.hash], "runs": {}}
    if name in REFERENCE_INSTRUCTIONS:
        reference = Candidate(instruction=REFERENCE_INSTRUCTIONS[name])
        tested[reference.hash] = score(evaluator, reference, task, args.seed)
        out["reference"] = {"instruction": reference.instruction, **tested[reference.hash]}
    for strategy_name in args.strategies:
        strategy = make_strategy(strategy_name, args.budget, len(task.val))
        ledger = Ledger()
        task_lm = LedgeredLM(LimitedLM(backend), ledger, name="task")
        proposer_lm = LedgeredLM(LimitedLM(backend), ledger, name="proposer")
        store = open_store(None)
        started = time.perf_counter()
        res = optimize(
            task, strategy, model=task_lm, proposer_model=proposer_lm, budget=args.budget, store=store, seed=args.seed,
            baseline=baseline, cache=False, evaluate_test=False, progress=False,
            evaluator=TaskEvaluator(task, task_lm, max_tokens=EVAL_MAX_TOKENS, stop=EVAL_STOP),
        )
        wall = time.perf_counter() - started
        best = res.best or baseline
        if best.hash not in tested:
            tested[best.hash] = score(evaluator, best, task, args.seed)
        per_lm = ledger.by_lm()
        t, p = per_lm.get("task", {}), per_lm.get("proposer", {})
        events = store.get_events(res.run_id)
        run = {
            "val": _num(res.best_val_score),
            **tested[best.hash],
            "best_instruction": best.instruction,
            "best_n_demos": len(best.demos),
            "evaluations": res.evaluations_used,
            "task_calls": t.get("calls", 0),
            "task_tokens": t.get("prompt_tokens", 0) + t.get("completion_tokens", 0),
            "proposer_calls": p.get("calls", 0),
            "proposer_tokens": p.get("prompt_tokens", 0) + p.get("completion_tokens", 0),
            "wall_s": round(wall, 1),
            "n_candidates": res.n_candidates,
            "failed_proposals": sum(1 for e in events if e.kind == "failed_proposal"),
            "stop_reason": res.stop_reason,
            "params": strategy.get_params(),
        }
        out["runs"][strategy_name] = run
        console.print(
            f"  {name:<20} {strategy_name:<14} val {run['val']} test {run['test']} "
            f"calls {run['task_calls']}+{run['proposer_calls']} {run['wall_s']}s  {best.instruction[:60]!r}"
        )
    out["test_calls"] = test_ledger.snapshot()["calls"]
    return out


def summarise(results: dict[str, Any], strategies: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    tasks = results.values()
    base = [r["baseline"]["test"] for r in tasks if r["baseline"]["test"] is not None]
    summary["baseline"] = {"mean_test": _num(sum(base) / len(base)) if base else None}
    refs = [r["reference"]["test"] for r in tasks if "reference" in r and r["reference"]["test"] is not None]
    summary["human_instruction_reference"] = {"mean_test": _num(sum(refs) / len(refs)) if refs else None, "tasks": len(refs)}
    for s in strategies:
        tests = [r["runs"][s]["test"] for r in tasks if s in r["runs"] and r["runs"][s]["test"] is not None]
        deltas = [r["runs"][s]["test"] - r["baseline"]["test"] for r in tasks if s in r["runs"] and r["runs"][s]["test"] is not None and r["baseline"]["test"] is not None]
        summary[s] = {
            "mean_test": _num(sum(tests) / len(tests)) if tests else None,
            "mean_gain_over_baseline": _num(sum(deltas) / len(deltas)) if deltas else None,
            "tasks_above_baseline": sum(1 for d in deltas if d > 0),
            "mean_wall_s": _num(sum(r["runs"][s]["wall_s"] for r in tasks if s in r["runs"]) / max(1, len(tests))),
            "mean_proposer_calls": _num(sum(r["runs"][s]["proposer_calls"] for r in tasks if s in r["runs"]) / max(1, len(tests))),
            "failed_proposals": sum(r["runs"][s]["failed_proposals"] for r in tasks if s in r["runs"]),
        }
    return summary


def print_table(console: Console, results: dict[str, Any], strategies: list[str], budget: int) -> None:
    table = Table(title=f"Instruction optimizers on SmolLM2-135M (task = proposer), budget {budget} evaluations")
    for col in ("task", "strategy", "val", "test [95% CI]", "evals", "task calls/tokens", "proposer calls/tokens", "failed", "wall s"):
        table.add_column(col)
    for name, r in results.items():
        b = r["baseline"]
        table.add_row(name, "baseline (no instruction)", "", f"{b['test']:.2f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}]", "", "", "", "", "")
        if "reference" in r:
            h = r["reference"]
            table.add_row("", "human instruction (ref.)", "", f"{h['test']:.2f} [{h['ci'][0]:.2f}, {h['ci'][1]:.2f}]", "", "", "", "", "")
        for s in strategies:
            x = r["runs"].get(s)
            if not x:
                continue
            table.add_row(
                "", s, f"{x['val']:.2f}" if x["val"] is not None else "-",
                f"{x['test']:.2f} [{x['ci'][0]:.2f}, {x['ci'][1]:.2f}]" if x["test"] is not None else "-",
                str(x["evaluations"]), f"{x['task_calls']}/{x['task_tokens']}", f"{x['proposer_calls']}/{x['proposer_tokens']}",
                str(x["failed_proposals"]), f"{x['wall_s']:.0f}",
            )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS), help="comma-separated instruction-induction task names")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, from {', '.join(STRATEGIES)}")
    parser.add_argument("--budget", type=int, default=120, help="task-model evaluations per search")
    parser.add_argument("--val", type=int, default=20)
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    console = Console(width=200)
    backend = LlamaCppLM()
    backend.load()
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for name in args.tasks:
        console.print(f"[bold]{name}[/bold]")
        results[name] = run_task(name, args, backend, console)
    total = time.perf_counter() - started
    print_table(console, results, args.strategies, args.budget)
    summary = summarise(results, args.strategies)
    console.print(json.dumps(summary, indent=1))
    payload = {
        "benchmark": "instruction_optimizers",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": Path(backend.model_path).name,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                    "loadavg_start": [round(x, 2) for x in load_before], "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "config": {"tasks": args.tasks, "strategies": args.strategies, "budget": args.budget, "val": args.val, "test": args.test,
                   "seed": args.seed, "eval_max_tokens": EVAL_MAX_TOKENS, "eval_stop": list(EVAL_STOP), "baseline": "empty instruction, zero-shot",
                   "reference": "a human-written instruction per task, zero-shot (not seen by any strategy)"},
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
