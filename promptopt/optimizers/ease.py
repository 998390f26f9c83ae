"""EASE: ordering-aware exemplar selection with a neural bandit (Wu et al. 2024, "Prompt
Optimization with EASE? Efficient Ordering-aware Automated Selection of Exemplars").

The search space is every ordered set of ``k`` demos from a pool of training examples (plus, if
asked, demos bootstrapped from the task model's own correct answers). An ordered set is
represented by the sentence embedding of its text (``Input: ... / Output: ...`` blocks in order,
so a permutation is a different point), and a neural network trained on the validation scores
seen so far predicts the score of unseen sets. Each step:

1. **Domain**: sample ``domain_size`` ordered sets uniformly at random (the full domain is far too
   large to score: 100 examples, k=5 give ~9e9 ordered sets).
2. **Optimal-transport pruning**: keep the ``n_keep`` sets whose exemplars are closest to the
   validation examples, measured by the exact OT cost (earth mover's distance, POT's
   ``ot.emd2``) between the uniform distribution over the set's exemplar embeddings and the
   uniform distribution over the validation examples' embeddings, cost ``1 - cosine``. This is
   the paper's task-relevance filter; it removes sets far from what the task asks about before
   the (costlier) network looks at them.
3. **NeuralUCB** (Zhou et al. 2020, with the diagonal approximation EASE's code uses): the
   network ``f`` (an MLP, retrained from the same initialisation on all results so far, Adam,
   weight decay ``lam / n``) gives the mean; the exploration bonus is
   ``nu * sqrt(sum(g**2 / Z) / m)`` with ``g`` the gradient of ``f`` with respect to its
   parameters at the candidate, ``m`` the width and ``Z`` (initially ``lam``) accumulating the
   squared gradients of the sets chosen so far. The set with the largest ``f + bonus`` (or, with
   ``bandit="ts"``, the largest draw from ``N(f, bonus^2)``) is evaluated next.
4. The chosen set is scored on a fixed subset of ``eval_size`` validation examples (the paper
   uses 20) and the result trains the network at the next step.

It starts with ``n_init`` random ordered sets (the paper's initial design), stops after
``n_steps`` evaluated sets (or at a perfect score, as the paper does) and then scores the
``final_top`` best sets on the whole validation split, so that the run's best is chosen on all
of it. The **joint** variant (more than one instruction given) searches (instruction, ordered
set) pairs: each kept set is paired with ``instructions_per_set`` random instructions and the
embedded text starts with ``Instruction: ...`` (the paper's template).

Task-model cost: ``n_bootstrap`` (train examples answered once, if bootstrapping) +
``n_steps * eval_size`` + ``final_top * (len(val) - eval_size)`` evaluations.

Resume is replay: every draw comes from ``context.rng(step, salt)``, the network's initial
weights from a seed drawn the same way (under ``torch.random.fork_rng``, so the global torch
generator is untouched), and the network is retrained from those weights on the results seen so
far, so a replayed run makes the same choices. Defaults follow the paper's code (lam=0.1,
width 100, 3 hidden layers, up to 1000 Adam steps at lr 1e-3 (stopped once the training MSE is
below 1e-4 or stops improving, ~100-300 steps), 20 validation examples per score) except
where our budgets are smaller: ``k=3`` (the paper uses 5), ``n_steps=24`` (165), ``n_init=5`` (40),
``domain_size=2000`` sampled and ``n_keep=50`` kept (50,000 and 1,000): on a CPU, embedding the
kept sets is most of a step's cost (measured ~0.05 s per 3-demo sentiment set with MiniLM on a
busy 2-core machine); on a GPU (``device="cuda"``) raise ``n_keep``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from promptopt.errors import ConfigError, DependencyMissingError
from promptopt.evaluators._base import EvalResult
from promptopt.optimizers._base import History, Strategy, StrategyContext, Trial, register_strategy
from promptopt.optimizers._demos import bootstrap_demos, dedupe_demos, demo_block, demos_text, example_block, labelled_demo, sample_examples
from promptopt.optimizers._embed import get_embedder
from promptopt.prompt import Candidate, Demo

__all__ = ["EASE", "ot_prune", "ot_distances"]


def ot_distances(set_indices: np.ndarray, pool_embeddings: np.ndarray, target_embeddings: np.ndarray) -> np.ndarray:
    """Exact OT cost between each set (a row of ``set_indices`` into ``pool_embeddings``) and
    ``target_embeddings``, both with uniform weights, ground cost ``1 - cosine`` (rows are
    L2-normalised). Order-free: a set's permutations have the same distance."""
    try:
        import ot
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise DependencyMissingError("EASE needs POT (the 'ot' package).", fix="pip install 'promptopt[ease]'.") from exc
    set_indices = np.asarray(set_indices, dtype=np.int64)
    if set_indices.ndim != 2:
        raise ValueError("set_indices must be a 2-d array (one set per row).")
    pool = np.asarray(pool_embeddings, dtype=np.float64)
    target = np.asarray(target_embeddings, dtype=np.float64)
    cost = np.clip(1.0 - pool @ target.T, 0.0, None)
    a = ot.unif(set_indices.shape[1])
    b = ot.unif(len(target))
    # Uniform marginals sum to one by construction: skip POT's check (half the time per call).
    return np.array([float(ot.emd2(a, b, np.ascontiguousarray(cost[row]), check_marginals=False)) for row in set_indices])


def ot_prune(set_indices: np.ndarray, pool_embeddings: np.ndarray, target_embeddings: np.ndarray, keep: int) -> np.ndarray:
    """Positions of the ``keep`` sets closest (in OT cost) to the target distribution, closest
    first; ties keep the sampling order."""
    distances = ot_distances(set_indices, pool_embeddings, target_embeddings)
    order = np.argsort(distances, kind="stable")
    return order[: max(0, keep)]


@contextlib.contextmanager
def _torch_threads(torch: Any, n: int) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads. The network is tiny: every op is dominated by
    dispatch, and on a shared CPU extra threads only add contention (measured on 2 busy cores:
    1000 Adam steps took 46 s with 2 threads, 2.8 s with one)."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _NeuralUCB:
    """NeuralUCB / NeuralTS with the diagonal approximation of the design matrix."""

    def __init__(
        self,
        dim: int,
        *,
        hidden_size: int,
        depth: int,
        lam: float,
        nu: float,
        epochs: int,
        lr: float,
        tol: float,
        style: str,
        device: str,
        seed: int,
    ) -> None:
        import torch
        from torch import nn

        self.torch = torch
        self.device = torch.device(device)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        # Seeded initial weights without touching the caller's global torch generator.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            layers: list[nn.Module] = [nn.Linear(dim, hidden_size), nn.ReLU()]
            for _ in range(depth - 1):
                layers += [nn.Linear(hidden_size, hidden_size), nn.ReLU()]
            layers.append(nn.Linear(hidden_size, 1))
        self.net = nn.Sequential(*layers).to(self.device)
        self.init_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self.width = hidden_size
        self.lam, self.nu, self.epochs, self.lr, self.tol, self.style = lam, nu, epochs, lr, tol, style
        self.last_epochs = 0
        self.n_params = sum(p.numel() for p in self.net.parameters())
        self.Z = torch.full((self.n_params,), float(lam), device=self.device)
        self.X: list[np.ndarray] = []
        self.y: list[float] = []
        self.mean: Any = None
        self.std: Any = None
        self.last_loss = math.nan

    def _threads(self) -> Any:
        return _torch_threads(self.torch, 1) if self.device.type == "cpu" else contextlib.nullcontext()

    def add(self, x: np.ndarray, reward: float) -> None:
        self.X.append(np.asarray(x, dtype=np.float32))
        self.y.append(float(reward))

    def _standardise(self, x: Any) -> Any:
        return (x - self.mean) / self.std

    def fit(self, candidates: np.ndarray) -> None:
        """Retrain from the initial weights on every (x, reward) so far. Inputs are standardised
        with statistics over the training points and the current candidates (a few training
        points alone would give near-zero spreads in some dimensions)."""
        with self._threads():
            self._fit(candidates)

    def _fit(self, candidates: np.ndarray) -> None:
        torch = self.torch
        self.net.load_state_dict(self.init_state)
        cand = torch.as_tensor(np.asarray(candidates, dtype=np.float32), device=self.device)
        if not self.y:  # nothing scored yet: the untrained network, pure exploration
            self.mean, self.std = cand.mean(dim=0), cand.std(dim=0).nan_to_num(1.0).clamp_min(1e-6)
            return
        X = torch.as_tensor(np.stack(self.X), device=self.device)
        ref = torch.cat([X, cand])
        self.mean = ref.mean(dim=0)
        self.std = ref.std(dim=0).nan_to_num(1.0).clamp_min(1e-6)
        Xs = self._standardise(X)
        y = torch.as_tensor(self.y, dtype=torch.float32, device=self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.lam / len(self.y))
        loss = torch.zeros(())
        self.last_epochs = 0
        checkpoints: list[float] = []
        for epoch in range(self.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(self.net(Xs).view(-1), y)
            loss.backward()
            opt.step()
            self.last_epochs = epoch + 1
            if not self.tol or (epoch + 1) % 10:
                continue
            # Stop once the fit is done: the training error is far below the noise of a score
            # on ~20 examples (0.05 per example), or it stopped improving (weight decay sets a
            # floor). Measured: ~100-300 of the paper's 1000 steps get there.
            checkpoints.append(float(loss.detach()))
            if checkpoints[-1] < self.tol or (len(checkpoints) > 5 and checkpoints[-1] > (1.0 - 0.01) * checkpoints[-6]):
                break
        self.last_loss = float(loss.detach())

    def score(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """(mean, bonus, per-candidate gradients) for each candidate row."""
        with self._threads():
            return self._score(candidates)

    def _score(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        torch = self.torch
        from torch.func import functional_call, grad, vmap

        xs = self._standardise(torch.as_tensor(np.asarray(candidates, dtype=np.float32), device=self.device))
        params = {k: v.detach() for k, v in self.net.named_parameters()}

        def f(p: dict[str, Any], x: Any) -> Any:
            return functional_call(self.net, p, (x.unsqueeze(0),)).squeeze()

        grads = vmap(grad(f), in_dims=(None, 0))(params, xs)
        G = torch.cat([grads[k].reshape(len(xs), -1) for k in params], dim=1)
        with torch.no_grad():
            mu = self.net(xs).view(-1)
        bonus = self.nu * torch.sqrt((G * G / self.Z).sum(dim=1) / self.width)
        return mu.cpu().numpy(), bonus.cpu().numpy(), G

    def choose(self, mu: np.ndarray, bonus: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> int:
        if self.style == "ts":
            value = rng.normal(mu, np.maximum(bonus, 1e-12))
        else:
            value = mu + bonus
        value = np.where(allowed, value, -np.inf)
        return int(np.argmax(value))

    def update(self, g: Any) -> None:
        self.Z += g * g / self.width


@dataclass
class _Arm:
    instruction: int
    demo_indices: tuple[int, ...]
    text: str
    candidate: Candidate


@register_strategy
class EASE(Strategy):
    """EASE exemplar selection (see the module docstring for the algorithm and its costs).

    Parameters: ``instructions`` (one = demos only; several = the joint variant), ``k`` demos per
    set, ``pool_size`` training examples in the pool, ``n_bootstrap`` training examples answered
    by the task model to add verified generated demos (0 = labelled demos only; the teacher shows
    ``bootstrap_shots`` labelled demos), ``n_init`` random sets first, ``n_steps`` sets in all,
    ``domain_size`` sets sampled per step and ``n_keep`` kept by OT, ``instructions_per_set``
    (joint variant), ``exploration`` (nu) and ``regularization`` (lambda), the network's
    ``hidden_size``/``depth``, at most ``epochs`` of Adam at ``learning_rate`` (stopping once the
    training MSE is below ``tolerance`` or improves by less than 1% over 50 steps), ``bandit`` ("ucb" or
    "ts"), ``eval_size`` validation examples per score, ``final_top`` sets scored on the whole
    validation split at the end, ``stop_at_perfect``, ``demo_format``, ``embedder`` ("minilm" or
    "hashing", see :mod:`promptopt.optimizers._embed`) and torch ``device``.
    """

    name = "ease"

    def __init__(
        self,
        *,
        instructions: Sequence[str] = (),
        k: int = 3,
        pool_size: int = 100,
        n_bootstrap: int = 0,
        bootstrap_shots: int = 3,
        n_init: int = 5,
        n_steps: int = 24,
        domain_size: int = 2000,
        n_keep: int = 50,
        instructions_per_set: int = 3,
        exploration: float = 0.1,
        regularization: float = 0.1,
        hidden_size: int = 100,
        depth: int = 3,
        epochs: int = 1000,
        learning_rate: float = 1e-3,
        tolerance: float = 1e-4,
        bandit: str = "ucb",
        eval_size: int = 20,
        final_top: int = 3,
        stop_at_perfect: bool = True,
        demo_format: str = "chat",
        embedder: str = "minilm",
        device: str = "cpu",
    ) -> None:
        self.instructions = instructions
        self.k = k
        self.pool_size = pool_size
        self.n_bootstrap = n_bootstrap
        self.bootstrap_shots = bootstrap_shots
        self.n_init = n_init
        self.n_steps = n_steps
        self.domain_size = domain_size
        self.n_keep = n_keep
        self.instructions_per_set = instructions_per_set
        self.exploration = exploration
        self.regularization = regularization
        self.hidden_size = hidden_size
        self.depth = depth
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.tolerance = tolerance
        self.bandit = bandit
        self.eval_size = eval_size
        self.final_top = final_top
        self.stop_at_perfect = stop_at_perfect
        self.demo_format = demo_format
        self.embedder = embedder
        self.device = device

    # --- setup -----------------------------------------------------------------------------
    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        task = context.task

        def need(ok: bool, message: str, fix: str) -> None:
            if not ok:
                raise ConfigError(f"ease: {message}", fix=fix)

        ints = {
            "k": self.k, "pool_size": self.pool_size, "n_init": self.n_init, "n_steps": self.n_steps,
            "domain_size": self.domain_size, "n_keep": self.n_keep, "instructions_per_set": self.instructions_per_set,
            "hidden_size": self.hidden_size, "depth": self.depth, "epochs": self.epochs, "eval_size": self.eval_size,
        }
        for pname, value in ints.items():
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{pname}={value!r} must be an integer >= 1.", f"Pass {pname} as a positive integer.")
        for pname, value in {"n_bootstrap": self.n_bootstrap, "bootstrap_shots": self.bootstrap_shots, "final_top": self.final_top}.items():
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{pname}={value!r} must be an integer >= 0.", f"Pass {pname} >= 0.")
        need(self.pool_size >= self.k, f"pool_size={self.pool_size} is smaller than k={self.k}.", "Use pool_size >= k (the paper: 100).")
        need(self.n_init <= self.n_steps, f"n_init={self.n_init} exceeds n_steps={self.n_steps}.", "Use n_init <= n_steps (the paper: about a quarter).")
        need(self.n_keep <= self.domain_size, f"n_keep={self.n_keep} exceeds domain_size={self.domain_size}.", "Keep fewer sets than are sampled (e.g. domain_size=2000, n_keep=50).")
        need(self.exploration >= 0, f"exploration={self.exploration} must be >= 0.", "Pass exploration (nu) >= 0, e.g. 0.1; 0 = greedy.")
        need(self.regularization > 0, f"regularization={self.regularization} must be > 0.", "Pass regularization (lambda) > 0, e.g. 0.1.")
        need(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0.", "Pass e.g. learning_rate=1e-3.")
        need(self.tolerance >= 0, f"tolerance={self.tolerance} must be >= 0.", "Pass e.g. tolerance=1e-4 (0 = always run every epoch).")
        need(self.bandit in ("ucb", "ts"), f"unknown bandit {self.bandit!r}.", "Use bandit='ucb' (NeuralUCB) or 'ts' (NeuralTS).")
        need(self.demo_format in ("chat", "inline"), f"unknown demo_format {self.demo_format!r}.", "Use 'chat' or 'inline'.")
        labelled = [ex for ex in task.train if ex.output is not None]
        need(
            len(labelled) >= self.k,
            f"k={self.k} demos per set but the train split has {len(labelled)} labelled examples.",
            "Lower k or give the task a larger train split.",
        )
        get_embedder(self.embedder, self.device)  # fail on a bad name before any call
        try:
            import torch
        except ImportError as exc:
            raise DependencyMissingError("ease needs torch for its neural bandit.", fix="pip install 'promptopt[ease]'.") from exc
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ConfigError(f"ease: bad torch device {self.device!r}: {exc}.", fix="Use device='cpu' or 'cuda[:N]'.") from exc
        self._instructions = list(dict.fromkeys(str(i) for i in self.instructions)) or [task.description or ""]
        self._joint = len(self._instructions) > 1
        # Rebuilt on every (re)start: replay reconstructs all of it from the history.
        self._pool: list[Demo] = []
        self._pool_emb: np.ndarray | None = None
        self._val_emb: np.ndarray | None = None
        self._eval_ids: tuple[str, ...] = ()
        self._arms: dict[str, _Arm] = {}
        self._bandit: _NeuralUCB | None = None
        self._scores: dict[str, float] = {}
        self._evaluated: list[str] = []
        self._phase = "search"
        self.step_overhead_s: list[float] = []
        """Wall seconds per search step spent in EASE itself (sampling, OT, embedding, network), not in LM calls."""
        self.step_overhead_cpu_s: list[float] = []

    # --- helpers ---------------------------------------------------------------------------
    def _np_rng(self, step: int, salt: str) -> np.random.Generator:
        return np.random.default_rng(self.context.rng(step, f"ease:{salt}").getrandbits(64))

    def _make_arm(self, instruction: int, demo_indices: Sequence[int]) -> _Arm:
        demos = tuple(self._pool[i] for i in demo_indices)
        text = demos_text(demos, self.context.task, self._instructions[instruction] if self._joint else None)
        cand = Candidate(instruction=self._instructions[instruction], demos=demos, demo_format=self.demo_format)  # type: ignore[arg-type]
        return _Arm(instruction, tuple(int(i) for i in demo_indices), text, cand)

    def _sample_sets(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` ordered sets of k distinct pool positions, uniformly; sets that repeat a
        training example (its labelled and its generated demo) are dropped."""
        P = len(self._pool)
        sets = np.argsort(rng.random((n, P)), axis=1)[:, : self.k]
        ids = np.array([d.example_id or f"#{i}" for i, d in enumerate(self._pool)], dtype=object)
        if len(set(ids)) < P:
            keep = [len(set(ids[row])) == self.k for row in sets]
            sets = sets[np.asarray(keep, dtype=bool)]
        return sets

    def _prepare(self, history: History) -> None:
        """Step 0: the pool (labelled + bootstrapped demos), the fixed validation subset, and
        the embeddings the OT pruning compares."""
        ctx, task = self.context, self.context.task
        labelled = [ex for ex in task.train if ex.output is not None]
        rng = ctx.rng(0, "ease:pool")
        pool_examples = sample_examples(labelled, self.pool_size, rng)
        pool = [labelled_demo(ex) for ex in pool_examples]
        if self.n_bootstrap:
            teacher = [labelled_demo(ex) for ex in sample_examples(pool_examples, self.bootstrap_shots, ctx.rng(0, "ease:teacher"))]
            targets = sample_examples([ex for ex in pool_examples if ex.id not in {d.example_id for d in teacher}], self.n_bootstrap, ctx.rng(0, "ease:bootstrap"))
            generated = bootstrap_demos(
                ctx, history, targets, instruction=self._instructions[0], teacher_demos=teacher, demo_format=self.demo_format,  # type: ignore[arg-type]
                metadata={"strategy": self.name},
            )
            pool = pool + generated
        self._pool = dedupe_demos(pool)
        val = list(task.val)
        self._eval_ids = tuple(ex.id for ex in sample_examples(val, min(self.eval_size, len(val)), ctx.rng(0, "ease:eval")))
        embedder = get_embedder(self.embedder, self.device)
        self._pool_emb = embedder.embed([demo_block(d, task) for d in self._pool])
        eval_examples = [task.example(i) for i in self._eval_ids]
        self._val_emb = embedder.embed([example_block(ex, task) for ex in eval_examples])
        seed = ctx.rng(0, "ease:network").getrandbits(31)
        self._bandit = _NeuralUCB(
            int(self._pool_emb.shape[1]), hidden_size=self.hidden_size, depth=self.depth, lam=float(self.regularization),
            nu=float(self.exploration), epochs=self.epochs, lr=float(self.learning_rate), tol=float(self.tolerance), style=self.bandit,
            device=self.device, seed=seed,
        )
        history.record_event(
            "ease_pool",
            {"pool": len(self._pool), "generated": sum(d.source == "generated" for d in self._pool), "eval_ids": list(self._eval_ids)},
        )

    def _trial(self, arm: _Arm, kind: str, extra: dict[str, Any] | None = None) -> Trial:
        self._arms[arm.candidate.hash] = arm
        meta = {"kind": kind, "demo_pool_indices": list(arm.demo_indices), **(extra or {})}
        if self._joint:
            meta["instruction_index"] = arm.instruction
        return Trial(arm.candidate, example_ids=self._eval_ids, split="val", metadata=meta)

    # --- ask/tell --------------------------------------------------------------------------
    def ask(self, history: History) -> list[Trial]:
        step = history.step
        if self._phase == "done":
            return []
        if step == 0:
            self._prepare(history)
            return self._initial_trials(history)
        if len(self._evaluated) >= self.n_steps or (self.stop_at_perfect and any(s >= 1.0 for s in self._scores.values())):
            self._phase = "done"
            return self._final_trials(history)
        trial = self._search_step(history, step)
        if trial is None:  # the sampled domain held only sets already evaluated
            self._phase = "done"
            return self._final_trials(history)
        return [trial]

    def _initial_trials(self, history: History) -> list[Trial]:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        rng = self._np_rng(0, "init")
        trials: list[Trial] = []
        seen: set[str] = set()
        for _ in range(20):
            sets = self._sample_sets(rng, 4 * self.n_init)
            instr = rng.integers(len(self._instructions), size=len(sets))
            for row, i in zip(sets, instr):
                arm = self._make_arm(int(i), row)
                if arm.candidate.hash in seen or history.has(arm.candidate):
                    continue
                seen.add(arm.candidate.hash)
                trials.append(self._trial(arm, "init"))
                if len(trials) == self.n_init:
                    break
            if len(trials) == self.n_init:
                break
        get_embedder(self.embedder, self.device).embed([self._arms[t.candidate.hash].text for t in trials])
        self.step_overhead_s.append(time.perf_counter() - start_wall)
        self.step_overhead_cpu_s.append(time.process_time() - start_cpu)
        return trials

    def _search_step(self, history: History, step: int) -> Trial | None:
        assert self._bandit is not None and self._pool_emb is not None and self._val_emb is not None
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        rng = self._np_rng(step, "domain")
        sets = self._sample_sets(rng, self.domain_size)
        kept = sets[ot_prune(sets, self._pool_emb, self._val_emb, self.n_keep)]
        arms: dict[str, _Arm] = {}
        n_instr = len(self._instructions)
        per_set = min(self.instructions_per_set, n_instr) if self._joint else 1
        for row in kept:
            chosen = rng.choice(n_instr, size=per_set, replace=False) if self._joint else [0]
            for i in chosen:
                arm = self._make_arm(int(i), row)
                # Only unseen candidates are embedded and scored (embedding is most of a step).
                if not history.has(arm.candidate):
                    arms.setdefault(arm.candidate.hash, arm)
        if not arms:
            return None
        candidates = list(arms.values())
        X = get_embedder(self.embedder, self.device).embed([a.text for a in candidates])
        self._bandit.fit(X)
        mu, bonus, G = self._bandit.score(X)
        pick = self._bandit.choose(mu, bonus, np.ones(len(candidates), dtype=bool), self._np_rng(step, "ts"))
        self._bandit.update(G[pick])
        arm = candidates[pick]
        self.step_overhead_s.append(time.perf_counter() - start_wall)
        self.step_overhead_cpu_s.append(time.process_time() - start_cpu)
        return self._trial(
            arm,
            "bandit",
            {
                "predicted": round(float(mu[pick]), 6),
                "bonus": round(float(bonus[pick]), 6),
                "domain": int(len(sets)),
                "kept": int(len(kept)),
                "scored": len(candidates),
                "train_loss": round(self._bandit.last_loss, 6),
                "train_epochs": self._bandit.last_epochs,
            },
        )

    def _final_trials(self, history: History) -> list[Trial]:
        if not self.final_top or len(self._eval_ids) >= len(self.context.task.val):
            return []
        ranked = sorted(self._evaluated, key=lambda h: -self._scores[h])[: self.final_top]
        return [
            Trial(self._arms[h].candidate, example_ids=None, split="val", metadata={"kind": "final"})
            for h in ranked
        ]

    def tell(self, history: History, results: list[EvalResult]) -> None:
        if self._bandit is None:
            return
        embedder = get_embedder(self.embedder, self.device)
        for er in results:
            h = er.candidate.hash
            arm = self._arms.get(h)
            if arm is None or h in self._scores or self._phase == "done":
                continue
            subset = [r for r in er.results if r.example_id in set(self._eval_ids)]
            scored = [r.score for r in subset if r.score is not None]
            self._evaluated.append(h)
            if not scored:
                # Every call failed: no evidence about this set; the network does not learn a 0.
                self._scores[h] = -math.inf
                history.record_event("ease_unscored", {"candidate": h, "errors": sum(r.failed for r in subset)})
                continue
            reward = float(np.mean(scored))
            self._scores[h] = reward
            self._bandit.add(embedder.embed([arm.text])[0], reward)
