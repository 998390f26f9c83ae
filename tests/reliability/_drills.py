"""The reliability drills, shared by tests/reliability and benchmarks/reliability.py.

Each drill runs the real stack (loop, evaluator, store, cache, ledger, limiter, fault injector)
on a :class:`~promptopt.lm.ScriptedLM` whose answers are a pure function of the prompt, so every
run is reproducible and a faulty or interrupted run can be compared with a clean one exactly.
A drill returns plain figures (a dict) plus whatever the tests need to assert on.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("PROMPTOPT_NO_PROGRESS", "1")

from promptopt.lm import FAULT_KINDS, BaseLM, FaultyLM, Ledger, LedgeredLM, LimitedLM, LMRequest, LMResponse, ScriptedLM
from promptopt.optimizers import RandomSearch
from promptopt.run import OptimizationResult, optimize, resume
from promptopt.store import open_store
from promptopt.task import Example, Task

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]

RAISING_KINDS = ("429", "500", "timeout", "reset")

# ----------------------------------------------------------------------------------------
# A task and a model with a known landscape


_WORDS = ["good", "great", "fine", "bad", "awful", "poor"]


def make_examples(n: int = 40) -> list[Example]:
    return [
        Example(id=f"ex{i:03d}", inputs={"input": f"review {i}: {_WORDS[i % 6]}"}, output="positive" if i % 6 < 3 else "negative")
        for i in range(n)
    ]


def make_task(n: int = 40, seed: int = 0) -> Task:
    return Task.from_examples("drill-sentiment", make_examples(n), split=(0.3, 0.3, 0.4), seed=seed, metric="normalized_exact")


def oracle(request: LMRequest) -> str:
    """A deterministic model: right only when the prompt shows >= 3 demos (any format) or exactly
    2 inline demos; otherwise a wrong answer. Random search must find a good candidate, and a
    faulty run that retries every failure must find the same one."""
    msgs = request.message_dicts
    text = msgs[-1]["content"]
    n_chat = sum(1 for m in msgs if m["role"] == "assistant")
    n_inline = text.count("Output:") - 1 if "Output:" in text else 0
    n_demos = max(n_chat, n_inline)
    word = text.strip().split()[-2] if n_inline else text.strip().split()[-1]
    truth = "positive" if word in ("good", "great", "fine") else "negative"
    if n_demos >= 3 or (n_demos == 2 and n_inline == 2):
        return truth
    return "I think it is neutral"


def drill_strategy(n_candidates: int = 8, batch_size: int = 4) -> RandomSearch:
    return RandomSearch(instructions=["Classify the review."], demo_counts=[0, 1, 2, 3], n_candidates=n_candidates, batch_size=batch_size)


class AttemptCounter(BaseLM):
    """Counts every attempt that reaches it, per request (placed under the limiter, above the
    fault injector, it sees each retry)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.identity = inner.identity
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        with self._lock:
            for r in requests:
                self.attempts[r.cache_key(self.identity)] += 1
        return list(self.inner.complete(requests))


# ----------------------------------------------------------------------------------------
# Drill 1: faults


@dataclass
class FaultRun:
    result: OptimizationResult
    ledger: dict[str, Any]
    backend_calls: int
    injected: dict[str, int] = field(default_factory=dict)
    attempts: Counter[str] = field(default_factory=Counter)
    sleeps: list[float] = field(default_factory=list)


def fault_run(
    *,
    rate: float,
    kinds: Sequence[str] = FAULT_KINDS,
    max_retries: int = 8,
    fault_seed: int = 0,
    store: Any = None,
    task: Task | None = None,
    backoff_max: float = 30.0,
) -> FaultRun:
    """One optimize() run through ``LedgeredLM(LimitedLM(AttemptCounter(FaultyLM(ScriptedLM))))``.

    The limiter's sleep is recorded instead of slept (the backoff schedule is the limiter's own)."""
    task = task or make_task()
    backend = ScriptedLM(oracle, identity="scripted-oracle")
    faulty = FaultyLM(backend, rate=rate, kinds=kinds, seed=fault_seed) if rate > 0 else backend
    counter = AttemptCounter(faulty)
    sleeps: list[float] = []
    limited = LimitedLM(counter, max_retries=max_retries, sleep=sleeps.append, backoff_max=backoff_max)
    ledger = Ledger()
    lm = LedgeredLM(limited, ledger)
    result = optimize(task, drill_strategy(), model=lm, budget=None, store=store, seed=1, cache=False, progress=False)
    injected = dict(faulty.injected) if isinstance(faulty, FaultyLM) else {}
    return FaultRun(result, ledger.snapshot(), backend.n_calls, injected, counter.attempts, sleeps)


def fault_drill(rate: float = 0.2, fault_seed: int = 0, n_examples: int = 40) -> dict[str, Any]:
    """Figures: a clean run, a run with ``rate`` transient faults retried to success, and a run
    with every fault kind and one retry (failures recorded per example)."""
    task = make_task(n_examples)
    clean = fault_run(rate=0.0, task=task)
    retried = fault_run(rate=rate, kinds=RAISING_KINDS, max_retries=8, fault_seed=fault_seed, task=task)
    harsh = fault_run(rate=rate, kinds=FAULT_KINDS, max_retries=1, fault_seed=fault_seed, task=task)
    attempts = sum(retried.attempts.values())
    return {
        "rate": rate,
        "clean": {"best": clean.result.best.hash if clean.result.best else None, "calls": clean.ledger["calls"]},
        "transient_retried": {
            "attempts": attempts,
            "faults_injected": sum(retried.injected.values()),
            "faults_by_kind": retried.injected,
            "observed_fault_rate": sum(retried.injected.values()) / attempts if attempts else 0.0,
            "ledger_calls": retried.ledger["calls"],
            "ledger_retries": retried.ledger["retries"],
            "failed_calls": retried.ledger["failed_calls"],
            "max_attempts_per_request": max(retried.attempts.values()),
            "best_equals_clean": bool(retried.result.best and clean.result.best and retried.result.best.hash == clean.result.best.hash),
            "test_score_equals_clean": retried.result.best_test.score == clean.result.best_test.score,  # type: ignore[union-attr]
        },
        "all_kinds_one_retry": {
            "faults_injected": sum(harsh.injected.values()),
            "faults_by_kind": harsh.injected,
            "ledger_calls": harsh.ledger["calls"],
            "failed_calls_recorded": harsh.ledger["failed_calls"],
            "status": harsh.result.status,
            "max_attempts_per_request": max(harsh.attempts.values()),
            "empty_or_garbage_answers_scored_as_wrong": harsh.injected.get("empty", 0) + harsh.injected.get("garbage", 0),
            "best_equals_clean": bool(harsh.result.best and clean.result.best and harsh.result.best.hash == clean.result.best.hash),
        },
    }


# ----------------------------------------------------------------------------------------
# Drill 2: SIGKILL at random moments, then resume

CRASH_DRIVER = HERE / "_crash_driver.py"


def _driver_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PROMPTOPT_NO_PROGRESS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(REPO)}
    env.update(extra or {})
    return env


def driver_cmd(store: pathlib.Path, cache: pathlib.Path, out: pathlib.Path | None = None) -> list[str]:
    cmd = [sys.executable, str(CRASH_DRIVER), "--store", str(store), "--cache", str(cache)]
    if out is not None:
        cmd += ["--out", str(out)]
    return cmd


def final_state(store_path: pathlib.Path | str) -> dict[str, Any]:
    """The state of the store's only run (see :func:`final_state_of_run`)."""
    runs = query(store_path, "select id from runs")
    assert len(runs) == 1, f"expected one run, found {len(runs)}"
    return final_state_of_run(store_path, runs[0][0])


def final_state_of_run(store_path: pathlib.Path | str, run_id: str) -> dict[str, Any]:
    """What must be equal between an interrupted-and-resumed run and an uninterrupted one:
    the run's status and summary (best, scores, counts), its candidates in order, and every
    evaluation's content (not timings, cache flags or ids, which differ by construction)."""
    st = open_store(str(store_path))
    try:
        run = st.get_run(run_id)
        summary = dict(run.summary)
        summary.pop("run_id", None)
        summary.pop("ledger", None)  # real spend differs: the resumed run hits the cache
        cands = [(c.hash, c.step, tuple(c.parents), c.strategy) for c in st.get_candidates(run.id)]
        evals = sorted(
            (e.candidate_hash, e.split, e.result.example_id, e.result.score, e.result.output, e.result.prediction, e.result.parsed, e.result.error)
            for e in st.get_evaluations(run.id)
        )
        return {"status": run.status, "summary": summary, "candidates": cands, "evaluations": evals}
    finally:
        st.close()


def duplicate_rows(store_path: pathlib.Path | str) -> list[tuple[Any, ...]]:
    return query(store_path, "select run_id, candidate_hash, split, example_id, count(*) from evaluations group by 1,2,3,4 having count(*) > 1") + query(
        store_path, "select run_id, hash, count(*) from candidates group by 1,2 having count(*) > 1"
    )


def half_written_rows(store_path: pathlib.Path | str) -> list[str]:
    """Rows that a torn write could leave: evaluations without their candidate, candidates
    without their run, rows with missing required values."""
    problems = []
    checks = {
        "evaluations without a candidate": "select count(*) from evaluations e where not exists "
        "(select 1 from candidates c where c.run_id = e.run_id and c.hash = e.candidate_hash)",
        "candidates without a run": "select count(*) from candidates c where not exists (select 1 from runs r where r.id = c.run_id)",
        "evaluations with neither a score nor an error": "select count(*) from evaluations where (error is null and score is null) or output is null",
        "runs with an unreadable summary": "select count(*) from runs where json_valid(summary) = 0 or json_valid(config) = 0",
        "candidates with unreadable content": "select count(*) from candidates where json_valid(content) = 0",
    }
    for what, sql in checks.items():
        n = query(store_path, sql)[0][0]
        if n:
            problems.append(f"{n} {what}")
    return problems


def doctor(store_path: pathlib.Path | str) -> tuple[int, str]:
    """``promptopt doctor STORE`` in-process: (exit code, output)."""
    import io

    from rich.console import Console

    import promptopt.cli as cli

    buf = io.StringIO()
    old = cli.console, cli.err_console
    cli.console = cli.err_console = Console(file=buf, width=300)
    try:
        code = cli.main(["doctor", str(store_path)])
    finally:
        cli.console, cli.err_console = old
    return code, buf.getvalue()


@dataclass
class Kill:
    index: int
    after_s: float
    where: str
    target_evaluations: int
    aimed_at_write: bool
    in_write: str
    run_existed: bool
    evaluations_at_kill: int
    doctor_ok: bool


def query(path: pathlib.Path | str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only query on a SQLite file (the connection is closed at once)."""
    con = sqlite3.connect(path, timeout=5)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _count_evaluations(store: pathlib.Path) -> int:
    if not store.exists():
        return 0
    try:
        return query(store, "select count(*) from evaluations")[0][0]
    except sqlite3.Error:
        return 0


def crash_drill(
    workdir: pathlib.Path,
    *,
    n_kills: int = 10,
    seed: int = 0,
    write_delay_s: float = 0.05,
    lm_latency_s: float = 0.01,
    expected_evaluations: int = 336,
    timeout_s: float = 240,
) -> dict[str, Any]:
    """Kill the driver with SIGKILL ``n_kills`` times at random moments, resuming each time, then
    let it finish; compare with an uninterrupted run with the same seed on the warm cache.

    Kill moments: the first lands while the driver is still starting (imports, opening the
    store); the others are spread at random over the run's progress: kill ``i`` waits until the
    store holds a random share of the run's ``expected_evaluations`` (sorted, so every execution
    makes progress), then a random 0-0.3 s more, and about half of them are then held until the
    driver sits inside an open write transaction, of the store and of the cache alternately: the
    drill asks the driver to hold its next write there open, so these kills never race the commit.
    Returns figures plus ``state``/``reference`` for the caller to compare."""
    workdir.mkdir(parents=True, exist_ok=True)
    store, cache = workdir / "killed.sqlite", workdir / "cache.sqlite"
    marker, ready, hold = workdir / "in_write", workdir / "ready", workdir / "hold"
    rng = random.Random(seed)
    env = _driver_env({
        "PROMPTOPT_DRILL_HOLD": str(hold),
        "PROMPTOPT_DRILL_WRITE_DELAY": str(write_delay_s),
        "PROMPTOPT_DRILL_MARKER": str(marker),
        "PROMPTOPT_DRILL_READY": str(ready),
        "PROMPTOPT_DRILL_LM_LATENCY": str(lm_latency_s),
    })
    aims = [False] + [i % 2 == 1 for i in range(1, n_kills)]
    tail = aims[1:]
    rng.shuffle(tail)
    aims[1:] = tail
    targets = [0] + sorted(rng.randrange(0, int(expected_evaluations * 0.75)) for _ in range(n_kills - 1))
    kills: list[Kill] = []
    started = time.monotonic()
    for i in range(n_kills):
        for f in (marker, ready, hold):
            if f.exists():
                f.unlink()
        proc = subprocess.Popen(driver_cmd(store, cache), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i == 0:
            delay = rng.uniform(0.05, 0.5)
            time.sleep(delay)
            where = "startup" if not ready.exists() else "work"
        else:
            t0 = time.monotonic()
            deadline = t0 + 60
            while (not ready.exists() or _count_evaluations(store) < targets[i]) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            until = time.monotonic() + rng.uniform(0.0, 0.3)
            while time.monotonic() < until and proc.poll() is None:
                time.sleep(0.005)
            if aims[i]:
                # Hold the next write of the store or the cache (alternately) open: the driver
                # waits inside its transaction; then kill.
                target = "store" if sum(aims[:i]) % 2 == 0 else "cache"
                _write_atomic(hold, target)
                until = time.monotonic() + 20
                while not _read(marker).endswith(":held") and proc.poll() is None and time.monotonic() < until:
                    time.sleep(0.005)
            delay = time.monotonic() - t0
            where = "work"
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"driver ended before kill {i} (rc {proc.returncode}); the drill's run is too short.\n{err}")
        in_write = _read(marker).split(":")[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        run_existed = False
        if store.exists():
            try:
                run_existed = query(store, "select count(*) from runs")[0][0] > 0
            except sqlite3.Error:
                run_existed = False
        ok = doctor(store)[0] == 0 if store.exists() else True
        kills.append(Kill(i, round(delay, 3), where, targets[i], aims[i], in_write, run_existed, _count_evaluations(store), ok))
        if time.monotonic() - started > timeout_s:
            raise AssertionError("crash drill took too long")
    summary_out = workdir / "final.json"
    done = subprocess.run(driver_cmd(store, cache, summary_out), env=_driver_env({"PROMPTOPT_DRILL_LM_LATENCY": str(lm_latency_s)}),
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise AssertionError(f"final resume failed (rc {done.returncode}):\n{done.stdout}\n{done.stderr}")
    # Reference: uninterrupted, same seed, on the cache the drill warmed.
    ref_store, ref_out = workdir / "reference.sqlite", workdir / "reference.json"
    ref = subprocess.run(driver_cmd(ref_store, cache, ref_out), env=_driver_env(), capture_output=True, text=True, timeout=timeout_s)
    if ref.returncode != 0:
        raise AssertionError(f"reference run failed (rc {ref.returncode}):\n{ref.stdout}\n{ref.stderr}")
    state, reference = final_state(store), final_state(ref_store)
    doctor_code, doctor_out = doctor(store)
    cache_check = [r[0] for r in query(cache, "PRAGMA integrity_check")]
    return {
        "kills": [k.__dict__ for k in kills],
        "n_kills": len(kills),
        "kills_during_startup": sum(k.where == "startup" for k in kills),
        "kills_inside_store_write": sum(k.in_write == "store" for k in kills),
        "kills_inside_cache_write": sum(k.in_write == "cache" for k in kills),
        "kills_before_run_created": sum(not k.run_existed for k in kills),
        "doctor_ok_after_every_kill": all(k.doctor_ok for k in kills),
        "final_doctor_exit": doctor_code,
        "final_doctor_output": doctor_out.strip(),
        "duplicates": duplicate_rows(store),
        "half_written": half_written_rows(store),
        "cache_integrity": cache_check,
        "same_final_state": state == reference,
        "final_status": state["status"],
        "n_candidates": len(state["candidates"]),
        "n_evaluations": len(state["evaluations"]),
        "seconds": round(time.monotonic() - started, 1),
        "state": state,
        "reference": reference,
        "final_output": json.loads(summary_out.read_text()),
        "reference_output": json.loads(ref_out.read_text()),
    }


# ----------------------------------------------------------------------------------------
# Drill 6: concurrency

CONCURRENCY_WORKER = HERE / "_concurrency_worker.py"


def concurrency_drill(workdir: pathlib.Path, *, n_procs: int = 8, n_candidates: int = 6, n_examples: int = 12, timeout_s: float = 180) -> dict[str, Any]:
    """``n_procs`` processes create and write one SQLite store and one LM cache at once: each its
    own run plus one run they all share (created by whichever wins; same candidates and
    evaluations, racing), and LM calls whose keys overlap across processes. Every worker reports what it wrote; the parent checks that
    nothing is lost or duplicated."""
    workdir.mkdir(parents=True, exist_ok=True)
    store, cache, go = workdir / "shared.sqlite", workdir / "shared_cache.sqlite", workdir / "go"
    shared = "shared-run"
    procs = []
    for w in range(n_procs):
        out = workdir / f"worker{w}.json"
        cmd = [sys.executable, str(CONCURRENCY_WORKER), "--store", str(store), "--cache", str(cache), "--go", str(go),
               "--worker", str(w), "--shared-run", shared, "--candidates", str(n_candidates), "--examples", str(n_examples), "--out", str(out)]
        procs.append((subprocess.Popen(cmd, env=_driver_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out))
    # Release them together once all are importing or waiting.
    ready_deadline = time.monotonic() + timeout_s
    while time.monotonic() < ready_deadline and sum((workdir / f"ready{w}").exists() for w in range(n_procs)) < n_procs:
        if any(p.poll() is not None for p, _ in procs):
            break
        time.sleep(0.02)
    started = time.monotonic()
    go.write_text("go")
    reports = []
    for p, out in procs:
        stdout, stderr = p.communicate(timeout=timeout_s)
        if p.returncode != 0:
            raise AssertionError(f"worker failed (rc {p.returncode}):\n{stdout}\n{stderr}")
        reports.append(json.loads(out.read_text()))
    wall = time.monotonic() - started
    return {"store": store, "cache": cache, "shared_run": shared, "reports": reports, "seconds": round(wall, 2), "n_procs": n_procs,
            "n_candidates": n_candidates, "n_examples": n_examples}


def expected_answer(worker: int, key_index: int, shared: bool) -> str:
    """What the concurrency worker's scripted model answers (a pure function of the prompt)."""
    return f"answer-{'shared' if shared else worker}-{key_index}"


# ----------------------------------------------------------------------------------------
# Drill 4: secrets


def planted_secret() -> str:
    return "sk-test-PLANTED-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]


def find_secret(secret: str, paths: Sequence[pathlib.Path], texts: dict[str, str] | None = None) -> list[str]:
    """Every place (file under ``paths``, recursively, or named text) whose bytes hold the
    secret, or its distinctive tail (a partial mask like ``sk-...PLANTED-abcd`` would leak it too)."""
    needles = [secret.encode(), secret.split("PLANTED-")[1].encode()]
    hits = []
    files: list[pathlib.Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(q for q in p.rglob("*") if q.is_file())
        elif p.is_file():
            files.append(p)
    for f in files:
        data = f.read_bytes()
        if any(n in data for n in needles):
            hits.append(str(f))
    for name, text in (texts or {}).items():
        data = text.encode("utf-8", "replace")
        if any(n in data for n in needles):
            hits.append(name)
    return hits


class EchoingOpenAIServer:
    """A local OpenAI-compatible server on 127.0.0.1 that behaves like a careless provider: its
    error bodies quote the Authorization header it received (several real providers echo the
    key, or part of it, in 401 messages). ``script`` is a list of statuses to answer in turn
    (200 = a valid completion), then ``default``."""

    def __init__(self, script: Sequence[int] = (), default: int = 200, text: str = "positive") -> None:
        self.script = list(script)
        self.default = default
        self.text = text
        self.seen_auth: list[str] = []
        self.n_requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("authorization", "")
                with owner._lock:
                    owner.n_requests += 1
                    owner.seen_auth.append(auth)
                    status = owner.script.pop(0) if owner.script else owner.default
                if status == 200:
                    payload: dict[str, Any] = {
                        "id": "chatcmpl-drill",
                        "object": "chat.completion",
                        "created": 1,
                        "model": body.get("model", "drill"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": owner.text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
                    }
                else:
                    payload = {"error": {"message": f"Incorrect API key provided: {auth}. Request rejected with {status}.", "type": "drill_error", "code": status}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "EchoingOpenAIServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port() -> int:
    """A localhost port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
