"""Export to JSON/YAML (atomic writes) and reading an exported prompt back (safe loaders only)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from _store_helpers import cand, failed, new_run, ok, rich_candidate
from promptopt.errors import ConfigError, StoreError
from promptopt.prompt import Candidate
from promptopt.store import MemoryStorage, SQLStorage, Storage, export_run, load_candidate_file
from promptopt.store import _export


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStorage() if request.param == "memory" else SQLStorage(tmp_path / "store.sqlite")
    yield s
    s.close()


def scored_run(store: Storage) -> tuple[str, dict[str, Candidate]]:
    """A run where a candidate with a lucky 2-example minibatch (mean 1.0) must not beat the
    fully evaluated ones (10 examples)."""
    rid = new_run(store, config={"model": "smollm2", "api_key": "sk-secret"})
    cs = {"full_good": rich_candidate(), "full_bad": cand("bad"), "lucky": cand("lucky"), "unscored": cand("unscored")}
    for i, (role, c) in enumerate(cs.items()):
        store.add_candidate(rid, c, step=i, parents=[cs["full_bad"].hash] if role == "full_good" else [])
    store.add_evaluations(rid, cs["full_good"].hash, "val", [ok(f"v{i}", 1.0 if i < 8 else 0.0) for i in range(10)])
    store.add_evaluations(rid, cs["full_bad"].hash, "val", [ok(f"v{i}", 1.0 if i < 3 else 0.0) for i in range(9)] + [failed("v9")])
    store.add_evaluations(rid, cs["lucky"].hash, "val", [ok("v0"), ok("v1")])
    store.add_event(rid, 1, "proposal_failed", {"raw": "???"})
    return rid, cs


def test_json_export_has_settings_best_and_leaderboard(store, tmp_path):
    rid, cs = scored_run(store)
    out = export_run(store, rid[:14], tmp_path / "best.json")
    doc = json.loads(out.read_text())
    assert doc["promptopt_export"] == 1
    assert doc["run"]["id"] == rid and doc["run"]["config"]["api_key"] == "***"
    assert doc["best"]["hash"] == cs["full_good"].hash and doc["best"]["selected_by"] == "val"
    assert doc["best"]["scores"]["val"] == {"mean": 0.8, "n": 10, "n_scored": 10, "n_errors": 0, "n_unparsed": 0}
    assert Candidate.from_dict(doc["best"]["candidate"]) == cs["full_good"]
    assert [row["hash"] for row in doc["leaderboard"]] == [cs[k].hash for k in ("full_good", "full_bad", "lucky", "unscored")]
    assert doc["leaderboard"][1]["scores"]["val"]["n_errors"] == 1
    assert doc["leaderboard"][3]["scores"] == {}
    assert "candidates" not in doc and "events" not in doc


def test_yaml_export_all_is_readable_and_complete(store, tmp_path):
    rid, cs = scored_run(store)
    out = export_run(store, rid, tmp_path / "run.yaml", what="all")
    text = out.read_text()
    assert "&id" not in text and "*id" not in text  # no YAML anchors
    assert "instruction: |-\n      Classify the sentiment.\n      Answer with one word." in text
    doc = yaml.safe_load(text)
    assert len(doc["candidates"]) == 4
    full_bad = next(c for c in doc["candidates"] if c["hash"] == cs["full_bad"].hash)
    assert len(full_bad["evaluations"]["val"]) == 10 and full_bad["evaluations"]["val"][9]["error"] == "timeout"
    assert doc["events"] == [{"step": 1, "kind": "proposal_failed", "payload": {"raw": "???"}, "created_at": doc["events"][0]["created_at"]}]
    assert load_candidate_file(out) == cs["full_good"]


def test_summary_choice_wins_and_test_only_runs_use_test(store, tmp_path):
    rid, cs = scored_run(store)
    store.update_run(rid, status="completed", summary={"best": {"candidate": cs["full_bad"].to_dict()}})
    doc = json.loads(export_run(store, rid, tmp_path / "a.json").read_text())
    assert doc["best"]["hash"] == cs["full_bad"].hash and doc["best"]["selected_by"] == "summary"
    # Test scores never override the val choice (that would select on the held-out set).
    rid2, cs2 = scored_run(store)
    store.add_evaluations(rid2, cs2["full_bad"].hash, "test", [ok("t0"), ok("t1")])
    store.add_evaluations(rid2, cs2["full_good"].hash, "test", [ok("t0", 0.0), ok("t1")])
    assert json.loads(export_run(store, rid2, tmp_path / "b.json").read_text())["best"]["hash"] == cs2["full_good"].hash
    rid3 = new_run(store)
    store.add_candidate(rid3, cand("x"))
    store.add_candidate(rid3, cand("y"))
    store.add_evaluations(rid3, cand("y").hash, "test", [ok("t0", 0.5)])
    store.add_evaluations(rid3, cand("x").hash, "test", [ok("t0", 0.2)])
    best = json.loads(export_run(store, rid3, tmp_path / "c.json").read_text())["best"]
    assert (best["hash"], best["selected_by"]) == (cand("y").hash, "test")


def test_run_without_scores_exports_null_best(store, tmp_path):
    rid = new_run(store)
    store.add_candidate(rid, cand(1))
    out = export_run(store, rid, tmp_path / "x.json")
    assert json.loads(out.read_text())["best"] is None
    with pytest.raises(ConfigError, match="no best candidate"):
        load_candidate_file(out)


def test_export_argument_errors(store, tmp_path):
    rid, _ = scored_run(store)
    with pytest.raises(ConfigError):
        export_run(store, rid, tmp_path / "x.json", format="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        export_run(store, rid, tmp_path / "x.json", what="some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not exist"):
        export_run(store, rid, tmp_path / "missing" / "x.json")
    with pytest.raises(ConfigError, match="directory"):
        export_run(store, rid, tmp_path)
    with pytest.raises(StoreError):
        export_run(store, "no-such-run", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists() and _litter(tmp_path) == []
    # format given explicitly wins over the suffix
    out = export_run(store, rid, tmp_path / "prompt.txt", format="yaml")
    assert yaml.safe_load(out.read_text())["promptopt_export"] == 1


# --- atomicity ----------------------------------------------------------------------------


def _litter(directory) -> list[str]:
    return [p for p in os.listdir(directory) if p.endswith(".tmp")]


def test_crash_before_rename_keeps_the_old_file(store, tmp_path, monkeypatch):
    rid, _ = scored_run(store)
    target = tmp_path / "best.json"
    target.write_text("OLD CONTENT")
    target.chmod(0o640)

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_export.os, "replace", boom)
    with pytest.raises(ConfigError) as err:
        export_run(store, rid, target)
    assert "No space left" in err.value.message and err.value.fix
    assert target.read_text() == "OLD CONTENT"
    assert _litter(tmp_path) == []
    monkeypatch.undo()
    export_run(store, rid, target)
    assert json.loads(target.read_text())["run"]["id"] == rid
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # permissions of the replaced file are kept
    assert _litter(tmp_path) == []


def test_interrupt_mid_write_leaves_nothing_half_written(store, tmp_path, monkeypatch):
    rid, _ = scored_run(store)
    target = tmp_path / "best.yaml"
    seen = []

    def interrupted(fd):
        seen.append(fd)
        raise KeyboardInterrupt  # Ctrl-C after the data was written, before it was synced

    monkeypatch.setattr(_export.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_run(store, rid, target)
    assert seen and not target.exists() and _litter(tmp_path) == []


# --- reading candidates -------------------------------------------------------------------


def test_load_bare_candidate_files(tmp_path):
    c = rich_candidate()
    (tmp_path / "c.json").write_text(json.dumps(c.to_dict()))
    assert load_candidate_file(tmp_path / "c.json") == c
    (tmp_path / "c.yaml").write_text("instruction: |\n  Say hi.\ndemos:\n  - inputs: {n: 3}\n    output: 42\n")
    loaded = load_candidate_file(str(tmp_path / "c.yaml"))
    assert loaded.instruction == "Say hi.\n" and loaded.demos[0].output == "42" and loaded.demos[0].input_dict == {"n": "3"}
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"candidate": {"instruction": "Wrapped."}}))
    assert load_candidate_file(tmp_path / "w.yaml").instruction == "Wrapped."


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.json", "{not json", "not valid JSON \\(line 1"),
        ("bad.yaml", "a: [1,", "not valid YAML"),
        ("list.yaml", "- a\n- b\n", "expected a mapping"),
        ("typo.yaml", "instructions: Do it.\n", "unknown keys \\['instructions'\\]"),
        ("bool.yaml", "instruction: x\ndemos:\n  - inputs: {q: a}\n    output: yes\n", "Quote|must be text"),
        ("fmt.yaml", "instruction: x\ndemo_format: table\n", "demo_format"),
        ("demo.yaml", "instruction: x\ndemos:\n  - output: y\n", "needs 'inputs' and 'output'"),
        ("newer.json", json.dumps({"promptopt_export": 99, "best": None}), "newer promptopt"),
        ("instr.yaml", "instruction: [1, 2]\n", "instruction must be text"),
    ],
)
def test_load_candidate_file_rejects_bad_files_clearly(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=match) as err:
        load_candidate_file(path)
    assert err.value.fix and str(path) in err.value.message


def test_empty_baseline_candidate_round_trips(store, tmp_path):
    # The zero-shot baseline (no instruction, no demos) is a legitimate best candidate.
    rid = new_run(store)
    empty = Candidate()
    store.add_candidate(rid, empty)
    store.add_evaluations(rid, empty.hash, "val", [ok("v0")])
    assert load_candidate_file(export_run(store, rid, tmp_path / "e.yaml")) == empty


def test_edited_export_is_caught_by_its_hash(tmp_path):
    c = cand("original")
    data = c.to_dict()
    data["instruction"] = "tampered"
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="does not match its content") as err:
        load_candidate_file(tmp_path / "c.json")
    assert "delete the 'hash' line" in (err.value.fix or "")
    del data["hash"]
    (tmp_path / "c.json").write_text(json.dumps(data))
    assert load_candidate_file(tmp_path / "c.json").instruction == "tampered"


def test_yaml_is_loaded_safely(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.yaml").write_text(f"instruction: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_candidate_file(tmp_path / "evil.yaml")
    assert not marker.exists()


def test_missing_prompt_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as err:
        load_candidate_file(tmp_path / "none.json")
    assert "promptopt export" in (err.value.fix or "")
