"""One of the processes of the concurrency drill: writes to the shared store and cache at once
with its siblings, and reports what it wrote (JSON) for the parent to check nothing was lost.
All processes are released together and open both (new) files at the same moment.

Writes, interleaved so that the processes contend on both files the whole time:

* its own run: ``--candidates`` candidates, each with ``--examples`` evaluations, an event and a
  state value;
* the shared run, which every process tries to create under one id (exactly one must win):
  the same candidates in every process (racing inserts: exactly one process must win each), and for every (candidate, example) either a
  failed or a successful evaluation, then a successful one (a success replaces a failure,
  never the reverse);
* the prompt registry: one registration per process under one shared name (racing versions);
* LM calls through one ``CachedLM`` on the shared cache file: keys shared by all processes and
  keys of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _drills import expected_answer  # noqa: E402
from promptopt.errors import StoreError  # noqa: E402
from promptopt.evaluators import ExampleResult  # noqa: E402
from promptopt.lm import CachedLM, LMRequest, ScriptedLM  # noqa: E402
from promptopt.prompt import Candidate  # noqa: E402
from promptopt.store import SQLStorage  # noqa: E402

N_KEYS = 10  # LM requests per kind (shared, own) per process


def _responder(request: LMRequest) -> str:
    tag, index = request.message_dicts[-1]["content"].split("|")
    owner, k = tag.split(":")
    return expected_answer(-1 if owner == "shared" else int(owner), int(index), owner == "shared")


def _result(example: int, candidate: int, *, failed: bool) -> ExampleResult:
    if failed:
        return ExampleResult(example_id=f"e{example:02d}", score=None, parsed=False, error="HTTP 500 (drill)", error_type="LMTransientError")
    score = float((candidate + example) % 2)
    return ExampleResult(example_id=f"e{example:02d}", score=score, output=f"out-{candidate}-{example}", prediction=f"p{candidate}-{example}")


def main() -> int:
    ap = argparse.ArgumentParser()
    for flag in ("--store", "--cache", "--go", "--shared-run", "--out"):
        ap.add_argument(flag, required=True)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--examples", type=int, default=12)
    args = ap.parse_args()
    w, K, M = args.worker, args.candidates, args.examples

    pathlib.Path(args.go).parent.joinpath(f"ready{w}").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not pathlib.Path(args.go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("never released")
        time.sleep(0.005)

    # Every process opens the (new) store and cache files at the same moment: schema creation
    # and the switch to WAL race too.
    store = SQLStorage(args.store)
    backend = ScriptedLM(_responder, identity="scripted-concurrency")
    lm = CachedLM(backend, args.cache)
    report: dict = {"worker": w, "shared_flags": [], "shared_new_rows": 0, "own_new_rows": 0, "answers_ok": True}
    # The shared run: every process tries to create it under one id; exactly one must succeed.
    try:
        store.create_run(name="shared", strategy="drill", strategy_params={}, config={}, seed=0, run_id=args.shared_run)
        report["created_shared_run"] = True
    except StoreError as exc:
        if "exists" not in exc.message:
            raise
        report["created_shared_run"] = False
    own = store.create_run(name=f"worker-{w}", strategy="drill", strategy_params={"worker": w}, config={}, seed=w)
    report["own_run"] = own
    shared_cands = [Candidate(instruction=f"shared candidate {k}") for k in range(K)]
    own_cands = [Candidate(instruction=f"worker {w} candidate {k}") for k in range(K)]
    for k in range(K):
        # LM traffic between store writes: one shared and one own request per candidate.
        reqs = [LMRequest.chat([{"role": "user", "content": f"shared:x|{(k + j) % N_KEYS}"}]) for j in range(2)]
        reqs += [LMRequest.chat([{"role": "user", "content": f"{w}:x|{(2 * k + j) % N_KEYS}"}]) for j in range(2)]
        for req, resp in zip(reqs, lm.complete(reqs)):
            if resp.text != _responder(req):
                report["answers_ok"] = False

        report["shared_flags"].append(store.add_candidate(args.shared_run, shared_cands[k], strategy="drill", step=k))
        store.add_candidate(own, own_cands[k], strategy="drill", step=k, metadata={"worker": w})
        # Some of the shared rows first as failures (different ones in each process).
        failures = [_result(e, k, failed=True) for e in range(M) if (w + k + e) % 3 == 0]
        if failures:
            report["shared_new_rows"] += store.add_evaluations(args.shared_run, shared_cands[k].hash, "val", failures)
        report["own_new_rows"] += store.add_evaluations(own, own_cands[k].hash, "val", [_result(e, k, failed=False) for e in range(M)])
        report["shared_new_rows"] += store.add_evaluations(args.shared_run, shared_cands[k].hash, "val", [_result(e, k, failed=False) for e in range(M)])
        store.add_event(own, k, "drill", {"worker": w, "candidate": k})
        store.set_state(own, f"cursor-{k}", {"worker": w, "k": k})
    # The rest of the LM keys, so every shared and own key is asked at least once.
    reqs = [LMRequest.chat([{"role": "user", "content": f"shared:x|{i}"}]) for i in range(N_KEYS)]
    reqs += [LMRequest.chat([{"role": "user", "content": f"{w}:x|{i}"}]) for i in range(N_KEYS)]
    for req, resp in zip(reqs, lm.complete(reqs)):
        if resp.text != _responder(req):
            report["answers_ok"] = False
    report["prompt_version"] = store.register_prompt("drill-shared-prompt", own, own_cands[0].hash)
    report["backend_calls"] = backend.n_calls
    report["backend_keys"] = sorted({r.message_dicts[-1]["content"] for r in backend.calls})
    store.close()
    lm.close()
    pathlib.Path(args.out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
