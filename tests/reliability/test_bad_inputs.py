"""Issue 3: a catalogue of bad inputs. Each gives exit code 2 (through ``promptopt.cli.main``
where a CLI path exists) with a message naming the problem and a fix, and corrupts nothing.
Inputs without a CLI path (templates, over-long examples, an interrupted export) are checked
through the Python API with the same standard: a ConfigError (the CLI's exit 2) naming the
problem, no LM call wasted, nothing left half-written."""

from __future__ import annotations

import os
import pathlib

import pytest

from _catalogue import CASES, GOOD_JSONL, make_healthy_store, run_case, run_cli
from _drills import make_task, oracle
from promptopt.errors import ConfigError, LMConfigError, PromptOptError, TemplateError
from promptopt.evaluators import TaskEvaluator
from promptopt.lm import LimitedLM, ScriptedLM
from promptopt.prompt import Candidate
from promptopt.run import optimize
from promptopt.store import export_run, open_store
from promptopt.task import Example, Task


@pytest.fixture(scope="module")
def healthy_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("healthy") / "store.sqlite"
    make_healthy_store(path)
    return path


def test_the_catalogue_has_at_least_30_distinct_cases():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_a_clear_message_and_corrupts_nothing(case, tmp_path, healthy_store):
    outcome = run_case(case, tmp_path / "case", healthy_store)
    assert outcome.ok, f"{case.what}: {outcome.problems}\noutput: {outcome.output}"


# --- inputs without a CLI path ------------------------------------------------------------------


def _tiny_task(**kwargs) -> Task:
    return Task.from_examples("t", [Example(f"e{i}", {"input": f"text {i}"}, "yes") for i in range(10)], split=(2, 4, 4), **kwargs)


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ question }}", "undefined variable(s) ['question']"),
        ("{{ input ", "syntax error at line 1"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "Unsafe template"),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "Unsafe template"),
        ("{{ input|attr('__class__') }}", "Unsafe template"),
        ("{% include '/etc/passwd' %}", "Unsafe template"),
        ("{% import 'os' as os %}", "Unsafe template"),
        ("{{ 'x' * 100000000 }}", "Unsafe template"),
        ("{{ 9 ** 9999999 }}", "Unsafe template"),
        ("{{ input['_secret'] }}", "Unsafe template"),
    ],
    ids=["unknown_variable", "syntax_error", "mro_escape", "globals_escape", "attr_filter_escape", "include_file", "import", "huge_repeat", "huge_power", "private_item"],
)
@pytest.mark.parametrize("where", ["task", "baseline"])
def test_bad_or_malicious_templates_fail_before_any_lm_call(template, expected, where, tmp_path):
    lm = ScriptedLM(oracle)
    task = _tiny_task(metadata={"input_template": template} if where == "task" else {})
    baseline = Candidate("Answer.", input_template=template) if where == "baseline" else None
    store = open_store(str(tmp_path / "s.sqlite"))
    try:
        with pytest.raises(TemplateError) as info:
            optimize(task, "random_search", model=lm, store=store, budget=8, progress=False, cache=False,
                     baseline=baseline, strategy_params={"demo_counts": [0], "n_candidates": 1})
        assert lm.n_calls == 0  # found before any model call, not after the budget is spent
        assert expected in info.value.message and info.value.fix
        assert isinstance(info.value, ConfigError)  # the CLI's exit 2
        # Nothing half-done: any run is closed, the store healthy.
        assert all(r.status in ("failed", "interrupted") for r in store.list_runs())
        assert store.check_integrity() == []
    finally:
        store.close()


def test_template_syntax_in_data_stays_literal_text():
    task = Task.from_examples("t", [Example(f"e{i}", {"input": "{{ 7*7 }} {% for x in range(3) %}x{% endfor %}"}, "y") for i in range(6)], split=(2, 2, 2))
    lm = ScriptedLM(lambda r: r.message_dicts[-1]["content"])
    out = TaskEvaluator(task, lm).evaluate([Candidate("Echo.", input_template="Q: {{ input }}")], task.val)[0]
    assert [r.output for r in out.results] == ["Q: {{ 7*7 }} {% for x in range(3) %}x{% endfor %}"] * 2


def test_an_over_long_example_is_a_per_example_failure_not_a_crash():
    """Backends refuse prompts longer than their context per request; the evaluator records it."""
    from promptopt.lm import LMResponse

    def small_context(req):
        if len(req.message_dicts[-1]["content"]) > 1000:
            return LMResponse.failure(LMConfigError("Prompt too long for the model's context (n_ctx=512).", fix="Shorten it."))
        return "yes"

    examples = [Example(f"e{i}", {"input": "word " * (2000 if i == 3 else 3)}, "yes") for i in range(8)]
    task = Task(name="t", train=[], val=examples, test=examples[:1])
    out = TaskEvaluator(task, LimitedLM(ScriptedLM(small_context))).evaluate([Candidate("Answer.")], task.val)[0]
    long_ = out.by_id()["e3"]
    assert long_.failed and long_.score is None and "context" in long_.error
    assert all(r.score == 1.0 for r in out.results if r.example_id != "e3")


@pytest.mark.embedded
def test_an_example_longer_than_the_embedded_context_is_recorded_not_raised(embedded_backend):
    """The real embedded backend (n_ctx 2048) on a ~6000-token example among normal ones."""
    long_text = " ".join(f"word{i}" for i in range(3000))
    examples = [Example(f"e{i}", {"input": long_text if i == 1 else f"short text {i}"}, "yes") for i in range(3)]
    task = Task(name="t", train=[], val=examples, test=examples[:1])
    out = TaskEvaluator(task, LimitedLM(embedded_backend), max_tokens=2).evaluate([Candidate("Answer yes or no.")], examples)[0]
    by_id = out.by_id()
    assert by_id["e1"].failed and by_id["e1"].score is None
    assert "context" in by_id["e1"].error and by_id["e1"].error_type == "LMConfigError"
    assert not by_id["e0"].failed and not by_id["e2"].failed  # the batch went on around it


@pytest.mark.parametrize("interruption", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["disk_full", "ctrl_c"])
def test_an_interrupted_export_leaves_the_old_file_and_no_temporary(interruption, tmp_path, healthy_store, monkeypatch):
    import shutil

    store_path = tmp_path / "s.sqlite"
    shutil.copy(healthy_store, store_path)
    out = tmp_path / "prompt.json"
    out.write_text('{"old": true}\n')
    st = open_store(str(store_path))
    run_id = st.list_runs()[0].id
    st.close()
    real_fsync = os.fsync

    def failing_fsync(fd):
        real_fsync(fd)
        raise interruption

    monkeypatch.setattr(os, "fsync", failing_fsync)
    if isinstance(interruption, OSError):
        code, text = run_cli(["export", run_id, "--store", str(store_path), "--out", str(out)])
        assert code == 2, text
        assert "No space left on device" in text and "Fix:" in text and "untouched" in text
    else:
        st = open_store(str(store_path))
        try:
            with pytest.raises(KeyboardInterrupt):
                export_run(st, run_id, out)
        finally:
            st.close()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert out.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # And once the disk has room again, the export goes through.
    code, text = run_cli(["export", run_id, "--store", str(store_path), "--out", str(out)])
    assert code == 0, text
    assert '"promptopt_export"' in out.read_text()


def test_a_corrupted_lm_cache_is_a_clear_config_error(tmp_path):
    from promptopt.lm import CachedLM

    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"\x00garbage" * 512)
    before = bad.read_bytes()
    with pytest.raises(ConfigError) as info:
        CachedLM(ScriptedLM(oracle), bad)
    assert "cache" in info.value.message and str(bad) in info.value.message and "Delete the cache file" in (info.value.fix or "")
    assert bad.read_bytes() == before


def test_good_inputs_of_the_catalogue_really_are_good(tmp_path, healthy_store):
    """The catalogue's baseline command succeeds, so each case fails for its own reason only."""
    from _catalogue import prepare

    ctx = prepare(tmp_path / "ok", healthy_store)
    argv = ctx.optimize("--model", "embedded")
    # Run on the scripted model instead of loading the embedded one: same CLI path.
    import promptopt.lm._factory as factory

    real = factory.make_backend
    factory.make_backend = lambda model="embedded", **kw: ScriptedLM(oracle, identity="scripted")
    try:
        code, out = run_cli(argv)
    finally:
        factory.make_backend = real
    assert code == 0, out
    assert ctx.json_out.exists()
    assert GOOD_JSONL.splitlines()[0] in ctx.data.read_text()
