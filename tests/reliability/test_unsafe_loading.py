"""Issue 5: nothing a user loads from elsewhere (exported prompts, stores, caches, config files)
is unpickled or executed. A static scan of the package, plus hostile files that would run code
(each tries to create a marker file) fed to every loader."""

from __future__ import annotations

import ast
import json
import pathlib
import pickle
import sqlite3

import pytest

from _catalogue import make_healthy_store, run_cli
from _drills import oracle
from promptopt._render import render_messages
from promptopt.errors import ConfigError, StoreCorruptedError, TemplateError
from promptopt.lm import CachedLM, LMRequest, ScriptedLM
from promptopt.store import export_run, load_candidate_file, load_prompt, open_store
from promptopt.task import Example, Task

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "promptopt"

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle", "joblib"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__", "execfile"}
UNSAFE_ATTRS = {
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "unsafe_load_all"), ("yaml", "full_load_all"),
    ("os", "system"), ("os", "popen"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
}
UNSANDBOXED_JINJA = {"Environment", "NativeEnvironment", "Template"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keywords(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords if k.arg}


def scan(path: pathlib.Path) -> list[str]:
    """Unsafe loading or execution constructs in one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    jinja_names = set()
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in UNSAFE_MODULES:
                found.append(f"{where} imports from {node.module}")
            if module == "jinja2":
                jinja_names |= {a.asname or a.name for a in node.names if a.name in UNSANDBOXED_JINJA}
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kw = _keywords(node)
            if isinstance(node.func, ast.Name) and node.func.id in UNSAFE_BUILTINS:
                found.append(f"{where} calls {node.func.id}()")
            if tuple(name.split(".")[-2:]) in UNSAFE_ATTRS:
                found.append(f"{where} calls {name}()")
            if name.endswith("yaml.load") or name.endswith("yaml.load_all"):
                loader = _dotted(kw.get("Loader")) if "Loader" in kw else (_dotted(node.args[1]) if len(node.args) > 1 else "")
                if not loader.endswith(("SafeLoader", "CSafeLoader", "BaseLoader")):
                    found.append(f"{where} calls {name}() without a safe loader")
            if name.endswith("torch.load"):
                weights_only = kw.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append(f"{where} calls torch.load() without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy"):
                allow = kw.get("allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    found.append(f"{where} calls {name}(allow_pickle=True)")
            if name in {f"jinja2.{n}" for n in UNSANDBOXED_JINJA} or (isinstance(node.func, ast.Name) and node.func.id in jinja_names):
                found.append(f"{where} builds an unsandboxed Jinja2 {name}")
            if name.split(".")[0] == "subprocess" and isinstance(kw.get("shell"), ast.Constant) and kw["shell"].value is True:
                found.append(f"{where} runs a shell")
    return found


def test_the_package_never_unpickles_evals_or_loads_yaml_unsafely():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files for p in scan(f)]
    assert problems == []


def test_the_scanner_flags_what_it_looks_for(tmp_path):
    """The scan above must be able to fail: each construct here is reported."""
    bad = PACKAGE / "_reliability_scan_probe.py"
    source = (
        "import pickle\nimport yaml, torch, numpy as np, subprocess\nfrom jinja2 import Environment\n"
        "pickle.loads(b'')\nyaml.load('x')\nyaml.unsafe_load('x')\neval('1')\nexec('x=1')\n"
        "torch.load('m.pt')\nnp.load('a.npy', allow_pickle=True)\nEnvironment().from_string('{{x}}')\n"
        "subprocess.run('ls', shell=True)\nyaml.load('x', Loader=yaml.SafeLoader)\ntorch.load('m.pt', weights_only=True)\n"
    )
    bad.write_text(source)
    try:
        found = scan(bad)
    finally:
        bad.unlink()
    joined = "\n".join(found)
    for needle in ("imports pickle", "yaml.load() without a safe loader", "yaml.unsafe_load()", "calls eval()", "calls exec()",
                   "torch.load() without weights_only", "allow_pickle=True", "unsandboxed Jinja2", "runs a shell"):
        assert needle in joined, needle
    assert len(found) == 9  # the two safe calls at the end are not flagged


# --- hostile files -----------------------------------------------------------------------------------


class _Plant:
    """Unpickling this creates the marker file: proof that something unpickled it."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


YAML_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]",
    "!!python/object/new:pathlib.Path ['{marker}']",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tag", YAML_TAGS, ids=["apply_os_system", "apply_touch", "object_new", "python_name"])
def test_exported_prompt_yaml_with_python_tags_is_rejected(tag, tmp_path):
    marker = tmp_path / "PWNED"
    value = tag.format(marker=marker)
    for i, text in enumerate([
        f"instruction: {value}\n",
        f"promptopt_export: 1\nbest:\n  candidate:\n    instruction: Classify.\n    parts: {value}\n",
        f"!!python/object/apply:os.system ['touch {marker}']\n",
    ]):
        path = tmp_path / f"prompt{i}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_candidate_file(path)
        assert str(path) in info.value.message and info.value.fix
    assert not marker.exists()


def test_config_file_with_python_tag_exits_2_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: !!python/object/apply:os.system ['touch {marker}']\nbudget_calls: 3\n")
    code, out = run_cli(["optimize", "--config", str(cfg)])
    assert code == 2 and "python/object/apply" in out
    assert not marker.exists()


def test_json_export_with_pickle_like_content_is_plain_data(tmp_path):
    """A JSON export can only hold data; odd keys are refused, never interpreted."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"instruction": "x", "__reduce__": ["os.system", ["touch x"]]}))
    with pytest.raises(ConfigError) as info:
        load_candidate_file(path)
    assert "unknown keys ['__reduce__']" in info.value.message


def test_a_loaded_prompt_with_a_hostile_template_never_executes(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "p.yaml"
    path.write_text(
        "instruction: Classify.\n"
        f"input_template: \"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}\"\n"
    )
    candidate = load_candidate_file(path)  # plain text: loading is fine
    task = Task(name="t", train=[], val=[Example("e", {"input": "x"}, "y")], test=[Example("f", {"input": "x"}, "y")])
    with pytest.raises(TemplateError):
        render_messages(candidate, {"input": "x"}, task)
    assert not marker.exists()


def test_cache_rows_holding_pickles_are_never_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    cache = tmp_path / "cache.sqlite"
    backend = ScriptedLM(oracle, identity="scripted")
    lm = CachedLM(backend, cache)
    req = LMRequest.chat([{"role": "user", "content": "review 1: good"}])
    first = lm.complete([req])[0]
    lm.close()
    payload = pickle.dumps(_Plant(marker))
    con = sqlite3.connect(cache)
    con.execute("update lm_cache set response = ?", (payload,))
    con.commit()
    con.close()
    lm = CachedLM(backend, cache)
    again = lm.complete([req])[0]
    lm.close()
    assert not marker.exists()
    # The poisoned row was dropped and the answer recomputed (a miss, not a crash, not a pickle).
    assert again.text == first.text and not again.cached
    assert backend.n_calls == 2


def test_store_rows_holding_pickles_are_reported_not_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    store = tmp_path / "store.sqlite"
    run_id = make_healthy_store(store)
    con = sqlite3.connect(store)
    con.execute("update candidates set content = ? where id = (select min(id) from candidates)", (pickle.dumps(_Plant(marker)),))
    con.execute("update runs set summary = ?", (pickle.dumps(_Plant(marker)),))
    con.commit()
    con.close()
    st = open_store(str(store))
    try:
        with pytest.raises(StoreCorruptedError) as info:
            st.get_candidates(run_id)
        assert "not valid JSON" in info.value.message and info.value.fix
        with pytest.raises(StoreCorruptedError):
            load_prompt(run_id, store=st)
    finally:
        st.close()
    code, out = run_cli(["doctor", str(store)])
    assert code == 1 and "problem content" in out
    code, out = run_cli(["show", run_id, "--store", str(store)])
    assert code == 2 and "not valid JSON" in out
    assert not marker.exists()


def test_export_round_trip_is_plain_json_and_yaml(tmp_path):
    """What promptopt writes loads back with json / yaml.safe_load: no tags, no objects."""
    import yaml

    store = tmp_path / "store.sqlite"
    run_id = make_healthy_store(store)
    st = open_store(str(store))
    try:
        export_run(st, run_id, tmp_path / "e.yaml", what="all")
        export_run(st, run_id, tmp_path / "e.json", what="all")
        best = load_prompt(run_id, store=st)
    finally:
        st.close()
    text = (tmp_path / "e.yaml").read_text()
    assert "!!" not in text and "&id" not in text
    assert yaml.safe_load(text) == json.loads((tmp_path / "e.json").read_text())
    assert load_candidate_file(tmp_path / "e.yaml").hash == load_candidate_file(tmp_path / "e.json").hash == best.hash
