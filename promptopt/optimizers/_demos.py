"""Demo pools shared by the exemplar strategies (EASE, the Bayesian joint search).

Two kinds of demos:

* **labelled**: a training example shown with its reference answer (``Demo.source == "train"``);
* **bootstrapped**: the task model's own answer to a training example, kept when the metric
  judged it correct (``source == "generated"``). "Teach Better or Show Smarter?" (Wan et al.
  2024) finds that such self-generated, verified exemplars beat optimizing the instruction
  alone: they show the model answers in its own words and format. Bootstrapping runs the task
  model through ``context.evaluate`` on the ``train`` split, so its calls are recorded, count
  against the run's budget, and come back from the store when a run is resumed.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from promptopt.errors import ConfigError
from promptopt.optimizers._base import History, StrategyContext, Trial
from promptopt.prompt import Candidate, Demo, DemoFormat
from promptopt.task import Example, Task

__all__ = [
    "labelled_demo",
    "bootstrap_demos",
    "dedupe_demos",
    "sample_examples",
    "demo_block",
    "demos_text",
    "example_block",
]


def labelled_demo(example: Example) -> Demo:
    """``example`` shown with its reference answer."""
    if example.output is None:
        raise ConfigError(
            f"Example {example.id!r} has no reference output and cannot be shown as a labelled demo.",
            fix="Label the training examples, or bootstrap demos from the model's outputs instead.",
        )
    return Demo.make(example.inputs, example.output, example_id=example.id, source="train")


def sample_examples(examples: Sequence[Example], size: int, rng: random.Random) -> list[Example]:
    """``size`` examples drawn without replacement (all of them, in a random order, if fewer)."""
    pool = list(examples)
    rng.shuffle(pool)
    return pool[: max(0, size)]


def dedupe_demos(demos: Sequence[Demo]) -> list[Demo]:
    """Drop demos whose content (inputs and output) repeats an earlier one; order kept. A
    bootstrapped answer identical to the label is the labelled demo again."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for d in demos:
        key = (d.inputs, d.output)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def bootstrap_demos(
    context: StrategyContext,
    history: History,
    examples: Sequence[Example],
    *,
    instruction: str = "",
    teacher_demos: Sequence[Demo] = (),
    demo_format: DemoFormat = "chat",
    threshold: float = 1.0,
    metadata: Mapping[str, Any] | None = None,
) -> list[Demo]:
    """Run the task model on ``examples`` (training examples) with a teacher prompt
    (``instruction`` plus ``teacher_demos``) and return, as generated demos, the answers that
    scored at least ``threshold``, in the order of ``examples``.

    Examples shown among the teacher's demos are skipped (the answer would be copied, not
    produced). The demo's output is the model's raw answer (stripped), the text a parser judged
    correct, so later prompts show answers in the model's own style. Failed calls and answers the
    parser could not read are not kept. Costs one task-model call per example (none for results
    already in the store).
    """
    if context.evaluate is None:
        raise ConfigError(
            "Bootstrapping demos needs context.evaluate, which the optimization loop provides.",
            fix="Run the strategy through promptopt.optimize().",
        )
    shown_ids = {d.example_id for d in teacher_demos if d.example_id is not None}
    shown_inputs = {d.inputs for d in teacher_demos}
    targets = [
        ex
        for ex in examples
        if ex.id not in shown_ids and Demo.make(ex.inputs, "").inputs not in shown_inputs
    ]
    if not targets:
        return []
    teacher = Candidate(instruction=instruction, demos=tuple(teacher_demos), demo_format=demo_format if teacher_demos else "chat")
    trial = Trial(
        teacher,
        example_ids=tuple(ex.id for ex in targets),
        split="train",
        metadata={"role": "bootstrap_teacher", **dict(metadata or {})},
    )
    (result,) = context.evaluate([trial])
    by_id = result.by_id()
    out = []
    for ex in targets:
        r = by_id.get(ex.id)
        if r is None or r.failed or not r.parsed or r.score is None or r.score < threshold:
            continue
        answer = (r.output or "").strip() or (r.prediction or "").strip()
        if answer:
            out.append(Demo.make(ex.inputs, answer, example_id=ex.id, source="generated"))
    history.record_event(
        "bootstrap",
        {"teacher": teacher.hash, "answered": len(targets), "kept": len(out), "errors": result.n_errors, **dict(metadata or {})},
    )
    return out


def _input_text(inputs: Mapping[str, Any], fields: Sequence[str]) -> str:
    keys = [f for f in fields if f in inputs] or list(inputs)
    if len(keys) == 1:
        return str(inputs[keys[0]])
    return "\n".join(f"{k}: {inputs[k]}" for k in keys)


def demo_block(demo: Demo, task: Task) -> str:
    """One demo as ``Input: ...`` / ``Output: ...`` text (the EASE paper's exemplar format)."""
    return f"Input: {_input_text(demo.input_dict, task.input_fields)}\nOutput: {demo.output}"


def example_block(example: Example, task: Task) -> str:
    """A (validation) example in the same format, with its reference answer when it has one."""
    text = f"Input: {_input_text(example.inputs, task.input_fields)}"
    return text + (f"\nOutput: {example.output}" if example.output is not None else "")


def demos_text(demos: Sequence[Demo], task: Task, instruction: str | None = None) -> str:
    """An ordered demo set (optionally after its instruction) as one text: what EASE embeds.
    Order is kept, so permutations of a set are different texts."""
    body = "\n\n".join(demo_block(d, task) for d in demos)
    if instruction is None:
        return body
    return f"Instruction: {instruction}\n\n{body}"
