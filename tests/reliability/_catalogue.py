"""The bad-input catalogue: every case is a command line that must exit 2 with a message naming
the problem (and a ``Fix:``), and leave everything it was pointed at as it was.

Shared by tests/reliability/test_bad_inputs.py and benchmarks/reliability.py. A case builds its
files in a fresh folder that already holds a good dataset, a healthy store with one finished run
and an earlier result file, then returns the command line to run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import shutil
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console

import promptopt.cli as cli

GOOD_ROWS = [{"input": f"review {i}: {'good' if i % 2 else 'bad'} film", "output": "positive" if i % 2 else "negative"} for i in range(20)]
GOOD_JSONL = "".join(json.dumps(r) + "\n" for r in GOOD_ROWS)


@dataclass
class Ctx:
    """A case's folder: ``data`` (good JSONL), ``store`` (healthy, one finished run), ``json_out``
    (where --json-out points: must never be written), ``marker`` (must never be created)."""

    dir: pathlib.Path
    data: pathlib.Path
    store: pathlib.Path
    json_out: pathlib.Path
    marker: pathlib.Path

    def write(self, name: str, content: str | bytes) -> str:
        p = self.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return str(p)

    def optimize(self, *extra: str, data: str | None = None, store: str | None = None, json_out: str | None = None) -> list[str]:
        """An optimize command on the healthy store that would be fine but for what is changed."""
        return ["optimize", "--data", data or str(self.data), "--store", store or str(self.store), "--json-out", json_out or str(self.json_out),
                "--no-progress", "--budget-calls", "2", "--max-tokens", "2", *extra]


@dataclass
class Case:
    id: str
    what: str  # the bad input, in words (for the report)
    build: Callable[[Ctx], list[str]]
    expect: tuple[str, ...]  # substrings the message must contain (the problem named)
    unchanged: tuple[str, ...] = ()  # extra files (relative to the case folder) that must keep their bytes
    creates_no_store: bool = False  # the store path given does not exist and must not be created


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _store_variant(name: str, make: Callable[[Ctx, pathlib.Path], None], command: str = "optimize") -> Callable[[Ctx], list[str]]:
    def build(ctx: Ctx) -> list[str]:
        path = ctx.dir / name
        make(ctx, path)
        if command == "show":
            return ["show", "--store", str(path)]
        return ctx.optimize(store=str(path))

    return build


def _random_bytes(ctx: Ctx, path: pathlib.Path) -> None:
    path.write_bytes(hashlib.sha256(b"x").digest() * 256)


def _truncated(ctx: Ctx, path: pathlib.Path) -> None:
    data = ctx.store.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _newer_schema(ctx: Ctx, path: pathlib.Path) -> None:
    shutil.copy(ctx.store, path)
    con = sqlite3.connect(path)
    con.execute("update meta set value = '99' where key = 'schema_version'")
    con.commit()
    con.close()


def _yaml_python_tag(ctx: Ctx) -> list[str]:
    cfg = ctx.write("evil.yaml", f"data: !!python/object/apply:os.system ['touch {ctx.marker}']\n")
    return ["optimize", "--config", cfg, "--store", str(ctx.store), "--no-progress"]


CASES: list[Case] = [
    # --- malformed files ---------------------------------------------------------------------
    Case("jsonl_truncated_line", "JSONL whose second line is cut off",
         lambda c: c.optimize(data=c.write("d.jsonl", _jsonl(GOOD_ROWS[:1]) + '{"input": "c", "output": \n')), ("d.jsonl", "line 2")),
    Case("jsonl_array_line", "JSONL line holding an array instead of an object",
         lambda c: c.optimize(data=c.write("d.jsonl", "[1, 2]\n")), ("line 1", "array, not an object")),
    Case("json_malformed", "JSON array missing its closing bracket",
         lambda c: c.optimize(data=c.write("d.json", json.dumps(GOOD_ROWS)[:-1])), ("malformed JSON", "line 1")),
    Case("json_scalar", "JSON file holding a bare string",
         lambda c: c.optimize(data=c.write("d.json", '"hello"')), ("found a JSON string",)),
    Case("json_examples_not_list", "JSON whose 'examples' is a string",
         lambda c: c.optimize(data=c.write("d.json", '{"examples": "abc"}')), ("'examples' is a JSON string",)),
    Case("csv_ragged_row", "CSV row with more cells than the header",
         lambda c: c.optimize(data=c.write("d.csv", "input,output\na,b,c\n")), ("row 1 (line 2) has 3 cells",)),
    Case("csv_unterminated_quote", "CSV with an unterminated quote",
         lambda c: c.optimize(data=c.write("d.csv", 'input,output\n"abc,def\nx,y\n')), ("row 1", "cells")),
    Case("csv_duplicate_header", "CSV header naming a column twice",
         lambda c: c.optimize(data=c.write("d.csv", "input,input\na,b\n")), ("repeats column", "input")),
    Case("csv_header_only", "CSV with a header and no rows",
         lambda c: c.optimize(data=c.write("d.csv", "input,output\n")), ("header but no rows",)),
    Case("binary_garbage", "binary bytes (NUL, 0xff) in a .jsonl",
         lambda c: c.optimize(data=c.write("d.jsonl", bytes(range(256)))), ("not valid UTF-8", "byte 0x80")),
    # --- encodings and sizes -----------------------------------------------------------------
    Case("latin1_bytes", "Latin-1 encoded JSONL (non-UTF-8 byte)",
         lambda c: c.optimize(data=c.write("d.jsonl", '{"input": "caf\u00e9", "output": "x"}\n'.encode("latin-1"))), ("not valid UTF-8", "0xe9", "iconv")),
    Case("utf16_file", "UTF-16 encoded JSONL",
         lambda c: c.optimize(data=c.write("d.jsonl", GOOD_JSONL.encode("utf-16"))), ("not valid UTF-8",)),
    Case("empty_file", "empty (0-byte) dataset",
         lambda c: c.optimize(data=c.write("d.jsonl", "")), ("is empty",)),
    Case("whitespace_file", "dataset of blank lines",
         lambda c: c.optimize(data=c.write("d.jsonl", "\n  \n\n")), ("is empty",)),
    Case("one_example", "dataset with one example",
         lambda c: c.optimize(data=c.write("d.jsonl", _jsonl(GOOD_ROWS[:1]))), ("only one example",)),
    Case("two_examples", "dataset with two examples (no room for val and test)",
         lambda c: c.optimize(data=c.write("d.jsonl", _jsonl(GOOD_ROWS[:2]))), ("split",)),
    # --- fields --------------------------------------------------------------------------------
    Case("duplicate_ids", "two examples with the same id",
         lambda c: c.optimize(data=c.write("d.jsonl", _jsonl([{**r, "id": "a" if i < 2 else f"x{i}"} for i, r in enumerate(GOOD_ROWS)]))),
         ("duplicate example id 'a'", "line 1 and line 2")),
    Case("no_input_field", "records without any known input field",
         lambda c: c.optimize(data=c.write("d.jsonl", _jsonl([{"prompt": r["input"], "output": r["output"]} for r in GOOD_ROWS]))), ("no input field found", "prompt")),
    Case("misnamed_input_field", "--input-field naming a field the records lack",
         lambda c: c.optimize("--input-field", "inptu"), ("no field 'inptu'", "input")),
    Case("misnamed_csv_column", "--input-field with a typo on a CSV",
         lambda c: c.optimize("--input-field", "inptu", data=c.write("d.csv", "input,output\n" + "".join(f"{r['input']},{r['output']}\n" for r in GOOD_ROWS))),
         ("no column 'inptu'", "Did you mean 'input'")),
    Case("misnamed_output_field", "--output-field naming a field the records lack",
         lambda c: c.optimize("--output-field", "lable"), ("no field 'lable'",)),
    Case("field_missing_in_one_record", "one record lacks the output field",
         lambda c: c.optimize(data=c.write("d.jsonl", GOOD_JSONL + '{"input": "x"}\n')), ("line 21 has no field 'output'",)),
    Case("null_input", "an input value is null",
         lambda c: c.optimize(data=c.write("d.jsonl", GOOD_JSONL + '{"input": null, "output": "a"}\n')), ("line 21", "is null")),
    Case("nested_output", "an output value is a JSON object",
         lambda c: c.optimize(data=c.write("d.jsonl", _jsonl([{"input": "a", "output": {"x": 1}}]))), ("'output' is a JSON object",)),
    # --- paths -----------------------------------------------------------------------------------
    Case("data_missing", "--data path that does not exist",
         lambda c: c.optimize(data=str(c.dir / "nope.jsonl")), ("nope.jsonl does not exist",)),
    Case("data_is_directory", "--data pointing at a folder",
         lambda c: c.optimize(data=str(c.dir)), ("is a directory",)),
    Case("store_is_directory", "--store pointing at a folder",
         lambda c: c.optimize(store=str(c.dir)), ("is a directory",)),
    Case("store_dir_missing", "--store in a folder that does not exist",
         lambda c: c.optimize(store=str(c.dir / "no" / "s.sqlite")), ("does not exist",), creates_no_store=True),
    Case("store_parent_is_file", "--store under a regular file",
         lambda c: c.optimize(store=str(c.data) + "/s.sqlite"), ("is not a directory",)),
    Case("json_out_dir_missing", "--json-out in a folder that does not exist",
         lambda c: c.optimize(json_out=str(c.dir / "no" / "r.json")), ("does not exist",)),
    Case("json_out_is_directory", "--json-out pointing at a folder",
         lambda c: c.optimize(json_out=str(c.dir)), ("is a directory",)),
    Case("json_out_under_file", "--json-out under a regular file (unwritable path)",
         lambda c: c.optimize(json_out=str(c.data) + "/r.json"), ("is a file, not a directory",)),
    Case("json_out_unwritable_fs", "--json-out on a file system that refuses files (/proc), even for root",
         lambda c: c.optimize(json_out="/proc/promptopt-result.json"), ("Cannot write /proc/promptopt-result.json",)),
    Case("export_dir_missing", "export to a folder that does not exist",
         lambda c: ["export", _first_run(c), "--store", str(c.store), "--out", str(c.dir / "no" / "p.json")], ("does not exist",)),
    # --- names and numbers ---------------------------------------------------------------------
    Case("unknown_format", "--format xml",
         lambda c: c.optimize("--format", "xml"), ("Unknown data format 'xml'",)),
    Case("wrong_format_for_file", "--format json on a JSONL file",
         lambda c: c.optimize("--format", "json"), ("malformed JSON", "one JSON object per line")),
    Case("unknown_strategy", "--strategy nonsense",
         lambda c: c.optimize("--strategy", "nonsense"), ("Unknown strategy 'nonsense'", "random_search")),
    Case("unknown_metric", "--metric nonsense",
         lambda c: c.optimize("--metric", "nonsense"), ("nonsense",)),
    Case("unknown_parser", "--parser nonsense",
         lambda c: c.optimize("--parser", "nonsense"), ("Unknown parser 'nonsense'",)),
    Case("unknown_model_provider", "--model notaprovider/x",
         lambda c: c.optimize("--model", "notaprovider/x"), ("notaprovider",)),
    Case("model_file_missing", "--model /missing.gguf",
         lambda c: c.optimize("--model", str(c.dir / "missing.gguf")), ("Model file not found",)),
    Case("model_file_not_gguf", "--model pointing at a text file named .gguf",
         lambda c: c.optimize("--model", c.write("fake.gguf", "not a model")), ("not a GGUF file",)),
    Case("budget_zero", "--budget-calls 0",
         lambda c: c.optimize("--budget-calls", "0"), ("--budget-calls must be positive",)),
    Case("budget_negative", "--budget-calls -5",
         lambda c: c.optimize("--budget-calls", "-5"), ("--budget-calls must be positive, got -5",)),
    Case("max_tokens_zero", "--max-tokens 0",
         lambda c: c.optimize("--max-tokens", "0"), ("--max-tokens must be at least 1",)),
    Case("max_cost_negative", "--max-cost-usd -1",
         lambda c: c.optimize("--max-cost-usd", "-1"), ("max_cost_usd", "negative")),
    Case("split_over_one", "--split fractions summing past 1",
         lambda c: c.optimize("--split", "0.5,0.5,0.5"), ("Bad split",)),
    Case("split_not_numbers", "--split a,b,c",
         lambda c: c.optimize("--split", "a,b,c"), ("is not three numbers",)),
    Case("param_not_key_value", "--param without '='",
         lambda c: c.optimize("--param", "novalue"), ("is not key=value",)),
    Case("param_unknown", "--param naming no parameter of the strategy",
         lambda c: c.optimize("--param", "bogus=1"), ("Bad parameters for strategy 'random_search'",)),
    Case("param_zero_candidates", "--param n_candidates=0",
         lambda c: c.optimize("--param", "n_candidates=0"), ("n_candidates >= 1",)),
    Case("param_too_many_demos", "--param demo_counts=[50] on an 8-example train split",
         lambda c: c.optimize("--param", "demo_counts=[50]"), ("demo_counts asks for up to 50 demos",)),
    Case("unknown_option", "a misspelt option (--budjet-calls)",
         lambda c: c.optimize("--budjet-calls", "3"), ("No such option: --budjet-calls", "--help")),
    Case("option_wrong_type", "--seed abc",
         lambda c: c.optimize("--seed", "abc"), ("--seed", "valid integer")),
    Case("unknown_command", "a command that does not exist",
         lambda c: ["optimise", "--data", str(c.data)], ("No such command 'optimise'",)),
    # --- config files ----------------------------------------------------------------------------
    Case("config_malformed_yaml", "--config with broken YAML",
         lambda c: ["optimize", "--config", c.write("c.yaml", "data: [unclosed\n"), "--store", str(c.store)], ("not valid YAML",)),
    Case("config_python_tag", "--config YAML with a !!python/object/apply tag (code execution attempt)",
         _yaml_python_tag, ("not valid YAML", "python/object/apply")),
    Case("config_unknown_key", "--config with a misspelt option",
         lambda c: ["optimize", "--config", c.write("c.yaml", f"data: {c.data}\nbudjet_calls: 3\n"), "--store", str(c.store)], ("budjet_calls",)),
    Case("config_not_mapping", "--config holding a list",
         lambda c: ["optimize", "--config", c.write("c.yaml", "- a\n- b\n"), "--store", str(c.store)], ("must hold a mapping",)),
    Case("config_missing", "--config path that does not exist",
         lambda c: ["optimize", "--config", str(c.dir / "none.yaml")], ("does not exist",)),
    # --- stores ------------------------------------------------------------------------------------
    Case("store_random_bytes", "--store that is 8 KiB of random bytes",
         _store_variant("bad.sqlite", _random_bytes), ("not a readable promptopt SQLite database",), unchanged=("bad.sqlite",)),
    Case("store_truncated", "--store cut in half (a torn copy)",
         _store_variant("half.sqlite", _truncated), ("malformed",), unchanged=("half.sqlite",)),
    Case("store_truncated_show", "`show` on a store cut in half",
         _store_variant("half.sqlite", _truncated, "show"), ("malformed",), unchanged=("half.sqlite",)),
    Case("store_newer_schema", "--store written by schema v99",
         _store_variant("newer.sqlite", _newer_schema), ("schema v99", "Upgrade promptopt"), unchanged=("newer.sqlite",)),
    Case("store_newer_schema_show", "`show` on a store written by schema v99",
         _store_variant("newer.sqlite", _newer_schema, "show"), ("schema v99",), unchanged=("newer.sqlite",)),
    Case("doctor_missing_store", "`doctor` on a path with no store",
         lambda c: ["doctor", str(c.dir / "missing.sqlite")], ("No store at", "does not exist"), creates_no_store=True),
]


def _first_run(ctx: Ctx) -> str:
    con = sqlite3.connect(ctx.store)
    try:
        return con.execute("select id from runs order by pk limit 1").fetchone()[0]
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Running a case


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``promptopt.cli.main(argv)`` with its console output captured: (exit code, text)."""
    buf = io.StringIO()
    old = cli.console, cli.err_console
    cli.console = cli.err_console = Console(file=buf, width=400, no_color=True)
    try:
        code = cli.main(argv)
    finally:
        cli.console, cli.err_console = old
    return code, " ".join(buf.getvalue().split())


def _digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_healthy_store(path: pathlib.Path) -> str:
    """A store with one finished run (scripted model), closed so it is one self-contained file."""
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _drills import drill_strategy, make_task, oracle
    from promptopt.lm import ScriptedLM
    from promptopt.run import optimize
    from promptopt.store import open_store

    st = open_store(str(path))
    try:
        res = optimize(make_task(), drill_strategy(n_candidates=3, batch_size=3), model=ScriptedLM(oracle), store=st, progress=False, cache=False)
    finally:
        st.close()
    return res.run_id


def prepare(dir: pathlib.Path, healthy_store: pathlib.Path) -> Ctx:
    dir.mkdir(parents=True, exist_ok=True)
    data = dir / "good.jsonl"
    data.write_text(GOOD_JSONL, encoding="utf-8")
    store = dir / "store.sqlite"
    shutil.copy(healthy_store, store)
    return Ctx(dir, data, store, dir / "result.json", dir / "PWNED")


@dataclass
class Outcome:
    case: str
    code: int
    output: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_case(case: Case, dir: pathlib.Path, healthy_store: pathlib.Path) -> Outcome:
    """Run one case and check it: exit 2, the problem named, a Fix given, nothing corrupted."""
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _drills import doctor, final_state_of_run

    ctx = prepare(dir, healthy_store)
    argv = case.build(ctx)
    before = {p: _digest(p) for p in dir.rglob("*") if p.is_file() and p != ctx.store}
    run_before = final_state_of_run(ctx.store, _first_run(ctx))
    store_arg = argv[argv.index("--store") + 1] if "--store" in argv else None
    code, out = run_cli(argv)
    problems = []
    if code != 2:
        problems.append(f"exit code {code}, expected 2")
    missing = [e for e in case.expect if e.lower() not in out.lower()]
    if missing:
        problems.append(f"message lacks {missing}")
    if "Fix:" not in out:
        problems.append("message gives no 'Fix:'")
    if "Traceback" in out:
        problems.append("a traceback was printed")
    # Nothing corrupted: every file that was there keeps its bytes (the store may only gain a
    # run closed as failed), no result file, no leftovers, no code executed.
    after = {p: _digest(p) for p in dir.rglob("*") if p.is_file()}
    changed = [str(p.relative_to(dir)) for p, d in before.items() if after.get(p) != d]
    if changed:
        problems.append(f"files changed: {changed}")
    for rel in case.unchanged:
        if (dir / rel) not in before:
            problems.append(f"{rel} was not there before the case ran")
    if ctx.json_out.exists():
        problems.append("--json-out was written")
    if ctx.marker.exists():
        problems.append("injected code ran (marker file created)")
    leftovers = [p.name for p in dir.rglob(".*") if p.is_file()]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    if case.creates_no_store and store_arg is None:
        target = pathlib.Path(argv[-1])
        if target.exists():
            problems.append(f"{target.name} was created")
    if case.creates_no_store and store_arg is not None and pathlib.Path(store_arg).exists():
        problems.append(f"{store_arg} was created")
    # The healthy store: still healthy, its finished run untouched, no run left half-open.
    d_code, d_out = doctor(ctx.store)
    if d_code != 0:
        problems.append(f"store no longer healthy: {d_out.strip()}")
    if final_state_of_run(ctx.store, _first_run(ctx)) != run_before:
        problems.append("the finished run in the store changed")
    con = sqlite3.connect(ctx.store)
    try:
        open_runs = con.execute("select id, status from runs where status in ('created', 'running')").fetchall()
    finally:
        con.close()
    if open_runs:
        problems.append(f"runs left open: {open_runs}")
    return Outcome(case.id, code, out, problems)
