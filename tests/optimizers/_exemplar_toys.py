"""Toy tasks with a known demo landscape, for the exemplar strategies' tests (EASE, bayes_joint).

The scripted task model reads which demos a prompt shows, in which order, and under which
instruction, computes a quality q in [0, 1] from them, and answers a query correctly exactly when
the query's fixed pseudo-random threshold is below q. Thresholds are a low-discrepancy sequence,
so a candidate's accuracy on any dozen examples is close to its q: the landscape is known.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

from promptopt.optimizers._embed import _CachedEmbedder, register_embedder
from promptopt.task import Example, Task

GOLD = ("item 3", "item 8", "item 5")
"""The best ordered set; each gold demo is worth 0.2 anywhere and 1/3 at its own position."""

GOOD_INSTRUCTION = "Answer with the class of the item."


def quality(demo_inputs: Sequence[str]) -> float:
    present = sum(g in demo_inputs for g in GOLD)
    in_place = sum(1 for p, g in enumerate(GOLD) if p < len(demo_inputs) and demo_inputs[p] == g)
    return 0.2 * present + (0.4 / 3) * in_place


def label(n: int) -> str:
    return "A" if n % 2 else "B"


def make_task(n_train: int = 12, n_val: int = 30, n_test: int = 30) -> Task:
    def ex(prefix: str, n: int) -> Example:
        return Example(id=f"{prefix}{n}", inputs={"input": f"item {n}"}, output=label(n))

    return Task(
        "toy-demos",
        [ex("t", i) for i in range(n_train)],
        [ex("v", 100 + i) for i in range(n_val)],
        [ex("s", 200 + i) for i in range(n_test)],
    )


def _threshold(n: int) -> float:
    return (n * 0.6180339887498949) % 1.0


def shown_demos(request) -> list[str]:
    """Demo inputs of a prompt, in order (chat turns or inline blocks)."""
    msgs = request.message_dicts
    users = [m["content"] for m in msgs if m["role"] == "user"]
    if any(m["role"] == "assistant" for m in msgs):
        return users[:-1]
    return re.findall(r"Input: (item \d+)\nOutput:", users[-1])[:-1] if users else []


def query_number(request) -> int:
    return int(re.findall(r"item (\d+)", request.message_dicts[-1]["content"])[-1])


def demo_oracle(request) -> str:
    """Instruction-free landscape: only which demos, in which order."""
    n = query_number(request)
    return label(n) if _threshold(n) < quality(shown_demos(request)) else "C"


def joint_oracle(request) -> str:
    """The demo landscape, scaled down to 30% unless the system message is GOOD_INSTRUCTION."""
    msgs = request.message_dicts
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    factor = 1.0 if system == GOOD_INSTRUCTION else 0.3
    n = query_number(request)
    return label(n) if _threshold(n) < factor * quality(shown_demos(request)) else "C"


class PositionalHashingEmbedder(_CachedEmbedder):
    """Hashed (block position, word) features: an order-aware stand-in for a sentence embedder
    (blocks are the demo texts, separated by blank lines)."""

    identity = "positional-hashing"

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self._dim = dim

    @property
    def dim(self) -> int:
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for b, block in enumerate(text.split("\n\n")):
                for token in re.findall(r"\w+", block.lower()):
                    digest = hashlib.sha256(f"{b}:{token}".encode()).digest()
                    out[row, int.from_bytes(digest[:4], "little") % self._dim] += 1.0
        return out


def register_toy_embedder() -> str:
    register_embedder("positional-test", lambda device: PositionalHashingEmbedder())
    return "positional-test"
