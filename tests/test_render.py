"""Rendering candidates to chat messages, and the template sandbox."""

from __future__ import annotations

import pytest

from promptopt._render import check_template, render_messages
from promptopt.errors import DataError, TemplateError
from promptopt.prompt import Candidate, Demo
from promptopt.task import Task

ONE = Task("one", [], [], [], input_fields=("input",))
TWO = Task("two", [], [], [], input_fields=("question", "context_passage"))
DEMOS = (Demo.make({"input": "great film"}, "positive"), Demo.make({"input": "dull"}, "negative"))


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


# --- layout ---------------------------------------------------------------------------------


def test_zero_shot_single_field_is_system_plus_value():
    out = render_messages(Candidate("Classify the sentiment."), {"input": "A tender drama."}, ONE)
    assert out == [msg("system", "Classify the sentiment."), msg("user", "A tender drama.")]


def test_empty_instruction_gives_no_system_message():
    assert render_messages(Candidate("  "), {"input": "x"}, ONE) == [msg("user", "x")]


def test_parts_order_system_first_then_instruction_then_parts_by_name():
    cand = Candidate(
        "Classify the sentiment.",
        parts=(("output_format", "Answer with one word."), ("system", "You are a film critic."), ("constraints", " Be brief. ")),
    )
    (system, _) = render_messages(cand, {"input": "x"}, ONE)
    assert system == msg("system", "You are a film critic.\n\nClassify the sentiment.\n\nBe brief.\n\nAnswer with one word.")


def test_parts_alone_make_a_system_message_and_empty_parts_are_skipped():
    cand = Candidate("", parts=(("output_format", "One word."), ("constraints", "")))
    assert render_messages(cand, {"input": "x"}, ONE)[0] == msg("system", "One word.")


def test_several_fields_render_as_labelled_lines_in_task_order():
    out = render_messages(Candidate(""), {"context_passage": "Paris is in France.", "question": "Where is Paris?"}, TWO)
    assert out == [msg("user", "Question: Where is Paris?\nContext passage: Paris is in France.")]


def test_list_values_are_joined():
    assert render_messages(Candidate(""), {"input": ["rock climbing", "elevators"]}, ONE) == [msg("user", "rock climbing, elevators")]


def test_chat_demos_are_user_assistant_turns_before_the_query():
    out = render_messages(Candidate("Classify.", demos=DEMOS), {"input": "boring"}, ONE)
    assert out == [
        msg("system", "Classify."),
        msg("user", "great film"),
        msg("assistant", "positive"),
        msg("user", "dull"),
        msg("assistant", "negative"),
        msg("user", "boring"),
    ]


def test_inline_demos_are_input_output_blocks_in_one_user_message():
    out = render_messages(Candidate("Classify.", demos=DEMOS, demo_format="inline"), {"input": "boring"}, ONE)
    assert out == [
        msg("system", "Classify."),
        msg("user", "Input: great film\nOutput: positive\n\nInput: dull\nOutput: negative\n\nInput: boring\nOutput:"),
    ]


def test_without_demos_both_formats_render_the_same_prompt():
    a = render_messages(Candidate("Do it.", demo_format="chat"), {"input": "q"}, ONE)
    b = render_messages(Candidate("Do it.", demo_format="inline"), {"input": "q"}, ONE)
    assert a == b == [msg("system", "Do it."), msg("user", "q")]


def test_input_template_renders_query_and_demos_alike():
    cand = Candidate("Classify.", demos=DEMOS[:1], input_template="Review: {{ input }}\nSentiment?")
    out = render_messages(cand, {"input": "boring"}, ONE)
    assert out[1:] == [msg("user", "Review: great film\nSentiment?"), msg("assistant", "positive"), msg("user", "Review: boring\nSentiment?")]
    inline = render_messages(cand.with_(demo_format="inline"), {"input": "boring"}, ONE)
    assert inline[1]["content"] == "Input: Review: great film\nSentiment?\nOutput: positive\n\nInput: Review: boring\nSentiment?\nOutput:"


def test_task_metadata_template_is_the_default_and_candidate_template_overrides_it():
    task = Task("t", [], [], [], input_fields=("input",), metadata={"input_template": "Text: {{ input }}"})
    assert render_messages(Candidate(""), {"input": "a"}, task) == [msg("user", "Text: a")]
    assert render_messages(Candidate("", input_template="<{{ input }}>"), {"input": "a"}, task) == [msg("user", "<a>")]


def test_template_can_use_filters_control_flow_and_extra_fields():
    src = "{{ question | upper }}{% if hint %} (hint: {{ hint }}){% endif %}"
    assert render_messages(Candidate("", input_template=src), {"question": "why?", "hint": "sky"}, TWO) == [msg("user", "WHY? (hint: sky)")]


# --- values are data ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["{{ 7*7 }}", "{% for i in range(3) %}x{% endfor %}", "{{ ''.__class__.__mro__ }}", "{#"])
def test_values_render_literally_never_evaluated(value):
    for cand in (Candidate(""), Candidate("", input_template="Q: {{ input }}")):
        out = render_messages(cand, {"input": value}, ONE)
        assert out[-1]["content"].endswith(value)
    demo = Candidate("", demos=(Demo.make({"input": value}, "{{ 1+1 }}"),), demo_format="inline")
    assert render_messages(demo, {"input": "q"}, ONE)[0]["content"] == f"Input: {value}\nOutput: {{{{ 1+1 }}}}\n\nInput: q\nOutput:"


def test_instruction_is_plain_text_not_a_template():
    out = render_messages(Candidate("Reply with {{ label }} and {% nothing %}"), {"input": "x"}, ONE)
    assert out[0]["content"] == "Reply with {{ label }} and {% nothing %}"


def test_autoescape_is_off():
    out = render_messages(Candidate("", input_template="{{ input }}"), {"input": "<b>&\"'"}, ONE)
    assert out == [msg("user", "<b>&\"'")]


# --- errors ---------------------------------------------------------------------------------


def test_undefined_variable_names_it_and_the_available_fields():
    with pytest.raises(TemplateError) as err:
        render_messages(Candidate("", input_template="{{ question }} {{ input }}"), {"input": "x", "label": "y"}, ONE)
    text = str(err.value)
    assert "'question'" in text and "'input'" in text and "'label'" in text
    assert err.value.fix


def test_undefined_attribute_is_a_template_error():
    with pytest.raises(TemplateError, match="undefined"):
        render_messages(Candidate("", input_template="{{ input.nope }}"), {"input": "x"}, ONE)


def test_syntax_error_reports_the_line():
    with pytest.raises(TemplateError, match="line 2"):
        render_messages(Candidate("", input_template="ok\n{{ input "), {"input": "x"}, ONE)


def test_runtime_failure_in_template_is_a_template_error():
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render_messages(Candidate("", input_template="{{ 1 / 0 }}"), {"input": "x"}, ONE)


def test_missing_field_for_default_layout_is_a_data_error():
    with pytest.raises(DataError, match="question"):
        render_messages(Candidate(""), {"context_passage": "x"}, TWO)


def test_demo_lacking_a_template_field_fails_even_with_no_query_problem():
    cand = Candidate("", demos=(Demo.make({"other": "x"}, "y"),), input_template="{{ input }}")
    with pytest.raises(TemplateError, match="'input'"):
        render_messages(cand, {"input": "fine"}, ONE)


@pytest.mark.parametrize(
    "src",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ input.__class__ }}",
        "{{ input['__class__'] }}",
        "{{ input | attr('__class__') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ self._TemplateReference__context }}",
        "{% import 'os' as os %}",
        "{% from 'x' import y %}",
        "{% include 'secrets.txt' %}",
        "{% extends 'base.html' %}",
        "{{ 'a' * 10**9 }}",
        "{{ 10 ** 100000 }}",
        "{{ (10 ** 9999) ** 9999 }}",
        "{{ input.append(1) }}",
    ],
)
def test_injection_attempts_raise_unsafe_template_error(src):
    with pytest.raises(TemplateError) as err:
        render_messages(Candidate("", input_template=src), {"input": "x"}, ONE)
    assert "nsafe" in str(err.value) or "undefined" in str(err.value) or "failed to render" in str(err.value)


@pytest.mark.parametrize("src", ["{{ ''.__class__ }}", "{% import 'os' as os %}", "{{ 'a' * 10**9 }}", "{{ x | attr('__class__') }}"])
def test_unsafe_templates_say_unsafe(src):
    with pytest.raises(TemplateError, match="Unsafe"):
        render_messages(Candidate("", input_template=src), {"input": "x", "x": "y"}, ONE)


def test_str_format_in_sandbox_cannot_reach_private_attributes():
    with pytest.raises(TemplateError, match="Unsafe"):
        render_messages(Candidate("", input_template="{{ '{0.__class__}'.format(input) }}"), {"input": "x"}, ONE)


# --- check_template -------------------------------------------------------------------------


def test_check_template_accepts_valid_and_rejects_unknown_fields():
    check_template("Q: {{ question }}{% for c in context %}{{ c }}{% endfor %}{{ range(2) | list }}", ["question", "context"])
    with pytest.raises(TemplateError, match="'answer'"):
        check_template("{{ question }} {{ answer }}", ["question"])


def test_check_template_rejects_syntax_and_unsafe_constructs():
    with pytest.raises(TemplateError, match="line 1"):
        check_template("{% if %}", ["input"])
    with pytest.raises(TemplateError, match="Unsafe"):
        check_template("{{ input.__dict__ }}", ["input"])
    with pytest.raises(TemplateError, match="Unsafe"):
        check_template("{% include 'x' %}", ["input"])


def test_compiled_templates_are_cached_by_source():
    from promptopt._render import _compile

    before = _compile.cache_info()
    src = "cached {{ input }} #" + "x" * 7
    for value in "abc":
        assert render_messages(Candidate("", input_template=src), {"input": value}, ONE)[-1]["content"] == f"cached {value} #xxxxxxx"
    after = _compile.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits >= 2


def test_ordinary_arithmetic_and_repetition_stay_allowed():
    out = render_messages(Candidate("", input_template="{{ '-' * 3 }} {{ 2 ** 10 }} {{ input * 2 }}"), {"input": "ab"}, ONE)
    assert out == [msg("user", "--- 1024 abab")]


def test_task_without_input_fields_shows_every_input():
    task = Task("any", [], [], [], input_fields=())
    assert render_messages(Candidate(""), {"a": 1, "b_c": "x"}, task) == [msg("user", "A: 1\nB c: x")]
