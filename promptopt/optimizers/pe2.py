"""PE2: Prompt Engineering a Prompt Engineer (Ye et al. 2023).

The search (the paper's Algorithm 1):

* **Initialisation** (timestamp 0): the given ``instructions`` (manual initialisation), or
  ``n_init`` instructions induced from ``demos_per_init`` training pairs each with the paper's
  p_init (APE's forward template, "What was the instruction?"). All are scored on validation.
* **Timestamps 1..steps**: the ``beam_width`` best prompts of *all* timestamps so far (back-tracking)
  are each expanded ``expansion`` times. An expansion samples a batch of ``batch_size`` examples
  the prompt fails on (hard negatives, from the task model's per-example outputs) and runs the
  meta-prompt: (a) the two-step task description, (b) the context specification (the *full
  template*: how the prompt and the input are put together for the task model), (c) the
  step-by-step reasoning template applied to every example of the batch (is the output correct,
  does it follow the prompt, does the prompt describe the task, is an edit needed and which);
  then step 2 asks for the edited prompt. Optional verbalised optimiser concepts (the paper's
  Appendix B): ``step_size`` ("You are allowed to change up to N words") and ``momentum`` (the
  prompt's past versions with their dev accuracy and a model-written summary of each edit).
* The best prompt on validation over all timestamps is the result.

Failures come from the train split by default (the paper samples B from D_train): each beam
prompt is run on training examples in a fixed random order, a chunk at a time, until enough
failures are found or ``failure_pool`` examples were tried; these runs go through the loop, so
they are recorded and counted in the budget. ``failure_split="val"`` reads failures from the
validation results the selection already paid for (cheaper, but the proposer then sees the
selection data).
"""

from __future__ import annotations

from typing import Any, Sequence

from promptopt.errors import ConfigError
from promptopt.evaluators._base import ExampleResult
from promptopt.lm._types import LMRequest, LMResponse, Message
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, register_strategy
from promptopt.optimizers.ape import (
    _ask_proposer,
    _clean_instruction,
    _clip,
    _demo_dicts,
    _example_text,
    _gold,
    _meta_prompt,
    _proposer_seed,
    _record_failed,
    _validate_positive,
)
from promptopt.prompt import Candidate
from promptopt.store._base import CandidateRecord
from promptopt.task import Example, Task

__all__ = ["PE2"]

_TEMPLATE = "pe2_v1"


def _full_template(task: Task, candidate: Candidate) -> str:
    """The context specification: the task model's messages for this prompt, with placeholders
    where the example's input fields and the model's output go."""
    from promptopt._render import render_messages

    fields = tuple(task.input_fields) or ("input",)
    messages = render_messages(candidate, {f: f"<{f}>" for f in fields}, task)
    blocks = [f"[{m['role']}]\n{m['content']}" for m in messages]
    blocks.append("[assistant]\n<output>")
    return "\n".join(blocks)


@register_strategy
class PE2(Strategy):
    """PE2 (see the module docstring). Defaults follow the paper: 30 induced initial prompts,
    3 timestamps, beam 4, 4 expansions per prompt, batches of 2 failures, prompts under 50 words,
    no step size and no momentum (Appendix B found both inconclusive; enable them here), the
    reasoning at temperature 0 and the new prompt at temperature 0.7 with at most 300 tokens.

    ``instructions``: manual initialisation (empty: induction initialisation with ``n_init``
    prompts from ``demos_per_init`` demos each, sampled at ``init_temperature``).
    ``failure_split``: ``"train"`` (paper) or ``"val"``; ``failure_pool``: the most training
    examples a prompt is run on to find its failures. ``hard_negatives``: sample batches from
    failures (paper) rather than from any examples.
    """

    name = "pe2"

    def __init__(
        self,
        *,
        instructions: Sequence[str] = (),
        n_init: int = 30,
        demos_per_init: int = 5,
        init_temperature: float = 0.9,
        steps: int = 3,
        beam_width: int = 4,
        expansion: int = 4,
        batch_size: int = 2,
        step_size: int | None = None,
        max_words: int | None = 50,
        momentum: bool = False,
        failure_split: str = "train",
        failure_pool: int = 100,
        hard_negatives: bool = True,
        temperature: float = 0.7,
        max_tokens: int = 300,
        reasoning_max_tokens: int = 512,
    ) -> None:
        self.instructions = instructions
        self.n_init = n_init
        self.demos_per_init = demos_per_init
        self.init_temperature = init_temperature
        self.steps = steps
        self.beam_width = beam_width
        self.expansion = expansion
        self.batch_size = batch_size
        self.step_size = step_size
        self.max_words = max_words
        self.momentum = momentum
        self.failure_split = failure_split
        self.failure_pool = failure_pool
        self.hard_negatives = hard_negatives
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.reasoning_max_tokens = reasoning_max_tokens

    # --- setup ---------------------------------------------------------------------------
    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        _validate_positive(
            "pe2",
            n_init=self.n_init,
            demos_per_init=self.demos_per_init,
            beam_width=self.beam_width,
            expansion=self.expansion,
            batch_size=self.batch_size,
            step_size=self.step_size,
            max_words=self.max_words,
            failure_pool=self.failure_pool,
            max_tokens=self.max_tokens,
            reasoning_max_tokens=self.reasoning_max_tokens,
        )
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"pe2: steps={self.steps!r} must be 0 or more.", fix="Set steps=3 (the paper's value).")
        if isinstance(self.instructions, str):
            raise ConfigError("pe2: instructions must be a list of strings, got one string.", fix="Pass instructions=['...'].")
        if self.failure_split not in ("train", "val"):
            raise ConfigError(f"pe2: unknown failure_split {self.failure_split!r}.", fix="Use failure_split='train' (paper) or 'val'.")
        if self.temperature < 0 or self.init_temperature < 0:
            raise ConfigError("pe2: temperatures must be >= 0.", fix="Use temperature=0.7 and init_temperature=0.9.")
        task = context.task
        if not self.instructions and len(task.train) < self.demos_per_init:
            raise ConfigError(
                f"pe2 induces its initial prompts from {self.demos_per_init} training pairs, but task {task.name!r} has "
                f"{len(task.train)} training examples.",
                fix="Pass initial instructions=[...], give the task a train split, or lower demos_per_init.",
            )
        if self.steps and self.failure_split == "train":
            if not task.train:
                raise ConfigError(
                    f"pe2 looks for failures on the train split, but task {task.name!r} has none.",
                    fix="Give the task a train split, or set failure_split='val'.",
                )
            if context.evaluate is None:
                raise ConfigError("pe2 with failure_split='train' must run inside the optimization loop.", fix="Run it with promptopt.optimize(...).")
        self._t = 0  # next PE2 timestamp; rebuilt by replay like everything else here

    # --- ask -----------------------------------------------------------------------------
    def ask(self, history: History) -> list[Trial]:
        if self._t == 0:
            self._t = 1
            trials = self._initialise(history)
            if trials:
                return trials
        while self._t <= self.steps:
            t = self._t
            self._t += 1
            beam = [rec for rec, _ in history.leaderboard("val", 1)[: self.beam_width]]
            if not beam:
                return []
            history.record_event("pe2_beam", {"t": t, "beam": [{"hash": r.hash, "score": history.score(r.hash)} for r in beam]})
            trials = self._expand(history, beam, t)
            if trials:
                return trials
        return []

    # --- initialisation ------------------------------------------------------------------
    def _initialise(self, history: History) -> list[Trial]:
        if self.instructions:
            trials, seen = [], set()
            for text in self.instructions:
                candidate = Candidate(instruction=str(text))
                if candidate.hash not in seen:
                    seen.add(candidate.hash)
                    trials.append(Trial(candidate, metadata={"kind": "init", "t": 0, "init": "manual"}))
            return trials
        task = self.context.task
        step = history.step
        requests, demo_ids = [], []
        for i in range(self.n_init):
            demos = self.context.rng(step, f"pe2:init:{i}").sample(task.train, self.demos_per_init)
            user = _meta_prompt("pe2_init_v1.txt", n_demos=len(demos), demos=_demo_dicts(task, demos), max_words=self.max_words or 50)
            messages = [{"role": "system", "content": _meta_prompt("pe2_system_v1.txt")}, {"role": "user", "content": user}]
            requests.append(
                LMRequest.chat(
                    messages,
                    temperature=self.init_temperature,
                    max_tokens=2 * (self.max_words or 50),
                    seed=_proposer_seed(self.context, step, f"pe2:init:{i}"),
                    sample_id=i,
                )
            )
            demo_ids.append([d.id for d in demos])
        trials, seen = [], set()
        duplicates = 0
        for ids, response in zip(demo_ids, _ask_proposer(self.context.proposer_lm, requests)):
            if not response.ok:
                _record_failed(history, "", f"proposer call failed: {response.error}", strategy="pe2", template="pe2_init_v1")
                continue
            instruction = _clean_instruction(response.text, first_line=True, strip_to=True)
            if not instruction:
                _record_failed(history, response.text, "no instruction in the reply", strategy="pe2", template="pe2_init_v1")
                continue
            candidate = Candidate(instruction=instruction)
            if candidate.hash in seen:
                duplicates += 1
                continue
            seen.add(candidate.hash)
            trials.append(
                Trial(candidate, metadata={"kind": "init", "t": 0, "init": "induction", "demo_ids": ids, "raw": _clip(response.text, 1000)})
            )
        history.record_event("proposals", {"strategy": "pe2", "t": 0, "requested": len(requests), "new": len(trials), "duplicates": duplicates})
        return trials

    # --- failures ------------------------------------------------------------------------
    def _scored(self, history: History, rec: CandidateRecord, split: str) -> list[ExampleResult]:
        pool = {ex.id for ex in self.context.task.split(split)}
        results = history.results(rec.hash, split)
        return [r for ex_id, r in results.items() if ex_id in pool and r.score is not None]

    def _batch_pool(self, history: History, rec: CandidateRecord) -> tuple[list[ExampleResult], list[ExampleResult]]:
        """(failures, all scored) of a beam prompt on the failure split, running it on more
        training examples when needed."""
        split = self.failure_split
        need = self.batch_size * self.expansion
        if split == "train":
            train = self.context.task.train
            # Fixed per prompt (not per step): a prompt kept in the beam reuses what it was run on.
            order = [ex.id for ex in train]
            self.context.rng(0, f"pe2:failure-order:{rec.hash}").shuffle(order)
            order = order[: self.failure_pool]
            chunk = max(8, 2 * need)
            while True:
                scored = self._scored(history, rec, split)
                failures = [r for r in scored if r.score < 1.0]
                tried = set(history.results(rec.hash, split))
                todo = [i for i in order if i not in tried]
                if len(failures) >= need or not todo:
                    break
                results = self.context.evaluate(  # type: ignore[misc]
                    [Trial(rec.candidate, tuple(todo[:chunk]), split="train", parents=tuple(rec.parents), metadata=rec.metadata)]
                )
                if len(results[0].results) < min(chunk, len(todo)):
                    break  # the budget ran out mid-chunk
        scored = self._scored(history, rec, split)
        return [r for r in scored if r.score < 1.0], scored

    def _example_view(self, result: ExampleResult, example: Example) -> dict[str, Any]:
        output = result.output or ""
        prediction = result.prediction
        final = prediction if prediction is not None and prediction.strip() != output.strip() else None
        if prediction is None and not result.parsed:
            final = "(no answer could be read from the output)"
        return {
            "input": _example_text(self.context.task, example.inputs),
            "output": _clip(output, 1500),
            "final_answer": final,
            "label": _gold(example),
            "feedback": result.feedback,
        }

    # --- history (verbalised momentum) ---------------------------------------------------
    def _lineage(self, history: History, rec: CandidateRecord) -> list[CandidateRecord]:
        chain = [rec]
        seen = {rec.hash}
        while chain[-1].parents and chain[-1].parents[0] not in seen and history.has(chain[-1].parents[0]):
            parent = history.candidate(chain[-1].parents[0])
            seen.add(parent.hash)
            chain.append(parent)
        return chain[::-1]

    def _history_items(self, history: History, rec: CandidateRecord) -> list[dict[str, Any]]:
        chain = self._lineage(history, rec)
        items = []
        for ancestor, child in zip(chain, chain[1:]):
            score = history.score(ancestor.hash)
            items.append(
                {
                    "step": ancestor.metadata.get("t", ancestor.step),
                    "prompt": ancestor.candidate.instruction,
                    "score": "n/a" if score != score else f"{score:.2f}",
                    "summary": child.metadata.get("summary") or "",
                }
            )
        return items

    # --- expansion -----------------------------------------------------------------------
    def _expand(self, history: History, beam: list[CandidateRecord], t: int) -> list[Trial]:
        step = history.step
        task = self.context.task
        split_examples = {ex.id: ex for ex in task.split(self.failure_split)}
        jobs: list[dict[str, Any]] = []
        for rec in beam:
            failures, scored = self._batch_pool(history, rec)
            for j in range(self.expansion):
                rng = self.context.rng(step, f"pe2:batch:{rec.hash}:{j}")
                source = failures if (self.hard_negatives and failures) else scored
                if not source:
                    continue
                # With fewer failures than batch_size the batch is smaller: B holds errors only.
                batch = rng.sample(source, min(self.batch_size, len(source)))
                views = [self._example_view(r, split_examples[r.example_id]) for r in batch]
                messages: list[Message] = [
                    {"role": "system", "content": _meta_prompt("pe2_system_v1.txt")},
                    {"role": "user", "content": _meta_prompt("pe2_task_v1.txt", batch_size=len(batch))},
                    {"role": "assistant", "content": _meta_prompt("pe2_ack_v1.txt")},
                    {
                        "role": "user",
                        "content": _meta_prompt(
                            "pe2_examine_v1.txt",
                            prompt=rec.candidate.instruction,
                            full_template=_full_template(task, rec.candidate),
                            examples=views,
                        ),
                    },
                ]
                jobs.append(
                    {
                        "parent": rec,
                        "j": j,
                        "batch": [r.example_id for r in batch],
                        "n_failures": sum(1 for r in batch if r.score is not None and r.score < 1.0),
                        "messages": messages,
                    }
                )
        if not jobs:
            return []

        # (1) step 1: reasoning over the batch, greedy as in the paper.
        reasoning = _ask_proposer(
            self.context.proposer_lm,
            [
                LMRequest.chat(job["messages"], temperature=0.0, max_tokens=self.reasoning_max_tokens, sample_id=job["j"])
                for job in jobs
            ],
        )
        # (2) step 2: the refined prompt.
        live = []
        for job, response in zip(jobs, reasoning):
            if not response.ok:
                _record_failed(history, "", f"proposer call failed (reasoning): {response.error}", strategy="pe2", parent=job["parent"].hash)
                continue
            job["reasoning"] = response.text
            job["messages"] = [
                *job["messages"],
                {"role": "assistant", "content": response.text},
                {
                    "role": "user",
                    "content": _meta_prompt(
                        "pe2_refine_v1.txt",
                        history=self._history_items(history, job["parent"]) if self.momentum else [],
                        prompt=job["parent"].candidate.instruction,
                        step_size=self.step_size,
                        max_words=self.max_words,
                    ),
                },
            ]
            live.append(job)
        refined = _ask_proposer(
            self.context.proposer_lm,
            [
                LMRequest.chat(
                    job["messages"],
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    seed=_proposer_seed(self.context, step, f"pe2:refine:{job['parent'].hash}:{job['j']}"),
                    sample_id=job["j"],
                )
                for job in live
            ],
        )
        proposals: list[dict[str, Any]] = []
        seen: set[str] = set()
        duplicates = 0
        for job, response in zip(live, refined):
            if not response.ok:
                _record_failed(history, "", f"proposer call failed (refine): {response.error}", strategy="pe2", parent=job["parent"].hash)
                continue
            instruction = _clean_instruction(response.text)
            if not instruction:
                _record_failed(history, response.text, "no prompt in the reply", strategy="pe2", parent=job["parent"].hash, t=t)
                continue
            candidate = Candidate(instruction=instruction)
            if candidate.hash in seen or history.has(candidate):
                duplicates += 1
                continue
            seen.add(candidate.hash)
            job["candidate"], job["raw"] = candidate, response.text
            proposals.append(job)

        # (3) momentum: a summary of each edit, shown in the history of its descendants.
        if self.momentum and proposals:
            summaries = _ask_proposer(
                self.context.proposer_lm,
                [
                    LMRequest.chat(
                        [
                            *job["messages"],
                            {"role": "assistant", "content": job["raw"]},
                            {"role": "user", "content": _meta_prompt("pe2_summarize_v1.txt", step=t)},
                        ],
                        temperature=self.temperature,
                        max_tokens=200,
                        seed=_proposer_seed(self.context, step, f"pe2:summary:{job['parent'].hash}:{job['j']}"),
                        sample_id=job["j"],
                    )
                    for job in proposals
                ],
            )
            for job, response in zip(proposals, summaries):
                job["summary"] = _summary_text(response)

        history.record_event(
            "proposals",
            {"strategy": "pe2", "t": t, "requested": len(jobs), "new": len(proposals), "duplicates": duplicates},
        )
        return [
            Trial(
                job["candidate"],
                None,
                parents=(job["parent"].hash,),
                metadata={
                    "kind": "edit",
                    "t": t,
                    "template": _TEMPLATE,
                    "batch_split": self.failure_split,
                    "batch": job["batch"],
                    "n_failures": job["n_failures"],
                    "reasoning": _clip(job.get("reasoning", "")),
                    "summary": job.get("summary"),
                    "raw": _clip(job["raw"], 1500),
                },
            )
            for job in proposals
        ]


def _summary_text(response: LMResponse) -> str | None:
    if not response.ok:
        return None
    text = " ".join(response.text.split()).strip().strip('"').strip()
    return _clip(text, 1500) or None
