"""Random search over given instructions x demo subsets x demo formats: the baseline strategy.

Every other strategy should beat it at the same budget; benchmarks report it beside them.
"""

from __future__ import annotations

from typing import Sequence

from promptopt.errors import ConfigError
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, register_strategy
from promptopt.prompt import Candidate, Demo

__all__ = ["RandomSearch"]


@register_strategy
class RandomSearch(Strategy):
    """Sample ``n_candidates`` distinct candidates uniformly from the search space and score each
    on the whole validation split, ``batch_size`` per step.

    Search space: an instruction from ``instructions`` (default: the empty instruction), a number
    of demos from ``demo_counts``, that many distinct training examples in random order, and a
    format from ``demo_formats``. ``include_zero_shot`` evaluates the first instruction with no
    demos first, as the reference point.
    """

    name = "random_search"

    def __init__(
        self,
        *,
        instructions: Sequence[str] = (),
        demo_counts: Sequence[int] = (0, 1, 2, 3, 4),
        demo_formats: Sequence[str] = ("chat", "inline"),
        n_candidates: int = 8,
        batch_size: int = 4,
        include_zero_shot: bool = True,
        max_attempts: int = 50,
    ) -> None:
        self.instructions = instructions
        self.demo_counts = demo_counts
        self.demo_formats = demo_formats
        self.n_candidates = n_candidates
        self.batch_size = batch_size
        self.include_zero_shot = include_zero_shot
        self.max_attempts = max_attempts

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        if self.n_candidates < 1 or self.batch_size < 1:
            raise ConfigError("random_search needs n_candidates >= 1 and batch_size >= 1.", fix="Set --param n_candidates=8 --param batch_size=4.")
        bad = [f for f in self.demo_formats if f not in ("chat", "inline")]
        if bad or not self.demo_formats:
            raise ConfigError(f"Unknown demo format(s) {bad}.", fix="Use demo_formats from 'chat' and 'inline'.")
        counts = [int(k) for k in self.demo_counts]
        if not counts or min(counts) < 0:
            raise ConfigError(f"Bad demo_counts {list(self.demo_counts)}.", fix="Give non-negative integers, e.g. demo_counts=[0,2,4].")
        if max(counts) > len(context.task.train):
            raise ConfigError(
                f"demo_counts asks for up to {max(counts)} demos but the train split has {len(context.task.train)} examples.",
                fix="Lower demo_counts or give the task a larger train split.",
            )
        self._instructions = [str(i) for i in self.instructions] or [context.task.description or ""]

    def _sample(self, history: History, step: int, attempt: int) -> Candidate:
        rng = self.context.rng(step, f"random_search:{attempt}")
        k = rng.choice([int(c) for c in self.demo_counts])
        train = self.context.task.train
        demos = tuple(Demo.make(ex.inputs, ex.output or "", example_id=ex.id) for ex in rng.sample(train, k))
        return Candidate(
            instruction=rng.choice(self._instructions),
            demos=demos,
            demo_format=rng.choice(list(self.demo_formats)) if demos else "chat",  # type: ignore[arg-type]
        )

    def ask(self, history: History) -> list[Trial]:
        seen = {rec.hash for rec in history.candidates()}
        n_own = sum(1 for rec in history.candidates() if rec.strategy == self.name)
        if n_own >= self.n_candidates:
            return []
        want = min(self.batch_size, self.n_candidates - n_own)
        trials: list[Trial] = []
        if self.include_zero_shot and history.step == 0:
            zero = Candidate(instruction=self._instructions[0])
            if zero.hash not in seen:
                trials.append(Trial(zero, metadata={"kind": "zero_shot"}))
                seen.add(zero.hash)
        attempt = 0
        while len(trials) < want and attempt < self.max_attempts * want:
            cand = self._sample(history, history.step, attempt)
            attempt += 1
            if cand.hash in seen:
                continue
            seen.add(cand.hash)
            trials.append(Trial(cand, metadata={"kind": "sampled"}))
        return trials
