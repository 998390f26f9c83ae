"""Read an answer out of free text, for models that break formats.

A parser is ``(text, example) -> str | None``; None means "no answer could be read" (the
evaluator flags it ``parsed=False`` and scores it 0). Names accepted by :func:`get_parser`:

``raw``
    the text, stripped.
``first_line``
    the first non-empty line.
``auto``
    strips the usual wrappers: markdown emphasis, ``Answer:``/``Output:`` labels, "the answer
    is ...", surrounding quotes, a trailing period; keeps the first line of what remains.
``choice``
    which of ``example.choices`` the text states: the label itself, a letter (``(B)``, ``B)``,
    ``B.``, ``option B``) or the option's text (from ``example.metadata["options"]`` or
    ``(A) ...`` lines in the input); otherwise the one choice mentioned (the first sentence
    decides when several are). None when no choice, or more than one, is stated.
``label``
    like ``choice`` for label sets (``positive``/``negative``), without letters: case-insensitive
    whole-word matches of the labels and nothing else (no invented synonyms; ``not positive`` is not
    ``positive``). Labels come from ``example.choices``, else (when :func:`get_parser` is given the
    task) ``task.metadata["labels"]``, else the task's distinct outputs.
``number``
    the number after the last ``####`` or "answer is", else the last number in the text; commas,
    signs, decimals, currency and fractions (``3/4`` -> ``0.75``) handled; canonical form
    (``1,234.0`` -> ``1234``).
``regex:<pattern>``
    the first group of the first match (the whole match when the pattern has no group).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from promptopt.errors import ConfigError, UnknownNameError
from promptopt.task import Example

if TYPE_CHECKING:
    from promptopt.task import Task

__all__ = ["Parser", "get_parser", "parse_choice", "parse_number", "PARSER_NAMES"]

Parser = Callable[[str, Example], "str | None"]

PARSER_NAMES = ("raw", "first_line", "auto", "choice", "label", "number", "regex:<pattern>")

# Above this many distinct outputs a task is not a classification task, and ``label`` is the wrong parser.
_MAX_DERIVED_LABELS = 20

# --- shared text clean-up -------------------------------------------------------------------

_EMPHASIS = re.compile(r"\*\*|__|`+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.MULTILINE)
# "Answer:", "Final answer -", "Output:" at the start of a line (after clean-up).
_LABEL_PREFIX = re.compile(r"^\s*(?:final\s+answer|answer|output|result|response|prediction)\s*[:：\-–]\s*", re.IGNORECASE)
# An announced answer anywhere: "the answer is", "final answer:", "answer is:", "####".
_MARKER = re.compile(
    r"(?:\b(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|would\s+be|will\s+be|[:：])\s*:?|####)\s*",
    re.IGNORECASE,
)
_BARE_LABEL = re.compile(r"^(?:final\s+answer|answer|output|result|response|prediction)\s*[:：]?$", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "*": "*", "_": "_"}
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n")


def _clean(text: str) -> str:
    """Remove markdown emphasis/headings; keep line structure."""
    return _HEADING.sub("", _EMPHASIS.sub("", text)).strip()


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _after_marker(text: str) -> str | None:
    """What follows the last announced answer that is followed by something."""
    for m in reversed(list(_MARKER.finditer(text))):
        rest = text[m.end() :].strip()
        if rest:
            return rest
    return None


def _unwrap(answer: str) -> str:
    """Strip label prefixes, surrounding quotes and trailing periods from a one-line answer."""
    prev = None
    while prev != answer:
        prev = answer
        answer = _LABEL_PREFIX.sub("", answer).strip()
        if len(answer) >= 2 and answer[0] in _QUOTES and answer[-1] == _QUOTES[answer[0]]:
            answer = answer[1:-1].strip()
        answer = answer.rstrip(".").rstrip()
    return answer


def _none_if_empty(text: str) -> str | None:
    return text if text else None


# --- simple parsers ------------------------------------------------------------------------


def _raw(text: str, example: Example) -> str | None:
    return _none_if_empty(text.strip())


def _first_line(text: str, example: Example) -> str | None:
    lines = _lines(text)
    return lines[0] if lines else None


def _auto(text: str, example: Example) -> str | None:
    cleaned = _clean(text)
    answer = _after_marker(cleaned)
    if answer is None:
        answer = cleaned
    for line in _lines(answer):
        unwrapped = _unwrap(line)
        if unwrapped and not _BARE_LABEL.match(unwrapped):
            return unwrapped
    return None


# --- numbers -------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w./])(?P<sign>[-−+])?[$€£]?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
    r"(?:/(?P<den>\d+))?"
    r"(?!\d|[.,/]\d)"
)


def _number_values(text: str) -> list[Fraction]:
    out = []
    for m in _NUMBER.finditer(text):
        value = Fraction(m.group("num").replace(",", ""))
        if m.group("den") is not None:
            den = int(m.group("den"))
            if den == 0:
                continue
            value /= den
        if m.group("sign") in ("-", "−"):
            value = -value
        out.append(value)
    return out


def _number_value(text: str) -> Fraction | None:
    announced = _after_marker(text)
    if announced is not None:
        values = _number_values(announced)
        if values:
            return values[0]
    values = _number_values(text)
    return values[-1] if values else None


def _canonical(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return repr(float(value))


def parse_number(text: str) -> float | None:
    """The answer number in ``text`` (see the ``number`` parser), or None."""
    value = _number_value(text)
    return None if value is None else float(value)


def _number(text: str, example: Example) -> str | None:
    value = _number_value(_clean(text))
    return None if value is None else _canonical(value)


# --- choices and labels ----------------------------------------------------------------------

_LETTER_CHOICE = re.compile(r"^\(?\s*([A-Za-z])\s*\)?[.:]?$")
_OPTION_LINE = re.compile(r"^\s*\(([A-Z])\)\s+(.+?)\s*$", re.MULTILINE)
_NEGATED = re.compile(r"(?:\bnot|n't|\bnever)\s+(?:an?\s+|the\s+)?$", re.IGNORECASE)
_EDGE_PUNCT = " \t\n\"'“”‘’«»*_`.,;:!?()[]"


def _key(text: str) -> str:
    return " ".join(text.casefold().strip(_EDGE_PUNCT).split())


def _options_of(example: Example) -> dict[str, str]:
    """Letter -> option text, from ``metadata["options"]`` or ``(A) text`` lines of the inputs."""
    meta = example.metadata.get("options") if example.metadata else None
    if isinstance(meta, Mapping):
        out = {}
        for label, text in meta.items():
            m = _LETTER_CHOICE.match(str(label).strip())
            if m:
                out[m.group(1).upper()] = str(text)
        return out
    out = {}
    for value in example.inputs.values():
        if isinstance(value, str):
            for m in _OPTION_LINE.finditer(value):
                out.setdefault(m.group(1), m.group(2))
    return out


class _Matcher:
    """Finds which choice a text states. Each choice has surface forms: its label, its option text
    and (when letters are allowed) its letter."""

    def __init__(self, choices: Sequence[str], options: Mapping[str, str], letters: bool) -> None:
        self.choices = list(dict.fromkeys(choices))
        self.letter_of: dict[str, str] = {}
        self.texts: dict[str, list[str]] = {c: [c] for c in self.choices}
        option_by_key = {_key(t): letter for letter, t in options.items()}
        for c in self.choices:
            m = _LETTER_CHOICE.match(c.strip())
            letter = m.group(1).upper() if m else option_by_key.get(_key(c))
            if letter is not None and letters:
                self.letter_of[c] = letter
            if letter is not None and letter in options and _key(options[letter]) != _key(c):
                self.texts[c].append(options[letter])
        if letters:
            # A bare letter label ("A") as a text form would match the article "a"; letters are matched by letter rules.
            for c in self.letter_of:
                self.texts[c] = [t for t in self.texts[c] if not _LETTER_CHOICE.match(t.strip())]
        self.by_key: dict[str, str] = {}
        for c in self.choices:
            for t in self.texts[c]:
                self.by_key.setdefault(_key(t), c)
            if c in self.letter_of:
                self.by_key.setdefault(self.letter_of[c].casefold(), c)
        self.choice_of_letter = {v: c for c, v in self.letter_of.items()}
        forms = sorted(((t, c) for c in self.choices for t in self.texts[c] if _key(t)), key=lambda tc: -len(tc[0]))
        self.patterns = [(re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, t.split())) + r"(?!\w)", re.IGNORECASE), c) for t, c in forms]
        self.letter_pattern = (
            re.compile(
                r"\(\s*([A-Za-z])\s*\)|\b(?:option|choice)\s+\(?([A-Za-z])\b\)?",
                re.IGNORECASE,
            )
            if self.letter_of
            else None
        )
        # "(b) ...", "B) ...", "B. ...", "B: ...", "B - ...", "B": a letter leading the answer.
        self.leading_letter = (
            re.compile(r"^\s*(?:\(\s*([A-Za-z])\s*\)|([A-Z])(?:\)|[.:](?:\s|$)|\s+-|\s*$))") if self.letter_of else None
        )

    def whole(self, segment: str) -> str | None:
        return self.by_key.get(_key(_unwrap(segment)))

    def mentions(self, segment: str) -> list[tuple[int, int, str]]:
        spans: list[tuple[int, int, str]] = []
        for pattern, c in self.patterns:
            for m in pattern.finditer(segment):
                spans.append((m.start(), m.end(), c))
        if self.leading_letter is not None:
            m = self.leading_letter.match(segment)
            c = self.choice_of_letter.get((m.group(1) or m.group(2)).upper()) if m else None
            if c is not None:
                start = m.start(1) if m.group(1) else m.start(2)
                # The span is the letter alone, so that "B. The falcon..." ends its first sentence at "B.".
                spans.append((start, start + 1, c))
        if self.letter_pattern is not None:
            for m in self.letter_pattern.finditer(segment):
                letter = (m.group(1) or m.group(2)).upper()
                c = self.choice_of_letter.get(letter)
                if c is not None:
                    spans.append((m.start(), m.end(), c))
        # A form inside a longer form of another choice ("left" inside "the second from the left") does not count.
        kept = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0]) for o in spans)]
        kept = [s for s in kept if not _NEGATED.search(segment[max(0, s[0] - 16) : s[0]])]
        return sorted(kept)

    def mentioned(self, segment: str) -> str | None:
        spans = self.mentions(segment)
        distinct = {c for _, _, c in spans}
        if len(distinct) == 1:
            return distinct.pop()
        if not distinct:
            return None
        end = _SENTENCE_END.search(segment, spans[0][1])
        first_sentence = {c for s, _, c in spans if end is None or s < end.start()}
        # The first sentence decides ("positive. The plot is negative ..."); a hedge ("A or B") stays None.
        return first_sentence.pop() if len(first_sentence) == 1 else None

    def match(self, text: str) -> str | None:
        cleaned = _clean(text)
        if not cleaned:
            return None
        announced = _after_marker(cleaned)
        first_line = _lines(cleaned)[0]
        if announced is not None:
            announced = _lines(announced)[0]
            found = self.whole(announced) or self.mentioned(announced)
            if found is not None:
                return found
        return self.whole(first_line) or self.mentioned(cleaned)


def parse_choice(text: str, choices: Sequence[str], *, options: Mapping[str, str] | None = None, letters: bool = True) -> str | None:
    """Which of ``choices`` ``text`` states (returned as spelled in ``choices``), or None.

    ``options`` maps letters to option texts (``{"A": "True"}``), so that "(A)" or "True" both
    select the choice "(A)" (or "True"). ``letters=False`` ignores letters (for label sets).
    """
    if not choices:
        raise ConfigError("parse_choice needs at least one choice.", fix="Pass the example's choices (or the task's label set).")
    return _Matcher(choices, options or {}, letters).match(text)


def _task_labels(task: "Task") -> tuple[str, ...]:
    labels = task.metadata.get("labels")
    if labels:
        return tuple(str(x) for x in labels)
    outputs = dict.fromkeys(e.output for e in [*task.train, *task.val, *task.test] if e.output is not None)
    if len(outputs) > _MAX_DERIVED_LABELS:
        return ()
    return tuple(outputs)  # type: ignore[arg-type]


class _ChoiceParser:
    def __init__(self, name: str, letters: bool, fallback: tuple[str, ...]) -> None:
        self.__name__ = name
        self.letters = letters
        self.fallback = fallback
        self._cache: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], _Matcher] = {}

    def __call__(self, text: str, example: Example) -> str | None:
        choices = tuple(example.choices) or self.fallback
        if not choices:
            raise ConfigError(
                f"Parser {self.__name__!r} needs a label set, but example {example.id!r} has no choices.",
                fix="Give examples 'choices', set task.metadata['labels'], or use the 'auto' parser.",
            )
        options = _options_of(example) if self.letters else {}
        key = (choices, tuple(sorted(options.items())))
        matcher = self._cache.get(key)
        if matcher is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            matcher = self._cache[key] = _Matcher(choices, options, self.letters)
        return matcher.match(text)

    def __repr__(self) -> str:
        return f"<parser {self.__name__}>"


def _regex_parser(pattern: str) -> Parser:
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ConfigError(f"Parser regex {pattern!r} does not compile: {exc}.", fix="Fix the regular expression after 'regex:'.") from None

    def parse(text: str, example: Example) -> str | None:
        m = compiled.search(text)
        if m is None:
            return None
        value = m.group(1) if compiled.groups else m.group(0)
        return None if value is None else _none_if_empty(value.strip())

    parse.__name__ = f"regex:{pattern}"
    return parse


_SIMPLE: dict[str, Parser] = {"raw": _raw, "first_line": _first_line, "auto": _auto, "number": _number}


def get_parser(spec: "str | Parser", *, task: "Task | None" = None) -> Parser:
    """The parser named ``spec`` (see the module doc), or ``spec`` itself when it is a callable.

    ``task`` gives ``label``/``choice`` their fallback label set (``task.metadata["labels"]``, else
    the task's distinct outputs); without it they use ``example.choices`` only.
    Raises :class:`~promptopt.errors.UnknownNameError` for an unknown name.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"A parser is a name or a callable, got {type(spec).__name__}.", fix=f"Use one of {list(PARSER_NAMES)}.")
    name = spec.strip()
    if name.startswith("regex:"):
        return _regex_parser(name[len("regex:") :])
    if name in _SIMPLE:
        return _SIMPLE[name]
    if name in ("choice", "label"):
        fallback = _task_labels(task) if task is not None else ()
        if task is not None and not fallback:
            lacking = [e.id for e in [*task.train, *task.val, *task.test] if not e.choices]
            if lacking:
                raise ConfigError(
                    f"Parser {name!r} needs a label set, but task {task.name!r} has no metadata 'labels', more than "
                    f"{_MAX_DERIVED_LABELS} distinct outputs, and example(s) {lacking[:3]} have no choices.",
                    fix="Set task.metadata['labels'] (e.g. ['positive', 'negative']), give examples choices, or use the 'auto' parser.",
                )
        return _ChoiceParser(name, letters=(name == "choice"), fallback=fallback)
    raise UnknownNameError(
        f"Unknown parser {spec!r}.",
        fix=f"Use one of {', '.join(PARSER_NAMES)}, or a callable (text, example) -> str | None.",
    )
