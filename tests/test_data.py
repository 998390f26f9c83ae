"""Dataset loaders: every shared benchmark file, the slices in tests/data, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from promptopt.data import FORMATS, detect_format, load_examples, load_instruction_induction, load_task
from promptopt.errors import ConfigError, DataError, UnknownNameError
from promptopt.task import Task

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"
II = TEST_DATA / "instruction_induction"
FORMATS_DIR = TEST_DATA / "formats"


def _shared_data() -> Path | None:
    env = os.environ.get("PROMPTOPT_SHARED_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


SHARED = _shared_data()
NO_SHARED = "shared benchmark data not found: neither $PROMPTOPT_SHARED_DATA nor ../shared/data beside the repo exists"
SHARED_FILES = sorted(p for p in SHARED.rglob("*") if p.suffix in (".json", ".jsonl")) if SHARED else []
SHARED_II_TASKS = sorted(p.stem for p in (SHARED / "instruction_induction" / "execute").glob("*.json")) if SHARED else []


def _ids(task: Task) -> tuple[list[str], list[str], list[str]]:
    return [e.id for e in task.train], [e.id for e in task.val], [e.id for e in task.test]


def _assert_well_formed(task: Task) -> None:
    train, val, test = _ids(task)
    everything = train + val + test
    assert len(set(everything)) == len(everything), "splits overlap or ids repeat"
    assert val and test
    for ex in [*task.train, *task.val, *task.test]:
        assert set(task.input_fields) <= set(ex.inputs)
        assert all(isinstance(ex.inputs[f], str) and ex.inputs[f] for f in task.input_fields)
        assert ex.output is not None and ex.accepted[0] == ex.output
        if ex.choices:
            assert ex.output in ex.choices, (ex.id, ex.output, ex.choices)
    assert isinstance(task.metric, str) and isinstance(task.parser, str)


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Every file of the shared benchmark data loads


@pytest.mark.parametrize(
    "path",
    SHARED_FILES or [pytest.param(None, marks=pytest.mark.skip(reason=NO_SHARED))],
    ids=lambda p: str(p.relative_to(SHARED)) if p else "shared-data-absent",
)
def test_every_shared_file_loads(path: Path) -> None:
    expected = {"bbh": "bbh", "gsm8k": "gsm8k", "instruction_induction": "ii"}[path.relative_to(SHARED).parts[0]]
    assert detect_format(path) == expected
    task = load_task(path)
    _assert_well_formed(task)
    assert task.metadata["format"] == expected
    assert len(task.train) + len(task.val) + len(task.test) >= len(load_examples(path)) - 1  # rounding may drop one


def test_shared_data_expected_counts() -> None:
    if SHARED is None:
        pytest.skip(NO_SHARED)
    assert len(SHARED_II_TASKS) == 18
    assert len(load_examples(SHARED / "gsm8k" / "test_300.jsonl")) == 300
    assert len(load_examples(SHARED / "gsm8k" / "train_400.jsonl")) == 400
    assert len(list((SHARED / "bbh").glob("*.json"))) == 10


@pytest.mark.parametrize("name", SHARED_II_TASKS or [pytest.param(None, marks=pytest.mark.skip(reason=NO_SHARED))])
def test_every_shared_ii_task(name: str) -> None:
    task = load_instruction_induction(name, SHARED)  # the parent of instruction_induction/ works too
    n_execute = len(load_examples(SHARED / "instruction_induction" / "execute" / f"{name}.json"))
    assert len(task.train) == len(load_examples(SHARED / "instruction_induction" / "induce" / f"{name}.json"))
    assert all(e.id.startswith(f"{name}-induce-") for e in task.train)
    assert all(e.id.startswith(f"{name}-execute-") for e in task.val + task.test)
    assert len(task.val) + len(task.test) == n_execute
    assert abs(len(task.val) - len(task.test)) <= 1
    _assert_well_formed(task)


def test_shared_gsm8k_commas_removed_from_answers() -> None:
    if SHARED is None:
        pytest.skip(NO_SHARED)
    outputs = {e.output for e in load_examples(SHARED / "gsm8k" / "train_400.jsonl")}
    assert "1080" in outputs and "850000" in outputs
    assert not any("," in o for o in outputs)


@pytest.mark.parametrize(
    "relative, n",
    [
        ("instruction_induction/execute/sentiment.json", None),
        ("instruction_induction/induce/sentiment.json", None),
        ("instruction_induction/execute/common_concept.json", None),
        ("instruction_induction/induce/rhymes.json", 12),
        ("instruction_induction/execute/translation_en-fr.json", 20),
        ("bbh/date_understanding.json", 20),
        ("bbh/causal_judgement.json", 8),
        ("gsm8k/test_30.jsonl", 30),
    ],
)
def test_slices_are_faithful_copies(relative: str, n: int | None) -> None:
    if SHARED is None:
        pytest.skip(NO_SHARED)
    original = SHARED / relative.replace("test_30", "test_300")
    ours, theirs = load_examples(TEST_DATA / relative), load_examples(original)[: n or None]
    if "gsm8k" in relative:  # ids carry the file stem (test_30 vs test_300)
        ours, theirs = [{**e.to_dict(), "id": None} for e in ours], [{**e.to_dict(), "id": None} for e in theirs]
    assert ours == theirs
    assert (TEST_DATA / relative.split("/")[0] / "LICENSE").read_text() == (SHARED / relative.split("/")[0] / "LICENSE").read_text()


def test_slices_stay_small() -> None:
    assert sum(p.stat().st_size for p in TEST_DATA.rglob("*") if p.is_file()) < 200_000


# ---------------------------------------------------------------------------------------------
# Instruction induction, task by task


def test_ii_sentiment_slice_is_complete_with_labels() -> None:
    task = load_instruction_induction("sentiment", II, split=(40, 60))
    assert len(task.train) == 1167 and len(task.val) == 40 and len(task.test) == 60
    assert task.parser == "label" and task.metric == "normalized_exact"
    assert task.metadata["labels"] == ["negative", "positive"]
    assert {e.output for e in task.test} == {"negative", "positive"}
    assert all(e.choices == ("negative", "positive") for e in task.train + task.val + task.test)
    first = task.example("sentiment-execute-1")
    assert first.inputs == {"input": "...routine, harmless diversion and little else."} and first.output == "positive"
    assert task.metadata["source"] is None  # resume needs task= (documented)


def test_ii_common_concept_uses_all_items_and_all_concepts() -> None:
    examples = load_examples(II / "execute" / "common_concept.json")
    first = examples[0]
    assert first.inputs["input"] == "rock climbing, elevators, helicopters"  # all items, not APE's items[:-1]
    assert first.output == "involve vertical movement."
    assert first.accepted == ("involve vertical movement.", "involve going up.")
    assert load_task(II / "execute" / "common_concept.json").metric == "f1"


def test_ii_rhymes_accept_other_rhymes_but_not_the_input_word() -> None:
    raw = json.loads((II / "execute" / "rhymes.json").read_text())["examples"]
    for ex in load_examples(II / "execute" / "rhymes.json"):
        record = raw[ex.id.rsplit("-", 1)[1]]
        assert record["input"] in record["other_rhymes"]  # the data's quirk this guards against
        assert ex.output == record["output"]
        assert ex.inputs["input"] not in ex.accepted
        assert set(ex.accepted) == set(record["other_rhymes"]) - {record["input"]} | {record["output"]}


def test_ii_translation_accepts_every_possible_translation() -> None:
    raw = json.loads((II / "execute" / "translation_en-fr.json").read_text())["examples"]
    examples = load_examples(II / "execute" / "translation_en-fr.json")
    assert examples[0].id == "translation_en-fr-execute-1"
    for ex in examples:
        record = raw[ex.id.rsplit("-", 1)[1]]
        assert ex.accepted[0] == record["output"]
        assert set(ex.accepted) == set(record["possible_translations"]) | {record["output"]}
    assert any(len(ex.accepted) > 3 for ex in examples)


def test_ii_num_to_verbal_accepts_the_spelling_without_and() -> None:
    examples = {e.inputs["input"]: e for e in load_examples(II / "execute" / "num_to_verbal.json")}
    assert examples["122"].accepted == ("one hundred and twenty-two", "one hundred twenty-two")
    assert examples["94"].accepted == ("ninety-four",)


def test_ii_orthography_keeps_paper_metric_note_and_metadata() -> None:
    task = load_task(II / "execute" / "orthography_starts_with.json", split=(2, 4, 4))
    assert task.metric == "normalized_exact" and task.metadata["paper_metric"] == "exact_set"
    ex = task.example("orthography_starts_with-execute-1")
    assert ex.output == "thinks that" and ex.metadata["words"] == ["thinks", "that"] and ex.metadata["letter"] == "t"


def test_ii_cause_and_effect_and_list_outputs(tmp_path: Path) -> None:
    pairs = {str(i): {"cause": f"Cause number {i}.", "effect": f"Effect number {i}."} for i in range(1, 21)}
    path = _write(tmp_path, "execute/cause_and_effect.json", json.dumps({"metadata": {"num_examples": 20}, "examples": pairs}))
    first = load_examples(path)
    again = load_examples(path)
    assert first == again  # the shown order is a function of the id, not of a global RNG
    orders = set()
    for ex in first:
        i = ex.id.rsplit("-", 1)[1]
        cause, effect = pairs[i]["cause"], pairs[i]["effect"]
        assert ex.output == cause and ex.accepted == (cause,)
        assert ex.inputs["input"] in (f"Sentence 1: {cause} Sentence 2: {effect}", f"Sentence 1: {effect} Sentence 2: {cause}")
        orders.add(ex.metadata["cause_first"])
    assert orders == {True, False}

    syn = _write(tmp_path, "synonyms.json", json.dumps({"examples": {"1": {"input": "big", "output": ["large", "huge"]}, "2": {"input": "quick", "output": "fast"}}}))
    examples = load_examples(syn, format="ii")
    assert examples[0].output == "large" and examples[0].accepted == ("large", "huge")
    assert examples[0].id == "synonyms-1"  # no induce/execute folder: plain "<stem>-<key>"
    assert load_task(syn, split=(0, 1, 1)).metric == "contains"


# ---------------------------------------------------------------------------------------------
# BIG-Bench Hard, BIG-bench task.json, GSM8K


def test_bbh_lettered_multiple_choice() -> None:
    task = load_task(TEST_DATA / "bbh" / "date_understanding.json", split=(5, 5, 10))
    assert (task.metric, task.parser, task.input_fields, task.output_field) == ("choice", "choice", ("input",), "target")
    ex = task.example("date_understanding-0")
    assert ex.output == "(B)" and ex.choices == ("(A)", "(B)", "(C)", "(D)", "(E)", "(F)")
    assert ex.accepted == ("(B)", "12/25/1937") and ex.metadata["options"]["(E)"] == "12/25/2006"


def test_bbh_dash_options_and_bare_binary_labels() -> None:
    causal = load_task(TEST_DATA / "bbh" / "causal_judgement.json", split=(2, 3, 3))
    assert (causal.metric, causal.parser) == ("choice", "label")
    assert all(e.choices == ("Yes", "No") for e in causal.test)
    boolean = load_task(TEST_DATA / "bbh" / "boolean_expressions.json", split=(5, 5, 10))
    assert (boolean.metric, boolean.parser) == ("choice", "label")
    assert boolean.metadata["labels"] == ["False", "True"]


def test_bbh_free_form_and_numeric() -> None:
    counting = load_task(TEST_DATA / "bbh" / "object_counting.json", split=(5, 5, 10))
    assert (counting.metric, counting.parser) == ("numeric", "number")
    assert all(not e.choices for e in counting.test)
    sorting = load_task(TEST_DATA / "bbh" / "word_sorting.json", split=(5, 5, 10))
    assert (sorting.metric, sorting.parser) == ("normalized_exact", "auto")
    assert sorting.example("word_sorting-0").output == "syndrome therefrom"


def test_bbh_target_must_be_an_option(tmp_path: Path) -> None:
    bad = {"examples": [{"input": "Pick.\nOptions:\n(A) x\n(B) y", "target": "(C)"}]}
    path = _write(tmp_path, "bad_bbh.json", json.dumps(bad))
    with pytest.raises(DataError, match=r"record 1: target '\(C\)' is not one of its options \['\(A\)', '\(B\)'\]"):
        load_examples(path, format="bbh")


def test_bigbench_multiple_choice_task_json() -> None:
    path = FORMATS_DIR / "bigbench_mc" / "task.json"
    assert detect_format(path) == "bigbench"
    task = load_task(path, split=(1, 1, 2))
    assert task.name == "tiny_mc" and task.description == "Pick the animal that is a mammal."
    assert (task.metric, task.parser) == ("choice", "choice")
    ex = task.example("tiny_mc-2")
    assert ex.choices == ("platypus", "echidna", "cow")
    assert ex.output == "platypus" and ex.accepted == ("platypus", "echidna")  # every max-score key
    assert ex.inputs["input"] == "Which of these lay eggs and are mammals?\n  choice: platypus\n  choice: echidna\n  choice: cow"
    assert ex.metadata["raw_input"] == "Which of these lay eggs and are mammals?"
    assert task.metadata["task_prefix"] == "Which one is a mammal?\n"


def test_bigbench_generative_task_json() -> None:
    task = load_task(FORMATS_DIR / "bigbench_gen" / "task.json", split=(1, 1, 2))
    assert (task.metric, task.parser) == ("normalized_exact", "auto")
    ex = task.example("tiny_gen-2")
    assert ex.inputs == {"input": "cactus"} and ex.accepted == ("cacti", "cactuses") and not ex.choices


def test_bigbench_scores_must_be_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, "task.json", json.dumps({"examples": [{"input": "x", "target_scores": {"a": "high", "b": 0}}]}))
    with pytest.raises(DataError, match=r"record 1: 'target_scores' holds a non-numeric score"):
        load_examples(path)


def test_gsm8k_slice() -> None:
    path = TEST_DATA / "gsm8k" / "test_30.jsonl"
    assert detect_format(path) == "gsm8k"
    task = load_task(path, split=(10, 10, 10))
    assert (task.metric, task.parser, task.input_fields, task.output_field) == ("numeric", "number", ("question",), "answer")
    ex = task.example("test_30-0")
    assert ex.inputs["question"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert ex.output == "18"
    assert ex.metadata["answer_raw"].endswith("#### 18") and "<<16-3-4=9>>" in ex.metadata["answer_raw"]
    assert ex.metadata["rationale"] == "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the farmer’s market."


def test_gsm8k_answer_needs_final_number(tmp_path: Path) -> None:
    path = _write(tmp_path, "math.jsonl", '{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": "It is four."}\n')
    with pytest.raises(DataError, match=r"math.jsonl: line 2: the answer has no '#### <number>' final line"):
        load_examples(path, format="gsm8k")
    path = _write(tmp_path, "math2.jsonl", '{"question": "1+1?", "answer": "so #### two"}\n')
    with pytest.raises(DataError, match=r"line 1: the text after '####' is 'two', not a number"):
        load_examples(path, format="gsm8k")


# ---------------------------------------------------------------------------------------------
# Generic formats: jsonl, csv, json


def test_jsonl_guesses_fields_keeps_ids_lists_and_metadata() -> None:
    path = FORMATS_DIR / "qa.jsonl"
    assert detect_format(path) == "jsonl"
    examples = load_examples(path)
    assert [e.id for e in examples] == ["q1", "q2", "q3", "q4", "q5"]  # the blank line is skipped
    assert examples[0].inputs == {"question": "What is the capital of France?"}
    assert examples[2].output == "William Shakespeare" and examples[2].accepted == ("William Shakespeare", "Shakespeare")
    assert examples[0].metadata == {"source": "geo"}
    task = load_task(path, split=(1, 2, 2))
    assert task.input_fields == ("question",) and task.output_field == "answer"
    assert (task.metric, task.parser) == ("normalized_exact", "auto")


def test_csv_quotes_multiline_cells_and_label_inference() -> None:
    path = FORMATS_DIR / "reviews.csv"
    examples = load_examples(path)
    assert len(examples) == 8
    assert examples[2].inputs["text"] == 'A "masterpiece", truly.'
    assert examples[6].inputs["text"] == "Beautiful score,\nand a moving ending."
    assert examples[0].metadata == {"annotator": "a"} and examples[0].id == "reviews-0"
    task = load_task(path, split=(2, 3, 3))
    assert (task.metric, task.parser) == ("choice", "label") and task.metadata["labels"] == ["negative", "positive"]


def test_tsv_with_several_input_fields() -> None:
    path = FORMATS_DIR / "nli.tsv"
    for spec in ("premise,hypothesis", ["premise", "hypothesis"], " premise , hypothesis "):
        examples = load_examples(path, input_field=spec, output_field="gold")
        assert examples[0].inputs == {"premise": "A man sleeps.", "hypothesis": "A person rests."}
        assert examples[0].output == "entailment"
    task = load_task(path, input_field="premise,hypothesis", output_field="gold", split=(1, 1, 2))
    assert task.input_fields == ("premise", "hypothesis") and task.output_field == "gold"
    # 3 distinct labels in 4 rows is not evidence of a closed label set: scored as free text
    assert (task.metric, task.parser) == ("normalized_exact", "auto") and not task.test[0].choices


def test_json_list_numbers_and_wrapped_examples() -> None:
    arithmetic = load_task(FORMATS_DIR / "arithmetic.json", split=(1, 2, 2))
    assert (arithmetic.metric, arithmetic.parser) == ("numeric", "number")
    outputs = {e.inputs["input"]: e.output for e in [*arithmetic.train, *arithmetic.val, *arithmetic.test]}
    assert outputs == {"2 + 3": "5", "10 - 4": "6", "7 * 6": "42", "1,000 + 200": "1,200", "9 / 3": "3"}
    wrapped = load_examples(FORMATS_DIR / "translate_wrapped.json", input_field="source,lang")
    assert wrapped[1].inputs == {"source": "cat", "lang": "German"} and wrapped[1].output == "Katze"


def test_json_scalars_become_text_as_the_file_spells_them(tmp_path: Path) -> None:
    path = _write(tmp_path, "flags.json", json.dumps([{"input": "x", "output": True, "id": 7}, {"input": 2.5, "output": False, "id": "b"}]))
    first, second = load_examples(path)
    assert (first.id, first.output, second.inputs["input"], second.output) == ("7", "true", "2.5", "false")


def test_unlabelled_data_with_empty_output_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "prompts.jsonl", "".join(json.dumps({"text": f"Write about topic {i}."}) + "\n" for i in range(6)))
    task = load_task(path, output_field="", split=(2, 2, 2))
    assert all(e.output is None and e.accepted == () for e in task.train + task.val + task.test)
    assert task.metadata["source"]["output_field"] == ""


# ---------------------------------------------------------------------------------------------
# Splits and reproducibility


def test_splits_are_seeded_reproducible_and_disjoint() -> None:
    path = II / "execute" / "sentiment.json"
    a, b = load_task(path, seed=7), load_task(path, seed=7)
    assert _ids(a) == _ids(b)
    train, val, test = _ids(a)
    assert (len(train), len(val), len(test)) == (40, 20, 40)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert _ids(load_task(path, seed=8)) != _ids(a)
    counts = load_task(path, split=(10, 20, 30), seed=7)
    assert tuple(map(len, _ids(counts))) == (10, 20, 30)
    ii_a, ii_b = load_instruction_induction("sentiment", II, seed=3), load_instruction_induction("sentiment", II, seed=3)
    assert _ids(ii_a) == _ids(ii_b) and _ids(ii_a)[1] != _ids(load_instruction_induction("sentiment", II, seed=4))[1]


def test_source_spec_reloads_the_identical_task() -> None:
    path = FORMATS_DIR / "nli.tsv"
    task = load_task(path, input_field="premise,hypothesis", output_field="gold", split=(1, 1, 2), seed=5, name="nli-small")
    spec = json.loads(json.dumps(task.metadata["source"]))  # what a store keeps
    again = load_task(**spec)
    assert _ids(again) == _ids(task) and again.name == "nli-small" and again.input_fields == task.input_fields
    assert (again.metric, again.parser, again.output_field) == (task.metric, task.parser, task.output_field)
    bbh = load_task(TEST_DATA / "bbh" / "date_understanding.json", metric="exact", seed=2)
    assert _ids(load_task(**json.loads(json.dumps(bbh.metadata["source"])))) == _ids(bbh)
    assert load_task(path, input_field="premise,hypothesis", output_field="gold", split=(1, 1, 2), metric=lambda p, e: 1.0).metadata["source"] is None


def test_overrides_win_over_format_defaults() -> None:
    task = load_task(TEST_DATA / "gsm8k" / "test_30.jsonl", metric="exact", parser="raw", name="g")
    assert (task.metric, task.parser, task.name) == ("exact", "raw", "g")


def test_loaders_write_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    shutil.copytree(TEST_DATA / "bbh", folder)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        load_task(folder / "word_sorting.json")
        detect_format(folder / "word_sorting.json")
    finally:
        folder.chmod(stat.S_IRWXU)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


# ---------------------------------------------------------------------------------------------
# Bad input: each error names the file, the place and the problem, and says how to fix it


def _raises(exc_type: type[Exception], pattern: str, fn, *args, **kwargs):
    with pytest.raises(exc_type, match=pattern) as info:
        fn(*args, **kwargs)
    assert info.value.fix, "every error needs a fix hint"
    return info.value


def test_missing_file_suggests_close_names(tmp_path: Path) -> None:
    _write(tmp_path, "train.jsonl", '{"input": "a", "output": "b"}\n')
    err = _raises(DataError, r"train\.jsnl does not exist\. Similar names there: \['train\.jsonl'\]", load_task, tmp_path / "train.jsnl")
    assert "path" in err.fix


def test_directory_instead_of_file() -> None:
    err = _raises(DataError, r"formats is a directory, not a data file", load_examples, FORMATS_DIR)
    assert "arithmetic.json" in err.fix
    err = _raises(DataError, r"is a directory", load_task, FORMATS_DIR / "bigbench_mc")
    assert "task.json" in err.fix
    err = _raises(DataError, r"is a directory", load_task, II)
    assert "load_instruction_induction" in err.fix


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    for name in ("a.jsonl", "a.csv", "a.json"):
        _raises(DataError, rf"{name} is empty", load_examples, _write(tmp_path, name, content))


def test_malformed_json_reports_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.json", '[\n  {"input": "a", "output": "b"},\n  {"input": "c" "output": "d"}\n]\n')
    _raises(DataError, r"bad\.json: malformed JSON at line 3, column 17: Expecting ',' delimiter", load_examples, path)
    path = _write(tmp_path, "lines.json", '{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n')
    err = _raises(DataError, r"malformed JSON at line 2, column 1: Extra data", load_examples, path)
    assert "jsonl" in err.fix


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.jsonl", '{"input": "a", "output": "b"}\n\n{"input": "c", "output": \n{"input": "e", "output": "f"}\n')
    _raises(DataError, r"bad\.jsonl: malformed JSONL line 3, column 26: Expecting value", load_examples, path)
    path = _write(tmp_path, "list.jsonl", '{"input": "a", "output": "b"}\n["c", "d"]\n')
    _raises(DataError, r"line 2 holds a JSON array, not an object", load_examples, path)


def test_csv_without_named_columns_lists_the_columns() -> None:
    err = _raises(
        DataError,
        r"reviews\.csv: no column 'review'; the columns are \['text', 'label', 'annotator'\]",
        load_examples,
        FORMATS_DIR / "reviews.csv",
        input_field="review",
    )
    assert "--input-field" in err.fix
    _raises(DataError, r"no column 'labels'.*Did you mean 'label'\?", load_task, FORMATS_DIR / "reviews.csv", output_field="labels")


def test_csv_ragged_rows_and_blank_answers(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.csv", "input,output\na,b\nc,d,e\n")
    _raises(DataError, r"r\.csv: row 2 \(line 3\) has 3 cells but the header has 2 columns", load_examples, path)
    path = _write(tmp_path, "blank.csv", "input,output\na,b\nc,\n")
    _raises(DataError, r"blank\.csv: row 2 \(line 3\): the 'output' cell is empty", load_examples, path)
    path = _write(tmp_path, "header.csv", "input,output\n\n\n")
    _raises(DataError, r"header\.csv has a header but no rows", load_examples, path)
    path = _write(tmp_path, "dup.csv", "input,input,output\na,b,c\n")
    _raises(DataError, r"the header repeats column\(s\) \['input'\]", load_examples, path)


def test_missing_or_misnamed_fields_list_available_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "f.jsonl", '{"input": "a", "output": "b"}\n{"input": "c", "outptu": "d"}\n')
    _raises(DataError, r"f\.jsonl: line 2 has no field 'output'; its fields are \['input', 'outptu'\]", load_examples, path)
    path = _write(tmp_path, "g.jsonl", '{"prompt": "a", "completion": "b"}\n')
    err = _raises(DataError, r"g\.jsonl: line 1: no input field found \(looked for \['input', 'question', 'text'\]\); its fields are \['completion', 'prompt'\]", load_examples, path)
    assert "input_field" in err.fix
    _raises(DataError, r"no output field found .*its fields are \['completion', 'prompt'\]", load_examples, path, input_field="prompt")
    assert load_examples(path, input_field="prompt", output_field="completion")[0].output == "b"
    path = _write(tmp_path, "n.json", '[{"input": "a", "output": null}]')
    _raises(DataError, r"record 1: field 'output' is null", load_examples, path)
    path = _write(tmp_path, "d.json", '[{"input": "a", "output": {"x": 1}}]')
    _raises(DataError, r"record 1: field 'output' is a JSON object; expected a string or a number", load_examples, path)
    path = _write(tmp_path, "execute/t.json", '{"examples": {"1": {"input": "a", "output": "b"}, "2": {"inpt": "c", "output": "d"}}}')
    _raises(DataError, r"t\.json: example '2' has no field 'input'; its fields are \['inpt', 'output'\]", load_examples, path)
    path = _write(tmp_path, "bbh.json", '{"examples": [{"input": "a", "target": "b"}, {"input": "c", "answer": "d"}]}')
    _raises(DataError, r"record 2 has no field 'target'; its fields are \['answer', 'input'\]", load_examples, path, format="bbh")
    path = _write(tmp_path, "g8.jsonl", '{"question": "q", "answer": "#### 1"}\n{"q": "q2", "answer": "#### 2"}\n')
    _raises(DataError, r"line 2 has no field 'question'; its fields are \['answer', 'q'\]", load_examples, path, format="gsm8k")


def test_non_utf8_bytes_name_the_offset(tmp_path: Path) -> None:
    path = _write(tmp_path, "latin.csv", "input,output\ncafé,yes\n".encode("latin-1"))
    err = _raises(DataError, r"latin\.csv is not valid UTF-8: byte 0xe9 at byte offset 16 \(line 2\)", load_examples, path)
    assert "UTF-8" in err.fix and "iconv" in err.fix
    bom = _write(tmp_path, "bom.csv", "\ufeffinput,output\na,b\n".encode("utf-8"))
    assert load_examples(bom)[0].inputs == {"input": "a"}  # Excel's BOM is not part of the first column name


def test_duplicate_ids(tmp_path: Path) -> None:
    path = _write(tmp_path, "dup.jsonl", '{"id": "x", "input": "a", "output": "b"}\n{"id": "y", "input": "c", "output": "d"}\n{"id": "x", "input": "e", "output": "f"}\n')
    err = _raises(DataError, r"dup\.jsonl: duplicate example id 'x' \(line 1 and line 3\)", load_examples, path)
    assert "unique" in err.fix
    path = _write(tmp_path, "dup.json", '[{"id": 1, "input": "a", "output": "b"}, {"id": "1", "input": "c", "output": "d"}]')
    _raises(DataError, r"duplicate example id '1' \(record 1 and record 2\)", load_examples, path)


def test_empty_or_single_example_datasets_cannot_be_split(tmp_path: Path) -> None:
    path = _write(tmp_path, "none.json", '{"examples": []}')
    _raises(DataError, r"none\.json has no examples", load_task, path)
    path = _write(tmp_path, "one.jsonl", '{"input": "a", "output": "b"}\n')
    assert len(load_examples(path)) == 1  # loading is fine; splitting is not
    _raises(DataError, r"one\.jsonl has only one example: a task needs at least one validation and one test example", load_task, path)
    path = _write(tmp_path, "two.jsonl", '{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n')
    _raises(DataError, r"two\.jsonl: Task 'two' has an empty validation split", load_task, path)
    _raises(DataError, r"two\.jsonl: Split \(5, 5, 5\) needs 15 examples but 'two' has 2", load_task, path, split=(5, 5, 5))
    assert tuple(map(len, _ids(load_task(path, split=(0, 1, 1))))) == (0, 1, 1)


def test_unknown_format_names_and_suffixes(tmp_path: Path) -> None:
    err = _raises(UnknownNameError, r"Unknown data format 'jsonlines'", load_examples, FORMATS_DIR / "qa.jsonl", format="jsonlines")
    assert all(name in err.fix for name in FORMATS)
    _raises(UnknownNameError, r"Unknown data format 'bbhh'\. Did you mean 'bbh'\?", load_task, FORMATS_DIR / "qa.jsonl", format="bbhh")
    path = _write(tmp_path, "notes.txt", "input: a\n")
    _raises(DataError, r"Cannot infer the format of .*notes\.txt from its suffix '\.txt'", load_task, path)
    assert load_examples(FORMATS_DIR / "qa.jsonl", format="JSONL")[0].id == "q1"


def test_wrong_shapes_for_the_named_format(tmp_path: Path) -> None:
    _raises(DataError, r"not an instruction-induction file", load_examples, FORMATS_DIR / "arithmetic.json", format="ii")
    _raises(DataError, r"not a BIG-Bench Hard file .*found a JSON array", load_examples, FORMATS_DIR / "arithmetic.json", format="bbh")
    path = _write(tmp_path, "obj.json", '{"rows": []}')
    _raises(DataError, r"expected a JSON array of examples or an object with an 'examples' array; found a JSON object with keys \['rows'\]", load_examples, path)
    path = _write(tmp_path, "scalars.json", '["a", "b"]')
    _raises(DataError, r"record 1 is a JSON string, not an object", load_examples, path)


def test_fixed_schema_formats_refuse_field_renames() -> None:
    err = _raises(ConfigError, r"Format 'gsm8k' has fixed fields", load_task, TEST_DATA / "gsm8k" / "test_30.jsonl", input_field="problem")
    assert "format='json'" in err.fix
    assert load_examples(TEST_DATA / "gsm8k" / "test_30.jsonl", input_field="question")[0].output == "18"  # naming the real field is fine


def test_bad_split_arguments() -> None:
    path = II / "execute" / "sentiment.json"
    _raises(ConfigError, r"Bad split \(0\.5, 0\.5\)", load_task, path, split=(0.5, 0.5))
    _raises(ConfigError, r"negative part", load_task, path, split=(0.5, -0.1, 0.5))
    _raises(DataError, r"Bad split \(0\.6, 0\.3, 0\.3\)", load_task, path, split=(0.6, 0.3, 0.3))
    _raises(ConfigError, r"Bad split .* for instruction induction", load_instruction_induction, "sentiment", II, split=(1, 2, 3))


def test_unknown_instruction_induction_task(tmp_path: Path) -> None:
    err = _raises(UnknownNameError, r"Unknown instruction-induction task 'sentimnet'.*Did you mean 'sentiment'\?", load_instruction_induction, "sentimnet", II)
    assert "sentiment" in err.fix and "rhymes" in err.fix
    _raises(DataError, r"has no execute/ folder", load_instruction_induction, "sentiment", tmp_path)
    _write(tmp_path, "execute/solo.json", '{"examples": {"1": {"input": "a", "output": "b"}, "2": {"input": "c", "output": "d"}}}')
    _raises(DataError, r"induce/solo\.json does not exist", load_instruction_induction, "solo", tmp_path)


# ---------------------------------------------------------------------------------------------
# The defaults each format picks must work with the real parsers and metrics


@pytest.mark.parametrize(
    "path, kwargs",
    [(p, {}) for p in sorted(TEST_DATA.glob("bbh/*.json")) + sorted(TEST_DATA.glob("gsm8k/*.jsonl")) + sorted(II.glob("*/*.json"))]
    + [
        (FORMATS_DIR / "nli.tsv", {"input_field": "premise,hypothesis", "output_field": "gold"}),
        (FORMATS_DIR / "reviews.csv", {}),
        (FORMATS_DIR / "arithmetic.json", {}),
        (FORMATS_DIR / "bigbench_mc" / "task.json", {}),
        (FORMATS_DIR / "bigbench_gen" / "task.json", {}),
    ],
    ids=lambda v: str(v.relative_to(TEST_DATA)) if isinstance(v, Path) else "",
)
def test_default_parser_and_metric_score_every_accepted_answer(path: Path, kwargs: dict) -> None:
    parsing = pytest.importorskip("promptopt.parsing")
    evaluators = pytest.importorskip("promptopt.evaluators")
    task = load_task(path, split=(0.0, 0.5, 0.5), **kwargs)
    parse, metric = parsing.get_parser(task.parser, task=task), evaluators.get_metric(task.metric)
    for ex in task.val + task.test:
        for answer in ex.accepted:
            assert metric(parse(answer, ex), ex) == 1.0, (ex.id, answer, task.parser, task.metric)
        if len(set(ex.choices)) > 1:  # a wrong choice must not score
            wrong = next(c for c in ex.choices if c not in ex.accepted)
            assert metric(parse(wrong, ex), ex) == 0.0, (ex.id, wrong)
