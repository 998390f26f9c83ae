"""The command line: bad input exits 2 with a clear message; real runs on the embedded model."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from promptopt.cli import main

REPO = pathlib.Path(__file__).resolve().parents[1]
SENTIMENT = REPO / "examples" / "data" / "sentiment.json"


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_missing_data_is_bad_input(capsys, tmp_path):
    code, out = run_cli(["optimize", "--store", str(tmp_path / "s.sqlite")], capsys)
    assert code == 2
    assert "No dataset given" in out and "--data" in out


def test_malformed_jsonl_is_bad_input_and_writes_nothing(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": \n')
    store = tmp_path / "s.sqlite"
    out_json = tmp_path / "r.json"
    code, out = run_cli(["optimize", "--data", str(bad), "--store", str(store), "--json-out", str(out_json)], capsys)
    assert code == 2
    assert "bad.jsonl" in out and "line 2" in out
    assert not out_json.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--metric", "nonsense"], "nonsense"),
        (["--strategy", "nonsense"], "Unknown strategy 'nonsense'"),
        (["--budget-calls", "0"], "--budget-calls must be positive"),
        (["--param", "novalue"], "is not key=value"),
        (["--param", "bogus=1"], "Bad parameters for strategy 'random_search'"),
        (["--split", "1,2"], "needs three numbers"),
        (["--model", "notaprovider/xyz"], "notaprovider"),
        (["--json-out", "/nonexistent-dir/x.json"], "does not exist"),
    ],
)
def test_bad_options_exit_2(capsys, tmp_path, extra, message):
    code, out = run_cli(["optimize", "--data", str(SENTIMENT), "--format", "ii", "--store", str(tmp_path / "s.sqlite"), "--no-progress", *extra], capsys)
    assert code == 2, out
    assert message in out


def test_config_file_with_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {SENTIMENT}\nbudjet_calls: 3\n")
    code, out = run_cli(["optimize", "--config", str(cfg)], capsys)
    assert code == 2 and "budjet_calls" in out


def test_show_unknown_run(capsys, tmp_path):
    store = tmp_path / "s.sqlite"
    code, out = run_cli(["show", "run-does-not-exist", "--store", str(store)], capsys)
    assert code == 2
    assert "run-does-not-exist" in out


@pytest.mark.embedded
def test_optimize_show_export_register_on_embedded_model(capsys, tmp_path):
    store = tmp_path / "s.sqlite"
    out_json = tmp_path / "r.json"
    code, out = run_cli(
        [
            "optimize", "--data", str(SENTIMENT), "--format", "ii", "--split", "10,12,16", "--strategy", "random_search",
            "--param", 'instructions=["Classify the sentiment of the movie review as positive or negative."]',
            "--param", "demo_counts=[0,3]", "--param", "n_candidates=3", "--param", "batch_size=3",
            "--model", "embedded", "--budget-calls", "36", "--max-tokens", "6", "--seed", "0",
            "--store", str(store), "--json-out", str(out_json), "--no-progress",
        ],
        capsys,
    )
    assert code == 0, out
    result = json.loads(out_json.read_text())
    assert set(result) >= {"run_id", "strategy", "baseline", "best", "ledger"}
    assert result["strategy"] == "random_search"
    for key in ("test_score", "ci"):
        assert key in result["baseline"] and key in result["best"]
    assert result["best"]["candidate"]["hash"]
    assert result["ledger"]["calls"] + result["ledger"]["cache_hits"] > 0
    # demos help this model a lot: the best (3 demos) must not be worse than zero-shot
    assert result["best"]["test_score"] >= result["baseline"]["test_score"]
    run_id = result["run_id"]

    code, out = run_cli(["show", run_id[:12], "--store", str(store)], capsys)
    assert code == 0 and result["best"]["candidate"]["hash"][:12] in out

    exported = tmp_path / "best.yaml"
    code, out = run_cli(["export", run_id, "--out", str(exported), "--store", str(store)], capsys)
    assert code == 0 and exported.exists()

    code, out = run_cli(["register", run_id, "sentiment", "--store", str(store)], capsys)
    assert code == 0 and "sentiment v1" in out
    from promptopt.store import load_prompt

    assert load_prompt("sentiment", store=str(store)).hash == result["best"]["candidate"]["hash"]

    code, out = run_cli(["doctor", str(store)], capsys)
    assert code == 0 and "healthy" in out


@pytest.mark.embedded
def test_sigkill_then_resume_completes_without_duplicates(tmp_path):
    """Kill a real CLI run with SIGKILL mid-way, resume it, and check the store."""
    store = tmp_path / "kill.sqlite"
    env = {**os.environ, "PROMPTOPT_NO_PROGRESS": "1"}
    args = [
        sys.executable, "-m", "promptopt.cli", "optimize", "--data", str(SENTIMENT), "--format", "ii",
        "--split", "10,15,10", "--strategy", "random_search", "--param", "demo_counts=[1,2,3]",
        "--param", "n_candidates=6", "--param", "batch_size=1", "--model", "embedded",
        "--budget-calls", "90", "--max-tokens", "6", "--store", str(store), "--no-progress",
    ]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline:
        time.sleep(0.3)
        if store.exists():
            try:
                with sqlite3.connect(store, timeout=1) as con:
                    n = con.execute("select count(*) from evaluations").fetchone()[0]
            except sqlite3.Error:
                continue
            if n >= 20:
                break
        assert proc.poll() is None, proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 20 <= n < 90, "the run must be killed mid-way"
    with sqlite3.connect(store) as con:
        run_id, status = con.execute("select id, status from runs").fetchone()
    assert status == "running"

    done = subprocess.run([sys.executable, "-m", "promptopt.cli", "resume", run_id, "--store", str(store), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(store) as con:
        status = con.execute("select status from runs").fetchone()[0]
        rows = con.execute("select candidate_hash, split, example_id from evaluations").fetchall()
        n_val = con.execute("select count(*) from evaluations where split='val'").fetchone()[0]
    assert status == "completed"
    assert len(rows) == len(set(rows))
    assert n_val == 90  # the budget, spent exactly once across both executions
