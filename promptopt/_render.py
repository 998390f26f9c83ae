"""Candidate + example inputs -> chat messages.

Layout:

* **system**: the ``system`` part (a persona, when present), the instruction, then every other
  part (``output_format``, ...) in name order, separated by blank lines. Instruction and parts are
  plain text, never templates: strategies write them with LLMs, and a stray ``{{`` in a proposed
  instruction must not break an evaluation. No system message when all of them are empty.
* **user** (one example): ``candidate.input_template`` when set, else ``task.metadata
  ["input_template"]`` when set, else the task default: the value alone for a single input field,
  ``Field: value`` lines for several.
* **demos**: ``chat`` puts each demo as a user turn (rendered like the query) and an assistant turn
  before the query; ``inline`` writes ``Input: ...`` / ``Output: ...`` blocks into the one user
  message and ends it with ``Input: <query>`` / ``Output:``. Without demos both give the same prompt.

Templates render in an immutable Jinja2 sandbox with ``StrictUndefined`` and autoescape off.
Example values are passed as variables, so a value holding ``{{ 7*7 }}`` stays literal text.
Unsafe constructs (private attributes, imports/includes, huge ``*``/``**`` results) raise
:class:`~promptopt.errors.TemplateError`, before rendering when they can be seen statically.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptopt.errors import DataError, TemplateError
from promptopt.lm._types import Message
from promptopt.prompt import Candidate
from promptopt.task import Task

__all__ = ["render_messages", "check_template", "candidate_renderer"]

_INLINE_INPUT = "Input:"
_INLINE_OUTPUT = "Output:"
# Big enough for any prompt, small enough that ``{{ 'x' * 10**12 }}`` cannot exhaust memory.
_MAX_SEQUENCE = 1_000_000
_MAX_POWER_BITS = 100_000


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, plus caps on the two operators that can allocate without bound in one step."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and abs(left).bit_length() * right > _MAX_POWER_BITS:
                raise jinja2.exceptions.SecurityError(f"power {left!r} ** {right!r} is too large")
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > _MAX_SEQUENCE:
                    raise jinja2.exceptions.SecurityError(f"sequence repetition to {len(seq) * times} items is too large")
        return super().call_binop(context, operator_, left, right)


_ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
_GLOBALS = frozenset(_ENV.globals)
_UNSAFE_FIX = "Templates may only read the example's fields (e.g. {{ input }}) and use filters; remove the flagged construct."


@dataclass(frozen=True)
class _Compiled:
    template: jinja2.Template
    variables: frozenset[str]
    """Variables the template reads from its context (its fields), globals excluded."""


def _unsafe(source: str, why: str) -> TemplateError:
    return TemplateError(f"Unsafe template: {why} (template: {_clip(source)!r}).", fix=_UNSAFE_FIX)


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> _Compiled:
    try:
        ast = _ENV.parse(source)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TemplateError(
            f"Template syntax error at line {exc.lineno}: {exc.message} (template: {_clip(source)!r}).",
            fix="Fix the Jinja2 syntax: variables are {{ name }}, statements {% if ... %}...{% endif %}.",
        ) from None
    # Static checks: report at run start what the sandbox would only refuse once rendering.
    for node in ast.find_all((nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)):
        raise _unsafe(source, f"'{type(node).__name__.lower()}' statements are not allowed")
    for node in ast.find_all(nodes.Getattr):
        if node.attr.startswith("_"):
            raise _unsafe(source, f"access to private attribute {node.attr!r}")
    for node in ast.find_all(nodes.Getitem):
        if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
            raise _unsafe(source, f"access to private item {node.arg.value!r}")
    variables = frozenset(meta.find_undeclared_variables(ast)) - _GLOBALS
    return _Compiled(_ENV.from_string(ast), variables)


def _undefined(missing: Iterable[str], available: Iterable[str], source: str) -> TemplateError:
    avail = sorted(available)
    return TemplateError(
        f"Template uses undefined variable(s) {sorted(missing)}; available fields: {avail} (template: {_clip(source)!r}).",
        fix=f"Use only the example's fields in the template ({', '.join('{{ ' + f + ' }}' for f in avail) or 'none'}).",
    )


def check_template(source: str, fields: Iterable[str]) -> None:
    """Validate ``source`` against the field names an example will provide.

    Raises :class:`~promptopt.errors.TemplateError` on a syntax error (with its line), an unsafe
    construct, or a variable that is not one of ``fields``. Call it at run start, so that a bad
    template fails before any LM call.
    """
    fields = frozenset(fields)
    compiled = _compile(source)
    missing = compiled.variables - fields
    if missing:
        raise _undefined(missing, fields, source)


def _render_template(source: str, values: Mapping[str, Any]) -> str:
    compiled = _compile(source)
    missing = compiled.variables - values.keys()
    if missing:
        raise _undefined(missing, values.keys(), source)
    try:
        return compiled.template.render(**{str(k): v for k, v in values.items()})
    except jinja2.exceptions.SecurityError as exc:
        raise _unsafe(source, str(exc)) from None
    except jinja2.exceptions.UndefinedError as exc:
        raise TemplateError(
            f"Template reads something undefined: {exc.message} (template: {_clip(source)!r}).",
            fix="Check attribute and item names used on the fields; fields are usually plain strings.",
        ) from None
    except Exception as exc:  # noqa: BLE001 - anything a template does wrong is the template's error
        raise TemplateError(
            f"Template failed to render: {type(exc).__name__}: {exc} (template: {_clip(source)!r}).",
            fix="Fix the template expression that fails on these example values.",
        ) from None


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _field_label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize() or name


def _default_user(inputs: Mapping[str, Any], fields: Sequence[str]) -> str:
    missing = [f for f in fields if f not in inputs]
    if missing:
        raise DataError(
            f"Example inputs lack field(s) {missing}; available fields: {sorted(inputs)}.",
            fix="Give every example (and demo) the task's input fields, or set the task's input_fields to the right names.",
        )
    if len(fields) == 1:
        return _as_text(inputs[fields[0]])
    return "\n".join(f"{_field_label(f)}: {_as_text(inputs[f])}" for f in fields)


def _system_text(candidate: Candidate) -> str:
    parts = candidate.part_dict
    pieces = [parts.pop("system", ""), candidate.instruction, *(parts[k] for k in sorted(parts))]
    return "\n\n".join(p.strip() for p in pieces if p and p.strip())


def _user_renderer(candidate: Candidate, task: Task) -> Callable[[Mapping[str, Any]], str]:
    source = candidate.input_template if candidate.input_template is not None else task.metadata.get("input_template")
    if source is not None:
        if not isinstance(source, str):
            raise TemplateError(f"Input template must be a string, got {type(source).__name__}.", fix="Pass the template as text.")
        _compile(source)  # fail on syntax/unsafe constructs before any example is rendered
        return functools.partial(_render_template, source)
    fields = tuple(task.input_fields)
    if not fields:
        return lambda inputs: _default_user(inputs, tuple(inputs))
    return lambda inputs: _default_user(inputs, fields)


def candidate_renderer(candidate: Candidate, task: Task) -> Callable[[Mapping[str, Any]], list[Message]]:
    """Render the candidate's fixed prefix (system message, demos) once; return a function that
    renders the messages for one example's inputs. Raises TemplateError/DataError for the prefix."""
    user = _user_renderer(candidate, task)
    prefix: list[Message] = []
    system = _system_text(candidate)
    if system:
        prefix.append({"role": "system", "content": system})
    if not candidate.demos:
        return lambda inputs: [*prefix, {"role": "user", "content": user(inputs)}]
    if candidate.demo_format == "chat":
        for demo in candidate.demos:
            prefix.append({"role": "user", "content": user(demo.input_dict)})
            prefix.append({"role": "assistant", "content": demo.output})
        return lambda inputs: [*prefix, {"role": "user", "content": user(inputs)}]
    if candidate.demo_format == "inline":
        shots = "".join(
            f"{_INLINE_INPUT} {user(d.input_dict)}\n{_INLINE_OUTPUT} {d.output}\n\n" for d in candidate.demos
        )
        return lambda inputs: [*prefix, {"role": "user", "content": f"{shots}{_INLINE_INPUT} {user(inputs)}\n{_INLINE_OUTPUT}"}]
    raise TemplateError(f"Unknown demo_format {candidate.demo_format!r}.", fix="Use 'chat' or 'inline'.")


def render_messages(candidate: Candidate, example_inputs: Mapping[str, Any], task: Task) -> list[Message]:
    """The chat messages that ask ``candidate``'s prompt about one example (see the module doc)."""
    return candidate_renderer(candidate, task)(example_inputs)
