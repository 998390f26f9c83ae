"""Metric tables: each metric on many (prediction, accepted) cases, edge cases included."""

from __future__ import annotations

import math

import pytest

from promptopt.errors import ConfigError, DataError, UnknownNameError
from promptopt.evaluators import METRIC_NAMES, get_metric, make_metric, normalize_answer
from promptopt.task import Example


def ex(*accepted: str, choices: tuple[str, ...] = (), **kw) -> Example:
    return Example("e1", {"input": "q"}, accepted[0] if accepted else None, accepted=tuple(accepted), choices=choices, **kw)


def score(name: str, prediction: str | None, example: Example) -> float:
    return get_metric(name)(prediction, example)


@pytest.mark.parametrize(
    "pred, accepted, expected",
    [
        ("Paris", ("Paris",), 1.0),
        ("  Paris\n", ("Paris",), 1.0),
        ("paris", ("Paris",), 0.0),
        ("Paris.", ("Paris",), 0.0),
        ("Lyon", ("Paris", "Lyon"), 1.0),
        ("", ("",), 1.0),
        ("", ("Paris",), 0.0),
        (None, ("Paris",), 0.0),
    ],
)
def test_exact(pred, accepted, expected):
    assert score("exact", pred, ex(*accepted)) == expected


@pytest.mark.parametrize(
    "pred, accepted, expected",
    [
        ("paris", ("Paris",), 1.0),
        ("The Eiffel Tower!", ("eiffel tower",), 1.0),
        ("  a   cat ", ("the cat",), 1.0),
        ("ninety-four", ("ninety four",), 0.0),  # SQuAD drops the hyphen: "ninetyfour"
        ("ninety four", ("ninety-four", "ninety four"), 1.0),
        ("“Platz”", ("Platz",), 1.0),  # curly quotes are punctuation too
        ("$18", ("18",), 1.0),
        ("theory", ("ory",), 0.0),  # articles only as whole words
        ("cats", ("cat",), 0.0),
        ("", ("the",), 1.0),
        (None, ("Paris",), 0.0),
    ],
)
def test_normalized_exact(pred, accepted, expected):
    assert score("normalized_exact", pred, ex(*accepted)) == expected


def test_normalize_answer_is_squad_style():
    assert normalize_answer("  The  Quick, brown FOX!  ") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("") == ""


@pytest.mark.parametrize(
    "pred, accepted, expected",
    [
        ("The capital is Paris.", ("paris",), 1.0),
        ("I would say it is the Eiffel Tower", ("Eiffel Tower",), 1.0),
        ("know", ("no",), 0.0),  # whole words only
        ("Parisian", ("Paris",), 0.0),
        ("red and blue", ("blue", "green"), 1.0),
        ("nothing", ("blue", "green"), 0.0),
        ("", ("The",), 1.0),  # the answer normalises away: only an empty prediction matches
        ("something", ("The",), 0.0),
        (None, ("paris",), 0.0),
    ],
)
def test_contains(pred, accepted, expected):
    assert score("contains", pred, ex(*accepted)) == expected


@pytest.mark.parametrize(
    "pred, accepted, expected",
    [
        ("2024-01-05", (r"\d{4}-\d{2}-\d{2}",), 1.0),
        (" 2024-01-05 ", (r"\d{4}-\d{2}-\d{2}",), 1.0),
        ("on 2024-01-05", (r"\d{4}-\d{2}-\d{2}",), 0.0),  # fullmatch, not search
        ("Yes", (r"(?i)yes|y",), 1.0),
        ("cat", ("dog", "c.t"), 1.0),
        (None, (".*",), 0.0),
    ],
)
def test_regex(pred, accepted, expected):
    assert score("regex", pred, ex(*accepted)) == expected


def test_regex_invalid_pattern_is_data_error_naming_the_example():
    with pytest.raises(DataError, match="e1"):
        score("regex", "x", ex("(unclosed"))


@pytest.mark.parametrize(
    "pred, accepted, expected",
    [
        ("18", ("18",), 1.0),
        ("The answer is 18.", ("18",), 1.0),
        ("#### 1,234", ("1234",), 1.0),
        ("18.0", ("18",), 1.0),
        ("0.75", ("3/4",), 1.0),
        ("17", ("18",), 0.0),
        ("18.000001", ("18",), 1.0),  # relative difference 5.6e-8: within the default rel_tol (1e-6)
        ("18.001", ("18",), 0.0),
        ("-3", ("3",), 0.0),
        ("eighteen", ("18",), 0.0),
        ("5", ("4", "5"), 1.0),
        (None, ("18",), 0.0),
    ],
)
def test_numeric_default(pred, accepted, expected):
    assert score("numeric", pred, ex(*accepted)) == expected


def test_numeric_tolerances():
    rel = make_metric("numeric", rel_tol=0.01)
    assert rel("101", ex("100")) == 1.0
    assert rel("102", ex("100")) == 0.0
    absolute = make_metric("numeric", abs_tol=0.5)
    assert absolute("0.4", ex("0")) == 1.0
    assert absolute("0.6", ex("0")) == 0.0
    strict = make_metric("numeric", rel_tol=0.0, abs_tol=0.0)
    assert strict("18.000001", ex("18")) == 0.0
    assert strict("18", ex("18")) == 1.0
    assert get_metric("numeric")("1e-12", ex("0")) == 1.0  # default abs_tol absorbs float noise around 0


def test_numeric_answer_without_number_is_data_error():
    with pytest.raises(DataError, match="no number"):
        score("numeric", "3", ex("three"))


def test_make_metric_validates_params():
    with pytest.raises(ConfigError, match="rel_tol"):
        make_metric("numeric", tolerance=0.1)
    with pytest.raises(ConfigError, match="takes no parameters"):
        make_metric("exact", rel_tol=0.1)
    with pytest.raises(ConfigError):
        make_metric("numeric", rel_tol=-1)
    assert make_metric("numeric", rel_tol=0.01).name == "numeric(rel_tol=0.01)"


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("(B)", 1.0),
        ("B", 1.0),
        ("The answer is (B).", 1.0),
        ("12/25/1937", 1.0),  # B's option text
        ("(A)", 0.0),
        ("(A) or (B)", 0.0),
        ("nonsense", 0.0),
        (None, 0.0),
    ],
)
def test_choice_lettered(pred, expected):
    example = Example(
        "mc",
        {"input": "What is the date tomorrow?\nOptions:\n(A) 12/11/1937\n(B) 12/25/1937\n(C) 01/04/1938"},
        "(B)",
        accepted=("(B)", "12/25/1937"),
        choices=("(A)", "(B)", "(C)"),
    )
    assert get_metric("choice")(pred, example) == expected


@pytest.mark.parametrize(
    "pred, accepted, choices, expected",
    [
        ("positive", ("positive",), ("negative", "positive"), 1.0),
        ("Positive.", ("positive",), ("negative", "positive"), 1.0),
        ("negative", ("positive",), ("negative", "positive"), 0.0),
        ("(b)", ("(B)",), (), 1.0),  # without choices: case- and bracket-insensitive labels
        ("B.", ("(B)",), (), 1.0),
        ("yes", ("Yes",), (), 1.0),
        ("(A)", ("(B)",), (), 0.0),
    ],
)
def test_choice_labels(pred, accepted, choices, expected):
    assert score("choice", pred, ex(*accepted, choices=choices)) == expected


@pytest.mark.parametrize(
    "pred, accepted, expected",
    [
        ("the cat sat", ("the cat sat",), 1.0),
        ("cat sat on mat", ("the cat sat",), 2 * (2 / 4) * (2 / 2) / (2 / 4 + 2 / 2)),
        ("dog", ("cat",), 0.0),
        ("cat cat", ("cat",), 2 * 0.5 * 1 / 1.5),  # token counts matter
        ("cat", ("dog", "cat"), 1.0),
        ("", ("",), 1.0),
        ("the", ("cat",), 0.0),  # empty after normalisation vs non-empty
        (None, ("cat",), 0.0),
    ],
)
def test_f1(pred, accepted, expected):
    assert score("f1", pred, ex(*accepted)) == pytest.approx(expected)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_every_named_metric_needs_a_reference(name):
    with pytest.raises(DataError, match="reference"):
        get_metric(name)("x", Example("u", {"input": "q"}))


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_every_named_metric_scores_none_zero_and_stays_in_range(name):
    metric = get_metric(name)
    example = ex("42", choices=("42", "43"))
    assert metric(None, example) == 0.0
    for pred in ("42", "43", "", "junk", "#### 42"):
        assert 0.0 <= metric(pred, example) <= 1.0
    assert metric("42", example) == 1.0


def test_callable_metric_is_wrapped():
    calls = []

    def length_ok(prediction, example):
        calls.append(prediction)
        return len(prediction) <= 5

    metric = get_metric(length_ok)
    assert metric.name == "length_ok"
    assert metric("short", Example("u", {"input": "q"})) == 1.0  # needs no reference
    assert metric("much too long", Example("u", {"input": "q"})) == 0.0
    assert metric(None, Example("u", {"input": "q"})) == 0.0
    assert calls == ["short", "much too long"]  # never called on None


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, "1", None])
def test_callable_metric_out_of_range_is_config_error(bad):
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        get_metric(lambda p, e: bad)("x", ex("x"))


def test_unknown_metric_lists_names():
    with pytest.raises(UnknownNameError) as err:
        get_metric("bleu")
    for name in METRIC_NAMES:
        assert name in str(err.value)
    with pytest.raises(UnknownNameError):
        make_metric("bleu")


def test_get_metric_returns_metric_unchanged():
    m = make_metric("numeric", rel_tol=0.1)
    assert get_metric(m) is m
