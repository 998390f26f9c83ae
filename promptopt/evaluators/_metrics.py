"""Reference metrics: ``(prediction, example) -> float`` in [0, 1], best match over ``example.accepted``.

A None prediction (nothing could be parsed) scores 0. Named metrics need a reference answer: an
example without ``accepted`` answers raises :class:`~promptopt.errors.DataError` (an unlabelled
example cannot be scored by comparison; it is never a silent 0).

``exact``
    equal after stripping surrounding whitespace.
``normalized_exact``
    equal after SQuAD normalisation (lowercase, punctuation, articles a/an/the, whitespace).
``contains``
    the normalised accepted answer appears, as whole words, in the normalised prediction.
``regex``
    some accepted entry, read as a regular expression, fully matches the stripped prediction.
``numeric``
    the numbers read from prediction and answer are close (``math.isclose`` with ``rel_tol``,
    ``abs_tol``; set them with :func:`make_metric`).
``choice``
    the prediction states the same choice as the answer (both read with the ``choice`` parser over
    ``example.choices`` and its options); without choices, or for an answer that is none of them,
    labels compare case- and bracket-insensitively (``(B)`` = ``b``).
``f1``
    SQuAD token F1.
"""

from __future__ import annotations

import inspect
import math
import re
import string
import unicodedata
from collections import Counter
from typing import Any, Callable

from promptopt.errors import ConfigError, DataError, UnknownNameError
from promptopt.parsing import get_parser, parse_number
from promptopt.task import Example

__all__ = ["Metric", "get_metric", "make_metric", "METRIC_NAMES", "normalize_answer"]

_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation (ASCII ``string.punctuation`` as SQuAD, plus
    Unicode punctuation such as curly quotes) and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCT and not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _exact(prediction: str, answer: str, example: Example) -> float:
    return float(prediction.strip() == answer.strip())


def _normalized_exact(prediction: str, answer: str, example: Example) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def _contains(prediction: str, answer: str, example: Example) -> float:
    gold = normalize_answer(answer)
    pred = normalize_answer(prediction)
    if not gold:
        # An answer that normalises away ("The.") can only be matched by an equally empty prediction.
        return float(not pred)
    return float(f" {gold} " in f" {pred} ")


def _regex(prediction: str, answer: str, example: Example) -> float:
    try:
        return float(re.fullmatch(answer, prediction.strip()) is not None)
    except re.error as exc:
        raise DataError(
            f"Accepted answer {answer!r} of example {example.id!r} is not a valid regular expression: {exc}.",
            fix="With the 'regex' metric, every accepted answer is a pattern: escape special characters.",
        ) from None


def _numeric(prediction: str, answer: str, example: Example, *, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> float:
    gold = parse_number(answer)
    if gold is None:
        raise DataError(
            f"Accepted answer {answer!r} of example {example.id!r} holds no number.",
            fix="Use the 'numeric' metric only on tasks whose answers are numbers.",
        )
    pred = parse_number(prediction)
    return float(pred is not None and math.isclose(pred, gold, rel_tol=rel_tol, abs_tol=abs_tol))


def _choice_key(text: str) -> str:
    return text.strip().strip(".:").strip().strip("()[]").strip().casefold()


_CHOICE_PARSER = get_parser("choice")


def _choice(prediction: str, answer: str, example: Example) -> float:
    if example.choices:
        # Both sides go through the choice parser, so "(B)", "B" and B's option text are one answer.
        gold = _CHOICE_PARSER(answer, example)
        if gold is not None:
            return float(_CHOICE_PARSER(prediction, example) == gold)
    return float(_choice_key(prediction) == _choice_key(answer))


def _f1(prediction: str, answer: str, example: Example) -> float:
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


_PairScore = Callable[..., float]
_NAMED: dict[str, _PairScore] = {
    "exact": _exact,
    "normalized_exact": _normalized_exact,
    "contains": _contains,
    "regex": _regex,
    "numeric": _numeric,
    "choice": _choice,
    "f1": _f1,
}
METRIC_NAMES = tuple(_NAMED)


class Metric:
    """A scoring function ``(prediction, example) -> float`` in [0, 1], with a ``name``.

    ``requires_reference`` is true for the named metrics: they compare with ``example.accepted``,
    so the evaluator checks that every example has an answer before spending any call.
    """

    __slots__ = ("name", "requires_reference", "_fn")

    def __init__(self, name: str, fn: Callable[[str, Example], float], *, requires_reference: bool) -> None:
        self.name = name
        self.requires_reference = requires_reference
        self._fn = fn

    def __call__(self, prediction: str | None, example: Example) -> float:
        if prediction is None:
            return 0.0
        if self.requires_reference and not example.accepted:
            raise DataError(
                f"Metric {self.name!r} needs a reference answer, but example {example.id!r} has none.",
                fix="Label the example (an 'output' field), or score unlabelled tasks with a judge or a callable metric.",
            )
        score = self._fn(prediction, example)
        if isinstance(score, bool):
            score = float(score)
        if not isinstance(score, (int, float)) or not 0.0 <= score <= 1.0:  # NaN fails the range test too
            raise ConfigError(
                f"Metric {self.name!r} returned {score!r} for example {example.id!r}; a metric returns a float in [0, 1].",
                fix="Make the metric return a number between 0 and 1 (1 = fully correct).",
            )
        return float(score)

    def __repr__(self) -> str:
        return f"Metric({self.name!r})"


def _best_over_accepted(score: _PairScore, params: dict[str, Any]) -> Callable[[str, Example], float]:
    def metric(prediction: str, example: Example) -> float:
        return max(score(prediction, answer, example, **params) for answer in example.accepted)

    return metric


def _unknown(name: str) -> UnknownNameError:
    return UnknownNameError(
        f"Unknown metric {name!r}.",
        fix=f"Use one of {', '.join(METRIC_NAMES)}, or a callable (prediction, example) -> float in [0, 1].",
    )


def make_metric(name: str, **params: Any) -> Metric:
    """The named metric with parameters, e.g. ``make_metric("numeric", rel_tol=0.01)``."""
    if name not in _NAMED:
        raise _unknown(name)
    score = _NAMED[name]
    accepted = [p.name for p in inspect.signature(score).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Metric {name!r} has no parameter(s) {unknown}.",
            fix=f"Its parameters are {accepted}." if accepted else f"Metric {name!r} takes no parameters.",
        )
    if name == "numeric":
        for key, value in params.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ConfigError(f"Metric 'numeric': {key}={value!r} is not a non-negative number.", fix=f"Pass {key} as a number >= 0.")
    label = name if not params else f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(params.items()))})"
    return Metric(label, _best_over_accepted(score, params), requires_reference=True)


def get_metric(spec: "str | Callable[..., float] | Metric") -> Metric:
    """The metric named ``spec``, or ``spec`` wrapped when it is a callable ``(prediction, example) -> float``.

    A callable is not called on a None prediction (that scores 0), and a result outside [0, 1]
    raises :class:`~promptopt.errors.ConfigError`. Unknown names raise :class:`~promptopt.errors.UnknownNameError`.
    """
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        return make_metric(spec.strip())
    if callable(spec):
        return Metric(getattr(spec, "__name__", type(spec).__name__), spec, requires_reference=False)
    raise ConfigError(f"A metric is a name or a callable, got {type(spec).__name__}.", fix=f"Use one of {', '.join(METRIC_NAMES)}.")
