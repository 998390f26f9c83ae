"""Driver of the SIGKILL drill: start the run, or resume it if the store already holds it.

Runs the real stack: ``optimize()``/``resume()`` with a SQLite store and
``CachedLM(LedgeredLM(LimitedLM(ScriptedLM)))`` on a SQLite cache. The scripted model answers
with a pure function of the prompt and takes ``PROMPTOPT_DRILL_LM_LATENCY`` seconds per call.

Drill hooks (environment, test-only; nothing in promptopt reads them):

* ``PROMPTOPT_DRILL_WRITE_DELAY``: seconds to sleep after each INSERT/UPDATE/DELETE statement,
  inside its open transaction, on both the store and the cache; so a kill can land in the
  middle of a write. While sleeping, the file ``PROMPTOPT_DRILL_MARKER`` exists and holds which
  database is being written.
* ``PROMPTOPT_DRILL_HOLD``: while this file exists, the next write statement on the database it
  names (``store`` or ``cache``; empty: either) stays inside its open transaction until the
  process is killed (the marker then reads ``<database>:held``), so the drill can aim a kill at
  a write without racing it.
* ``PROMPTOPT_DRILL_READY``: a file created once imports are done and the store is open.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["PROMPTOPT_NO_PROGRESS"] = "1"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from sqlalchemy import event  # noqa: E402

from _drills import drill_strategy, make_task, oracle  # noqa: E402
from promptopt.lm import CachedLM, Ledger, LedgeredLM, LimitedLM, ScriptedLM  # noqa: E402
from promptopt.run import optimize, resume  # noqa: E402
from promptopt.store import SQLStorage  # noqa: E402


def _holds(hold: pathlib.Path, label: str) -> bool:
    try:
        return hold.read_text() in ("", label)
    except FileNotFoundError:
        return False


def _slow_writes(engine: object, label: str, delay: float, marker: pathlib.Path | None, hold: pathlib.Path | None) -> None:
    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if not statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            return
        if marker is not None:
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(label)
            os.replace(tmp, marker)  # atomic: the drill never reads a half-written marker
        time.sleep(delay)
        if hold is not None and _holds(hold, label):
            if marker is not None:  # say which write is held only once it is held
                tmp = marker.with_suffix(".tmp")
                tmp.write_text(label + ":held")
                os.replace(tmp, marker)
            deadline = time.monotonic() + 30
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        if marker is not None:
            try:
                marker.unlink()
            except FileNotFoundError:
                pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    latency = float(os.environ.get("PROMPTOPT_DRILL_LM_LATENCY", "0.03"))
    task = make_task(60)
    storage = SQLStorage(args.store)
    lm = CachedLM(LedgeredLM(LimitedLM(ScriptedLM(oracle, identity="scripted-oracle", latency_s=latency)), Ledger()), args.cache)
    delay = float(os.environ.get("PROMPTOPT_DRILL_WRITE_DELAY", "0") or 0)
    if delay > 0:
        marker = pathlib.Path(os.environ["PROMPTOPT_DRILL_MARKER"]) if os.environ.get("PROMPTOPT_DRILL_MARKER") else None
        hold = pathlib.Path(os.environ["PROMPTOPT_DRILL_HOLD"]) if os.environ.get("PROMPTOPT_DRILL_HOLD") else None
        _slow_writes(storage._engine, "store", delay, marker, hold)  # the drill's hook into a private engine
        _slow_writes(lm.engine, "cache", delay, marker, hold)
    if os.environ.get("PROMPTOPT_DRILL_READY"):
        pathlib.Path(os.environ["PROMPTOPT_DRILL_READY"]).write_text(str(os.getpid()))

    runs = storage.list_runs()
    if runs:
        result = resume(runs[0].id, store=storage, task=task, model=lm, progress=False)
    else:
        # Killed before the run row was committed (or never started): start again.
        result = optimize(task, drill_strategy(n_candidates=16, batch_size=2), model=lm, budget=None, store=storage, seed=args.seed, progress=False)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result.to_dict(), indent=1))
    storage.close()
    lm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
