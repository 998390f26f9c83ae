"""LLM judges: a pointwise rubric judge and a pairwise A/B judge.

Both send every prompt of a call in one LM batch (votes and both positions of one item back to
back, so backends that reuse a shared prompt prefix gain), keep their prompts as versioned text
templates in ``judge_prompts/`` (rendered in a Jinja2 sandbox with ``StrictUndefined``), and read
the judge's free text with tolerant parsers, because small models rarely keep the format.

Failures are data: a vote whose LM call failed is recorded with its error; a vote whose text
could not be read is recorded as unparsed with the raw text. Neither is ever turned into a
score of 0 or a silent tie.

The judge LM is just the ``lm`` argument, separate from whatever model produced the outputs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Literal, Mapping, Sequence

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from promptopt.errors import ConfigError, LMError, TemplateError, UnknownNameError
from promptopt.lm._types import LM, LMRequest, LMResponse

__all__ = [
    "RubricJudge",
    "JudgeResult",
    "PairwiseJudge",
    "PairwiseResult",
    "PairwiseVote",
    "DEFAULT_PAIRWISE_CRITERIA",
    "judge_prompt_names",
    "load_judge_prompt",
    "parse_score",
    "parse_verdict",
]

Verdict = Literal["A", "B", "tie"]

DEFAULT_PAIRWISE_CRITERIA = (
    "Which output better does what the input asks for: it is correct, complete, follows every "
    "instruction and any requested format, and is clear and concise."
)

_PROMPT_PACKAGE = "promptopt.evaluators"
_PROMPT_DIR = "judge_prompts"
_RATIONALE_CHARS = 1000

_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
)


# --------------------------------------------------------------------------------------------
# Prompt templates
# --------------------------------------------------------------------------------------------


def _prompt_files() -> dict[str, Any]:
    folder = resources.files(_PROMPT_PACKAGE).joinpath(_PROMPT_DIR)
    return {p.name[: -len(".txt")]: p for p in folder.iterdir() if p.name.endswith(".txt")}


def judge_prompt_names() -> list[str]:
    """Names of the bundled judge prompts (file name without ``.txt``, version included)."""
    return sorted(_prompt_files())


def load_judge_prompt(name: str) -> str:
    """The text of a bundled judge prompt template, e.g. ``load_judge_prompt("pairwise_v1")``."""
    files = _prompt_files()
    if name not in files:
        raise UnknownNameError(
            f"No judge prompt named {name!r}.", fix=f"Use one of {sorted(files)}, or pass your own template text."
        )
    return files[name].read_text(encoding="utf-8")


class _Template:
    """A judge prompt: bundled (by name) or custom text, compiled once in the sandbox."""

    def __init__(self, template: str, kind: str, probe: Mapping[str, Any]) -> None:
        if "{{" in template or "{%" in template:
            text = template
            self.name = "custom-" + hashlib.sha256(template.encode("utf-8")).hexdigest()[:12]
        else:
            text = load_judge_prompt(template)
            self.name = template
        self.text = text
        try:
            self._compiled = _ENV.from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"The {kind} judge template {self.name!r} does not parse: {exc.message} (line {exc.lineno}).",
                fix="Fix the Jinja2 syntax of the template.",
            ) from None
        # Render once with placeholder values so that a template using an unknown variable fails
        # now, at construction, not in the middle of a run.
        self.render(probe)

    def render(self, variables: Mapping[str, Any]) -> str:
        try:
            return self._compiled.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                f"The judge template {self.name!r} uses an undefined variable: {exc.message}.",
                fix=f"Use only the variables {sorted(variables)}.",
            ) from None
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(
                f"The judge template {self.name!r} tried something unsafe: {exc}.",
                fix="Templates may only format the given variables; remove attribute access to internals.",
            ) from None


def _text(value: Any) -> str:
    """An input given as a mapping of fields is written one ``field: value`` per line."""
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------

_NUM = r"([-+]?\d+(?:\.\d+)?)"
_JSON_OBJ = re.compile(r"\{[^{}]*\}")
_SCORE_BRACKETS = re.compile(r"\[\[\s*" + _NUM + r"\s*\]\]")
_SCORE_LABELLED = re.compile(
    r"\b(?:score|rating|grade|rate)d?\b(?:\s*\([^)]*\))?[\s*_]*(?:[:=]|\bis\b|\bof\b|\bwould be\b|\bwas\b)?[\s*_:=]*"
    + _NUM
    + r"(?:\s*(?:/|out of)\s*"
    + _NUM
    + r")?",
    re.IGNORECASE,
)
_SCORE_FRACTION = re.compile(_NUM + r"\s*(?:/|out of)\s*" + _NUM, re.IGNORECASE)
_SCORE_PHRASE = re.compile(
    r"\b(?:give|gave|giving|rate|rated|rating|award|awarded|assign|assigned|score|scored)\s+"
    r"(?:it|this|that|the (?:output|response|answer)|this (?:output|response|answer))?\s*"
    r"(?:an?\s+|as\s+(?:an?\s+)?)?(?:score of\s+|rating of\s+)?" + _NUM,
    re.IGNORECASE,
)
_BARE_NUMBER = re.compile(r"^[\s*_`\"'(\[]*" + _NUM + r"[\s*_`\"').\]]*$")


def _in_scale(value: float, scale: tuple[int, int]) -> bool:
    return scale[0] <= value <= scale[1]


def parse_score(text: str, scale: tuple[int, int] = (1, 5)) -> float | None:
    """Read a score on ``scale`` from a judge's free text; None when no reading is safe.

    Tried in order, the last match of each form winning (the final answer comes last): a JSON
    object with ``score``/``rating``; ``[[4]]``; a labelled score (``Score: 4``, ``rating of
    4/5``); a fraction over the scale's top (``4/5``, ``4 out of 5``); a phrase (``I'd give it a
    4``, ``rated 4``); a reply that is only a number. A value off the scale is not a reading.
    """
    lo, hi = scale
    for obj in reversed(_JSON_OBJ.findall(text)):
        try:
            data = json.loads(obj)
        except ValueError:
            continue
        if isinstance(data, dict):
            for key, value in data.items():
                if str(key).lower() in ("score", "rating", "grade"):
                    try:
                        v = float(value)
                    except (TypeError, ValueError):
                        continue
                    if _in_scale(v, scale):
                        return v
    for m in reversed(list(_SCORE_BRACKETS.finditer(text))):
        v = float(m.group(1))
        if _in_scale(v, scale):
            return v
    for m in reversed(list(_SCORE_LABELLED.finditer(text))):
        v = float(m.group(1))
        denom = m.group(2)
        if denom is not None and float(denom) != hi:
            continue
        if _in_scale(v, scale):
            return v
    for m in reversed(list(_SCORE_FRACTION.finditer(text))):
        v, denom = float(m.group(1)), float(m.group(2))
        if denom == hi and _in_scale(v, scale):
            return v
    for m in reversed(list(_SCORE_PHRASE.finditer(text))):
        v = float(m.group(1))
        if _in_scale(v, scale):
            return v
    m = _BARE_NUMBER.match(text)
    if m and _in_scale(float(m.group(1)), scale):
        return float(m.group(1))
    return None


def _rationale(text: str) -> str:
    m = re.search(r"rationale\s*[:\-]\s*(.*?)(?:\n\s*\**\s*(?:score|rating)\b|$)", text, re.IGNORECASE | re.DOTALL)
    body = m.group(1) if m else re.split(r"\n\s*\**\s*(?:score|rating)\b", text, maxsplit=1, flags=re.IGNORECASE)[0]
    return body.strip()[:_RATIONALE_CHARS]


_VERDICT_BRACKETS = re.compile(r"\[\[\s*(A|B|TIE|C|EQUAL|DRAW)\s*\]\]", re.IGNORECASE)
_VERDICT_TAG = re.compile(r"<choose>\s*(A|B|tie)\s*</choose>", re.IGNORECASE)
_VERDICT_LABELLED = re.compile(
    r"\b(?:verdict|winner|decision|choice|final answer|answer|better (?:output|response))\b[\s*_]*(?:[:=\-]|\bis\b)[\s*_:=]*"
    r"(?:(?:output|response|answer|option)\s*)?\(?\s*"
    r"((?-i:A|B)|tie|tied|equal|draw|both|neither)\b",
    re.IGNORECASE,
)
_LABEL = r"(?:output|response|answer|assistant|option|candidate)"
_BETTER = (
    r"(?:is|was|seems|appears)?\s*"
    r"(?:(?:clearly|slightly|much|far|definitely|indeed|somewhat|significantly|marginally|overall|the|a bit)\s+){0,2}"
    r"(?:better|superior|preferable|preferred|stronger|best|winner|more (?:accurate|correct|helpful|complete|relevant|concise|clear))"
)
_PREFERENCES = [
    # "Output (B) is better", "response a wins", "Output B, cat, is better"
    re.compile(
        _LABEL + r"\s*\(?\s*([AB])\s*\)?\s*(?:,[^,.\n]{1,40},\s*)?(?:" + _BETTER + r"|wins)\b", re.IGNORECASE
    ),
    # "B is better", "A wins" (a bare letter must be a capital: "a" is an article)
    re.compile(r"(?<![\w'])(?-i:([AB]))\s+(?:" + _BETTER + r"|wins)\b", re.IGNORECASE),
    # "I prefer output B", "I'd choose A"
    re.compile(
        r"\b(?:prefer|preferred|prefers|choose|chose|pick|picked|select|selected|go with)\s+"
        r"(?:" + _LABEL + r"\s*\(?\s*([AB])\b|\(?\s*(?-i:([AB]))\b)",
        re.IGNORECASE,
    ),
]
_TIE_PHRASE = re.compile(r"\b(?:tie|tied|equal|equally|draw|both|neither)\b", re.IGNORECASE)
_BARE_VERDICT = re.compile(
    r"^[\s*_`\"'(\[]*(?:" + _LABEL + r"\s*)?\(?\s*(?-i:([AB]))\s*\)?(?:[\s*_`\"'.:,)\]!]*$|[\s*]*[.:,)\n])",
    re.IGNORECASE,
)


def _norm_verdict(token: str) -> Verdict:
    t = token.strip().upper()
    if t in ("A", "B"):
        return t  # type: ignore[return-value]
    return "tie"


def parse_verdict(text: str) -> Verdict | None:
    """Read an A/B/tie verdict from a judge's free text; None when no reading is safe.

    Tried in order: ``[[A]]``/``[[B]]``/``[[TIE]]``/``[[C]]`` (last one wins);
    ``<choose>A</choose>`` (SPO's format); a labelled verdict (``Verdict: B``, ``Winner: tie``);
    preference phrases (``Output (B) is better``, ``A wins``, ``I prefer B``), refused as
    ambiguous when they name both outputs; tie words (``tie``, ``equal``, ``both``...); a reply
    that is only ``A``/``(B)``/``Output A``.
    """
    for pattern in (_VERDICT_BRACKETS, _VERDICT_TAG, _VERDICT_LABELLED):
        matches = pattern.findall(text)
        if matches:
            return _norm_verdict(matches[-1])
    named: set[str] = set()
    for pattern in _PREFERENCES:
        for m in pattern.finditer(text):
            named.update(g.upper() for g in m.groups() if g)
    if len(named) == 1:
        return named.pop()  # type: ignore[return-value]
    if len(named) > 1:
        return None
    if _TIE_PHRASE.search(text):
        return "tie"
    m = _BARE_VERDICT.match(text)
    if m:
        return m.group(1).upper()  # type: ignore[return-value]
    return None


# --------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------


def _check_common(votes: int, temperature: float, max_tokens: int) -> None:
    if int(votes) < 1:
        raise ConfigError(f"votes={votes} must be at least 1.", fix="Use votes=1, or more with temperature > 0.")
    if temperature < 0:
        raise ConfigError(f"temperature={temperature} is negative.", fix="Use temperature >= 0.")
    if int(votes) > 1 and temperature == 0:
        raise ConfigError(
            f"votes={votes} with temperature=0 asks a deterministic judge the same question {votes} times.",
            fix="Set temperature > 0 (e.g. 0.7) so that votes are fresh samples, or use votes=1.",
        )
    if int(max_tokens) < 1:
        raise ConfigError(f"max_tokens={max_tokens} must be positive.", fix="Give the judge room for a rationale, e.g. 256.")


def _complete(lm: LM, requests: list[LMRequest]) -> list[LMResponse]:
    responses = list(lm.complete(requests)) if requests else []
    _check_count(lm, requests, responses)
    return responses


async def _acomplete(lm: LM, requests: list[LMRequest]) -> list[LMResponse]:
    responses = list(await lm.acomplete(requests)) if requests else []
    _check_count(lm, requests, responses)
    return responses


def _check_count(lm: LM, requests: list[LMRequest], responses: list[LMResponse]) -> None:
    if len(responses) != len(requests):
        raise LMError(
            f"The judge LM {lm.identity!r} answered {len(responses)} of {len(requests)} requests.",
            fix="The LM backend must return exactly one response per request; report this backend bug.",
        )


def _request(prompt: str, *, temperature: float, max_tokens: int, seed: int | None, sample: int) -> LMRequest:
    # A distinct sample_id per vote makes the cache draw a fresh sample for each vote; a distinct
    # seed does the same for backends that honour seeds.
    return LMRequest.chat(
        [{"role": "user", "content": prompt}],
        temperature=temperature,
        max_tokens=max_tokens,
        seed=None if seed is None else seed + sample,
        sample_id=sample,
    )


def _unpack(item: Any, names: Sequence[str], required: int, what: str) -> list[Any]:
    if isinstance(item, Mapping):
        missing = [n for n in names[:required] if n not in item]
        if missing:
            raise ConfigError(f"A {what} item lacks {missing}.", fix=f"Give each item the keys {list(names)}.")
        return [item.get(n) for n in names]
    values = list(item)
    if not required <= len(values) <= len(names):
        raise ConfigError(
            f"A {what} item has {len(values)} fields.", fix=f"Give each item as a tuple {tuple(names)} (the last optional)."
        )
    return values + [None] * (len(names) - len(values))


# --------------------------------------------------------------------------------------------
# Pointwise rubric judge
# --------------------------------------------------------------------------------------------


@dataclass
class JudgeResult:
    """A pointwise judgement.

    ``score``: the mean of the votes that could be read, normalised to [0, 1] (None when no
    vote could be read). ``raw_score``: the same on the rubric's scale. Per vote:
    ``vote_scores`` (None = unparsed or failed), ``raw`` (the judge's text; '' for a failed
    call), ``errors`` (the LM error, None when the call worked).
    """

    score: float | None
    raw_score: float | None
    vote_scores: list[float | None]
    rationale: str
    raw: list[str]
    errors: list[str | None] = field(default_factory=list)

    @property
    def parsed(self) -> bool:
        return self.score is not None

    @property
    def n_unparsed(self) -> int:
        return sum(1 for s, e in zip(self.vote_scores, self.errors) if s is None and e is None)

    @property
    def n_errors(self) -> int:
        return sum(1 for e in self.errors if e is not None)

    @property
    def failed(self) -> bool:
        """Every vote's LM call failed: there is nothing to judge by."""
        return bool(self.errors) and all(e is not None for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RubricJudge:
    """Pointwise LLM judge: scores one output for one input on a rubric (G-Eval / MT-Bench
    single-answer grading style), optionally against a reference answer.

    ``scale``: the integer rating scale; scores are normalised to [0, 1]. ``votes``: samples per
    item (needs ``temperature > 0``), averaged over the votes that could be read.
    ``template``: a bundled prompt name (see :func:`judge_prompt_names`) or your own Jinja2
    template text using ``rubric``, ``input``, ``output``, ``reference``, ``scale_min``,
    ``scale_max``.
    """

    def __init__(
        self,
        lm: LM,
        rubric: str,
        *,
        scale: tuple[int, int] = (1, 5),
        votes: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
        template: str = "pointwise_v1",
    ) -> None:
        if not str(rubric).strip():
            raise ConfigError("The rubric is empty.", fix="Describe what a good output is and what each score means.")
        lo, hi = int(scale[0]), int(scale[1])
        if not hi > lo:
            raise ConfigError(f"scale={scale} is empty.", fix="Pass (min, max) with max > min, e.g. (1, 5).")
        _check_common(votes, temperature, max_tokens)
        self.lm = lm
        self.rubric = str(rubric)
        self.scale = (lo, hi)
        self.votes = int(votes)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self._template = _Template(
            template,
            "pointwise",
            {"rubric": "r", "input": "i", "output": "o", "reference": None, "scale_min": lo, "scale_max": hi},
        )

    @property
    def template_name(self) -> str:
        return self._template.name

    @property
    def config(self) -> dict[str, Any]:
        """JSON-safe description, to store with a run."""
        return {
            "kind": "rubric",
            "lm": self.lm.identity,
            "rubric": self.rubric,
            "scale": list(self.scale),
            "votes": self.votes,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "template": self.template_name,
        }

    def render(self, input: Any, output: str, reference: str | None = None) -> str:
        """The prompt the judge LM sees for one item."""
        return self._template.render(
            {
                "rubric": self.rubric,
                "input": _text(input),
                "output": str(output),
                "reference": None if reference is None else str(reference),
                "scale_min": self.scale[0],
                "scale_max": self.scale[1],
            }
        )

    def _requests(self, items: Sequence[Any]) -> list[LMRequest]:
        requests = []
        for item in items:
            inp, out, ref = _unpack(item, ("input", "output", "reference"), 2, "judge")
            prompt = self.render(inp, out, ref)
            for k in range(self.votes):
                requests.append(_request(prompt, temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed, sample=k))
        return requests

    def _results(self, n_items: int, responses: list[LMResponse]) -> list[JudgeResult]:
        lo, hi = self.scale
        out = []
        for i in range(n_items):
            chunk = responses[i * self.votes : (i + 1) * self.votes]
            scores: list[float | None] = []
            raws: list[str] = []
            errors: list[str | None] = []
            rationale = ""
            for resp in chunk:
                if not resp.ok:
                    scores.append(None)
                    raws.append("")
                    errors.append(f"{resp.error_type}: {resp.error}")
                    continue
                text = resp.text
                s = parse_score(text, self.scale)
                scores.append(s)
                raws.append(text)
                errors.append(None)
                if s is not None and not rationale:
                    rationale = _rationale(text)
            read = [s for s in scores if s is not None]
            raw_score = sum(read) / len(read) if read else None
            score = (raw_score - lo) / (hi - lo) if raw_score is not None else None
            out.append(JudgeResult(score, raw_score, scores, rationale, raws, errors))
        return out

    def judge(self, items: Sequence[Any]) -> list[JudgeResult]:
        """Judge many items in one LM batch. Each item is ``(input, output)``,
        ``(input, output, reference)`` or a mapping with those keys."""
        items = list(items)
        return self._results(len(items), _complete(self.lm, self._requests(items)))

    async def ajudge(self, items: Sequence[Any]) -> list[JudgeResult]:
        items = list(items)
        return self._results(len(items), await _acomplete(self.lm, self._requests(items)))

    def score(self, input: Any, output: str, reference: str | None = None) -> JudgeResult:
        """Judge one item."""
        return self.judge([(input, output, reference)])[0]

    def __repr__(self) -> str:
        return f"RubricJudge({self.lm.identity!r}, scale={self.scale}, votes={self.votes}, template={self.template_name!r})"


# --------------------------------------------------------------------------------------------
# Pairwise A/B judge
# --------------------------------------------------------------------------------------------


@dataclass
class PairwiseVote:
    """One judge call. ``order`` is how the outputs were shown: ``"AB"`` (A first) or ``"BA"``
    (swapped). ``verdict`` is in the caller's labels (already un-swapped); ``shown_verdict`` is
    what the judge said about the positions it saw. None = unparsed or failed."""

    order: Literal["AB", "BA"]
    sample: int
    verdict: Verdict | None
    shown_verdict: Verdict | None
    raw: str
    error: str | None = None


@dataclass
class PairwiseResult:
    """An A/B comparison over all votes (both positions when swapped).

    ``winner`` is the output with more votes, ``"tie"`` when the counts are equal (a judge that
    always names the first position ends here once swapped), and None when no vote could be
    read at all (every call unparsed or failed): the comparison is then undecided, not a tie.
    ``raw`` holds every vote's text ('' for failed calls), in the order of ``details``.
    """

    winner: Verdict | None
    votes_a: int
    votes_b: int
    ties: int
    unparsed: int
    raw: list[str]
    errors: int = 0
    details: list[PairwiseVote] = field(default_factory=list)

    @property
    def n_valid(self) -> int:
        return self.votes_a + self.votes_b + self.ties

    @property
    def decided(self) -> bool:
        return self.winner is not None

    @property
    def preference_a(self) -> float | None:
        """Share of valid votes for A, ties counting half (None with no valid vote)."""
        return (self.votes_a + 0.5 * self.ties) / self.n_valid if self.n_valid else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PairwiseJudge:
    """Pairwise LLM judge: which of two outputs for the same input is better, no ground truth
    needed (PandaLM, Wang et al. 2023; SPO, Xiang et al. 2025).

    With ``swap=True`` each comparison is asked with the outputs in both positions, which
    cancels a judge's position bias: a judge that always picks the first output yields a tie.
    ``votes`` samples per position (needs ``temperature > 0``); ``allow_ties`` offers the judge a
    TIE verdict (a tie it gives anyway is still counted as a tie). ``template``: a bundled
    prompt name or your own Jinja2 text using ``criteria``, ``input``, ``output_a``,
    ``output_b``, ``reference``, ``allow_ties``.
    """

    def __init__(
        self,
        lm: LM,
        *,
        criteria: str = DEFAULT_PAIRWISE_CRITERIA,
        votes: int = 1,
        swap: bool = True,
        allow_ties: bool = True,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int | None = None,
        template: str = "pairwise_v1",
    ) -> None:
        if not str(criteria).strip():
            raise ConfigError("The pairwise criteria are empty.", fix="Say what makes one output better than the other, or keep the default.")
        _check_common(votes, temperature, max_tokens)
        self.lm = lm
        self.criteria = str(criteria)
        self.votes = int(votes)
        self.swap = bool(swap)
        self.allow_ties = bool(allow_ties)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self._template = _Template(
            template,
            "pairwise",
            {"criteria": "c", "input": "i", "output_a": "a", "output_b": "b", "reference": None, "allow_ties": True},
        )

    @property
    def template_name(self) -> str:
        return self._template.name

    @property
    def config(self) -> dict[str, Any]:
        """JSON-safe description, to store with a run."""
        return {
            "kind": "pairwise",
            "lm": self.lm.identity,
            "criteria": self.criteria,
            "votes": self.votes,
            "swap": self.swap,
            "allow_ties": self.allow_ties,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "template": self.template_name,
        }

    def render(self, input: Any, output_a: str, output_b: str, reference: str | None = None) -> str:
        """The prompt the judge LM sees with ``output_a`` shown first."""
        return self._template.render(
            {
                "criteria": self.criteria,
                "input": _text(input),
                "output_a": str(output_a),
                "output_b": str(output_b),
                "reference": None if reference is None else str(reference),
                "allow_ties": self.allow_ties,
            }
        )

    @property
    def _orders(self) -> tuple[Literal["AB", "BA"], ...]:
        return ("AB", "BA") if self.swap else ("AB",)

    def _requests(self, items: Sequence[Any]) -> list[LMRequest]:
        requests = []
        for item in items:
            inp, a, b, ref = _unpack(item, ("input", "output_a", "output_b", "reference"), 3, "pairwise")
            for order in self._orders:
                prompt = self.render(inp, a, b, ref) if order == "AB" else self.render(inp, b, a, ref)
                for k in range(self.votes):
                    requests.append(_request(prompt, temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed, sample=k))
        return requests

    def _results(self, n_items: int, responses: list[LMResponse]) -> list[PairwiseResult]:
        per_item = len(self._orders) * self.votes
        out = []
        for i in range(n_items):
            chunk = responses[i * per_item : (i + 1) * per_item]
            details: list[PairwiseVote] = []
            for j, resp in enumerate(chunk):
                order = self._orders[j // self.votes]
                sample = j % self.votes
                if not resp.ok:
                    details.append(PairwiseVote(order, sample, None, None, "", f"{resp.error_type}: {resp.error}"))
                    continue
                shown = parse_verdict(resp.text)
                verdict: Verdict | None = shown
                if order == "BA" and shown in ("A", "B"):
                    verdict = "B" if shown == "A" else "A"
                details.append(PairwiseVote(order, sample, verdict, shown, resp.text))
            votes_a = sum(1 for d in details if d.verdict == "A")
            votes_b = sum(1 for d in details if d.verdict == "B")
            ties = sum(1 for d in details if d.verdict == "tie")
            errors = sum(1 for d in details if d.error is not None)
            unparsed = sum(1 for d in details if d.error is None and d.verdict is None)
            winner: Verdict | None
            if votes_a + votes_b + ties == 0:
                winner = None
            elif votes_a > votes_b:
                winner = "A"
            elif votes_b > votes_a:
                winner = "B"
            else:
                winner = "tie"
            out.append(PairwiseResult(winner, votes_a, votes_b, ties, unparsed, [d.raw for d in details], errors, details))
        return out

    def compare_many(self, items: Sequence[Any]) -> list[PairwiseResult]:
        """Compare many pairs in one LM batch. Each item is ``(input, output_a, output_b)``,
        ``(input, output_a, output_b, reference)`` or a mapping with those keys."""
        items = list(items)
        return self._results(len(items), _complete(self.lm, self._requests(items)))

    async def acompare_many(self, items: Sequence[Any]) -> list[PairwiseResult]:
        items = list(items)
        return self._results(len(items), await _acomplete(self.lm, self._requests(items)))

    def compare(self, input: Any, output_a: str, output_b: str, reference: str | None = None) -> PairwiseResult:
        """Compare one pair."""
        return self.compare_many([(input, output_a, output_b, reference)])[0]

    def __repr__(self) -> str:
        return f"PairwiseJudge({self.lm.identity!r}, votes={self.votes}, swap={self.swap}, template={self.template_name!r})"
