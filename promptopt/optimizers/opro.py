"""OPRO: Optimization by PROmpting (Yang et al. 2023, "Large Language Models as Optimizers").

Each step the proposer reads one meta-prompt (the paper's Figure 3 / reference implementation):

* the **solution-score pairs**: past instructions with their scores, the ``max_num_instructions``
  best (20) listed in **ascending** order of score, so the best come last, next to the request;
  scores are bucketised to integers 0-100 (``num_score_buckets=100``, as the paper's runs);
  instructions below ``score_threshold`` are left out;
* a few **task exemplars** (``n_exemplars``, 3, drawn anew each step from the train split) showing
  where the instruction goes: ``<INS>`` above the input, since promptopt puts the instruction
  before the input (the paper's "Q_begin" placement);
* the **meta-instruction**: "Write your new text that is different from the old ones and has a
  score as high as possible. Write the text in square brackets."

``proposals_per_step`` (8) samples are drawn at ``temperature`` 1.0 (distinct ``sample_id``s); the
text inside the first square brackets is the proposal (one without brackets is a recorded failed
proposal, never an exception). Proposals longer than 500 characters or still containing "INS" are
skipped, as in the reference code; duplicates of earlier instructions are dropped by content hash.
New instructions are scored on the validation split, which is also the score shown to the
optimizer (the paper scores on its training subset; promptopt keeps train for exemplars).
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from promptopt.errors import ConfigError
from promptopt.lm._types import LMRequest
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, register_strategy
from promptopt.optimizers.ape import _ask_proposer, _clip, _demo_dicts, _meta_prompt, _proposer_seed, _record_failed, _validate_positive
from promptopt.prompt import Candidate

__all__ = ["OPRO"]

_TEMPLATE = "opro_meta_v1.txt"
_BRACKETS_RE = re.compile(r"\[(.*?)\]", re.DOTALL)


def _bucketize(score: float, n_buckets: int | None) -> int | float:
    """The score as the optimizer sees it: ``round(score * n_buckets)`` (the paper's 0-100
    integers), or the score rounded to 3 decimals when ``n_buckets`` is None."""
    if n_buckets is None:
        return round(score, 3)
    return int(round(min(1.0, max(0.0, score)) * n_buckets))


def _extract(text: str) -> str | None:
    """The text inside the first square brackets (reference: ``extract_string_in_square_brackets``)."""
    match = _BRACKETS_RE.search(text or "")
    return match.group(1) if match else None


def _polish(text: str) -> str:
    """As the reference's ``polish_sentence``: trimmed, markdown bold removed, first letter upper-case."""
    text = " ".join(text.replace("**", "").split())
    return text[:1].upper() + text[1:] if text else text


@register_strategy
class OPRO(Strategy):
    """OPRO (see the module docstring).

    ``instructions``: initial instructions scored first (default: the task description, or the
    empty instruction). ``steps``: optimisation steps after that (paper: 200; the budget usually
    ends the run first). ``exemplar_selection``: ``"random"`` (new exemplars each step, the
    paper's default) or ``"constant"`` (the same ones every step). ``max_tokens``: the
    proposer's reply length (the reference code allows 512 decode steps).
    """

    name = "opro"

    def __init__(
        self,
        *,
        instructions: Sequence[str] = (),
        steps: int = 200,
        proposals_per_step: int = 8,
        temperature: float = 1.0,
        max_tokens: int = 512,
        max_num_instructions: int = 20,
        score_threshold: float = 0.0,
        num_score_buckets: int | None = 100,
        n_exemplars: int = 3,
        exemplar_selection: str = "random",
        instructions_before_exemplars: bool = True,
        max_chars: int = 500,
    ) -> None:
        self.instructions = instructions
        self.steps = steps
        self.proposals_per_step = proposals_per_step
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_num_instructions = max_num_instructions
        self.score_threshold = score_threshold
        self.num_score_buckets = num_score_buckets
        self.n_exemplars = n_exemplars
        self.exemplar_selection = exemplar_selection
        self.instructions_before_exemplars = instructions_before_exemplars
        self.max_chars = max_chars

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        _validate_positive(
            "opro",
            proposals_per_step=self.proposals_per_step,
            max_tokens=self.max_tokens,
            max_num_instructions=self.max_num_instructions,
            num_score_buckets=self.num_score_buckets,
            max_chars=self.max_chars,
        )
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"opro: steps={self.steps!r} must be 0 or more.", fix="Set steps to the number of optimisation steps (the budget also stops the run).")
        if not isinstance(self.n_exemplars, int) or self.n_exemplars < 0:
            raise ConfigError(f"opro: n_exemplars={self.n_exemplars!r} must be 0 or more.", fix="Set n_exemplars=3 (the paper's value) or 0.")
        if isinstance(self.instructions, str):
            raise ConfigError("opro: instructions must be a list of strings, got one string.", fix="Pass instructions=['...'].")
        if self.exemplar_selection not in ("random", "constant"):
            raise ConfigError(f"opro: unknown exemplar_selection {self.exemplar_selection!r}.", fix="Use 'random' (paper default) or 'constant'.")
        if self.temperature < 0:
            raise ConfigError("opro: temperature must be >= 0.", fix="Use temperature=1.0 (the paper's value).")
        if not (0.0 <= float(self.score_threshold) <= 1.0):
            raise ConfigError(f"opro: score_threshold={self.score_threshold!r} must be within [0, 1].", fix="Use 0.0 to show every instruction.")
        task = context.task
        if self.n_exemplars and len(task.train) < self.n_exemplars:
            raise ConfigError(
                f"opro shows {self.n_exemplars} exemplars from the train split, but task {task.name!r} has {len(task.train)} training examples.",
                fix="Give the task a train split, or lower n_exemplars (0 shows none).",
            )
        self._initial = [str(i) for i in self.instructions] or [task.description or ""]
        self._t = 0  # next OPRO step (0 = score the initial instructions); rebuilt by replay

    # --- the meta-prompt -----------------------------------------------------------------
    def _scored_instructions(self, history: History) -> list[tuple[Candidate, float]]:
        """(candidate, validation score) pairs the meta-prompt shows, ascending by score."""
        rows = []
        for order, rec in enumerate(history.candidates()):
            if history.n_scored(rec.hash) == 0:
                continue
            score = history.score(rec.hash)
            if math.isnan(score):
                continue
            rows.append((score, order, rec.candidate))
        rows.sort(key=lambda r: (r[0], r[1]))
        rows = rows[-self.max_num_instructions :]
        return [(candidate, score) for score, _, candidate in rows if score >= self.score_threshold]

    def _build_meta_prompt(self, history: History, step: int) -> tuple[str, list[str], list[str]]:
        """The meta-prompt of ``step``, the ids of the exemplars it shows and the hashes of the
        instructions it lists (best first: the lineage of what it proposes)."""
        task = self.context.task
        exemplars = []
        if self.n_exemplars:
            rng = self.context.rng(step if self.exemplar_selection == "random" else 0, "opro:exemplars")
            # Shown in the order of the split, like the reference's sorted indices.
            picked = sorted(rng.sample(range(len(task.train)), self.n_exemplars))
            exemplars = [task.train[i] for i in picked]
        shown = self._scored_instructions(history)
        text = _meta_prompt(
            _TEMPLATE,
            instructions=[{"text": c.instruction, "score": _bucketize(s, self.num_score_buckets)} for c, s in shown],
            exemplars=_demo_dicts(task, exemplars),
            instructions_before_exemplars=self.instructions_before_exemplars,
        )
        return text, [ex.id for ex in exemplars], [c.hash for c, _ in reversed(shown)]

    # --- ask -----------------------------------------------------------------------------
    def ask(self, history: History) -> list[Trial]:
        if self._t == 0:
            self._t = 1
            trials, seen = [], set()
            for text in self._initial:
                candidate = Candidate(instruction=text)
                if candidate.hash not in seen and not history.has(candidate):
                    seen.add(candidate.hash)
                    trials.append(Trial(candidate, metadata={"kind": "init", "t": 0}))
            if trials:
                return trials
        while self._t <= self.steps:
            t = self._t
            self._t += 1
            trials = self._propose(history, t)
            if trials:
                return trials
        return []

    def _propose(self, history: History, t: int) -> list[Trial]:
        step = history.step
        text, exemplar_ids, shown = self._build_meta_prompt(history, t)
        history.record_event("meta_prompt", {"strategy": "opro", "t": t, "text": text, "exemplar_ids": exemplar_ids})
        seed = _proposer_seed(self.context, step, f"opro:{t}")
        requests = [
            LMRequest.chat([{"role": "user", "content": text}], temperature=self.temperature, max_tokens=self.max_tokens, seed=seed, sample_id=i)
            for i in range(self.proposals_per_step)
        ]
        trials: list[Trial] = []
        seen: set[str] = set()
        duplicates = 0
        for i, response in enumerate(_ask_proposer(self.context.proposer_lm, requests)):
            if not response.ok:
                _record_failed(history, "", f"proposer call failed: {response.error}", strategy="opro", t=t)
                continue
            inside = _extract(response.text)
            if inside is None:
                _record_failed(history, response.text, "no text in square brackets", strategy="opro", t=t)
                continue
            instruction = _polish(inside)
            reason = None
            if not instruction:
                reason = "empty text in square brackets"
            elif len(instruction) > self.max_chars:
                reason = f"longer than {self.max_chars} characters"
            elif "INS" in instruction:
                reason = "contains the placeholder 'INS'"
            if reason:
                _record_failed(history, response.text, reason, strategy="opro", t=t)
                continue
            candidate = Candidate(instruction=instruction)
            if candidate.hash in seen or history.has(candidate):
                duplicates += 1
                continue
            seen.add(candidate.hash)
            metadata = {"kind": "proposal", "t": t, "sample": i, "template": _TEMPLATE, "raw": _clip(response.text, 1000)}
            trials.append(Trial(candidate, parents=tuple(shown), metadata=metadata))
        history.record_event("proposals", {"strategy": "opro", "t": t, "requested": len(requests), "new": len(trials), "duplicates": duplicates})
        return trials
