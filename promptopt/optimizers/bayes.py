"""Bayesian joint search over (instruction, demo set, demo format), in the manner of DSPy's
MIPROv2 (Opsahl-Ong et al. 2024), with optuna's TPE sampler.

Setup (step 0) builds the categorical search space:

* **instructions**: the given ones, plus ``n_proposed_instructions`` written by the proposer
  model from random training examples (meta-prompt ``prompts/bayes_propose_v1.txt``; a reply
  that cannot be read is recorded as a ``failed_proposal`` event, duplicates are dropped);
* **demo sets**: ``n_demo_sets`` ordered sets of up to ``k`` demos: the empty set (zero-shot,
  if ``include_zero_shot``), a set of labelled training examples, and sets mixing demos
  *bootstrapped* from the task model's own correct answers on ``n_bootstrap`` training examples
  (see :mod:`promptopt.optimizers._demos`) with labelled ones, in seeded random orders;
* **demo format**: ``chat`` or ``inline`` (irrelevant, so fixed, for the empty set).

Each trial then asks TPE for a combination, scores it on a random minibatch of the validation
split (``minibatch_size``: a count, or a fraction of the split), and tells the study the mean.
The minibatch is scored in ``n_chunks`` chunks; after each chunk the running mean is reported to
the study and optuna's median pruner stops a trial that is already below the median of earlier
trials at that point, so weak combinations cost a fraction of a minibatch. Scores of a
combination accumulate over its minibatches (the store keeps every (candidate, example)
result; an example scored before costs nothing). Every ``full_eval_every`` trials, and at the
end, the most promising candidate (highest mean over its validation results, shrunk toward the
overall mean so that a lucky small sample does not win) is scored on the whole validation split
and that score is added to the study as a completed trial, so TPE models the accurate value too.
The run's best is chosen among the fully evaluated candidates.

Why an in-memory study: resume is replay (the loop restarts the strategy from step 0 and feeds
it the same results from the store and the same proposer outputs from the LM cache). An optuna
RDB storage beside our store would hold trials the replay has not reached yet, so the sampler
would see the future; an in-memory study rebuilt during replay, with a seeded TPE sampler and
trials asked and told in the same order with the same values, makes exactly the same
suggestions, needs no second database, and cannot disagree with the store.

Task-model cost: ``n_bootstrap`` + at most ``n_trials * minibatch`` + a full validation pass per
periodic/final evaluation (fewer where examples were scored before or trials are pruned).
"""

from __future__ import annotations

import contextlib
import functools
import math
import pathlib
import re
import warnings
from typing import Any, Iterator, Sequence

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from promptopt.errors import ConfigError, DependencyMissingError
from promptopt.evaluators._base import EvalResult
from promptopt.lm._types import LMRequest
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, register_strategy
from promptopt.optimizers._demos import bootstrap_demos, dedupe_demos, labelled_demo, sample_examples
from promptopt.prompt import Candidate, Demo

__all__ = ["BayesJointSearch"]

_PROMPTS = pathlib.Path(__file__).resolve().parent / "prompts"
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_PROPOSE_TEMPLATE = "bayes_propose_v1.txt"
_TIPS = (
    "",
    "Keep it short and direct.",
    "Say exactly what form the output must take.",
    "Describe the task step by step.",
    "Mention what to pay attention to in the input.",
)
_MAX_INSTRUCTION_CHARS = 600
_SHRINK_EXAMPLES = 2.0
"""Pseudo-examples at the overall mean added to a candidate's mean when ranking candidates for a
full evaluation (empirical-Bayes shrinkage: 1/1 on a minibatch is not better than 18/20)."""


@functools.lru_cache(maxsize=8)
def _template(name: str) -> jinja2.Template:
    return _ENV.from_string((_PROMPTS / name).read_text(encoding="utf-8"))


def _render(name: str, **values: Any) -> str:
    return _template(name).render(**values).strip()


def _parse_instruction(text: str) -> tuple[str | None, str]:
    """(instruction, reason it was rejected) from a proposer reply."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return None, "empty reply"
    line = re.sub(r"^(?:new\s+)?instruction\s*[:\-]\s*", "", lines[0], flags=re.IGNORECASE).strip()
    line = line.strip("\"'`“”‘’ ").strip()
    if not line:
        return None, "no instruction text in the reply"
    if len(line) > _MAX_INSTRUCTION_CHARS:
        return None, f"instruction longer than {_MAX_INSTRUCTION_CHARS} characters"
    return line, ""


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[Any]:
    """optuna logs every told trial at INFO and warns that multivariate TPE is experimental;
    keep both out of the user's console without changing their settings for good."""
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise DependencyMissingError("The Bayesian joint search needs optuna.", fix="pip install 'promptopt[optuna]'.") from exc
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(level)


@register_strategy
class BayesJointSearch(Strategy):
    """TPE over (instruction, demo set, demo format) with minibatch scoring, pruning and periodic
    full validation (see the module docstring)."""

    name = "bayes_joint"

    def __init__(
        self,
        *,
        instructions: Sequence[str] = (),
        n_proposed_instructions: int = 0,
        proposer_temperature: float = 0.7,
        proposer_examples: int = 5,
        k: int = 3,
        n_demo_sets: int = 8,
        n_bootstrap: int = 8,
        bootstrap_shots: int = 3,
        include_zero_shot: bool = True,
        demo_formats: Sequence[str] = ("chat", "inline"),
        n_trials: int = 24,
        minibatch_size: int | float = 0.25,
        n_chunks: int = 2,
        prune: bool = True,
        n_startup_trials: int = 6,
        full_eval_every: int = 8,
        final_top: int = 1,
    ) -> None:
        self.instructions = instructions
        self.n_proposed_instructions = n_proposed_instructions
        self.proposer_temperature = proposer_temperature
        self.proposer_examples = proposer_examples
        self.k = k
        self.n_demo_sets = n_demo_sets
        self.n_bootstrap = n_bootstrap
        self.bootstrap_shots = bootstrap_shots
        self.include_zero_shot = include_zero_shot
        self.demo_formats = demo_formats
        self.n_trials = n_trials
        self.minibatch_size = minibatch_size
        self.n_chunks = n_chunks
        self.prune = prune
        self.n_startup_trials = n_startup_trials
        self.full_eval_every = full_eval_every
        self.final_top = final_top

    # --- setup -----------------------------------------------------------------------------
    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        task = context.task

        def need(ok: bool, message: str, fix: str) -> None:
            if not ok:
                raise ConfigError(f"bayes_joint: {message}", fix=fix)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for pname in ("k", "n_demo_sets", "n_trials", "n_chunks", "proposer_examples"):
            value = getattr(self, pname)
            need(is_int(value) and value >= 1, f"{pname}={value!r} must be an integer >= 1.", f"Pass {pname} as a positive integer.")
        for pname in ("n_proposed_instructions", "n_bootstrap", "bootstrap_shots", "n_startup_trials", "full_eval_every", "final_top"):
            value = getattr(self, pname)
            need(is_int(value) and value >= 0, f"{pname}={value!r} must be an integer >= 0.", f"Pass {pname} >= 0.")
        need(self.proposer_temperature >= 0, f"proposer_temperature={self.proposer_temperature} must be >= 0.", "Pass e.g. 0.7.")
        formats = list(self.demo_formats)
        bad = [f for f in formats if f not in ("chat", "inline")]
        need(bool(formats) and not bad, f"unknown demo format(s) {bad or formats}.", "Use demo_formats from 'chat' and 'inline'.")
        mb = self.minibatch_size
        need(
            (is_int(mb) and mb >= 1) or (isinstance(mb, float) and 0.0 < mb <= 1.0),
            f"minibatch_size={mb!r} must be a count >= 1 or a fraction in (0, 1].",
            "Pass e.g. minibatch_size=0.25 (a quarter of the validation split) or minibatch_size=10.",
        )
        labelled = [ex for ex in task.train if ex.output is not None]
        need(
            len(labelled) >= self.k,
            f"k={self.k} demos per set but the train split has {len(labelled)} labelled examples.",
            "Lower k or give the task a larger train split.",
        )
        need(
            self.n_demo_sets >= 1 + int(self.include_zero_shot),
            f"n_demo_sets={self.n_demo_sets} leaves no room for a set of demos.",
            "Use n_demo_sets >= 2 (the zero-shot set counts as one).",
        )
        self._formats = list(dict.fromkeys(formats))
        n_val = len(task.val)
        self._minibatch = min(n_val, int(mb) if is_int(mb) else max(1, int(round(float(mb) * n_val))))
        self._instructions: list[str] = list(dict.fromkeys(str(i) for i in self.instructions))
        self._demo_sets: list[tuple[Demo, ...]] = []
        self._distributions: dict[str, Any] = {}
        self._n_told = 0
        self._fully_evaluated: set[str] = set()
        self._params: dict[str, dict[str, int]] = {}
        self._done = False
        with _quiet_optuna() as optuna:
            seed = context.rng(0, "bayes_joint:tpe").getrandbits(31)
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=self.n_startup_trials)
            pruner = (
                optuna.pruners.MedianPruner(n_startup_trials=max(1, self.n_startup_trials), n_warmup_steps=0)
                if self.prune and self.n_chunks > 1
                else optuna.pruners.NopPruner()
            )
            self._study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)

    # --- search space ----------------------------------------------------------------------
    def _propose_instructions(self, history: History) -> None:
        ctx, task = self.context, self.context.task
        n = self.n_proposed_instructions
        if not n:
            return
        labelled = [ex for ex in task.train if ex.output is not None]
        requests, shown = [], []
        for i in range(n):
            rng = ctx.rng(0, f"bayes_joint:propose:{i}")
            examples = sample_examples(labelled, self.proposer_examples, rng)
            demos = [{"input": "\n".join(f"{v}" for v in ex.inputs.values()), "output": ex.output} for ex in examples]
            prompt = _render(_PROPOSE_TEMPLATE, demos=demos, description=task.description, tip=rng.choice(_TIPS))
            requests.append(
                LMRequest.chat([{"role": "user", "content": prompt}], temperature=self.proposer_temperature, max_tokens=96, sample_id=i)
            )
            shown.append([ex.id for ex in examples])
        responses = ctx.proposer_lm.complete(requests)
        for i, resp in enumerate(responses):
            if not resp.ok:
                history.record_event("failed_proposal", {"raw": "", "reason": f"proposer call failed: {resp.error}", "sample": i})
                continue
            text, reason = _parse_instruction(resp.text)
            if text is None:
                history.record_event("failed_proposal", {"raw": resp.text, "reason": reason, "sample": i})
            elif text not in self._instructions:
                self._instructions.append(text)
                history.record_event("proposed_instruction", {"instruction": text, "sample": i, "examples": shown[i]})

    def _build_demo_sets(self, history: History) -> None:
        ctx, task = self.context, self.context.task
        labelled = [ex for ex in task.train if ex.output is not None]
        generated: list[Demo] = []
        if self.n_bootstrap:
            teacher_examples = sample_examples(labelled, self.bootstrap_shots, ctx.rng(0, "bayes_joint:teacher"))
            teacher = [labelled_demo(ex) for ex in teacher_examples]
            teacher_ids = {ex.id for ex in teacher_examples}
            targets = sample_examples([ex for ex in labelled if ex.id not in teacher_ids], self.n_bootstrap, ctx.rng(0, "bayes_joint:bootstrap"))
            generated = bootstrap_demos(
                ctx, history, targets, instruction=self._instructions[0], teacher_demos=teacher,
                demo_format=self._formats[0],  # type: ignore[arg-type]
                metadata={"strategy": self.name},
            )
        sets: list[tuple[Demo, ...]] = []
        seen: set[tuple[Any, ...]] = set()

        def add(demos: Sequence[Demo]) -> None:
            key = tuple((d.inputs, d.output) for d in demos)
            if key not in seen:
                seen.add(key)
                sets.append(tuple(demos))

        if self.include_zero_shot:
            add(())
        attempts = 0
        while len(sets) < self.n_demo_sets and attempts < 20 * self.n_demo_sets:
            rng = ctx.rng(0, f"bayes_joint:set:{attempts}")
            attempts += 1
            chosen: list[Demo] = []
            # The first non-empty set is labelled only (the MIPROv2 baseline set); later ones mix
            # in bootstrapped demos, which exist only where the model answered correctly.
            if generated and len(sets) > int(self.include_zero_shot):
                n_gen = rng.randint(1, min(self.k, len(generated)))
                chosen = rng.sample(generated, n_gen)
            used = {d.example_id for d in chosen}
            fill = [ex for ex in labelled if ex.id not in used]
            chosen += [labelled_demo(ex) for ex in rng.sample(fill, min(self.k - len(chosen), len(fill)))]
            rng.shuffle(chosen)
            add(dedupe_demos(chosen))
        self._demo_sets = sets
        history.record_event(
            "bayes_space",
            {
                "instructions": self._instructions,
                "demo_sets": [[d.example_id for d in s] for s in sets],
                "generated_demos": len(generated),
                "formats": self._formats,
            },
        )

    def _prepare(self, history: History) -> None:
        if not self._instructions and not self.n_proposed_instructions:
            self._instructions = [self.context.task.description or ""]
        self._propose_instructions(history)
        if not self._instructions:
            history.record_event("failed_proposal", {"raw": "", "reason": "no instruction could be read; using the task description"})
            self._instructions = [self.context.task.description or ""]
        self._build_demo_sets(history)
        with _quiet_optuna() as optuna:
            dist = optuna.distributions.CategoricalDistribution
            self._distributions = {
                "instruction": dist(list(range(len(self._instructions)))),
                "demo_set": dist(list(range(len(self._demo_sets)))),
                "demo_format": dist(list(range(len(self._formats)))),
            }

    def _candidate(self, params: dict[str, int]) -> Candidate:
        demos = self._demo_sets[params["demo_set"]]
        fmt = self._formats[params["demo_format"]] if demos else "chat"
        return Candidate(instruction=self._instructions[params["instruction"]], demos=demos, demo_format=fmt)  # type: ignore[arg-type]

    # --- evaluation ------------------------------------------------------------------------
    def _evaluate(self, trial: Trial) -> EvalResult:
        assert self.context.evaluate is not None
        return self.context.evaluate([trial])[0]

    def _run_trial(self, history: History, step: int) -> Trial:
        with _quiet_optuna() as optuna:
            study_trial = self._study.ask(self._distributions)
        params = {name: int(study_trial.params[name]) for name in self._distributions}
        cand = self._candidate(params)
        self._params.setdefault(cand.hash, params)
        rng = self.context.rng(step, "bayes_joint:minibatch")
        ids = [ex.id for ex in sample_examples(self.context.task.val, self._minibatch, rng)]
        n_chunks = min(self.n_chunks, len(ids))
        bounds = [round(len(ids) * (c + 1) / n_chunks) for c in range(n_chunks)]
        meta = {"kind": "tpe", "optuna_trial": study_trial.number, **params}
        evaluated: list[str] = []
        value = math.nan
        state = "complete"
        for c, end in enumerate(bounds):
            evaluated = ids[:end]
            er = self._evaluate(Trial(cand, tuple(evaluated), "val", metadata=meta))
            value = er.mean
            if math.isnan(value):
                continue
            study_trial.report(value, c)
            if c < len(bounds) - 1 and study_trial.should_prune():
                state = "pruned"
                break
        with _quiet_optuna() as optuna:
            if math.isnan(value):
                # Every call failed: no evidence either way, so TPE must not learn a zero.
                self._study.tell(study_trial, state=optuna.trial.TrialState.FAIL)
                state = "failed"
            elif state == "pruned":
                self._study.tell(study_trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self._study.tell(study_trial, value)
        self._n_told += 1
        history.record_event(
            "tpe_trial",
            {"number": study_trial.number, "candidate": cand.hash, **params, "value": None if math.isnan(value) else value,
             "state": state, "n_examples": len(evaluated), "minibatch": len(ids)},
        )
        return Trial(cand, tuple(evaluated), "val", metadata=meta)

    def _ranked(self, history: History) -> list[str]:
        """Hashes of the candidates evaluated by this search, most promising first (shrunk mean)."""
        stats = []
        total, count = 0.0, 0
        for h in self._params:
            scored = [r.score for r in history.results(h, "val").values() if r.score is not None]
            if scored:
                stats.append((h, sum(scored), len(scored)))
                total += sum(scored)
                count += len(scored)
        if not stats:
            return []
        prior = total / count
        order = {h: i for i, h in enumerate(self._params)}
        stats.sort(key=lambda t: (-(t[1] + _SHRINK_EXAMPLES * prior) / (t[2] + _SHRINK_EXAMPLES), order[t[0]]))
        return [h for h, _, _ in stats]

    def _full_eval(self, history: History, how_many: int) -> list[Trial]:
        """Score the ``how_many`` most promising candidates on the whole validation split (those
        not scored on it yet) and add each result as a completed trial to the study."""
        out = []
        for h in self._ranked(history)[:how_many]:
            if h in self._fully_evaluated:
                continue
            self._fully_evaluated.add(h)
            params = self._params[h]
            cand = self._candidate(params)
            trial = Trial(cand, None, "val", metadata={"kind": "full_eval", **params})
            er = self._evaluate(trial)
            history.record_event(
                "full_eval", {"candidate": h, **params, "value": None if math.isnan(er.mean) else er.mean, "n_examples": len(er.results)}
            )
            if not math.isnan(er.mean):
                with _quiet_optuna() as optuna:
                    self._study.add_trial(
                        optuna.trial.create_trial(params=dict(params), distributions=self._distributions, value=er.mean)
                    )
            out.append(trial)
        return out

    # --- ask/tell --------------------------------------------------------------------------
    def ask(self, history: History) -> list[Trial]:
        if self._done:
            return []
        step = history.step
        if step == 0:
            self._prepare(history)
        if self._n_told >= self.n_trials:
            self._done = True
            return self._full_eval(history, max(1, self.final_top))
        trials = []
        if self.full_eval_every and self._n_told and self._n_told % self.full_eval_every == 0:
            trials += self._full_eval(history, 1)
        trials.append(self._run_trial(history, step))
        return trials
