"""Framework overhead of the optimization loop, and store write/read rates.

(1) Loop: random search with a zero-latency scripted LM; time per evaluated example spent by
    promptopt itself (rendering, batching, parsing, scoring, store writes, history). Target < 1 ms.
(2) Store: 10,000 candidates with 50 evaluations each, written then read back, for the in-memory
    and SQLite stores.

Usage: python benchmarks/loop_overhead.py [--candidates 10000] [--evals 50]
Writes benchmarks/results/loop_overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PROMPTOPT_NO_PROGRESS", "1")

from rich.console import Console
from rich.table import Table

from promptopt.evaluators._base import ExampleResult
from promptopt.lm._scripted import ScriptedLM
from promptopt.optimizers import RandomSearch
from promptopt.prompt import Candidate, Demo
from promptopt.run import optimize
from promptopt.store import open_store
from promptopt.task import Example, Task

OUT = pathlib.Path(__file__).resolve().parent / "results" / "loop_overhead.json"


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def bench_loop(store_spec: str | None, n_examples: int = 400, n_candidates: int = 40) -> dict[str, float]:
    examples = [Example(id=f"e{i}", inputs={"input": f"text number {i} is {'good' if i % 2 else 'bad'}"}, output="positive" if i % 2 else "negative") for i in range(n_examples)]
    task = Task.from_examples("overhead", examples, split=(0.1, 0.6, 0.3), seed=0)
    lm = ScriptedLM(lambda req: "positive")
    strat = RandomSearch(instructions=["Classify."], demo_counts=[0, 2, 4], n_candidates=n_candidates, batch_size=8)
    t0 = time.perf_counter()
    res = optimize(task, strat, model=lm, budget=None, store=store_spec and open_store(store_spec), cache=False, evaluate_test=True, progress=False)
    elapsed = time.perf_counter() - t0
    n_evals = lm.n_calls
    return {"examples_evaluated": n_evals, "seconds": elapsed, "ms_per_example": 1000 * elapsed / n_evals, "candidates": res.n_candidates}


def bench_store(spec: str | None, n_candidates: int, n_evals: int) -> dict[str, float]:
    store = open_store(spec)
    run_id = store.create_run(name="bench", strategy="bench", strategy_params={}, config={}, seed=0)
    cands = [Candidate(instruction=f"instruction {i}", demos=(Demo.make({"input": f"x{i}"}, "y"),)) for i in range(n_candidates)]
    t0 = time.perf_counter()
    for c in cands:
        store.add_candidate(run_id, c, strategy="bench")
    t_cand = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in cands:
        store.add_evaluations(
            run_id, c.hash, "val",
            [ExampleResult(example_id=f"e{j}", score=float(j % 2), output="positive", prediction="positive", prompt_tokens=30, completion_tokens=2) for j in range(n_evals)],
        )
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    got_c = store.get_candidates(run_id)
    got_e = store.get_evaluations(run_id)
    t_read = time.perf_counter() - t0
    assert len(got_c) == n_candidates and len(got_e) == n_candidates * n_evals
    store.close()
    rows = n_candidates * n_evals
    return {
        "candidates_written_per_s": n_candidates / t_cand,
        "evaluations_written_per_s": rows / t_eval,
        "rows_read_per_s": (rows + n_candidates) / t_read,
        "write_seconds": t_cand + t_eval,
        "read_seconds": t_read,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--evals", type=int, default=50)
    args = ap.parse_args()
    results: dict[str, object] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        results["loop_memory"] = bench_loop(None)
        results["loop_sqlite"] = bench_loop(str(pathlib.Path(tmp) / "loop.sqlite"))
        results["store_memory"] = bench_store(None, args.candidates, args.evals)
        results["store_sqlite"] = bench_store(str(pathlib.Path(tmp) / "store.sqlite"), args.candidates, args.evals)
    results["targets"] = {"ms_per_example": "< 1.0"}
    results["meets_target"] = max(results["loop_memory"]["ms_per_example"], results["loop_sqlite"]["ms_per_example"]) < 1.0  # type: ignore[index]

    table = Table(title=f"loop overhead ({args.candidates} candidates x {args.evals} evals for the store)")
    table.add_column("measure")
    table.add_column("memory", justify="right")
    table.add_column("sqlite", justify="right")
    lm_, ls_ = results["loop_memory"], results["loop_sqlite"]
    table.add_row("loop ms / evaluated example", f"{lm_['ms_per_example']:.3f}", f"{ls_['ms_per_example']:.3f}")  # type: ignore[index]
    sm, ss = results["store_memory"], results["store_sqlite"]
    for key in ("candidates_written_per_s", "evaluations_written_per_s", "rows_read_per_s"):
        table.add_row(key, f"{sm[key]:,.0f}", f"{ss[key]:,.0f}")  # type: ignore[index]
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
