"""Examples and tasks.

An :class:`Example` is one input (one or more named fields) with its expected output (or a
list of accepted outputs). A :class:`Task` bundles train/val/test splits with how to show an
example to the model (input fields, default input template), how to read the model's answer
(parser) and how to score it (metric). Loaders for files live in :mod:`promptopt.data`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from promptopt.errors import DataError

__all__ = ["Example", "Task"]


@dataclass(frozen=True)
class Example:
    """One labelled (or unlabelled) example.

    ``inputs``: field name -> value. ``output``: the reference answer (None when unlabelled, as
    for SPO). ``accepted``: every accepted answer (``output`` first); metrics take the best match.
    ``choices``: for multiple-choice tasks, the allowed labels. ``id`` is stable across runs.
    """

    id: str
    inputs: Mapping[str, Any]
    output: str | None = None
    accepted: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.output is not None and not self.accepted:
            object.__setattr__(self, "accepted", (self.output,))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "inputs": dict(self.inputs),
            "output": self.output,
            "accepted": list(self.accepted),
            "choices": list(self.choices),
            "metadata": dict(self.metadata),
        }


@dataclass
class Task:
    """A task: splits plus how to render, parse and score.

    ``metric``: a metric name (see :mod:`promptopt.evaluators`) or a callable
    ``(prediction: str, example: Example) -> float`` in [0, 1].
    ``parser``: a parser name (see :mod:`promptopt.parsing`) or a callable ``(text, example) -> str | None``
    (None = could not parse; recorded as such).
    """

    name: str
    train: list[Example]
    val: list[Example]
    test: list[Example]
    input_fields: tuple[str, ...] = ("input",)
    output_field: str = "output"
    metric: str | Callable[..., float] = "normalized_exact"
    parser: str | Callable[..., Any] = "auto"
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_examples(
        cls,
        name: str,
        examples: Sequence[Example],
        *,
        split: tuple[float, float, float] | tuple[int, int, int] = (0.4, 0.2, 0.4),
        seed: int = 0,
        **kwargs: Any,
    ) -> "Task":
        """Split ``examples`` into train/val/test with a seeded shuffle.

        ``split`` holds fractions (summing to at most 1) or absolute counts.
        """
        examples = list(examples)
        if not examples:
            raise DataError(f"Task {name!r} has no examples.", fix="Check the data file: it must contain at least 3 examples.")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DataError(f"Task {name!r} has duplicate example ids {dup}.", fix="Give every example a unique id (or drop the id field to number them).")
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        shuffled = [examples[i] for i in order]
        if all(isinstance(s, int) for s in split):
            n_train, n_val, n_test = (int(s) for s in split)
        else:
            if sum(split) > 1.0 + 1e-9 or any(s < 0 for s in split):
                raise DataError(f"Bad split {split}.", fix="Use three fractions that sum to at most 1, or three counts.")
            n = len(shuffled)
            n_train = int(round(split[0] * n))
            n_val = int(round(split[1] * n))
            n_test = min(n - n_train - n_val, int(round(split[2] * n)))
        if n_train + n_val + n_test > len(shuffled):
            raise DataError(
                f"Split {split} needs {n_train + n_val + n_test} examples but {name!r} has {len(shuffled)}.",
                fix="Ask for smaller splits or provide more examples.",
            )
        task = cls(
            name=name,
            train=shuffled[:n_train],
            val=shuffled[n_train : n_train + n_val],
            test=shuffled[n_train + n_val : n_train + n_val + n_test],
            **kwargs,
        )
        task.validate()
        return task

    def validate(self) -> None:
        """Raise :class:`DataError` naming the problem if the task cannot be optimized."""
        if not self.val:
            raise DataError(f"Task {self.name!r} has an empty validation split.", fix="Provide more examples or a larger val fraction.")
        if not self.test:
            raise DataError(f"Task {self.name!r} has an empty test split.", fix="Provide more examples or a larger test fraction.")
        for ex in [*self.train, *self.val, *self.test]:
            missing = [f for f in self.input_fields if f not in ex.inputs]
            if missing:
                raise DataError(
                    f"Example {ex.id!r} of task {self.name!r} lacks input field(s) {missing}.",
                    fix=f"Every example needs the fields {list(self.input_fields)}; set --input-field to the right name.",
                )

    def split(self, name: str) -> list[Example]:
        if name not in ("train", "val", "test"):
            raise DataError(f"Unknown split {name!r}.", fix="Use 'train', 'val' or 'test'.")
        return getattr(self, name)

    def example(self, example_id: str) -> Example:
        for ex in [*self.train, *self.val, *self.test]:
            if ex.id == example_id:
                return ex
        raise KeyError(example_id)
