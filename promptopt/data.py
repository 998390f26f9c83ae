"""Dataset loaders: files in, :class:`~promptopt.task.Example` lists and :class:`~promptopt.task.Task` out.

Formats (``format=``; inferred from the file when omitted, see :func:`detect_format`):

========== ============================================================ ============== =========================
format     file                                                         metric         parser
========== ============================================================ ============== =========================
jsonl      one JSON object per line                                     inferred [1]   inferred [1]
csv        header row, one example per row (``.tsv``: tab-separated)    inferred [1]   inferred [1]
json       a list of objects, or ``{"examples": [...]}``                inferred [1]   inferred [1]
ii         instruction induction (APE; Honovich et al. 2022)            per task [2]   ``auto`` / ``label``
bbh        BIG-Bench Hard ``{"examples": [{"input", "target"}]}``       ``choice`` [3] ``choice`` / ``label``
bigbench   BIG-bench ``task.json`` (``target`` or ``target_scores``)    ``choice`` [3] ``choice``
gsm8k      GSM8K JSONL ``{"question", "answer": "... #### 42"}``        ``numeric``    ``number``
========== ============================================================ ============== =========================

[1] numbers -> ``numeric``/``number``; a small closed label set (sentiment-like) -> ``choice``/``label`` with the
labels as choices; anything else -> ``normalized_exact``/``auto``.
[2] the metric of the instruction-induction paper's ``evaluate.py``: ``f1`` (common_concept,
informal_to_formal, taxonomy_animal), ``contains`` (synonyms), exact match over every accepted answer
otherwise (the paper's exact-*set* score for orthography_starts_with and taxonomy_animal has no named
metric yet; ``task.metadata["paper_metric"]`` records it).
[3] for multiple-choice examples; free-form tasks fall back to [1].

Every example gets a stable id: the record's ``id`` when it has one, else ``<file stem>-<index>``
(0-based record index; instruction-induction files keep their own keys, prefixed with the file's
``induce``/``execute`` folder). Loaders only read: nothing is written anywhere.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from promptopt.errors import ConfigError, DataError, UnknownNameError
from promptopt.task import Example, Task

__all__ = ["FORMATS", "detect_format", "load_examples", "load_task", "load_instruction_induction"]

FORMATS: tuple[str, ...] = ("jsonl", "csv", "json", "ii", "bbh", "bigbench", "gsm8k")
"""Format names accepted by :func:`load_examples` and :func:`load_task`."""

PathLike = Union[str, "os.PathLike[str]"]
Fields = Union[str, Sequence[str], None]

_INPUT_GUESSES = ("input", "question", "text")
_OUTPUT_GUESSES = ("output", "answer", "target", "label")
_FIXED_SCHEMA = {"ii", "bbh", "bigbench", "gsm8k"}

_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?")
_LETTER_OPTION_RE = re.compile(r"^\(([A-Z])\)\s?(.*)$")
_LETTER_LABEL_RE = re.compile(r"\([A-Z]\)")
_DASH_OPTION_RE = re.compile(r"^- (.+)$")
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")

# A closed label set (sentiment, yes/no...) is inferred only when it clearly is one: few distinct,
# short outputs, each seen more than once, in a dataset several times larger than the label set.
_MAX_LABELS = 10
_MAX_LABEL_CHARS = 40


@dataclass
class _Loaded:
    """What a format loader knows beyond the examples: how to show, parse and score them."""

    examples: list[Example]
    input_fields: tuple[str, ...]
    output_field: str
    metric: str
    parser: str
    name: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Reading files


def _check_file(path: Path) -> None:
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in {".json", ".jsonl", ".csv", ".tsv", ".ndjson"})[:5]
        if (path / "task.json").is_file():
            fix = f"Pass the file {path / 'task.json'} instead of its folder."
        elif (path / "execute").is_dir() and (path / "induce").is_dir():
            fix = "Pass one task file (e.g. execute/sentiment.json), or use load_instruction_induction(task_name, root)."
        elif inside:
            fix = f"Pass one data file inside it, e.g. {path / inside[0]} (found: {inside})."
        else:
            fix = "Pass the path of a data file (JSONL, CSV, JSON), not of a folder."
        raise DataError(f"{path} is a directory, not a data file.", fix=fix)
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        near: list[str] = []
        if parent.is_dir():
            near = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3, cutoff=0.6)
        hint = f" Similar names there: {near}." if near else ""
        raise DataError(f"Data file {path} does not exist.{hint}", fix="Check the path (relative paths start from the current directory).")
    if not path.is_file():
        raise DataError(f"{path} is not a regular file.", fix="Pass the path of a data file (JSONL, CSV, JSON).")


def _read_text(path: Path) -> str:
    """The file's text, decoded as strict UTF-8 (a leading BOM is dropped)."""
    _check_file(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.", fix="Check the file's permissions.") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} (line {line}): {exc.reason}.",
            fix=f"Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}` "
            "(use the file's real source encoding).",
        ) from None
    if not text.strip():
        raise DataError(f"{path} is empty.", fix="Point at a file that holds examples.")
    return text


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fix = "Fix the JSON syntax at that position (a validator such as `python -m json.tool FILE` shows it)."
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            fix = "This looks like one JSON object per line: rename the file to .jsonl or pass format='jsonl'."
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}.", fix=fix) from None


def _parse_jsonl(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line."""
    records: list[tuple[int, dict[str, Any]]] = []
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other characters that
    # splitlines() treats as line breaks.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: malformed JSONL line {lineno}, column {exc.colno}: {exc.msg}.",
                fix="Every non-blank line must be one complete JSON object; fix or remove that line.",
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{path}: line {lineno} holds a JSON {_json_type(obj)}, not an object.",
                fix='Write one object per line, e.g. {"input": "...", "output": "..."}.',
            )
        records.append((lineno, obj))
    return records


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


# --------------------------------------------------------------------------------------------
# Small helpers shared by the format loaders


def _fields(spec: Fields) -> tuple[str, ...] | None:
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    return tuple(names) if names else None


def _require(record: Mapping[str, Any], key: str, where: str, *, hint: str) -> Any:
    if key not in record:
        raise DataError(f"{where} has no field {key!r}; its fields are {sorted(record)}.", fix=hint)
    value = record[key]
    if value is None:
        raise DataError(f"{where}: field {key!r} is null.", fix="Give every example a value for that field, or drop the example.")
    return value


def _scalar_text(value: Any, where: str, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"  # as the file spells it, not Python's "True"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    raise DataError(
        f"{where}: field {key!r} is a JSON {_json_type(value)}; expected a string or a number.",
        fix="Store the answer as text (or as a list of accepted texts for the output field).",
    )


def _answers(value: Any, where: str, key: str) -> tuple[str, ...]:
    """Accepted answers from a value that is one answer or a list of alternatives."""
    if isinstance(value, list):
        answers = tuple(_scalar_text(v, where, key) for v in value)
        if not answers:
            raise DataError(f"{where}: field {key!r} is an empty list.", fix="Give at least one accepted answer.")
        return _dedupe(answers)
    return (_scalar_text(value, where, key),)


def _input_value(value: Any, where: str, key: str) -> Any:
    if value is None:
        raise DataError(f"{where}: input field {key!r} is null.", fix="Give every example a value for each input field.")
    if isinstance(value, (dict, list)):
        return value  # structured inputs stay structured; templates can index into them
    return _scalar_text(value, where, key)


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _record_id(record: Mapping[str, Any], default: str, where: str) -> str:
    if "id" not in record or record["id"] is None:
        return default
    value = record["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: field 'id' is a JSON {_json_type(value)}.", fix="Ids must be strings or integers.")
    if str(value).strip() == "":
        raise DataError(f"{where}: field 'id' is empty.", fix="Give a non-empty id or drop the field to number examples.")
    return str(value)


def _check_unique(path: Path, examples: Sequence[Example], places: Sequence[str]) -> None:
    seen: dict[str, str] = {}
    for ex, place in zip(examples, places):
        if ex.id in seen:
            raise DataError(
                f"{path}: duplicate example id {ex.id!r} ({seen[ex.id]} and {place}).",
                fix="Make every id unique, or remove the 'id' field so examples are numbered automatically.",
            )
        seen[ex.id] = place


def _is_number(text: str) -> bool:
    text = text.strip()
    return bool(text) and any(c.isdigit() for c in text) and _NUMBER_RE.fullmatch(text) is not None


def _infer_scoring(examples: list[Example]) -> tuple[list[Example], str, str]:
    """Default (examples, metric, parser) from what the outputs look like.

    Examples that already carry choices (multiple choice) score with ``choice``. Otherwise
    numbers score numerically, a small closed label set becomes the examples' choices, and
    anything else is free text.
    """
    labelled = [ex for ex in examples if ex.output is not None]
    if not labelled:
        return examples, "normalized_exact", "auto"
    if all(ex.choices for ex in labelled):
        lettered = all(_LETTER_LABEL_RE.fullmatch(c) for ex in labelled for c in ex.choices)
        # Option letters ("(A)") need the choice parser (it maps "A)", "answer is A", option text);
        # a word label set (Yes/No) is what the label parser is for.
        return examples, "choice", "choice" if lettered or any(len(ex.choices) > _MAX_LABELS for ex in labelled) else "label"
    if all(_is_number(ex.output or "") for ex in labelled):
        return examples, "numeric", "number"
    counts = Counter(ex.output for ex in labelled)
    single = all(len(ex.accepted) == 1 for ex in labelled)
    if (
        single
        and 2 <= len(counts) <= _MAX_LABELS
        and len(labelled) >= 3 * len(counts)
        and min(counts.values()) >= 2
        and all(len(label or "") <= _MAX_LABEL_CHARS and "\n" not in (label or "") for label in counts)
    ):
        labels = tuple(sorted(counts))  # type: ignore[arg-type]
        return [_with(ex, choices=labels) for ex in examples], "choice", "label"
    return examples, "normalized_exact", "auto"


def _with(ex: Example, **changes: Any) -> Example:
    data = {"id": ex.id, "inputs": ex.inputs, "output": ex.output, "accepted": ex.accepted, "choices": ex.choices, "metadata": ex.metadata}
    data.update(changes)
    return Example(**data)


# --------------------------------------------------------------------------------------------
# Generic formats: jsonl, csv, json


def _resolve_fields(
    path: Path, keys: Sequence[str], input_field: Fields, output_field: Fields, where: str
) -> tuple[tuple[str, ...], str | None]:
    inputs = _fields(input_field)
    if inputs is None:
        guess = next((k for k in _INPUT_GUESSES if k in keys), None)
        if guess is None:
            raise DataError(
                f"{where}: no input field found (looked for {list(_INPUT_GUESSES)}); its fields are {sorted(keys)}.",
                fix="Name the input field(s): input_field='question' or 'question,context' (CLI: --input-field).",
            )
        inputs = (guess,)
    if output_field is not None and str(output_field).strip() == "":
        return inputs, None  # explicitly unlabelled (e.g. for SPO)
    outputs = _fields(output_field)
    if outputs is None:
        guess = next((k for k in _OUTPUT_GUESSES if k in keys and k not in inputs), None)
        if guess is None:
            raise DataError(
                f"{where}: no output field found (looked for {list(_OUTPUT_GUESSES)}); its fields are {sorted(keys)}.",
                fix="Name the output field: output_field='label' (CLI: --output-field), or output_field='' for unlabelled data.",
            )
        return inputs, guess
    if len(outputs) != 1:
        raise ConfigError(f"output_field {output_field!r} names {len(outputs)} fields.", fix="Give exactly one output field.")
    return inputs, outputs[0]


def _records_to_examples(
    path: Path,
    records: Sequence[tuple[str, Mapping[str, Any]]],
    input_field: Fields,
    output_field: Fields,
    *,
    blank_output_is_missing: bool = False,
) -> tuple[list[Example], tuple[str, ...], str | None]:
    """Examples from (place, record) pairs; ``place`` says where the record is ("line 3")."""
    first_place, first = records[0]
    inputs, output = _resolve_fields(path, list(first), input_field, output_field, f"{path}: {first_place}")
    used = set(inputs) | {output, "id"}
    field_hint = "Every record needs the same input/output fields; pass input_field/output_field to name them."
    examples: list[Example] = []
    for index, (place, record) in enumerate(records):
        where = f"{path}: {place}"
        values = {k: _input_value(_require(record, k, where, hint=field_hint), where, k) for k in inputs}
        out: str | None = None
        accepted: tuple[str, ...] = ()
        if output is not None:
            accepted = _answers(_require(record, output, where, hint=field_hint), where, output)
            out = accepted[0]
            if blank_output_is_missing and not out.strip():
                # A CSV cannot tell an empty answer from a missing one; scoring against "" is never meant.
                raise DataError(f"{where}: the {output!r} cell is empty.", fix="Fill in the answer, or drop the row.")
        meta = {k: v for k, v in record.items() if k not in used and k is not None}
        examples.append(
            Example(id=_record_id(record, f"{path.stem}-{index}", where), inputs=values, output=out, accepted=accepted, metadata=meta)
        )
    _check_unique(path, examples, [p for p, _ in records])
    return examples, inputs, output


def _load_jsonl(path: Path, text: str, input_field: Fields, output_field: Fields) -> _Loaded:
    rows = _parse_jsonl(path, text)
    if not rows:
        raise DataError(f"{path} is empty.", fix="Point at a file that holds examples.")
    examples, inputs, output = _records_to_examples(path, [(f"line {n}", r) for n, r in rows], input_field, output_field)
    return _generic(path, examples, inputs, output)


def _load_json(path: Path, data: Any, input_field: Fields, output_field: Fields) -> _Loaded:
    if isinstance(data, dict) and "examples" in data:
        items = data["examples"]
    elif isinstance(data, list):
        items = data
    else:
        keys = sorted(data) if isinstance(data, dict) else []
        raise DataError(
            f"{path}: expected a JSON array of examples or an object with an 'examples' array; found a JSON {_json_type(data)}"
            + (f" with keys {keys}." if keys else "."),
            fix='Write [{"input": ..., "output": ...}, ...] or {"examples": [...]}.',
        )
    if not isinstance(items, list):
        raise DataError(f"{path}: 'examples' is a JSON {_json_type(items)}, not an array.", fix="Make 'examples' a list of objects.")
    if not items:
        raise DataError(f"{path} has no examples.", fix="Add at least a few examples to the file.")
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{path}: record {i} is a JSON {_json_type(item)}, not an object.", fix="Every example must be an object with named fields.")
    examples, inputs, output = _records_to_examples(path, [(f"record {i}", r) for i, r in enumerate(items, start=1)], input_field, output_field)
    return _generic(path, examples, inputs, output)


def _load_csv(path: Path, text: str, input_field: Fields, output_field: Fields) -> _Loaded:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    try:
        header = next(reader)
        end = reader.line_num
        for row in reader:
            rows.append((end + 1, row))  # the line the row starts on (quoted cells may span lines)
            end = reader.line_num
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV at line {reader.line_num}: {exc}.", fix="Fix the quoting on that line.") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{path}: the first line (the header) is blank.", fix="Start the file with a header row naming the columns.")
    dup = sorted(h for h, c in Counter(header).items() if c > 1)
    if dup:
        raise DataError(f"{path}: the header repeats column(s) {dup}.", fix="Give every column a distinct name.")
    rows = [(n, r) for n, r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError(f"{path} has a header but no rows.", fix="Add at least a few example rows.")
    # Columns are checked up front so the message lists what the file does have.
    want_inputs = _fields(input_field)
    want_output = _fields(output_field) if output_field is None or str(output_field).strip() else ()
    for name in [*(want_inputs or ()), *(want_output or ())]:
        if name not in header:
            close = difflib.get_close_matches(name, header, n=1)
            raise DataError(
                f"{path}: no column {name!r}; the columns are {header}." + (f" Did you mean {close[0]!r}?" if close else ""),
                fix="Pass the exact column name (CLI: --input-field / --output-field).",
            )
    records: list[tuple[str, dict[str, Any]]] = []
    for rownum, (line, row) in enumerate(rows, start=1):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {rownum} (line {line}) has {len(row)} cells but the header has {len(header)} columns.",
                fix="Quote cells that contain the delimiter, and give every row one cell per column.",
            )
        records.append((f"row {rownum} (line {line})", dict(zip(header, row))))
    examples, inputs, output = _records_to_examples(path, records, input_field, output_field, blank_output_is_missing=True)
    return _generic(path, examples, inputs, output)


def _generic(path: Path, examples: list[Example], inputs: tuple[str, ...], output: str | None) -> _Loaded:
    examples, metric, parser = _infer_scoring(examples)
    return _Loaded(examples, inputs, output or "output", metric, parser, name=path.stem)


# --------------------------------------------------------------------------------------------
# Instruction induction (Honovich et al. 2022; the APE paper's 24 tasks)


@dataclass(frozen=True)
class _IISpec:
    metric: str = "normalized_exact"
    parser: str = "auto"
    choices: tuple[str, ...] = ()
    answers_key: str | None = None


# The original evaluate.py scores with exact match against every accepted answer, except where
# TASK_TO_METRIC says otherwise; answer lists come from TASK_TO_ANSWERS (prepare_for_execution.py).
_II_TASKS: dict[str, _IISpec] = {
    "common_concept": _IISpec(metric="f1"),
    "informal_to_formal": _IISpec(metric="f1"),
    "synonyms": _IISpec(metric="contains"),
    # The paper scores these two by exact *set* of words. orthography_starts_with lists its words
    # in sentence order (as a model does), so exact match is a faithful stand-in; taxonomy_animal
    # lists the gold animals in random order, where token F1 is the closest order-free metric.
    "orthography_starts_with": _IISpec(metric="normalized_exact"),
    "taxonomy_animal": _IISpec(metric="f1"),
    "sentiment": _IISpec(parser="label", choices=("negative", "positive")),
    "word_in_context": _IISpec(parser="label", choices=("not the same", "same"), answers_key="possible_outputs"),
    "sentence_similarity": _IISpec(answers_key="possible_outputs"),
    "rhymes": _IISpec(answers_key="other_rhymes"),
    "translation_en-de": _IISpec(answers_key="possible_translations"),
    "translation_en-es": _IISpec(answers_key="possible_translations"),
    "translation_en-fr": _IISpec(answers_key="possible_translations"),
}
_II_ANSWER_KEYS = ("possible_outputs", "possible_translations", "other_rhymes")
_II_PAPER_METRIC = {"orthography_starts_with": "exact_set", "taxonomy_animal": "exact_set"}


def _ii_example(task: str, key: str, record: Mapping[str, Any], ex_id: str, where: str) -> Example:
    hint = "Instruction-induction examples need 'input' and 'output' (common_concept: 'items' and 'concept'; cause_and_effect: 'cause' and 'effect')."
    meta: dict[str, Any]
    if task == "common_concept" or ("items" in record and "concept" in record):
        items = _require(record, "items", where, hint=hint)
        if not isinstance(items, list) or not items:
            raise DataError(f"{where}: 'items' must be a non-empty list of strings.", fix=hint)
        # All items, as the original prepare_for_execution.py does (APE's loader drops the last one).
        text = ", ".join(_scalar_text(i, where, "items") for i in items)
        concept = _scalar_text(_require(record, "concept", where, hint=hint), where, "concept")
        others = record.get("all_common_concepts") or []
        accepted = _dedupe((concept, *_answers(others, where, "all_common_concepts"))) if others else (concept,)
        meta = {k: v for k, v in record.items() if k not in ("concept",)}
        return Example(id=ex_id, inputs={"input": text}, output=concept, accepted=accepted, metadata=meta)
    if task == "cause_and_effect" or ("cause" in record and "effect" in record and "input" not in record):
        cause = _scalar_text(_require(record, "cause", where, hint=hint), where, "cause")
        effect = _scalar_text(_require(record, "effect", where, hint=hint), where, "effect")
        # The paper shows each pair in a random order; the order here is a pure function of the
        # example id, so it is random across examples yet identical on every load and platform.
        cause_first = hashlib.sha256(ex_id.encode("utf-8")).digest()[0] % 2 == 0
        first, second = (cause, effect) if cause_first else (effect, cause)
        meta = {"cause": cause, "effect": effect, "cause_first": cause_first}
        return Example(id=ex_id, inputs={"input": f"Sentence 1: {first} Sentence 2: {second}"}, output=cause, metadata=meta)

    text = _scalar_text(_require(record, "input", where, hint=hint), where, "input")
    spec = _II_TASKS.get(task, _IISpec())
    answers = _answers(_require(record, "output", where, hint=hint), where, "output")
    key_name = spec.answers_key or next((k for k in _II_ANSWER_KEYS if k in record), None)
    if key_name and record.get(key_name):
        extra = _answers(record[key_name], where, key_name)
        if key_name == "other_rhymes":
            # other_rhymes always contains the input word itself: accepting it would let "repeat
            # the input" score 100% on a task that asks for a *different* rhyming word.
            extra = tuple(w for w in extra if w.strip().lower() != text.strip().lower())
        answers = _dedupe((*answers, *extra))
    if task == "num_to_verbal":
        # The paper's normaliser deletes " and " before comparing ("one hundred and five" ==
        # "one hundred five"); accepting both spellings keeps that with any exact-match metric.
        answers = _dedupe((*answers, *(re.sub(r"\band ", "", a) for a in answers)))
    meta = {k: v for k, v in record.items() if k not in ("input", "output")}
    return Example(id=ex_id, inputs={"input": text}, output=answers[0], accepted=answers, choices=spec.choices, metadata=meta)


def _load_ii(path: Path, data: Any) -> _Loaded:
    if not isinstance(data, dict) or not isinstance(data.get("examples"), dict):
        found = f"keys {sorted(data)}" if isinstance(data, dict) else f"a JSON {_json_type(data)}"
        raise DataError(
            f'{path}: not an instruction-induction file (expected {{"metadata": ..., "examples": {{"1": {{...}}}}}}); found {found}.',
            fix="Pass the right format= for this file, or check that it is an induce/ or execute/ task file.",
        )
    items = data["examples"]
    if not items:
        raise DataError(f"{path} has no examples.", fix="Add examples under 'examples'.")
    task = path.stem
    kind = path.parent.name if path.parent.name in ("induce", "execute") else ""
    prefix = f"{task}-{kind}" if kind else task
    examples: list[Example] = []
    places: list[str] = []
    for key, record in items.items():
        where = f"{path}: example {key!r}"
        if not isinstance(record, dict):
            raise DataError(f"{where} is a JSON {_json_type(record)}, not an object.", fix="Every example must be an object.")
        ex = _ii_example(task, str(key), record, f"{prefix}-{key}", where)
        if kind:
            ex = _with(ex, metadata={**ex.metadata, "ii_split": kind})
        examples.append(ex)
        places.append(f"example {key!r}")
    _check_unique(path, examples, places)
    spec = _II_TASKS.get(task, _IISpec())
    meta: dict[str, Any] = {"ii_task": task}
    if task in _II_PAPER_METRIC:
        meta["paper_metric"] = _II_PAPER_METRIC[task]
    return _Loaded(examples, ("input",), "output", spec.metric, spec.parser, name=task, metadata=meta)


# --------------------------------------------------------------------------------------------
# BIG-Bench Hard


def _options(text: str) -> tuple[list[tuple[str, str]], str]:
    """The options listed after the last "Options:" line: ([(label, text)], style)."""
    lines = text.rstrip().splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.strip() == "Options:")
    except ValueError:
        return [], ""
    letters = [m for m in (_LETTER_OPTION_RE.match(line.strip()) for line in lines[start + 1 :]) if m]
    if letters:
        return [(f"({m.group(1)})", m.group(2).strip()) for m in letters], "letter"
    dashes = [m for m in (_DASH_OPTION_RE.match(line.strip()) for line in lines[start + 1 :]) if m]
    return [(m.group(1).strip(), m.group(1).strip()) for m in dashes], "dash"


def _load_bbh(path: Path, data: Any) -> _Loaded:
    items = _example_list(path, data, "BIG-Bench Hard", '{"examples": [{"input": ..., "target": ...}]}')
    hint = 'BIG-Bench Hard examples are {"input": ..., "target": ...}.'
    examples: list[Example] = []
    places: list[str] = []
    for index, record in enumerate(items):
        where = f"{path}: record {index + 1}"
        text = _scalar_text(_require(record, "input", where, hint=hint), where, "input")
        target = _scalar_text(_require(record, "target", where, hint=hint), where, "target")
        options, style = _options(text)
        choices: tuple[str, ...] = ()
        accepted: tuple[str, ...] = (target,)
        meta = {k: v for k, v in record.items() if k not in ("input", "target", "id")}
        if options:
            labels = [label for label, _ in options]
            if target not in labels:
                raise DataError(
                    f"{where}: target {target!r} is not one of its options {labels}.",
                    fix="Fix the target or the options list of that example.",
                )
            choices = tuple(labels)
            if style == "letter":
                option_text = dict(options)
                meta["options"] = option_text
                # The option's own text is a correct answer too (for text metrics like f1/contains).
                if option_text[target]:
                    accepted = _dedupe((target, option_text[target]))
        examples.append(
            Example(id=_record_id(record, f"{path.stem}-{index}", where), inputs={"input": text}, output=target, accepted=accepted, choices=choices, metadata=meta)
        )
        places.append(f"record {index + 1}")
    _check_unique(path, examples, places)
    examples, metric, parser = _infer_scoring(examples)
    return _Loaded(examples, ("input",), "target", metric, parser, name=path.stem)


def _example_list(path: Path, data: Any, what: str, shape: str) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or "examples" not in data:
        found = f"keys {sorted(data)}" if isinstance(data, dict) else f"a JSON {_json_type(data)}"
        raise DataError(f"{path}: not a {what} file (expected {shape}); found {found}.", fix="Pass the right format= for this file.")
    items = data["examples"]
    if not isinstance(items, list):
        raise DataError(f"{path}: 'examples' is a JSON {_json_type(items)}, not an array.", fix=f"Expected {shape}.")
    if not items:
        raise DataError(f"{path} has no examples.", fix="Add examples under 'examples'.")
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{path}: record {i} is a JSON {_json_type(item)}, not an object.", fix=f"Expected {shape}.")
    return items


# --------------------------------------------------------------------------------------------
# BIG-bench task.json (Srivastava et al. 2022)


def _load_bigbench(path: Path, data: Any) -> _Loaded:
    items = _example_list(path, data, "BIG-bench task.json", '{"examples": [{"input": ..., "target" or "target_scores": ...}]}')
    hint = 'BIG-bench examples need "input" and either "target" (text or list) or "target_scores" ({choice: score}).'
    # BIG-bench's JSON tasks show the choices after the input unless the task says otherwise.
    append_choices = bool(data.get("append_choices_to_input", True))
    choice_prefix = str(data.get("choice_prefix", "\n  choice: "))
    examples: list[Example] = []
    places: list[str] = []
    for index, record in enumerate(items):
        where = f"{path}: record {index + 1}"
        text = _scalar_text(_require(record, "input", where, hint=hint), where, "input")
        meta = {k: v for k, v in record.items() if k not in ("input", "target", "target_scores", "id")}
        ex_id = _record_id(record, f"{_bigbench_stem(path, data)}-{index}", where)
        if "target_scores" in record:
            scores = record["target_scores"]
            if not isinstance(scores, dict) or not scores:
                raise DataError(f"{where}: 'target_scores' must be a non-empty object {{choice: score}}.", fix=hint)
            try:
                values = {str(k): float(v) for k, v in scores.items()}
            except (TypeError, ValueError):
                raise DataError(f"{where}: 'target_scores' holds a non-numeric score.", fix="Scores must be numbers (1 for correct, 0 for wrong).") from None
            best = max(values.values())
            winners = tuple(k for k, v in values.items() if v == best)
            choices = tuple(values)
            meta["target_scores"] = values
            shown = text + choice_prefix + choice_prefix.join(choices) if append_choices else text
            if append_choices:
                meta["raw_input"] = text
            examples.append(Example(id=ex_id, inputs={"input": shown}, output=winners[0], accepted=winners, choices=choices, metadata=meta))
        else:
            accepted = _answers(_require(record, "target", where, hint=hint), where, "target")
            examples.append(Example(id=ex_id, inputs={"input": text}, output=accepted[0], accepted=accepted, metadata=meta))
        places.append(f"record {index + 1}")
    _check_unique(path, examples, places)
    examples, metric, parser = _infer_scoring(examples)
    if metric == "choice":
        parser = "choice"  # BIG-bench choices are option texts, not a fixed label vocabulary
    meta = {k: data[k] for k in ("keywords", "metrics", "preferred_score", "task_prefix") if k in data}
    return _Loaded(
        examples,
        ("input",),
        "target",
        metric,
        parser,
        name=_bigbench_stem(path, data),
        description=str(data.get("description", "")),
        metadata=meta,
    )


def _bigbench_stem(path: Path, data: Mapping[str, Any]) -> str:
    if isinstance(data.get("name"), str) and data["name"].strip():
        return data["name"].strip()
    return path.parent.name if path.name == "task.json" and path.parent.name else path.stem


# --------------------------------------------------------------------------------------------
# GSM8K (Cobbe et al. 2021)


def _load_gsm8k(path: Path, text: str) -> _Loaded:
    rows = _parse_jsonl(path, text)
    if not rows:
        raise DataError(f"{path} is empty.", fix="Point at a file that holds examples.")
    hint = 'GSM8K lines are {"question": ..., "answer": "reasoning ... #### 42"}.'
    examples: list[Example] = []
    places: list[str] = []
    for index, (lineno, record) in enumerate(rows):
        where = f"{path}: line {lineno}"
        question = _scalar_text(_require(record, "question", where, hint=hint), where, "question")
        answer = _scalar_text(_require(record, "answer", where, hint=hint), where, "answer")
        if "####" not in answer:
            raise DataError(f"{where}: the answer has no '#### <number>' final line.", fix=hint)
        rationale, _, final = answer.rpartition("####")
        number = final.strip().replace(",", "")
        if not _is_number(number):
            raise DataError(f"{where}: the text after '####' is {final.strip()!r}, not a number.", fix=hint)
        meta = {k: v for k, v in record.items() if k not in ("question", "answer", "id")}
        # The calculator annotations <<48/2=24>> are tool-use markup, not reasoning a model
        # should imitate; the raw answer is kept verbatim beside the cleaned rationale.
        meta["answer_raw"] = answer
        meta["rationale"] = _CALCULATOR_RE.sub("", rationale).strip()
        examples.append(Example(id=_record_id(record, f"{path.stem}-{index}", where), inputs={"question": question}, output=number, metadata=meta))
        places.append(f"line {lineno}")
    _check_unique(path, examples, places)
    return _Loaded(examples, ("question",), "answer", "numeric", "number", name=path.stem)


# --------------------------------------------------------------------------------------------
# Dispatch


def _sniff(path: Path, text: str) -> tuple[str, Any]:
    """(format, parsed JSON or None) from the file's suffix and content."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv", None
    if suffix in (".jsonl", ".ndjson"):
        first = next((line for line in text.splitlines() if line.strip()), "")
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            return "jsonl", None  # the JSONL parser reports the bad line
        if isinstance(obj, dict) and "question" in obj and isinstance(obj.get("answer"), str) and "####" in obj["answer"]:
            return "gsm8k", None
        return "jsonl", None
    if suffix == ".json":
        data = _parse_json(path, text)
        if isinstance(data, dict):
            examples = data.get("examples")
            if isinstance(examples, dict):
                return "ii", data
            if isinstance(examples, list):
                records = [e for e in examples if isinstance(e, dict)]
                if path.name == "task.json" or any("target_scores" in e for e in records) or {"preferred_score", "metrics", "keywords"} & set(data):
                    return "bigbench", data
                if records and all(set(e) <= {"input", "target", "id"} and "target" in e for e in records):
                    return "bbh", data
        return "json", data
    raise DataError(
        f"Cannot infer the format of {path} from its suffix {path.suffix or '(none)'!r}.",
        fix=f"Pass format= one of {list(FORMATS)} (CLI: --format).",
    )


def detect_format(path: PathLike) -> str:
    """The format :func:`load_task` would infer for ``path`` (one of :data:`FORMATS`)."""
    p = Path(path).expanduser()
    return _sniff(p, _read_text(p))[0]


def _check_format(format: str) -> str:
    name = format.strip().lower()
    aliases = {"instruction_induction": "ii", "big-bench-hard": "bbh", "task.json": "bigbench", "big-bench": "bigbench", "ndjson": "jsonl", "tsv": "csv"}
    name = aliases.get(name, name)
    if name not in FORMATS:
        close = difflib.get_close_matches(name, FORMATS, n=1)
        raise UnknownNameError(
            f"Unknown data format {format!r}." + (f" Did you mean {close[0]!r}?" if close else ""),
            fix=f"Use one of {list(FORMATS)}, or leave format unset to infer it from the file.",
        )
    return name


def _load(path: PathLike, format: str | None, input_field: Fields, output_field: Fields) -> tuple[str, _Loaded]:
    p = Path(path).expanduser()
    fmt = _check_format(format) if format is not None else None
    text = _read_text(p)
    data: Any = None
    if fmt is None:
        fmt, data = _sniff(p, text)
    if fmt in ("json", "ii", "bbh", "bigbench") and data is None:
        data = _parse_json(p, text)
    if fmt == "jsonl":
        return fmt, _load_jsonl(p, text, input_field, output_field)
    if fmt == "csv":
        return fmt, _load_csv(p, text, input_field, output_field)
    if fmt == "json":
        return fmt, _load_json(p, data, input_field, output_field)
    loaded = _load_ii(p, data) if fmt == "ii" else _load_bbh(p, data) if fmt == "bbh" else _load_bigbench(p, data) if fmt == "bigbench" else _load_gsm8k(p, text)
    wanted_in, wanted_out = _fields(input_field), _fields(output_field)
    if (wanted_in and wanted_in != loaded.input_fields) or (wanted_out and wanted_out != (loaded.output_field,)):
        raise ConfigError(
            f"Format {fmt!r} has fixed fields (input {list(loaded.input_fields)}, output {loaded.output_field!r}); "
            f"input_field={input_field!r} / output_field={output_field!r} cannot rename them.",
            fix="Drop input_field/output_field, or load the file as format='json'/'jsonl' with your own field names.",
        )
    return fmt, loaded


def load_examples(path: PathLike, *, format: str | None = None, input_field: Fields = None, output_field: Fields = None) -> list[Example]:
    """Read a data file into examples (see the module docstring for formats and ids).

    ``input_field``: one name, or several as a list or comma-separated string ("question,context");
    default: the first of input/question/text present. ``output_field``: default the first of
    output/answer/target/label present; ``""`` loads unlabelled examples. Both only apply to
    jsonl/csv/json. Raises :class:`DataError` naming the file, the record and the problem.
    """
    return _load(path, format, input_field, output_field)[1].examples


def _check_split(split: Any) -> tuple[float, float, float] | tuple[int, int, int]:
    values = tuple(split) if isinstance(split, (list, tuple)) else None
    if values is None or len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"Bad split {split!r}.", fix="Give three fractions (train, val, test), e.g. (0.4, 0.2, 0.4), or three counts, e.g. (20, 30, 50).")
    if any(v < 0 for v in values):
        raise ConfigError(f"Bad split {split!r}: negative part.", fix="Use non-negative fractions or counts.")
    return values  # type: ignore[return-value]


def _too_few(path: Path, n: int) -> None:
    if n < 2:
        what = "no examples" if n == 0 else "only one example"
        raise DataError(
            f"{path} has {what}: a task needs at least one validation and one test example.",
            fix="Add examples to the file (a few dozen give usable scores).",
        )


def load_task(
    path: PathLike,
    *,
    format: str | None = None,
    input_field: Fields = None,
    output_field: Fields = None,
    split: Sequence[float] | Sequence[int] = (0.4, 0.2, 0.4),
    seed: int = 0,
    metric: str | Callable[..., float] | None = None,
    parser: str | Callable[..., Any] | None = None,
    name: str | None = None,
) -> Task:
    """Load a data file and split it into a :class:`Task`.

    ``format``: one of :data:`FORMATS`, inferred from the file when None. ``split``: three
    fractions or three counts (train, val, test), drawn with a ``seed``-ed shuffle, so the same
    arguments always give the same splits. ``metric``/``parser``: default per format (see the
    module docstring). ``name``: default the file's stem (BIG-bench: the task's name).

    ``task.metadata["source"]`` holds these arguments, resolved, so that the run loop can load
    the identical task again on resume (None when metric or parser is a Python callable).
    """
    p = Path(path).expanduser()
    fmt, loaded = _load(p, format, input_field, output_field)
    splits = _check_split(split)
    _too_few(p, len(loaded.examples))
    metric_value = metric if metric is not None else loaded.metric
    parser_value = parser if parser is not None else loaded.parser
    task_name = name or loaded.name
    shared = {ex.choices for ex in loaded.examples}
    metadata: dict[str, Any] = {"format": fmt, "path": str(p), "n_examples": len(loaded.examples), **loaded.metadata}
    if len(shared) == 1 and next(iter(shared)):
        metadata["labels"] = list(next(iter(shared)))
    generic = fmt not in _FIXED_SCHEMA
    reproducible = isinstance(metric_value, str) and isinstance(parser_value, str)
    metadata["source"] = (
        {
            "path": str(p.resolve()),
            "format": fmt,
            "input_field": ",".join(loaded.input_fields) if generic else None,
            "output_field": (loaded.output_field if loaded.examples[0].output is not None else "") if generic else None,
            "split": list(splits),
            "seed": seed,
            "metric": metric_value,
            "parser": parser_value,
            "name": task_name,
        }
        if reproducible
        else None
    )
    try:
        return Task.from_examples(
            task_name,
            loaded.examples,
            split=splits,
            seed=seed,
            input_fields=loaded.input_fields,
            output_field=loaded.output_field,
            metric=metric_value,
            parser=parser_value,
            description=loaded.description,
            metadata=metadata,
        )
    except DataError as exc:
        raise DataError(f"{p}: {exc.message}", fix=exc.fix) from exc


def load_instruction_induction(
    task_name: str,
    root: PathLike,
    *,
    split: Sequence[float] | Sequence[int] = (0.5, 0.5),
    seed: int = 0,
    metric: str | Callable[..., float] | None = None,
    parser: str | Callable[..., Any] | None = None,
) -> Task:
    """One instruction-induction task as the APE paper uses it.

    ``root`` holds ``induce/`` and ``execute/`` (or is their parent's parent, e.g. a folder that
    contains ``instruction_induction/``). ``train`` = every ``induce/`` example (the pairs
    instructions are induced from, and demos drawn from); ``val``/``test`` = a ``seed``-ed split of
    the ``execute/`` examples by ``split`` (two fractions or two counts).

    The task's ``metadata["source"]`` is None: resume such a run with ``resume(..., task=task)``.
    """
    base = Path(root).expanduser()
    if not (base / "execute").is_dir() and (base / "instruction_induction" / "execute").is_dir():
        base = base / "instruction_induction"
    execute_dir, induce_dir = base / "execute", base / "induce"
    if not execute_dir.is_dir():
        raise DataError(
            f"{base} has no execute/ folder of instruction-induction tasks.",
            fix="Pass the folder that holds induce/ and execute/ (e.g. data/instruction_induction).",
        )
    available = sorted(p.stem for p in execute_dir.glob("*.json"))
    if task_name not in available:
        close = difflib.get_close_matches(task_name, available, n=1)
        raise UnknownNameError(
            f"Unknown instruction-induction task {task_name!r} in {base}." + (f" Did you mean {close[0]!r}?" if close else ""),
            fix=f"Use one of {available}.",
        )
    values = tuple(split) if isinstance(split, (list, tuple)) else ()
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(f"Bad split {split!r} for instruction induction.", fix="Give two fractions or two counts (val, test) of the execute examples, e.g. (0.5, 0.5).")
    induce_path = induce_dir / f"{task_name}.json"
    if not induce_path.is_file():
        raise DataError(f"{induce_path} does not exist: the task has no induce examples.", fix="Copy the task's induce/ file next to execute/, or use load_task on the execute file.")
    execute = _load(execute_dir / f"{task_name}.json", "ii", None, None)[1]
    induce = _load(induce_path, "ii", None, None)[1]
    _too_few(execute_dir / f"{task_name}.json", len(execute.examples))
    counts = all(isinstance(v, int) for v in values)
    three = (0, int(values[0]), int(values[1])) if counts else (0.0, float(values[0]), float(values[1]))
    metadata = {
        "format": "ii",
        "path": str(base),
        "n_examples": len(execute.examples) + len(induce.examples),
        **execute.metadata,
        "source": None,
    }
    if execute.examples[0].choices:
        metadata["labels"] = list(execute.examples[0].choices)
    try:
        task = Task.from_examples(
            task_name,
            execute.examples,
            split=three,
            seed=seed,
            input_fields=("input",),
            output_field="output",
            metric=metric if metric is not None else execute.metric,
            parser=parser if parser is not None else execute.parser,
            metadata=metadata,
        )
    except DataError as exc:
        raise DataError(f"{execute_dir / (task_name + '.json')}: {exc.message}", fix=exc.fix) from exc
    task.train = list(induce.examples)
    return task
