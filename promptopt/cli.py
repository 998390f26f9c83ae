"""The ``promptopt`` command line.

Exit codes: 0 done; 2 bad input (any :class:`~promptopt.errors.ConfigError`); 3 budget exhausted
before any result; 1 any other failure.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from typing import Any, Optional

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from promptopt.errors import BudgetExceeded, ConfigError, PromptOptError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Automatic prompt optimization.")
# soft_wrap: messages are never broken mid-line, so they stay greppable in logs and tests.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_STORE = ".promptopt/store.sqlite"

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_BUDGET = 0, 1, 2, 3


def _parse_value(raw: str) -> Any:
    """``--param`` values: JSON when it parses (numbers, lists, true/false), else the string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--param {item!r} is not key=value.", fix="Write --param name=value, e.g. --param n_candidates=8.")
        key, value = item.split("=", 1)
        params[key.strip()] = _parse_value(value.strip())
    return params


def _resolve_store(store: str | None) -> str:
    spec = store or DEFAULT_STORE
    if "://" not in spec and spec != ":memory:":
        path = pathlib.Path(spec)
        if store is None:
            path.parent.mkdir(parents=True, exist_ok=True)
    return spec


def _load_config_file(path: pathlib.Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.", fix="Check the path given to --config.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}.", fix="Fix the YAML syntax.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of option names to values.", fix="Write e.g. 'data: train.jsonl' lines.")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


@app.command()
def optimize(
    data: Optional[str] = typer.Option(None, "--data", help="Dataset file (JSONL, CSV, JSON, instruction-induction, BBH, task.json, GSM8K)."),
    format: Optional[str] = typer.Option(None, "--format", help="jsonl, csv, json, ii, bbh, bigbench or gsm8k (default: guessed from the file)."),
    input_field: Optional[str] = typer.Option(None, "--input-field", help="Input field name(s), comma separated."),
    output_field: Optional[str] = typer.Option(None, "--output-field", help="Output field name."),
    metric: Optional[str] = typer.Option(None, "--metric", help="exact, normalized_exact, contains, regex, numeric, choice, f1."),
    parser: Optional[str] = typer.Option(None, "--parser", help="auto, raw, first_line, choice, label, number, regex:<pattern>."),
    split: Optional[str] = typer.Option(None, "--split", help="train,val,test fractions or counts, e.g. 0.4,0.2,0.4 or 10,20,30."),
    split_seed: Optional[int] = typer.Option(None, "--split-seed", help="Seed of the train/val/test shuffle (default: --seed)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Strategy name (see `promptopt strategies`)."),
    param: list[str] = typer.Option([], "--param", help="Strategy parameter key=value (JSON values), repeatable."),
    model: Optional[str] = typer.Option(None, "--model", help="Task model: 'embedded' (default) or a litellm model string."),
    proposer_model: Optional[str] = typer.Option(None, "--proposer-model", help="Model that writes prompts (default: the task model)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model that judges pairs (SPO)."),
    budget_calls: Optional[int] = typer.Option(None, "--budget-calls", help="Task-model evaluations the search may spend."),
    max_cost_usd: Optional[float] = typer.Option(None, "--max-cost-usd", help="Hard cap on dollars spent, all models."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Max tokens per task-model answer (default 64)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default 0)."),
    store: Optional[str] = typer.Option(None, "--store", help=f"Store path or SQLAlchemy URL (default {DEFAULT_STORE})."),
    json_out: Optional[pathlib.Path] = typer.Option(None, "--json-out", help="Write the result as JSON here."),
    run_name: Optional[str] = typer.Option(None, "--run-name"),
    config: Optional[pathlib.Path] = typer.Option(None, "--config", help="YAML file with any of these options (flags win)."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Optimize a prompt on a dataset and print baseline vs best test scores."""
    from promptopt.data import load_task
    from promptopt.run import optimize as run_optimize

    cfg = _load_config_file(config) if config else {}
    flags = {
        "data": data, "format": format, "input_field": input_field, "output_field": output_field, "metric": metric,
        "parser": parser, "split": split, "split_seed": split_seed, "strategy": strategy, "model": model,
        "proposer_model": proposer_model, "judge_model": judge_model, "budget_calls": budget_calls,
        "max_cost_usd": max_cost_usd, "max_tokens": max_tokens, "seed": seed, "store": store, "run_name": run_name,
    }
    known = set(flags) | {"param", "json_out"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"Unknown option(s) in {config}: {unknown}.", fix=f"Use option names from: {sorted(known)}.")
    opts = {k: (v if v is not None else cfg.get(k)) for k, v in flags.items()}
    params = dict(cfg.get("param") or {})
    params.update(_parse_params(param))
    json_out = json_out or (pathlib.Path(cfg["json_out"]) if cfg.get("json_out") else None)
    if not opts["data"]:
        raise ConfigError("No dataset given.", fix="Pass --data PATH (or 'data:' in the --config file).")
    seed_value = int(opts["seed"] or 0)
    split_value: Any = (0.4, 0.2, 0.4)
    if opts["split"]:
        raw = opts["split"]
        parts = raw if isinstance(raw, list) else str(raw).split(",")
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise ConfigError(f"--split {raw!r} is not three numbers.", fix="Write e.g. --split 0.4,0.2,0.4 or --split 10,20,30.") from None
        if len(nums) != 3:
            raise ConfigError(f"--split {raw!r} needs three numbers.", fix="Write train,val,test, e.g. --split 0.4,0.2,0.4.")
        split_value = tuple(int(n) for n in nums) if all(n >= 1 and n.is_integer() for n in nums) else tuple(nums)
    if json_out is not None:
        _check_writable(json_out)
    task = load_task(
        opts["data"],
        format=opts["format"],
        input_field=opts["input_field"],
        output_field=opts["output_field"],
        metric=opts["metric"],
        parser=opts["parser"],
        split=split_value,
        seed=int(opts["split_seed"] if opts["split_seed"] is not None else seed_value),
    )
    budget = opts["budget_calls"]
    if budget is not None and int(budget) <= 0:
        raise ConfigError(f"--budget-calls must be positive, got {budget}.", fix="Give a positive number of task-model calls.")
    if opts["max_tokens"] is not None and int(opts["max_tokens"]) < 1:
        raise ConfigError(f"--max-tokens must be at least 1, got {opts['max_tokens']}.", fix="Give the longest answer to allow, in tokens (default 64).")
    caps = {"max_cost_usd": float(opts["max_cost_usd"])} if opts["max_cost_usd"] is not None else None
    result = run_optimize(
        task,
        strategy=opts["strategy"] or "random_search",
        strategy_params=params,
        model=opts["model"] or "embedded",
        proposer_model=opts["proposer_model"],
        judge_model=opts["judge_model"],
        budget=int(budget) if budget is not None else 200,
        store=_resolve_store(opts["store"]),
        seed=seed_value,
        run_name=opts["run_name"],
        ledger_caps=caps,
        max_tokens=int(opts["max_tokens"]) if opts["max_tokens"] is not None else 64,
        progress=not no_progress,
    )
    _print_result(result)
    if json_out is not None:
        _write_json_atomic(json_out, result.to_dict())


def _check_writable(path: pathlib.Path) -> None:
    import tempfile

    if path.is_dir():
        raise ConfigError(f"Cannot write {path}: it is a directory.", fix=f"Give a file name, e.g. {path / 'result.json'}.")
    parent = path.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"Cannot write {path}: {parent} is a file, not a directory.", fix="Choose another --json-out path.")
    if not parent.is_dir():
        raise ConfigError(f"Cannot write {path}: directory {parent} does not exist.", fix="Create the directory or choose another --json-out path.")
    # Probe with a real file: os.access says yes to root on read-only or virtual file systems.
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: directory {parent} is not writable ({exc.strerror or exc}).", fix="Choose a writable --json-out path.") from None


def _write_json_atomic(path: pathlib.Path, payload: dict[str, Any]) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.resolve().parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _print_result(result: Any) -> None:
    table = Table(title=f"Run {result.run_id} ({result.strategy}, {result.status}: {result.stop_reason})")
    table.add_column("prompt")
    table.add_column("test score", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("n", justify="right")
    for label, ts in (("baseline", result.baseline_test), ("best", result.best_test or result.baseline_test)):
        if ts is None:
            table.add_row(label, "n/a", "", "")
        else:
            table.add_row(label, _fmt(ts.score), f"[{_fmt(ts.ci_low)}, {_fmt(ts.ci_high)}]", str(ts.n))
    console.print(table)
    if result.best is not None:
        console.print(f"best candidate {result.best.short_hash}: val {_fmt(result.best_val_score)}, "
                      f"{len(result.best.demos)} demos ({result.best.demo_format}), instruction: {result.best.instruction!r}")
    led = result.ledger
    console.print(
        f"ledger: {led.get('calls', 0)} calls, {led.get('cache_hits', 0)} cache hits, {led.get('failed_calls', 0)} failed, "
        f"{led.get('prompt_tokens', 0)}+{led.get('completion_tokens', 0)} tokens, ${led.get('cost_usd', 0):.4f}, {led.get('seconds', 0):.1f}s"
    )


@app.command()
def resume(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    store: Optional[str] = typer.Option(None, "--store"),
    json_out: Optional[pathlib.Path] = typer.Option(None, "--json-out"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Finish an interrupted run without re-evaluating anything already stored."""
    from promptopt.run import resume as run_resume

    if json_out is not None:
        _check_writable(json_out)
    result = run_resume(run_id, store=_resolve_store(store), progress=not no_progress)
    _print_result(result)
    if json_out is not None:
        _write_json_atomic(json_out, result.to_dict())


@app.command()
def show(
    run_id: Optional[str] = typer.Argument(None, help="Run id; omit to list runs."),
    store: Optional[str] = typer.Option(None, "--store"),
    top: int = typer.Option(10, "--top", help="Candidates to list."),
) -> None:
    """List runs, or show one run: status, leaderboard, failures."""
    from promptopt.store import open_store

    st = open_store(_resolve_store(store))
    try:
        if run_id is None:
            table = Table(title="runs")
            table.add_column("id", no_wrap=True, min_width=26)
            for col in ("name", "strategy", "status", "best val", "best test"):
                table.add_column(col)
            for run in st.list_runs():
                best = (run.summary or {}).get("best", {})
                table.add_row(run.id, run.name, run.strategy, run.status, _fmt(best.get("val_score")), _fmt(best.get("test_score")))
            console.print(table)
            return
        run = st.get_run(run_id)
        console.print(f"[bold]{run.id}[/bold] {run.name}: strategy {run.strategy} {run.strategy_params}, seed {run.seed}, status {run.status}")
        evals = st.get_evaluations(run.id)
        per: dict[str, dict[str, list[Any]]] = {}
        for ev in evals:
            per.setdefault(ev.candidate_hash, {}).setdefault(ev.split, []).append(ev.result)
        table = Table(title="candidates (by val score)")
        table.add_column("hash", no_wrap=True, min_width=12)
        for col in ("step", "val", "n val", "test", "errors", "unparsed", "demos"):
            table.add_column(col, no_wrap=True)
        table.add_column("instruction")
        rows = []
        for rec in st.get_candidates(run.id):
            splits = per.get(rec.hash, {})
            val = [r for r in splits.get("val", []) if r.score is not None]
            test = [r for r in splits.get("test", []) if r.score is not None]
            all_results = [r for rs in splits.values() for r in rs]
            rows.append((
                sum(r.score for r in val) / len(val) if val else math.nan,
                rec, len(val), (sum(r.score for r in test) / len(test)) if test else math.nan,
                sum(1 for r in all_results if r.failed), sum(1 for r in all_results if not r.failed and not r.parsed),
            ))
        rows.sort(key=lambda t: (-(t[0] if not math.isnan(t[0]) else -1), -t[2]))
        for val_score, rec, n_val, test_score, n_err, n_unp in rows[:top]:
            c = rec.candidate
            table.add_row(c.short_hash, str(rec.step), _fmt(val_score), str(n_val), _fmt(test_score), str(n_err), str(n_unp),
                          f"{len(c.demos)} {c.demo_format}", (c.instruction[:60] + ("…" if len(c.instruction) > 60 else "")))
        console.print(table)
        failures = [ev for ev in evals if ev.result.failed]
        if failures:
            kinds: dict[str, int] = {}
            for ev in failures:
                kinds[ev.result.error_type or "error"] = kinds.get(ev.result.error_type or "error", 0) + 1
            console.print(f"[red]{len(failures)} failed evaluations[/red]: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
        if run.summary:
            console.print("summary: " + json.dumps({k: run.summary.get(k) for k in ("stop_reason", "evaluations_used", "ledger")}))
    finally:
        st.close()


@app.command()
def export(
    run_id: str = typer.Argument(...),
    out: pathlib.Path = typer.Option(..., "--out", help="File to write (.json or .yaml)."),
    store: Optional[str] = typer.Option(None, "--store"),
    what: str = typer.Option("best", "--what", help="best or all"),
) -> None:
    """Export a run's best candidate (or all candidates) to JSON or YAML."""
    from promptopt.store import export_run, open_store

    fmt = "yaml" if out.suffix in (".yaml", ".yml") else "json"
    st = open_store(_resolve_store(store))
    try:
        export_run(st, run_id, out, format=fmt, what=what)
    finally:
        st.close()
    console.print(f"wrote {out}")


@app.command()
def register(
    run_id: str = typer.Argument(...),
    name: str = typer.Argument(..., help="Name production code loads with promptopt.load_prompt(name)."),
    store: Optional[str] = typer.Option(None, "--store"),
) -> None:
    """Publish the best candidate of a run under a name (a new version each time)."""
    from promptopt.store import load_prompt, open_store

    st = open_store(_resolve_store(store))
    try:
        run = st.get_run(run_id)
        cand = load_prompt(run.id, store=st)
        version = st.register_prompt(name, run.id, cand.hash)
    finally:
        st.close()
    console.print(f"registered {name} v{version} = {cand.short_hash} from {run.id}")


@app.command()
def doctor(store: str = typer.Argument(..., help="Store path or URL to check.")) -> None:
    """Check a store's integrity (exit 0 healthy, 1 problems found)."""
    from promptopt._doctor import diagnose

    problems = diagnose(store)
    if problems:
        for p in problems:
            console.print(f"[red]problem[/red] {p}")
        raise typer.Exit(EXIT_FAILURE)
    console.print("store is healthy")


@app.command()
def strategies() -> None:
    """List the available strategies and their parameters."""
    import inspect

    from promptopt.optimizers._base import STRATEGIES, make_strategy

    make_strategy  # noqa: B018 - importing registers the built-ins
    import promptopt.optimizers  # noqa: F401

    for name, cls in sorted(STRATEGIES.items()):
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        console.print(f"[bold]{name}[/bold]: {', '.join(params)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point with promptopt's exit codes."""
    try:
        code = app(args=argv, standalone_mode=False)
    except BudgetExceeded as exc:
        err_console.print(f"[red]budget exhausted before any result:[/red] {escape(str(exc))}")
        return EXIT_BUDGET
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_BAD_INPUT
    except PromptOptError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_FAILURE
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_FAILURE
    except KeyboardInterrupt:
        err_console.print("interrupted: `promptopt resume RUN` finishes the run")
        return 130
    except Exception as exc:  # click usage errors and the rest
        if isinstance(exc, _click_classes("UsageError")):
            command = f"promptopt {exc.ctx.info_name} --help" if getattr(exc, "ctx", None) is not None and exc.ctx.parent is not None else "promptopt --help"
            err_console.print(f"[red]usage error:[/red] {escape(exc.format_message())} Fix: see `{command}` for the options.")
            return EXIT_BAD_INPUT
        if isinstance(exc, _click_classes("Abort")):
            return 130
        err_console.print(f"[red]unexpected error:[/red] {type(exc).__name__}: {escape(str(exc))}")
        return EXIT_FAILURE
    return code if isinstance(code, int) else EXIT_OK


def _click_classes(name: str) -> tuple[type, ...]:
    """``click.exceptions.<name>`` and its copy in the click that typer vendors (typer >= 0.20)."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
