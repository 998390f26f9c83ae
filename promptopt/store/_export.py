"""Export a run to JSON or YAML, and read an exported prompt back.

An export holds the run's settings, its best candidate (chosen by the rule in
:func:`promptopt.store._registry.select_best`) and the leaderboard; ``what="all"`` adds every
candidate with its evaluations and the run's events. Files are written atomically (a temporary
file in the same directory, then ``os.replace``): an interrupted export leaves the old file or
nothing, never half a file. Reading uses ``json`` or ``yaml.safe_load`` only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pathlib
import tempfile
from typing import Any, Literal, Mapping

import yaml

from promptopt.errors import ConfigError
from promptopt.prompt import Candidate
from promptopt.store._base import Storage
from promptopt.store._registry import Ranked, leaderboard, rank_run, select_best

__all__ = ["export_run", "load_candidate_file"]

EXPORT_VERSION = 1
_CANDIDATE_KEYS = frozenset({"instruction", "parts", "demos", "demo_format", "input_template", "hash"})
_DEMO_KEYS = frozenset({"inputs", "output", "example_id", "source"})


# --- writing -------------------------------------------------------------------------------


def _scores(r: Ranked) -> dict[str, Any]:
    return {split: s.to_dict() for split, s in sorted(r.stats.items())}


def export_run(
    store: Storage,
    run_id: str,
    path: str | os.PathLike[str],
    *,
    format: Literal["json", "yaml"] | None = None,
    what: Literal["best", "all"] = "best",
) -> pathlib.Path:
    """Write the run ``run_id`` (a unique prefix is enough) to ``path`` and return the path.

    ``format``: ``json`` or ``yaml``; by default taken from the suffix (``.yaml``/``.yml`` mean
    YAML, anything else JSON). ``what``: ``best`` (settings, best candidate, leaderboard) or
    ``all`` (also every candidate with its per-example evaluations, and the run's events).
    """
    out = pathlib.Path(path).expanduser()
    fmt = format or ("yaml" if out.suffix.lower() in (".yaml", ".yml") else "json")
    if fmt not in ("json", "yaml"):
        raise ConfigError(f"Unknown export format {fmt!r}.", fix="Use 'json' or 'yaml'.")
    if what not in ("best", "all"):
        raise ConfigError(f"Unknown export selection {what!r}.", fix="Use 'best' or 'all'.")
    if out.is_dir():
        raise ConfigError(f"The export path {out} is a directory.", fix=f"Give a file name, e.g. {out / 'prompt.json'}.")
    if not out.parent.is_dir():
        raise ConfigError(f"Cannot write {out}: directory {out.parent} does not exist.", fix="Create the directory first or choose another path.")

    run = store.get_run(run_id)
    ranked = rank_run(store, run.id)
    chosen = select_best(run, ranked)
    doc: dict[str, Any] = {
        "promptopt_export": EXPORT_VERSION,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "run": {
            "id": run.id,
            "name": run.name,
            "strategy": run.strategy,
            "strategy_params": run.strategy_params,
            "config": run.config,
            "seed": run.seed,
            "status": run.status,
            "summary": run.summary,
            "created_at": run.created_at,
            "updated_at": run.updated_at,
        },
        "best": None,
        "leaderboard": [],
    }
    if chosen is not None:
        best, selected_by = chosen
        doc["best"] = {
            "hash": best.record.hash,
            "selected_by": selected_by,
            "step": best.record.step,
            "parents": best.record.parents,
            "scores": _scores(best),
            "candidate": best.record.candidate.to_dict(),
        }
    for rank, r in enumerate(leaderboard(ranked, "val"), 1):
        c = r.record.candidate
        doc["leaderboard"].append(
            {
                "rank": rank,
                "hash": r.record.hash,
                "step": r.record.step,
                "strategy": r.record.strategy,
                "parents": r.record.parents,
                "scores": _scores(r),
                "instruction": c.instruction,
                "n_demos": len(c.demos),
                "demo_format": c.demo_format,
            }
        )
    if what == "all":
        per: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for ev in store.get_evaluations(run.id):
            per.setdefault((ev.candidate_hash, ev.split), []).append({**ev.result.to_dict(), "created_at": ev.created_at})
        doc["candidates"] = [
            {
                "hash": r.record.hash,
                "step": r.record.step,
                "strategy": r.record.strategy,
                "parents": r.record.parents,
                "metadata": r.record.metadata,
                "created_at": r.record.created_at,
                "candidate": r.record.candidate.to_dict(),
                "evaluations": {split: rows for (h, split), rows in per.items() if h == r.record.hash},
            }
            for r in ranked
        ]
        doc["events"] = [
            {"step": e.step, "kind": e.kind, "payload": e.payload, "created_at": e.created_at} for e in store.get_events(run.id)
        ]
    text = _dump_yaml(doc) if fmt == "yaml" else json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _atomic_write_text(out, text)
    return out


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (instructions, outputs) as readable blocks, and
    repeats shared values instead of writing YAML anchors (&id001) that people cannot read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Block style cannot hold trailing spaces on a line; fall back to quoted style for those.
    if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def _dump_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    directory = path.parent
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror or exc}.", fix="Check the directory's permissions, or choose another path.") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ConfigError(f"Could not write {path}: {exc.strerror or exc}.", fix="Check free disk space and permissions; the old file (if any) is untouched.") from exc
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- reading -------------------------------------------------------------------------------


def _bad(path: pathlib.Path, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{path}: {problem}", fix=fix)


def _scalar_text(value: Any, where: str, path: pathlib.Path) -> str:
    # YAML reads yes/no/on/off as booleans: refuse them rather than store "True" as a label.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _bad(path, f"{where} must be text, got {type(value).__name__} {value!r}.", "Quote the value in the file.")
    return str(value)


def _validate_candidate(data: Any, path: pathlib.Path, where: str) -> Candidate:
    fix = "A candidate has 'instruction' (text), optional 'parts' {name: text}, 'demos' [{inputs: {...}, output}], 'demo_format' (chat or inline), 'input_template'."
    if not isinstance(data, dict):
        raise _bad(path, f"{where} must be a mapping, got {type(data).__name__}.", fix)
    unknown = sorted(str(k) for k in set(data) - _CANDIDATE_KEYS)
    if unknown:
        raise _bad(path, f"{where} has unknown keys {unknown}.", fix)
    if not isinstance(data.get("instruction", ""), str):
        raise _bad(path, f"{where}.instruction must be text, got {type(data['instruction']).__name__}.", "Quote the instruction in the file.")
    parts = data.get("parts") or {}
    if not isinstance(parts, dict):
        raise _bad(path, f"{where}.parts must be a mapping of names to text.", fix)
    for k, v in parts.items():
        _scalar_text(v, f"{where}.parts.{k}", path)
    demos = data.get("demos") or []
    if not isinstance(demos, list):
        raise _bad(path, f"{where}.demos must be a list.", fix)
    for i, d in enumerate(demos):
        if not isinstance(d, dict) or "inputs" not in d or "output" not in d:
            raise _bad(path, f"{where}.demos[{i}] needs 'inputs' and 'output'.", fix)
        extra = sorted(str(k) for k in set(d) - _DEMO_KEYS)
        if extra:
            raise _bad(path, f"{where}.demos[{i}] has unknown keys {extra}.", fix)
        if not isinstance(d["inputs"], dict):
            raise _bad(path, f"{where}.demos[{i}].inputs must be a mapping of field names to text.", fix)
        for k, v in d["inputs"].items():
            _scalar_text(v, f"{where}.demos[{i}].inputs.{k}", path)
        _scalar_text(d["output"], f"{where}.demos[{i}].output", path)
    if data.get("demo_format", "chat") not in ("chat", "inline"):
        raise _bad(path, f"{where}.demo_format is {data['demo_format']!r}.", "Use 'chat' or 'inline'.")
    if data.get("input_template") is not None and not isinstance(data["input_template"], str):
        raise _bad(path, f"{where}.input_template must be text or null.", fix)
    candidate = Candidate.from_dict(data)
    stated = data.get("hash")
    if stated is not None and stated != candidate.hash:
        raise _bad(
            path,
            f"{where}.hash {str(stated)[:12]}... does not match its content (hashes to {candidate.short_hash}...): the prompt was changed after export.",
            "If you edited the prompt on purpose, delete the 'hash' line; otherwise export it again.",
        )
    return candidate


def load_candidate_file(path: str | os.PathLike[str]) -> Candidate:
    """Read a candidate from a file written by :func:`export_run` (its best candidate), or from
    a file holding one candidate mapping (``instruction``, ``demos``...). JSON or YAML (safe
    loader only); every problem is reported as a :class:`~promptopt.errors.ConfigError`."""
    p = pathlib.Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"Prompt file {p} does not exist.", fix="Check the path (write one with `promptopt export RUN --out FILE`).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read prompt file {p}: {exc}.", fix="Pass a UTF-8 JSON or YAML file.") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise _bad(p, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).", "Fix the JSON syntax, or export the run again.") from None
    except yaml.YAMLError as exc:
        raise _bad(p, f"not valid YAML ({exc}).", "Fix the YAML syntax, or export the run again.") from None
    if not isinstance(data, dict):
        raise _bad(p, f"expected a mapping at the top, got {type(data).__name__}.", "Pass a file written by `promptopt export`, or one candidate mapping.")
    if "promptopt_export" in data:
        version = data["promptopt_export"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _bad(p, f"invalid promptopt_export version {version!r}.", "Export the run again.")
        if version > EXPORT_VERSION:
            raise _bad(p, f"written by a newer promptopt (export format v{version}, this one reads up to v{EXPORT_VERSION}).", "Upgrade promptopt.")
        best = data.get("best")
        if not isinstance(best, dict):
            run = data.get("run") if isinstance(data.get("run"), dict) else {}
            raise _bad(p, f"the export of run {run.get('id', '?')} has no best candidate (nothing was scored).", "Export a run that has scored candidates.")
        return _validate_candidate(best.get("candidate"), p, "best.candidate")
    if "candidate" in data and isinstance(data["candidate"], dict) and not (set(data) & {"instruction", "demos", "parts"}):
        return _validate_candidate(data["candidate"], p, "candidate")
    return _validate_candidate(data, p, "the candidate")
