"""APE: Automatic Prompt Engineer (Zhou et al. 2022, "Large Language Models Are Human-Level
Prompt Engineers").

1. **Proposal** (forward mode): ``n_subsamples`` random subsets of ``demos_per_subsample`` training
   pairs are each shown to the proposer in the paper's forward-generation template ("I gave a friend
   an instruction and five inputs... The instruction was <COMPLETE>"), sampled
   ``proposals_per_subsample`` times (temperature 0.9, at most 50 tokens, as in the paper's
   configs). Duplicates are dropped by content hash.
2. **Efficient score estimation**: a UCB bandit over the candidate pool, as in the reference
   implementation's ``bandits`` evaluator. Each round, the ``arms_per_round`` candidates with the
   highest ``mean + c * sqrt(ln(sum n) / n)`` (random at first, unpulled ones first after that) are
   scored on a minibatch of ``minibatch_size`` validation examples they have not seen, so good
   candidates collect more evaluations and poor ones are left after a few. ``score="execution"``
   scores by execution accuracy (the task metric, through the loop: recorded and budgeted);
   ``score="logprob"`` by the log-probability of the gold output given instruction and input,
   ``log P(A | [rho; Q])`` (white-box backends only: ``score_continuation``).
3. **Selection**: the ``top_k`` best by bandit estimate are scored on the whole validation split,
   and the run's best is chosen among them (Algorithm 1's final ``argmax`` over the data).
4. **Iterative Monte Carlo search** (``rounds`` > 0): each of the ``top_k`` is paraphrased with the
   paper's resample template ("Generate a variation of the following instruction while keeping
   the semantic meaning"), and the bandit runs again over kept candidates plus variations. The
   paper found it adds little and runs APE without it by default, hence ``rounds=0``.

Every proposal is recorded as a candidate when it is made (with the demos it was induced from, or
its parent for a variation), so the store holds the full pool and its lineage.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from promptopt.errors import ConfigError, TemplateError
from promptopt.lm._types import LM, LMRequest, LMResponse, Message
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, register_strategy
from promptopt.prompt import Candidate
from promptopt.task import Example, Task

__all__ = ["APE"]

# --- shared by the instruction optimizers (APE, PE2, OPRO) ------------------------------------

_PROMPT_DIR = "prompts"
# Meta-prompts are data the package ships, not user input, but they still render in the sandbox:
# the values poured into them (task examples, model outputs) must never be able to run anything.
_ENV = SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
)


@functools.lru_cache(maxsize=64)
def _template(name: str) -> jinja2.Template:
    try:
        source = importlib.resources.files("promptopt.optimizers").joinpath(_PROMPT_DIR, name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise TemplateError(
            f"Meta-prompt template {name!r} is missing from the promptopt package ({exc}).",
            fix="Reinstall promptopt (pip install --force-reinstall promptopt); the templates ship in promptopt/optimizers/prompts/.",
        ) from None
    return _ENV.from_string(source)


def _meta_prompt(name: str, **variables: Any) -> str:
    """Render the versioned meta-prompt template ``name`` (e.g. ``ape_forward_v1.txt``)."""
    try:
        return _template(name).render(**variables).strip()
    except jinja2.exceptions.UndefinedError as exc:  # a bug in the caller, named precisely
        raise TemplateError(f"Meta-prompt {name!r} needs a value the strategy did not give: {exc.message}.", fix="Report this as a promptopt bug.") from None


def _example_text(task: Task, inputs: Mapping[str, Any]) -> str:
    """An example's input as the task model sees it (the task's user message)."""
    from promptopt._render import render_messages

    return render_messages(Candidate(), inputs, task)[-1]["content"]


def _gold(example: Example) -> str:
    return example.output if example.output is not None else (example.accepted[0] if example.accepted else "")


_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def _number_words(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


_LABEL_RE = re.compile(
    r"^\s*(?:the\s+)?(?:new\s+|improved\s+|updated\s+|refined\s+|revised\s+|final\s+)?"
    r"(?:instruction|prompt|text|output|answer)(?:\s+(?:was|is))?\s*[:\-]\s*",
    re.IGNORECASE,
)
_WAS_RE = re.compile(r"^\s*(?:the\s+)?instruction\s+(?:was|is)\b\s*:?\s*", re.IGNORECASE)
_HERE_RE = re.compile(r"^\s*here(?:'s|\s+is)\s+(?:the|a|an|my)\s+(?:[\w-]+\s+){0,2}(?:prompt|instruction|text)\s*:\s*", re.IGNORECASE)
_FENCE_RE = re.compile(r"^```[^\n]*\n(.*?)\n?```", re.DOTALL)
_QUOTES = ('"', "'", "`", "\u201c", "\u201d", "\u2018", "\u2019")
# A proposer that keeps writing demos after the instruction: cut at the first one.
_TRAILING_DEMO_RE = re.compile(r"\n\s*(?:#+\s*)?(?:input|output|example|label|q|a)\s*\d*\s*:", re.IGNORECASE)


def _clean_instruction(text: str, *, first_line: bool = False, strip_to: bool = False) -> str:
    """The instruction inside a proposer's reply, or '' when there is none.

    Removes a code fence, leading labels ("The instruction was", "New prompt:"), wrapping quotes,
    trailing demo blocks; ``first_line`` keeps the first non-empty line only (APE's forward
    completions are one sentence; the rest is the model rambling on). ``strip_to`` drops the
    leading "to " of a completion of "The instruction was to ...".
    """
    text = (text or "").replace("\r\n", "\n").strip()
    fence = _FENCE_RE.match(text)
    if fence:
        text = fence.group(1).strip()
    # Echoed meta-prompt headings ("## New Prompt") are not part of the instruction.
    lines = text.split("\n")
    while lines and (lines[0].lstrip().startswith("#") or not lines[0].strip()):
        lines.pop(0)
    text = "\n".join(lines).strip()
    for _ in range(3):  # labels can nest: 'The new prompt: "Instruction: ..."'
        before = text
        text = _WAS_RE.sub("", text, count=1)
        text = _HERE_RE.sub("", text, count=1)
        text = _LABEL_RE.sub("", text, count=1).strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
        if text == before:
            break
    cut = _TRAILING_DEMO_RE.search("\n" + text)
    if cut:
        text = ("\n" + text)[: cut.start()].strip()
    if first_line:
        text = next((line.strip() for line in text.split("\n") if line.strip()), "")
    else:
        text = text.split("\n\n")[0].strip() if text.count("\n\n") and _looks_like_commentary(text) else text
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    if strip_to and text[:3].lower() == "to ":
        text = text[3:].strip()
    text = text.strip()
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    return text


def _looks_like_commentary(text: str) -> bool:
    tail = text.split("\n\n", 1)[1].lower()
    return tail.startswith(("this prompt", "this instruction", "note", "explanation", "the changes", "changes", "i ", "i've", "i have"))


def _proposer_seed(context: StrategyContext, step: int, salt: str) -> int:
    """A sampling seed determined by (run seed, step, salt): a replay asks exactly the same."""
    digest = hashlib.sha256(f"{context.seed}:{step}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _ask_proposer(lm: LM, requests: Sequence[LMRequest]) -> list[LMResponse]:
    """One batch to the proposer. Failed calls come back as responses with ``error`` set; only
    systemic faults (bad configuration, budget caps) raise."""
    if not requests:
        return []
    return list(lm.complete(list(requests)))


def _record_failed(history: History, raw: str, reason: str, **extra: Any) -> None:
    history.record_event("failed_proposal", {"raw": raw, "reason": reason, **extra})


def _register(context: StrategyContext, trials: Sequence[Trial]) -> None:
    """Record proposals as candidates (with parents and metadata) before any is evaluated, so
    the store keeps the whole pool and its lineage even if the budget ends first. An empty
    example list records without evaluating."""
    if context.evaluate is not None and trials:
        context.evaluate([Trial(t.candidate, (), t.split, t.parents, t.metadata) for t in trials])


def _clip(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _demo_dicts(task: Task, examples: Iterable[Example]) -> list[dict[str, str]]:
    return [{"input": _example_text(task, ex.inputs), "output": _gold(ex)} for ex in examples]


def _validate_positive(strategy: str, **values: Any) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{strategy}: {key}={value!r} must be a positive integer.", fix=f"Set {key} to 1 or more.")


# --- APE -----------------------------------------------------------------------------------


@register_strategy
class APE(Strategy):
    """Automatic Prompt Engineer (see the module docstring). Parameters keep the paper's values
    (reference configs for instruction induction) unless noted.

    ``n_subsamples``, ``demos_per_subsample``, ``proposals_per_subsample``: forward generation
    (paper: 3 x 5 demos x 30 proposals). ``temperature``/``max_tokens``: proposer sampling (0.9, 50).
    ``score``: ``"execution"`` (paper's choice for instruction induction) or ``"logprob"``.
    ``minibatch_size`` (5), ``arms_per_round`` (None: a third of the pool, so the first three
    rounds visit every candidate once), ``bandit_rounds`` (20), ``bandit_budget`` (None: no cap;
    else the most example scorings one bandit phase may spend), ``ucb_c`` (1.0): the UCB bandit.
    ``top_k``: candidates kept after each bandit phase, scored on the whole validation split and
    resampled by Monte Carlo search. ``rounds``: Monte Carlo iterations (0: none, the paper's
    default). ``variations_per_candidate``: paraphrases per kept candidate (None: enough to
    rebuild a pool as large as the first one).
    """

    name = "ape"

    def __init__(
        self,
        *,
        n_subsamples: int = 3,
        demos_per_subsample: int = 5,
        proposals_per_subsample: int = 30,
        temperature: float = 0.9,
        max_tokens: int = 50,
        score: str = "execution",
        minibatch_size: int = 5,
        arms_per_round: int | None = None,
        bandit_rounds: int = 20,
        bandit_budget: int | None = None,
        ucb_c: float = 1.0,
        top_k: int = 3,
        rounds: int = 0,
        variations_per_candidate: int | None = None,
    ) -> None:
        self.n_subsamples = n_subsamples
        self.demos_per_subsample = demos_per_subsample
        self.proposals_per_subsample = proposals_per_subsample
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.score = score
        self.minibatch_size = minibatch_size
        self.arms_per_round = arms_per_round
        self.bandit_rounds = bandit_rounds
        self.bandit_budget = bandit_budget
        self.ucb_c = ucb_c
        self.top_k = top_k
        self.rounds = rounds
        self.variations_per_candidate = variations_per_candidate

    # --- setup ---------------------------------------------------------------------------
    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        _validate_positive(
            "ape",
            n_subsamples=self.n_subsamples,
            demos_per_subsample=self.demos_per_subsample,
            proposals_per_subsample=self.proposals_per_subsample,
            max_tokens=self.max_tokens,
            minibatch_size=self.minibatch_size,
            arms_per_round=self.arms_per_round,
            bandit_rounds=self.bandit_rounds,
            bandit_budget=self.bandit_budget,
            top_k=self.top_k,
            variations_per_candidate=self.variations_per_candidate,
        )
        if self.score not in ("execution", "logprob"):
            raise ConfigError(f"ape: unknown score {self.score!r}.", fix="Use score='execution' (task metric) or score='logprob' (log P(gold output)).")
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"ape: rounds={self.rounds!r} must be 0 or more.", fix="Set rounds=0 (no Monte Carlo search) or a small positive number.")
        if self.temperature < 0 or self.ucb_c < 0:
            raise ConfigError("ape: temperature and ucb_c must be >= 0.", fix="Use temperature=0.9 and ucb_c=1.0 (the paper's values).")
        train = context.task.train
        if len(train) < self.demos_per_subsample:
            raise ConfigError(
                f"ape induces instructions from {self.demos_per_subsample} training pairs per subsample, but task "
                f"{context.task.name!r} has {len(train)} training examples.",
                fix="Give the task a train split with enough examples, or lower demos_per_subsample.",
            )
        if any(ex.output is None and not ex.accepted for ex in train):
            raise ConfigError("ape needs labelled training examples (input-output pairs) to induce instructions from.", fix="Use a task whose train examples have outputs.")
        if self.score == "logprob":
            if getattr(context.task_lm, "score_continuation", None) is None:
                raise ConfigError(
                    f"ape: score='logprob' needs a task model that returns log-probabilities; {context.task_lm!r} does not.",
                    fix="Use the embedded model (model='embedded') or another white-box backend, or score='execution'.",
                )
            if any(ex.output is None for ex in context.task.val):
                raise ConfigError("ape: score='logprob' needs gold outputs on the validation split.", fix="Use labelled validation examples or score='execution'.")
        # Run state, rebuilt by replay (the loop replays ask/tell from step 0 on resume).
        self._round = 0  # Monte Carlo iteration
        self._phase = "propose"
        self._pool: list[Candidate] = []
        self._bandit_round = 0
        self._bandit_spent = 0
        self._initial_pool_size = 0
        self._kept: list[Candidate] = []
        self._logprobs: dict[str, dict[str, float]] = {}

    # --- ask/tell ------------------------------------------------------------------------
    def ask(self, history: History) -> list[Trial]:
        while True:
            if self._phase == "done":
                return []
            if self._phase == "propose":
                self._pool = self._propose(history)
                self._bandit_round = 0
                self._bandit_spent = 0
                if not self._pool:
                    history.record_event("ape_round", {"round": self._round, "pool": 0, "note": "no usable proposals"})
                    self._phase = "done"
                    continue
                if self._round == 0:
                    self._initial_pool_size = len(self._pool)
                self._phase = "bandit"
            if self._phase == "bandit":
                if self.score == "execution":
                    trials = self._bandit_trials(history)
                    if trials:
                        return trials
                else:
                    self._logprob_bandit(history)
                self._phase = "select"
            if self._phase == "select":
                kept = self._top(history)
                self._kept = kept
                history.record_event(
                    "ape_round",
                    {
                        "round": self._round,
                        "pool": len(self._pool),
                        "bandit_rounds": self._bandit_round,
                        "bandit_spent": self._bandit_spent,
                        "kept": [c.hash for c in kept],
                        "estimates": {c.hash: self._estimate(history, c)[0] for c in self._pool},
                        "counts": {c.hash: self._estimate(history, c)[1] for c in self._pool},
                    },
                )
                self._phase = "next"
                full = [Trial(c, None, metadata={"phase": "select", "round": self._round}) for c in kept]
                missing = [t for t in full if self._unseen(history, t.candidate)]
                if missing:
                    return missing
            if self._phase == "next":
                if self._round < self.rounds and self._kept:
                    self._round += 1
                    self._phase = "propose"
                    continue
                self._phase = "done"

    # --- proposal ------------------------------------------------------------------------
    def _propose(self, history: History) -> list[Candidate]:
        step = history.step
        task = self.context.task
        if self._round == 0:
            requests, origins = [], []
            for s in range(self.n_subsamples):
                demos = self.context.rng(step, f"ape:subsample:{s}").sample(task.train, self.demos_per_subsample)
                text = _meta_prompt("ape_forward_v1.txt", n_demos_words=_number_words(len(demos)), demos=_demo_dicts(task, demos))
                for j in range(self.proposals_per_subsample):
                    requests.append(self._request([{"role": "user", "content": text}], step, f"forward:{s}", j))
                    origins.append({"kind": "forward", "subsample": s, "demo_ids": [d.id for d in demos], "parents": ()})
        else:
            per = self.variations_per_candidate or max(1, math.ceil(self._initial_pool_size / max(1, len(self._kept))))
            requests, origins = [], []
            for parent in self._kept:
                text = _meta_prompt("ape_resample_v1.txt", instruction=parent.instruction)
                for j in range(per):
                    requests.append(self._request([{"role": "user", "content": text}], step, f"resample:{parent.hash}", j))
                    origins.append({"kind": "resample", "parents": (parent.hash,)})
        responses = _ask_proposer(self.context.proposer_lm, requests)
        pool: list[Candidate] = list(self._kept) if self._round > 0 else []
        seen = {c.hash for c in pool}
        new: list[Trial] = []
        duplicates = 0
        for origin, response in zip(origins, responses):
            template = "ape_forward_v1" if origin["kind"] == "forward" else "ape_resample_v1"
            if not response.ok:
                _record_failed(history, "", f"proposer call failed: {response.error}", strategy="ape", template=template)
                continue
            instruction = _clean_instruction(response.text, first_line=True, strip_to=origin["kind"] == "forward")
            if not instruction:
                _record_failed(history, response.text, "no instruction in the reply", strategy="ape", template=template)
                continue
            candidate = Candidate(instruction=instruction)
            if candidate.hash in seen:
                duplicates += 1
                continue
            seen.add(candidate.hash)
            pool.append(candidate)
            if history.has(candidate):  # proposed in an earlier round: already recorded, keeps its stats
                duplicates += 1
                continue
            metadata = {"kind": origin["kind"], "round": self._round, "template": template, "raw": _clip(response.text, 1000)}
            if "demo_ids" in origin:
                metadata["demo_ids"] = origin["demo_ids"]
            new.append(Trial(candidate, (), parents=tuple(origin["parents"]), metadata=metadata))
        history.record_event(
            "proposals",
            {"strategy": "ape", "round": self._round, "requested": len(requests), "new": len(new), "duplicates": duplicates},
        )
        _register(self.context, new)
        return pool

    def _request(self, messages: list[Message], step: int, salt: str, sample: int) -> LMRequest:
        return LMRequest.chat(
            messages,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            n=1,
            seed=_proposer_seed(self.context, step, f"ape:{salt}"),
            sample_id=sample,
        )

    # --- bandit --------------------------------------------------------------------------
    def _estimate(self, history: History, candidate: Candidate) -> tuple[float, int]:
        """(mean score, number of scored examples) of a pool member, for the bandit."""
        if self.score == "logprob":
            values = self._logprobs.get(candidate.hash, {})
            return (sum(values.values()) / len(values) if values else 0.0, len(values))
        n = history.n_scored(candidate)
        return (history.score(candidate) if n else 0.0, n)

    def _seen_ids(self, history: History, candidate: Candidate) -> set[str]:
        if self.score == "logprob":
            return set(self._logprobs.get(candidate.hash, {}))
        return set(history.results(candidate))

    def _unseen(self, history: History, candidate: Candidate) -> list[str]:
        seen = set(history.results(candidate))
        return [ex.id for ex in self.context.task.val if ex.id not in seen]

    def _bandit_done(self, history: History) -> bool:
        if self._bandit_round >= self.bandit_rounds:
            return True
        return self.bandit_budget is not None and self._bandit_spent >= self.bandit_budget

    def _choose_arms(self, history: History) -> dict[Candidate, list[str]]:
        """One UCB round: the arms to pull and the unseen validation examples of each."""
        step = history.step
        val_ids = [ex.id for ex in self.context.task.val]
        open_arms = [c for c in self._pool if len(self._seen_ids(history, c)) < len(val_ids)]
        if not open_arms:
            return {}
        k = self.arms_per_round or max(1, math.ceil(len(self._pool) / 3))
        k = min(k, len(open_arms))
        stats = {c.hash: self._estimate(history, c) for c in self._pool}
        total = sum(n for _, n in stats.values())
        rng = self.context.rng(step, f"ape:bandit:{self._round}:{self._bandit_round}")
        if total == 0:
            chosen = rng.sample(open_arms, k)
        else:
            # The reference UCB: counts get +1e-3 so unpulled arms get a huge bonus and go first.
            log_total = math.log(sum(n + 1e-3 for _, n in stats.values()))

            def ucb(c: Candidate) -> float:
                mean, n = stats[c.hash]
                return mean + self.ucb_c * math.sqrt(log_total / (n + 1e-3))

            order = {c.hash: i for i, c in enumerate(open_arms)}
            chosen = sorted(open_arms, key=lambda c: (-ucb(c), order[c.hash]))[:k]
        # One shared random order of the validation split per round: arms pulled together are
        # compared on the same examples where they have not seen them yet (paired, less noisy).
        shuffled = list(val_ids)
        rng.shuffle(shuffled)
        remaining = None if self.bandit_budget is None else self.bandit_budget - self._bandit_spent
        plan: dict[Candidate, list[str]] = {}
        for c in chosen:
            seen = self._seen_ids(history, c)
            ids = [i for i in shuffled if i not in seen][: self.minibatch_size]
            if remaining is not None:
                ids = ids[: max(0, remaining)]
                remaining -= len(ids)
            if ids:
                plan[c] = ids
        return plan

    def _bandit_trials(self, history: History) -> list[Trial]:
        if self._bandit_done(history):
            return []
        plan = self._choose_arms(history)
        if not plan:
            return []
        self._bandit_round += 1
        self._bandit_spent += sum(len(ids) for ids in plan.values())
        return [
            Trial(c, tuple(ids), metadata={"phase": "bandit", "round": self._round, "bandit_round": self._bandit_round})
            for c, ids in plan.items()
        ]

    def _logprob_bandit(self, history: History) -> None:
        """The whole bandit phase with log-probability scores (no loop evaluations involved)."""
        from promptopt._render import candidate_renderer

        task = self.context.task
        val = {ex.id: ex for ex in task.val}
        scorer = getattr(self.context.task_lm, "score_continuation")
        while not self._bandit_done(history):
            plan = self._choose_arms(history)
            if not plan:
                break
            self._bandit_round += 1
            scores: dict[str, dict[str, float]] = {}
            for candidate, ids in plan.items():
                render = candidate_renderer(candidate, task)
                bucket = self._logprobs.setdefault(candidate.hash, {})
                for ex_id in ids:
                    bucket[ex_id] = float(scorer(render(val[ex_id].inputs), _gold(val[ex_id])))
                    scores.setdefault(candidate.hash, {})[ex_id] = bucket[ex_id]
                self._bandit_spent += len(ids)
            history.record_event("logprob_scores", {"round": self._round, "bandit_round": self._bandit_round, "scores": scores})

    def _top(self, history: History) -> list[Candidate]:
        ranked = []
        for i, c in enumerate(self._pool):
            mean, n = self._estimate(history, c)
            if n:
                ranked.append((-mean, -n, i, c))
        ranked.sort(key=lambda t: t[:3])
        return [c for *_, c in ranked[: self.top_k]]
