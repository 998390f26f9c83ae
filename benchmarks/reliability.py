"""Reliability and security drills, with figures for benchmarks/RESULTS.md ("Reliability").

(1) Faults: random search through ``FaultyLM`` at 20% (429/500/timeout/reset retried; then every
    kind, empty and garbage answers included, with a single retry).
(2) Crashes: SIGKILL at 10 random moments (startup, LM calls, inside store and cache write
    transactions), resume each time, compare with an uninterrupted run on the warm cache.
(3) Bad inputs: the catalogue of tests/reliability/_catalogue.py through ``promptopt.cli.main``.
(4)+(5) Secrets and unsafe loading: the pytest files that plant a key / feed hostile files.
(6) Concurrency: 8 processes creating and writing one SQLite store and one LM cache at once.

The drills themselves live in tests/reliability (the tests assert on the same code).
Usage: python benchmarks/reliability.py [--skip-pytest]
Writes benchmarks/results/reliability.json and prints a summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PROMPTOPT_NO_PROGRESS", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
DRILLS = REPO / "tests" / "reliability"
sys.path.insert(0, str(DRILLS))

from _catalogue import CASES, make_healthy_store, run_case  # noqa: E402
from _concurrency_worker import N_KEYS  # noqa: E402
from _drills import concurrency_drill, crash_drill, doctor, duplicate_rows, fault_drill, query  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "reliability.json"


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}


def faults() -> dict[str, object]:
    t0 = time.perf_counter()
    figures = fault_drill(rate=0.2, fault_seed=0, n_examples=200)
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    return figures


def crashes(tmp: pathlib.Path) -> dict[str, object]:
    r = crash_drill(tmp / "crash", n_kills=10, seed=0)
    for key in ("state", "reference", "final_output", "reference_output"):
        r.pop(key)
    r["duplicates"] = len(r["duplicates"])
    return r


def bad_inputs(tmp: pathlib.Path) -> dict[str, object]:
    healthy = tmp / "healthy.sqlite"
    make_healthy_store(healthy)
    t0 = time.perf_counter()
    results = []
    for i, case in enumerate(CASES):
        outcome = run_case(case, tmp / "bad" / f"{i:02d}", healthy)
        results.append({"case": case.id, "input": case.what, "exit": outcome.code, "ok": outcome.ok, "problems": outcome.problems})
    return {
        "cases": len(results),
        "exit_2_with_message_and_fix": sum(r["ok"] for r in results),
        "failed": [r for r in results if not r["ok"]],
        "seconds": round(time.perf_counter() - t0, 1),
        "inputs": [r["input"] for r in results],
    }


def concurrency(tmp: pathlib.Path) -> dict[str, object]:
    d = concurrency_drill(tmp / "concurrency", n_procs=8, n_candidates=6, n_examples=12)
    store, cache, n, k, m = d["store"], d["cache"], d["n_procs"], d["n_candidates"], d["n_examples"]
    expected_eval_rows = n * k * m + k * m  # own runs + the shared run
    present_eval_rows = query(store, "select count(*) from evaluations")[0][0]
    expected_cache = N_KEYS * (n + 1)
    present_cache = query(cache, "select count(*) from lm_cache")[0][0]
    shared_failed_left = query(store, "select count(*) from evaluations where run_id = 'shared-run' and error is not null")[0][0]
    return {
        "processes": n,
        "seconds_writing": d["seconds"],
        "evaluation_rows_expected": expected_eval_rows,
        "evaluation_rows_present": present_eval_rows,
        "rows_lost": expected_eval_rows - present_eval_rows,
        "duplicate_rows": len(duplicate_rows(store)),
        "shared_run_created_by": sum(r["created_shared_run"] for r in d["reports"]),
        "shared_candidates_won_once": all(sum(r["shared_flags"][i] for r in d["reports"]) == 1 for i in range(k)),
        "failed_rows_left_after_success_race": shared_failed_left,
        "registry_versions": sorted(v for (v,) in query(store, "select version from prompts")),
        "cache_entries_expected": expected_cache,
        "cache_entries_present": present_cache,
        "backend_calls": sum(r["backend_calls"] for r in d["reports"]),
        "answers_all_correct": all(r["answers_ok"] for r in d["reports"]),
        "doctor_exit": doctor(store)[0],
    }


def pytest_counts(files: list[str]) -> dict[str, object]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=REPO, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|skipped|deselected)", tail)}
    return {"tests": counts, "exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1), "summary": tail}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-pytest", action="store_true", help="Do not run the secret and unsafe-loading test files.")
    args = ap.parse_args()
    started = time.perf_counter()
    report: dict[str, object] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="promptopt-reliability-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        os.environ["PROMPTOPT_CACHE_DIR"] = str(tmp / "lmcache")  # never the user's cache
        print("faults...", flush=True)
        report["faults"] = faults()
        print("crashes (10 SIGKILLs)...", flush=True)
        report["crashes"] = crashes(tmp)
        print("bad inputs...", flush=True)
        report["bad_inputs"] = bad_inputs(tmp)
        print("concurrency (8 processes)...", flush=True)
        report["concurrency"] = concurrency(tmp)
    if not args.skip_pytest:
        print("secrets and unsafe loading (pytest)...", flush=True)
        report["secrets"] = pytest_counts(["tests/reliability/test_secrets_leak.py"])
        report["unsafe_loading"] = pytest_counts(["tests/reliability/test_unsafe_loading.py"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    f, c, b, k = report["faults"], report["crashes"], report["bad_inputs"], report["concurrency"]
    tr, harsh = f["transient_retried"], f["all_kinds_one_retry"]  # type: ignore[index]
    print(f"faults: {tr['faults_injected']} injected in {tr['attempts']} attempts ({tr['observed_fault_rate']:.1%}), "  # type: ignore[index]
          f"all retried, best equals clean run: {tr['best_equals_clean']}; every kind w/ 1 retry: {harsh['faults_injected']} injected, "
          f"{harsh['failed_calls_recorded']} recorded as failed examples, run {harsh['status']}")
    print(f"crashes: {c['n_kills']} kills ({c['kills_inside_store_write']} in store writes, {c['kills_inside_cache_write']} in cache writes), "  # type: ignore[index]
          f"same final state: {c['same_final_state']}, duplicates {c['duplicates']}, doctor exit {c['final_doctor_exit']}")
    print(f"bad inputs: {b['exit_2_with_message_and_fix']}/{b['cases']} exit 2 with message and fix, nothing corrupted")  # type: ignore[index]
    print(f"concurrency: {k['processes']} processes, rows lost {k['rows_lost']}, duplicates {k['duplicate_rows']}, "  # type: ignore[index]
          f"cache {k['cache_entries_present']}/{k['cache_entries_expected']}")
    if not args.skip_pytest:
        print(f"secrets: {report['secrets']['summary']}; unsafe loading: {report['unsafe_loading']['summary']}")  # type: ignore[index]
    print(f"wrote {OUT.relative_to(REPO)} in {report['seconds']} s")


if __name__ == "__main__":
    main()
