"""The Storage contract: every invariant of promptopt/store/_base.py, on every backend."""

from __future__ import annotations

import math
import re
import threading
import time

import pytest

from _store_helpers import BACKENDS, cand, failed, new_run, ok, rich_candidate
from promptopt.errors import StoreError
from promptopt.evaluators._base import ExampleResult
from promptopt.store import CandidateRecord, Storage

pytestmark = pytest.mark.parametrize("make_store", BACKENDS, indirect=True)


# --- runs ---------------------------------------------------------------------------------


def test_create_run_returns_fresh_time_stamped_ids_and_stores_fields(store: Storage):
    before = time.time()
    a = new_run(store, name="first", strategy="opro", strategy_params={"k": [1, 2]}, config={"model": "x"}, seed=3)
    b = new_run(store)
    assert a != b
    for rid in (a, b):
        assert re.fullmatch(r"run-\d{8}-\d{6}-[0-9a-f]{6}", rid), rid
    run = store.get_run(a)
    assert (run.id, run.name, run.strategy, run.seed, run.status) == (a, "first", "opro", 3, "created")
    assert run.strategy_params == {"k": [1, 2]} and run.config == {"model": "x"} and run.summary == {}
    assert before - 1 <= run.created_at <= time.time() + 1


def test_explicit_run_id_and_duplicate_is_refused(store: Storage):
    assert new_run(store, run_id="my-run") == "my-run"
    with pytest.raises(StoreError) as err:
        new_run(store, run_id="my-run")
    assert err.value.fix and "resume" in err.value.fix
    with pytest.raises(StoreError):
        new_run(store, run_id="bad id with spaces")
    assert [r.id for r in store.list_runs()] == ["my-run"]


def test_get_run_accepts_unique_prefix_like_git(store: Storage):
    new_run(store, run_id="run-alpha-1")
    new_run(store, run_id="run-alpha-2")
    new_run(store, run_id="run-beta")
    new_run(store, run_id="run-beta-long")
    assert store.get_run("run-alpha-1").id == "run-alpha-1"
    assert store.get_run("run-beta").id == "run-beta"  # an exact id wins over a longer id it prefixes
    with pytest.raises(StoreError, match="ambiguous"):
        store.get_run("run-b")
    assert store.get_run("run-beta-").id == "run-beta-long"
    with pytest.raises(StoreError, match="ambiguous") as err:
        store.get_run("run-alpha")
    assert "run-alpha-1" in err.value.message and "run-alpha-2" in err.value.message
    assert err.value.fix
    with pytest.raises(StoreError) as err:
        store.get_run("run-gamma")
    assert "promptopt show" in (err.value.fix or "")
    with pytest.raises(StoreError):
        store.get_run("RUN-ALPHA-1")  # ids are case-sensitive on every backend
    with pytest.raises(StoreError):
        store.get_run("run-alpha_1")  # "_" is not a wildcard
    with pytest.raises(StoreError):
        store.get_run("")


def test_list_runs_in_creation_order(store: Storage):
    ids = [new_run(store, run_id=f"r{i}") for i in (3, 1, 2)]
    assert [r.id for r in store.list_runs()] == ids


def test_update_run_sets_status_and_merges_summary(store: Storage):
    rid = new_run(store)
    created = store.get_run(rid)
    time.sleep(0.01)
    store.update_run(rid, status="running", summary={"a": 1, "b": {"x": 1}})
    store.update_run(rid, summary={"b": {"y": 2}, "c": None})
    run = store.get_run(rid)
    assert run.status == "running"
    assert run.summary == {"a": 1, "b": {"y": 2}, "c": None}
    assert run.updated_at > created.updated_at
    with pytest.raises(StoreError) as err:
        store.update_run(rid, status="done")
    assert "completed" in (err.value.fix or "")
    with pytest.raises(StoreError):
        store.update_run("no-such-run", status="completed")
    assert store.get_run(rid).status == "running"


def test_credentials_never_reach_the_store(store: Storage):
    rid = new_run(
        store,
        config={"model": "gpt", "api_key": "sk-live-123", "store": "postgresql+psycopg://bob:hunter2@db/x", "max_tokens": 64},
        strategy_params={"judge": {"OPENAI_API_KEY": "sk-abc"}, "eos_token": "</s>"},
    )
    store.update_run(rid, summary={"ledger": {"password": "pw", "calls": 3}})
    run = store.get_run(rid)
    flat = repr((run.config, run.strategy_params, run.summary))
    for secret in ("sk-live-123", "hunter2", "sk-abc", "'pw'"):
        assert secret not in flat
    assert run.config["max_tokens"] == 64 and run.strategy_params["eos_token"] == "</s>"
    assert run.config["store"] == "postgresql+psycopg://bob:***@db/x"
    assert run.summary["ledger"]["calls"] == 3


def test_values_are_stored_as_plain_json(store: Storage):
    rid = new_run(store, config={"t": (1, 2), "nan": float("nan"), "inf": float("inf")})
    assert store.get_run(rid).config == {"t": [1, 2], "nan": None, "inf": None}
    n_runs = len(store.list_runs())
    with pytest.raises(StoreError) as err:
        new_run(store, config={"obj": object()})
    assert "pickle" in (err.value.fix or "")
    assert len(store.list_runs()) == n_runs
    with pytest.raises(StoreError):
        store.set_state(rid, "k", {1, 2})
    with pytest.raises(StoreError):
        store.add_event(rid, 0, "e", {"f": lambda: 1})
    assert store.get_events(rid) == [] and store.get_state(rid, "k", "absent") == "absent"


# --- candidates ---------------------------------------------------------------------------


def test_add_candidate_is_idempotent_by_content_hash(store: Storage):
    rid = new_run(store)
    c = rich_candidate()
    assert store.add_candidate(rid, c, parents=["p1"], strategy="ape", step=2, metadata={"why": "first"}) is True
    assert store.add_candidate(rid, c, parents=["other"], strategy="x", step=9, metadata={"why": "second"}) is False
    # Same content with different provenance is the same candidate.
    assert store.add_candidate(rid, c.with_(demos=tuple(d.__class__(d.inputs, d.output, "zz", "generated") for d in c.demos))) is False
    recs = store.get_candidates(rid)
    assert len(recs) == 1
    rec = recs[0]
    assert rec.candidate == c and rec.hash == c.hash
    assert (rec.parents, rec.strategy, rec.step, rec.metadata) == (["p1"], "ape", 2, {"why": "first"})
    assert rec.created_at > 0
    # The same content in another run is a different record.
    other = new_run(store)
    assert store.add_candidate(other, c) is True


def test_candidate_round_trips_every_field(store: Storage):
    rid = new_run(store)
    c = rich_candidate()
    store.add_candidate(rid, c)
    back = store.get_candidate(rid, c.hash).candidate
    assert back == c
    assert back.to_dict() == c.to_dict()
    assert [d.source for d in back.demos] == ["train", "generated"]
    assert back.parts == (("output_format", "One word."), ("prefix", "Answer:"))


def test_candidates_come_back_in_insertion_order(store: Storage):
    rid = new_run(store)
    cands = [cand(i) for i in (9, 2, 7, 1, 5)]
    for i, c in enumerate(cands):
        store.add_candidate(rid, c, step=i)
    assert [r.hash for r in store.get_candidates(rid)] == [c.hash for c in cands]
    assert [r.step for r in store.get_candidates(rid)] == list(range(5))


def test_get_candidate_by_hash_prefix_and_unknown(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    assert store.get_candidate(rid, c.short_hash).hash == c.hash
    with pytest.raises(StoreError) as err:
        store.get_candidate(rid, "f" * 64 if not c.hash.startswith("f") else "0" * 64)
    assert err.value.fix
    with pytest.raises(StoreError):
        store.get_candidate("other-run", c.hash)


def test_add_candidate_to_unknown_run_fails(store: Storage):
    with pytest.raises(StoreError) as err:
        store.add_candidate("no-such-run", cand(1))
    assert "no-such-run" in err.value.message and err.value.fix
    assert store.get_candidates("no-such-run") == []


def test_add_candidates_bulk_flags(store: Storage):
    rid = new_run(store)
    store.add_candidate(rid, cand(0))
    records = [CandidateRecord(rid, cand(i), step=i) for i in (0, 1, 2, 1)]
    assert store.add_candidates(rid, records) == [False, True, True, False]
    assert [r.candidate for r in store.get_candidates(rid)] == [cand(0), cand(1), cand(2)]
    with pytest.raises(StoreError):
        store.add_candidates(rid, [CandidateRecord("another-run", cand(5))])
    assert store.add_candidates(rid, []) == []


def test_records_are_copies_callers_cannot_mutate_the_store(store: Storage):
    rid = new_run(store, config={"nested": {"a": [1]}})
    meta = {"list": [1, 2]}
    parents = ["p"]
    store.add_candidate(rid, cand(1), parents=parents, metadata=meta)
    meta["list"].append(3)
    parents.append("q")
    rec = store.get_candidates(rid)[0]
    assert rec.metadata == {"list": [1, 2]} and rec.parents == ["p"]
    rec.metadata["list"].append(99)
    rec.parents.append("z")
    store.get_run(rid).config["nested"]["a"].append(5)
    assert store.get_candidates(rid)[0].metadata == {"list": [1, 2]}
    assert store.get_candidates(rid)[0].parents == ["p"]
    assert store.get_run(rid).config == {"nested": {"a": [1]}}

    result = ok("e1")
    store.add_evaluations(rid, cand(1).hash, "val", [result])
    result.score = 0.0
    got = store.get_evaluations(rid)[0].result
    assert got.score == 1.0
    got.output = "changed"
    assert store.get_evaluations(rid)[0].result.output == "out e1"

    state = {"pool": [1, 2]}
    store.set_state(rid, "s", state)
    state["pool"].append(3)
    store.get_state(rid, "s")["pool"].append(4)
    assert store.get_state(rid, "s") == {"pool": [1, 2]}

    payload = {"raw": ["a"]}
    store.add_event(rid, 0, "k", payload)
    payload["raw"].append("b")
    store.get_events(rid)[0].payload["raw"].append("c")
    assert store.get_events(rid)[0].payload == {"raw": ["a"]}


# --- evaluations --------------------------------------------------------------------------


def _scores(store: Storage, rid: str) -> dict[str, float | None]:
    return {e.result.example_id: e.result.score for e in store.get_evaluations(rid)}


def test_add_evaluations_is_idempotent_and_counts_new_rows(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    assert store.add_evaluations(rid, c.hash, "val", [ok("a"), ok("b", 0.0)]) == 2
    assert store.add_evaluations(rid, c.hash, "val", [ok("a"), ok("b", 0.0)]) == 0
    assert store.add_evaluations(rid, c.hash, "val", [ok("b", 0.0), ok("c", 0.5)]) == 1
    assert len(store.get_evaluations(rid)) == 3
    # The same example on another split or candidate is another evaluation.
    assert store.add_evaluations(rid, c.hash, "test", [ok("a")]) == 1
    assert store.add_evaluations(rid, c.hash, "val", []) == 0


def test_successful_evaluations_are_immutable(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    store.add_evaluations(rid, c.hash, "val", [ok("a", 1.0)])
    first = store.get_evaluations(rid)[0]
    assert store.add_evaluations(rid, c.hash, "val", [ok("a", 0.0, output="other")]) == 0
    assert store.add_evaluations(rid, c.hash, "val", [failed("a")]) == 0
    (now,) = store.get_evaluations(rid)
    assert now.result == first.result and now.created_at == first.created_at


def test_failed_evaluation_is_replaced_by_success_in_place(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    store.add_evaluations(rid, c.hash, "val", [ok("a"), failed("b"), ok("c")])
    assert store.add_evaluations(rid, c.hash, "val", [failed("b", error_type="Other")]) == 0  # failure does not replace failure
    assert store.get_evaluations(rid)[1].result.error_type == "LMTransientError"
    assert store.add_evaluations(rid, c.hash, "val", [ok("b", 0.25, cached=True)]) == 1
    evs = store.get_evaluations(rid)
    assert [e.result.example_id for e in evs] == ["a", "b", "c"]  # the replacement keeps its position
    b = evs[1].result
    assert (b.score, b.error, b.error_type, b.cached) == (0.25, None, None, True)
    assert store.add_evaluations(rid, c.hash, "val", [failed("b")]) == 0
    assert store.get_evaluations(rid)[1].result.score == 0.25


def test_duplicates_inside_one_batch_follow_the_same_rule(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    n = store.add_evaluations(rid, c.hash, "val", [failed("a"), ok("a", 0.5), ok("a", 0.9), ok("b"), ok("b", 0.0)])
    assert n == 2
    assert _scores(store, rid) == {"a": 0.5, "b": 1.0}


def test_add_evaluations_is_atomic(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    with pytest.raises(StoreError) as err:
        store.add_evaluations(rid, c.hash, "val", [ok("a"), ok("b", float("nan"))])
    assert "finite" in err.value.message
    with pytest.raises(StoreError):
        store.add_evaluations(rid, c.hash, "val", [ok("a"), ok("")])
    assert store.get_evaluations(rid) == []
    # Unknown candidate: refused, nothing written.
    with pytest.raises(StoreError) as err:
        store.add_evaluations(rid, cand(2).hash, "val", [ok("a")])
    assert "add_candidate" in (err.value.fix or "")
    with pytest.raises(StoreError):
        store.add_evaluations("no-such-run", c.hash, "val", [ok("a")])
    with pytest.raises(StoreError):
        store.add_evaluations(rid, c.hash, "", [ok("a")])
    assert store.get_evaluations(rid) == []


def test_evaluation_round_trips_every_field(store: Storage):
    rid = new_run(store)
    c = cand(1)
    store.add_candidate(rid, c)
    full = ExampleResult(
        example_id="ex-ü-1",
        score=0.75,
        output="The answer is 4.\nDone ✓",
        prediction="4",
        parsed=False,
        error=None,
        error_type=None,
        feedback="close, but check units",
        cache_key="abc123",
        cached=True,
        prompt_tokens=123,
        completion_tokens=45,
        cost_usd=0.00042,
        latency_s=1.25,
    )
    fail = failed("ex-2", prompt_tokens=10, latency_s=30.0)
    int_score = ExampleResult("ex-3", 1)  # ints come back as floats on every backend
    store.add_evaluations(rid, c.hash, "val", [full, fail, int_score])
    got = [e.result for e in store.get_evaluations(rid)]
    assert got[0] == full and got[1] == fail
    assert got[2].score == 1.0 and isinstance(got[2].score, float)
    ev = store.get_evaluations(rid)[0]
    assert (ev.run_id, ev.candidate_hash, ev.split) == (rid, c.hash, "val") and ev.created_at > 0


def test_evaluations_in_insertion_order_with_filters(store: Storage):
    rid = new_run(store)
    c1, c2 = cand(1), cand(2)
    store.add_candidates(rid, [CandidateRecord(rid, c1), CandidateRecord(rid, c2)])
    store.add_evaluations(rid, c2.hash, "val", [ok("z"), ok("a")])
    store.add_evaluations(rid, c1.hash, "val", [ok("m")])
    store.add_evaluations(rid, c2.hash, "test", [ok("b")])
    store.add_evaluations(rid, c1.hash, "test", [ok("c")])
    keys = lambda evs: [(e.candidate_hash, e.split, e.result.example_id) for e in evs]  # noqa: E731
    assert keys(store.get_evaluations(rid)) == [
        (c2.hash, "val", "z"), (c2.hash, "val", "a"), (c1.hash, "val", "m"), (c2.hash, "test", "b"), (c1.hash, "test", "c")
    ]
    assert keys(store.get_evaluations(rid, candidate_hash=c2.hash)) == [(c2.hash, "val", "z"), (c2.hash, "val", "a"), (c2.hash, "test", "b")]
    assert keys(store.get_evaluations(rid, split="test")) == [(c2.hash, "test", "b"), (c1.hash, "test", "c")]
    assert keys(store.get_evaluations(rid, candidate_hash=c1.hash, split="val")) == [(c1.hash, "val", "m")]
    assert store.get_evaluations("no-such-run") == []


# --- events and state ---------------------------------------------------------------------


def test_events_in_order_filtered_by_kind(store: Storage):
    rid = new_run(store)
    store.add_event(rid, 0, "proposal_failed", {"raw": "garbage", "n": 1})
    store.add_event(rid, 1, "step", {"i": 1})
    store.add_event(rid, 1, "proposal_failed", {"raw": "more"})
    evs = store.get_events(rid)
    assert [(e.step, e.kind) for e in evs] == [(0, "proposal_failed"), (1, "step"), (1, "proposal_failed")]
    assert [e.payload for e in store.get_events(rid, kind="proposal_failed")] == [{"raw": "garbage", "n": 1}, {"raw": "more"}]
    assert all(e.run_id == rid and e.created_at > 0 for e in evs)
    with pytest.raises(StoreError):
        store.add_event("no-such-run", 0, "x", {})
    assert store.get_events("no-such-run") == []


def test_state_survives_and_is_per_run(store: Storage):
    a, b = new_run(store), new_run(store)
    assert store.get_state(a, "pool", default=[]) == []
    store.set_state(a, "pool", [{"hash": "x", "score": 0.5}])
    store.set_state(a, "pool", [{"hash": "y", "score": math.inf}])
    store.set_state(a, "none", None)
    assert store.get_state(a, "pool") == [{"hash": "y", "score": None}]
    assert store.get_state(a, "none", default="d") is None  # a stored null is not a missing key
    assert store.get_state(b, "pool", default="missing") == "missing"
    with pytest.raises(StoreError):
        store.set_state("no-such-run", "k", 1)


# --- prompt registry ----------------------------------------------------------------------


def test_register_prompt_versions(store: Storage):
    rid = new_run(store)
    c1, c2 = cand(1), cand(2)
    store.add_candidate(rid, c1)
    store.add_candidate(rid, c2)
    assert store.register_prompt("sentiment", rid, c1.hash) == 1
    assert store.register_prompt("sentiment", rid, c1.hash) == 1  # same candidate again: no new version
    assert store.register_prompt("sentiment", rid, c2.short_hash) == 2
    assert store.register_prompt("sentiment", rid, c1.hash) == 3
    assert store.register_prompt("qa/v2", rid, c2.hash) == 1
    assert store.get_registered_prompt("sentiment") == (rid, c1.hash, 3)
    assert store.get_registered_prompt("sentiment", 2) == (rid, c2.hash, 2)
    assert store.list_prompts() == [("qa/v2", 1), ("sentiment", 3)]
    with pytest.raises(StoreError) as err:
        store.get_registered_prompt("sentiment", 4)
    assert "1 to 3" in (err.value.fix or "")
    with pytest.raises(StoreError) as err:
        store.get_registered_prompt("nope")
    assert "sentiment" in (err.value.fix or "")
    with pytest.raises(StoreError):
        store.register_prompt("x", rid, cand(3).hash)
    for bad in ("", "has space", "run-looks-like-an-id"):
        with pytest.raises(StoreError):
            store.register_prompt(bad, rid, c1.hash)
    assert store.list_prompts() == [("qa/v2", 1), ("sentiment", 3)]


# --- concurrency --------------------------------------------------------------------------


def test_many_threads_write_without_losing_anything(make_store):
    store = make_store()
    rid = new_run(store)
    shared = cand("shared")
    n_threads, per_thread = 8, 10
    barrier = threading.Barrier(n_threads)
    new_flags: list[bool] = []
    counts: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            barrier.wait()
            flag = store.add_candidate(rid, shared)
            got = store.add_evaluations(rid, shared.hash, "val", [ok(f"shared-{i}") for i in range(5)])
            mine = 0
            for j in range(per_thread):
                c = cand(f"t{t}-{j}")
                assert store.add_candidate(rid, c, step=j)
                mine += store.add_evaluations(rid, c.hash, "val", [ok(f"e{k}", (t + j + k) % 2) for k in range(4)])
                store.set_state(rid, f"thread-{t}", j)
                store.add_event(rid, j, "tick", {"t": t})
            with lock:
                new_flags.append(flag)
                counts.append(got + mine)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert new_flags.count(True) == 1
    assert len(store.get_candidates(rid)) == 1 + n_threads * per_thread
    assert len(store.get_evaluations(rid)) == 5 + n_threads * per_thread * 4
    assert sum(counts) == 5 + n_threads * per_thread * 4
    assert len(store.get_events(rid, "tick")) == n_threads * per_thread
    assert all(store.get_state(rid, f"thread-{t}") == per_thread - 1 for t in range(n_threads))
    assert store.check_integrity() == []


def test_second_handle_sees_the_same_data(make_store):
    a = make_store()
    rid = new_run(a)
    a.add_candidate(rid, cand(1))
    b = make_store()
    assert [r.hash for r in b.get_candidates(rid)] == [cand(1).hash]
    assert b.add_candidate(rid, cand(1)) is False


# --- housekeeping -------------------------------------------------------------------------


def test_integrity_check_reports_half_written_runs(store: Storage):
    rid = new_run(store)
    store.add_candidate(rid, cand(1))
    store.add_evaluations(rid, cand(1).hash, "val", [ok("a"), failed("b")])
    store.update_run(rid, status="completed")
    assert store.check_integrity() == []
    empty = new_run(store)
    store.update_run(empty, status="completed")
    problems = store.check_integrity()
    assert len(problems) == 1 and empty in problems[0] and "half-written" in problems[0]
    live = new_run(store)
    store.update_run(live, status="running")
    assert len(store.check_integrity()) == 1  # a run that is writing is not a dead one
    time.sleep(0.05)
    stale = [p for p in store.check_integrity(stale_after_s=0.01) if live in p]
    assert len(stale) == 1 and "marked running" in stale[0]


def test_close_is_idempotent_and_context_manager(make_store):
    store = make_store()
    with store as s:
        assert s is store
    store.close()
    store.close()
