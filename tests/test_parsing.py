"""Answer parsers on realistic messy outputs of small models."""

from __future__ import annotations

import pytest

from promptopt.errors import ConfigError, UnknownNameError
from promptopt.parsing import get_parser, parse_choice, parse_number
from promptopt.task import Example, Task

PLAIN = Example("p", {"input": "x"}, "x")
SENTIMENT = Example("s", {"input": "A tender drama."}, "positive", choices=("negative", "positive"))
YES_NO = Example("yn", {"input": "Is it plausible?"}, "No", choices=("Yes", "No"))
LETTERED = Example(
    "mc",
    {"input": "Today is Christmas Eve of 1937. What is the date tomorrow?\nOptions:\n(A) 12/11/1937\n(B) 12/25/1937\n(C) 01/04/1938"},
    "(B)",
    choices=("(A)", "(B)", "(C)"),
)
TRUE_FALSE = Example("tf", {"input": "not ( True ) is\nOptions:\n(A) True\n(B) False"}, "(B)", choices=("(A)", "(B)"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("  hello world \n", "hello world"),
        ("line1\nline2", "line1\nline2"),
        ("", None),
        (" \n\t", None),
    ],
)
def test_raw(text, expected):
    assert get_parser("raw")(text, PLAIN) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("negative\n\nExplanation: the review is harsh.", "negative"),
        ("\n\n  first  \nsecond", "first"),
        ("only", "only"),
        ("\n \n", None),
    ],
)
def test_first_line(text, expected):
    assert get_parser("first_line")(text, PLAIN) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Paris", "Paris"),
        ("Answer: Paris", "Paris"),
        ("**Answer:** Paris.", "Paris"),
        ("Output: \"ninety-four\"", "ninety-four"),
        ("The answer is ends.", "ends"),
        ("Let me think. 47 + 0 = 47. So the final answer is 47.", "47"),
        ("negative\n\nExplanation: the plot is thin.", "negative"),
        ("'unfortunate'", "unfortunate"),
        ("“Platz”", "Platz"),
        ("*p l a c e*", "p l a c e"),
        ("`ninety four`", "ninety four"),
        ("### Answer\nThe artist was mentioned by the professor.", "The artist was mentioned by the professor"),
        ("Final Answer - lugar", "lugar"),
        ("3.5", "3.5"),
        ("The answer is:\n\nhello", "hello"),
        ("", None),
        ("Answer:", None),
        ('""', None),
    ],
)
def test_auto(text, expected):
    assert get_parser("auto")(text, PLAIN) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("positive", "positive"),
        ("Positive.", "positive"),
        ("NEGATIVE", "negative"),
        ("**Negative**", "negative"),
        ("The sentiment of this review is positive.", "positive"),
        ("Sentiment: negative", "negative"),
        ("negative\n\nExplanation: despite some positive moments, the film fails.", "negative"),
        ("I think it is negative. The positive reviews are wrong.", "negative"),
        ("It's positive, not negative.", "positive"),
        ("It is not positive.", None),  # negation is not turned into the other label (no invented synonyms)
        ("positive or negative", None),  # a hedge
        ("The review is neutral.", None),
        ("good", None),  # no synonyms
        ("positively charged", None),  # whole words only
        ("This phrase is a play on words.", None),
        ("", None),
    ],
)
def test_label(text, expected):
    assert get_parser("label")(text, SENTIMENT) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No", "No"),
        ("no.", "No"),
        ("Yes, because the player is a hockey player.", "Yes"),
        ("Not sure, but yes.", "Yes"),  # "Not" is not "No"
        ("The answer is no.", "No"),
        ("Nope", None),
        ("yes or no", None),
    ],
)
def test_label_yes_no_whole_words(text, expected):
    assert get_parser("label")(text, YES_NO) == expected


def test_label_ignores_letters():
    assert get_parser("label")("(A)", SENTIMENT) is None
    assert get_parser("label")("A tender drama. Positive!", SENTIMENT) == "positive"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(B)", "(B)"),
        ("B", "(B)"),
        ("b", "(B)"),
        ("(b)", "(B)"),
        ("B) 12/25/1937", "(B)"),
        ("B. 12/25/1937 is the day after Christmas Eve.", "(B)"),
        ("**Answer:** (B) 12/25/1937", "(B)"),
        ("The answer is (C).", "(C)"),
        ("So the answer is C", "(C)"),
        ("Option A is correct.", "(A)"),
        ("12/25/1937", "(B)"),  # the option's text
        ("Tomorrow is 12/25/1937.", "(B)"),
        ("A tomorrow date is hard to say.", None),  # the article "A" is not option A
        ("(A) or (B)", None),
        ("(D)", None),  # not a choice
        ("I don't know", None),
    ],
)
def test_choice_lettered(text, expected):
    assert get_parser("choice")(text, LETTERED) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("**Answer:** (B) False", "(B)"),
        ("False", "(B)"),
        ("false.", "(B)"),
        ("True", "(A)"),
        ("(A) True", "(A)"),
        ("The expression evaluates to False.", "(B)"),
        ("It is not True, it is False.", "(B)"),
    ],
)
def test_choice_option_text_maps_to_letter(text, expected):
    assert get_parser("choice")(text, TRUE_FALSE) == expected


def test_choice_options_from_metadata():
    ex = Example("m", {"input": "Which is sarcastic?"}, "(B)", choices=("(A)", "(B)"), metadata={"options": {"(A)": "He is kind", "(B)": "Oh great, another Monday"}})
    assert get_parser("choice")("Oh great, another Monday", ex) == "(B)"
    assert get_parser("choice")("He is kind.", ex) == "(A)"


def test_choice_returns_the_choice_as_spelled():
    ex = Example("c", {"input": "?"}, "True", choices=("True", "False"))
    assert get_parser("choice")("true", ex) == "True"
    assert parse_choice("it is FALSE", ["True", "False"]) == "False"


def test_longer_option_text_wins_over_contained_label():
    ex = Example("l", {"input": "?"}, "left", choices=("left", "the second from the left"))
    assert get_parser("choice")("It is the second from the left.", ex) == "the second from the left"
    assert get_parser("choice")("left", ex) == "left"


def test_label_set_from_task_metadata_or_distinct_outputs():
    examples = [Example(str(i), {"input": str(i)}, lab) for i, lab in enumerate(["pos", "neg", "pos", "neg"])]
    task = Task("t", examples[:2], examples[2:3], examples[3:])
    assert get_parser("label", task=task)("It's neg.", examples[0]) == "neg"
    task_meta = Task("t", examples[:2], examples[2:3], examples[3:], metadata={"labels": ["pos", "neg", "mixed"]})
    assert get_parser("label", task=task_meta)("Mixed feelings: mixed", examples[0]) == "mixed"


def test_label_without_any_label_set_is_a_config_error():
    with pytest.raises(ConfigError, match="label set"):
        get_parser("label")("positive", PLAIN)
    many = [Example(str(i), {"input": str(i)}, f"answer {i}") for i in range(30)]
    with pytest.raises(ConfigError, match="label set"):
        get_parser("label", task=Task("free", many[:10], many[10:20], many[20:]))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", "42"),
        ("... so the answer is 1,234.", "1234"),
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("16 - 3 - 4 = 9 eggs, so 9 * 2 = 18 dollars", "18"),
        ("The answer is 18. Then she buys 3 more.", "18"),
        ("The temperature is -5 degrees", "-5"),
        ("It dropped by −2.5", "-2.5"),
        ("3/4", "0.75"),
        ("The answer is 1/3 of the cake", "0.3333333333333333"),
        ("It costs $1,000,000.50 in total.", "1000000.5"),
        ("2.50", "2.5"),
        ("4.0", "4"),
        ("There are 8 instruments.", "8"),
        ("1e3", "1000"),
        (".5 liters", "0.5"),
        ("50% of them", "50"),
        ("Answer: **72**", "72"),
        ("16-3 = 13", "13"),
        ("No number here", None),
        ("x/0 and 5/0", None),
        ("12/25/1937", None),  # a date is not a number
        ("", None),
    ],
)
def test_number(text, expected):
    assert get_parser("number")(text, PLAIN) == expected


def test_parse_number_returns_floats():
    assert parse_number("#### 1,234") == 1234.0
    assert parse_number("-0.25") == -0.25
    assert parse_number("none") is None


@pytest.mark.parametrize(
    "spec, text, expected",
    [
        (r"regex:Answer:\s*(\w+)", "blah Answer: Paris, then", "Paris"),
        (r"regex:\d+", "take 12 and 13", "12"),
        (r"regex:<a>(.*?)</a>", "x <a> multi\nline </a>", "multi\nline"),
        (r"regex:(x)|(y)", "y", None),
        (r"regex:Answer: (\w+)", "no match", None),
    ],
)
def test_regex(spec, text, expected):
    assert get_parser(spec)(text, PLAIN) == expected


def test_bad_regex_is_config_error():
    with pytest.raises(ConfigError, match="does not compile"):
        get_parser("regex:(unclosed")


def test_unknown_name_lists_names():
    with pytest.raises(UnknownNameError) as err:
        get_parser("json")
    for name in ("raw", "first_line", "auto", "choice", "label", "number", "regex:"):
        assert name in str(err.value)


def test_callable_is_returned_as_is():
    def fn(text, example):
        return text[::-1]

    assert get_parser(fn) is fn
