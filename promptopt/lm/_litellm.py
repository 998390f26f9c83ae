"""The litellm backend: every hosted provider and any OpenAI-compatible server.

``LiteLLM("openai/gpt-4o-mini")``, ``LiteLLM("anthropic/claude-3-5-haiku-latest")``,
``LiteLLM("hosted_vllm/Qwen2.5-7B", api_base="http://gpu:8000/v1")``,
``LiteLLM("openai/smollm2", api_base="http://127.0.0.1:8080/v1", api_key="sk-local")``.

Retries are the limiter's job: litellm's and the OpenAI SDK's own retries are switched off, and
each provider error is mapped onto promptopt's error tree (transient, configuration,
unavailable). The API key lives in memory only, as a ``SecretStr``: it is never part of the
identity, the cache key, ``repr``, logs, or an exception's text (it is scrubbed from provider
messages, and provider exceptions are not chained to ours).
"""

from __future__ import annotations

import asyncio
import difflib
import email.utils
import os
import re
import socket
import time
from typing import Any, Sequence

from pydantic import SecretStr

from promptopt.errors import DependencyMissingError, LMConfigError, LMError, LMTransientError, LMUnavailableError, UnknownNameError
from promptopt.lm._types import BaseLM, LMRequest, LMResponse, TokenLogprob
from promptopt.lm._wrapper import attach_partial, derive_seed

__all__ = ["LiteLLM"]

# Environment variables that hold credentials (OPENAI_API_KEY, HF_TOKEN, AZURE_API_SECRET...).
_CREDENTIAL_ENV = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|ACCESS_KEY)", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s'\",;]+", re.IGNORECASE)

# Providers that speak the OpenAI wire protocol to a server the user runs. For them promptopt
# sends ``max_tokens`` itself: litellm turns it into ``max_completion_tokens`` for some model
# names (o1/o3/gpt-5...), which llama-cpp-python's server ignores (it then generates to the end
# of the context).
_OPENAI_COMPATIBLE = {"openai", "custom_openai", "openai_like", "hosted_vllm", "lm_studio", "llamafile"}
_SELF_HOSTED_WITHOUT_BASE = {"custom_openai", "openai_like", "hosted_vllm", "lm_studio", "llamafile"}


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price table
    try:
        import litellm
    except ImportError:  # pragma: no cover - depends on the environment
        raise DependencyMissingError("The litellm backend needs the litellm package.", fix="pip install 'promptopt[litellm]'.") from None
    return litellm


class _PerRequestFailure(Exception):
    """A provider refusal that concerns one request only (too long, content policy): failure data."""

    def __init__(self, error: LMError) -> None:
        super().__init__(error.message)
        self.error = error


class LiteLLM(BaseLM):
    """A model reached through litellm.

    ``model``: a litellm model string, ``provider/model`` (``openai/...``, ``anthropic/...``,
    ``hosted_vllm/...``, ``ollama/...``) or a bare name litellm knows (``gpt-4o-mini``).
    ``api_base``: the server URL for self-hosted/OpenAI-compatible servers. ``api_key``: taken
    from the provider's usual environment variable when None. ``timeout``: per HTTP call,
    seconds. ``extra``: more keyword arguments for ``litellm.completion`` (e.g. ``top_p``).
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        timeout: float = 60,
        extra: dict[str, Any] | None = None,
    ) -> None:
        litellm = _litellm()
        self.model = model
        self.provider = self._validate(litellm, model)
        self.api_base = api_base.rstrip("/") if api_base else None
        self.timeout = float(timeout)
        self.extra = dict(extra or {})
        for reserved in ("api_key", "messages", "model"):
            if reserved in self.extra:
                raise LMConfigError(f"extra must not set {reserved!r}.", fix=f"Pass {reserved} as its own argument of LiteLLM.")
        self._api_key = SecretStr(api_key) if api_key else None
        self.identity = f"litellm:{model}@{self.api_base or ''}"
        self._force_max_tokens = self.provider in _OPENAI_COMPATIBLE and (self.api_base is not None or self.provider in _SELF_HOSTED_WITHOUT_BASE)
        try:
            supported = litellm.get_supported_openai_params(model=model, custom_llm_provider=self.provider) or []
        except Exception:  # unknown to litellm's parameter tables: assume the OpenAI set
            supported = ["n", "seed", "logprobs"]
        self._supports_n = "n" in supported

    @staticmethod
    def _validate(litellm: Any, model: str) -> str:
        providers = sorted(p.value if hasattr(p, "value") else str(p) for p in litellm.provider_list)
        if "/" in model:
            provider = model.split("/", 1)[0]
            if provider in providers:
                return provider
            close = difflib.get_close_matches(provider, providers, n=5, cutoff=0.5)
            raise UnknownNameError(
                f"Unknown model provider {provider!r} in model string {model!r}" + (f"; did you mean {', '.join(close)}?" if close else "."),
                fix="Use a litellm provider prefix such as openai/, anthropic/, hosted_vllm/, ollama/ (list: https://docs.litellm.ai/docs/providers), or 'embedded' for the local model.",
            )
        try:
            return str(litellm.get_llm_provider(model)[1])
        except Exception:
            close = difflib.get_close_matches(model, list(litellm.model_cost), n=5, cutoff=0.6)
            raise UnknownNameError(
                f"litellm does not know which provider serves the model {model!r}" + (f"; did you mean {', '.join(close)}?" if close else "."),
                fix="Prefix the model with its provider (e.g. openai/gpt-4o-mini, hosted_vllm/<name> with api_base=...), or use 'embedded' for the local model.",
            ) from None

    # ------------------------------------------------------------------ request / response

    def _kwargs(self, request: LMRequest, n: int, index: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.message_dicts,
            "temperature": request.temperature,
            "timeout": self.timeout,
            "num_retries": 0,  # the limiter retries
            "max_retries": 0,  # ...and the OpenAI SDK must not retry underneath it
            "drop_params": True,  # a provider without seed/logprobs still answers
            **self.extra,
        }
        if self._force_max_tokens:
            kwargs["extra_body"] = {**kwargs.get("extra_body", {}), "max_tokens": request.max_tokens}
        else:
            kwargs["max_tokens"] = request.max_tokens
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key.get_secret_value()
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if n > 1:
            kwargs["n"] = n
        if request.seed is not None:
            kwargs["seed"] = derive_seed(int(request.seed), request.sample_id, index)
        if request.logprobs:
            kwargs["logprobs"] = True
        return kwargs

    def _plan(self, request: LMRequest) -> list[int]:
        """Samples per HTTP call: all ``n`` in one when the provider supports ``n``, else one each."""
        if request.n <= 1 or self._supports_n:
            return [max(request.n, 1)]
        return [1] * request.n

    def _parse(self, raw: Any, response: LMResponse) -> None:
        litellm = _litellm()
        for choice in raw.choices:
            response.texts.append(choice.message.content or "")
            response.finish_reasons.append(choice.finish_reason or "stop")
            content = getattr(getattr(choice, "logprobs", None), "content", None)
            if content is None and isinstance(getattr(choice, "logprobs", None), dict):
                content = choice.logprobs.get("content")
            if content is not None:
                response.logprobs = (response.logprobs or []) + [[TokenLogprob(_get(t, "token"), float(_get(t, "logprob"))) for t in content]]
        usage = getattr(raw, "usage", None)
        if usage is not None:
            response.usage.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
            response.usage.completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            response.cost_usd += float(litellm.completion_cost(completion_response=raw) or 0.0)
        except Exception:  # model not in litellm's price table (self-hosted): cost unknown, counted as 0
            pass
        response.model = str(getattr(raw, "model", "") or self.model)

    def _complete_one(self, request: LMRequest) -> LMResponse:
        litellm = _litellm()
        response = LMResponse(model=self.model)
        started = time.perf_counter()
        for index, n in enumerate(self._plan(request)):
            try:
                raw = litellm.completion(**self._kwargs(request, n, index))
            except Exception as exc:  # mapped below, outside the except block: no chained provider text
                error = self._map_error(exc)
            else:
                self._parse(raw, response)
                continue
            return self._raise_or_fail(error, started)
        response.latency_s = time.perf_counter() - started
        return response

    async def _acomplete_one(self, request: LMRequest) -> LMResponse:
        litellm = _litellm()
        response = LMResponse(model=self.model)
        started = time.perf_counter()
        for index, n in enumerate(self._plan(request)):
            try:
                raw = await litellm.acompletion(**self._kwargs(request, n, index))
            except Exception as exc:
                error = self._map_error(exc)
            else:
                self._parse(raw, response)
                continue
            return self._raise_or_fail(error, started)
        response.latency_s = time.perf_counter() - started
        return response

    def _raise_or_fail(self, error: LMError | _PerRequestFailure, started: float) -> LMResponse:
        if isinstance(error, _PerRequestFailure):
            return LMResponse.failure(error.error, model=self.model, latency_s=time.perf_counter() - started)
        raise error

    def complete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        out: list[LMResponse | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                out[i] = self._complete_one(request)
            except LMError as exc:
                raise attach_partial(exc, out)
        return out  # type: ignore[return-value]

    async def acomplete(self, requests: Sequence[LMRequest]) -> list[LMResponse]:
        requests = list(requests)
        results = await asyncio.gather(*(self._acomplete_one(r) for r in requests), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise attach_partial(errors[0], [None if isinstance(r, BaseException) else r for r in results])
        return list(results)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ errors

    def _scrub(self, text: str) -> str:
        # The key may come from the provider's environment variable (litellm reads it there when
        # api_key is None), and providers echo it in 401 messages: mask every credential in sight.
        secrets = [self._api_key.get_secret_value()] if self._api_key is not None else []
        secrets += [v for k, v in os.environ.items() if _CREDENTIAL_ENV.search(k) and len(v) >= 8]
        for secret in sorted(set(secrets), key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return _BEARER.sub(r"\1***", text)

    def _where(self) -> str:
        return self.api_base or f"the {self.provider} API"

    def _map_error(self, exc: BaseException) -> LMError | _PerRequestFailure:
        litellm = _litellm()
        status = getattr(exc, "status_code", None)
        try:
            status = int(status) if status is not None else None
        except (TypeError, ValueError):
            status = None
        detail = self._scrub(f"{type(exc).__name__}: {str(exc).strip()}")[:500]
        where = self._where()
        if _refused(exc):
            return LMUnavailableError(
                f"Cannot reach {where} for {self.model!r} (connection refused or host not found).",
                fix=f"Start the server or fix api_base (now {self.api_base!r}); check with: curl {self.api_base or '<api_base>'}/models",
            )
        if isinstance(exc, (litellm.ContextWindowExceededError, litellm.ContentPolicyViolationError)):
            return _PerRequestFailure(LMConfigError(f"{self.model!r} refused the request: {detail}", fix="Shorten the prompt or change its content."))
        if isinstance(exc, litellm.AuthenticationError) or status == 401:
            return LMConfigError(
                f"Authentication failed for {self.model!r} at {where}: {detail}",
                fix="Check the API key (argument api_key or the provider's environment variable, e.g. OPENAI_API_KEY).",
            )
        if isinstance(exc, litellm.PermissionDeniedError) or status == 403:
            return LMConfigError(f"Permission denied for {self.model!r} at {where}: {detail}", fix="Check that the key may use this model and that its account is active.")
        if isinstance(exc, litellm.NotFoundError) or status == 404:
            return LMConfigError(
                f"Model or endpoint not found: {self.model!r} at {where}: {detail}",
                fix="Check the model name (as the provider spells it) and api_base (OpenAI-compatible servers usually end in /v1).",
            )
        if isinstance(exc, litellm.RateLimitError) or status == 429:
            return LMTransientError(f"Rate limited by {where}: {detail}", fix="Lower rpm/tpm or max_concurrency.", retry_after=_retry_after(exc))
        if isinstance(exc, (litellm.Timeout, litellm.APIConnectionError, litellm.InternalServerError, litellm.ServiceUnavailableError)) or (
            status is not None and (status >= 500 or status in (408, 409, 425))
        ):
            return LMTransientError(f"Transient failure of {where}: {detail}", fix="Retried by the limiter; if it persists, check the server.", retry_after=_retry_after(exc))
        if isinstance(exc, (litellm.BadRequestError, litellm.UnsupportedParamsError)) or (status is not None and 400 <= status < 500):
            return LMConfigError(f"{where} rejected the request for {self.model!r}: {detail}", fix="Check the model name and the request parameters (extra=...) this provider accepts.")
        # Unknown failures (a provider SDK quirk, a dropped stream) are retried, then recorded.
        return LMTransientError(f"Unexpected failure calling {self.model!r} at {where}: {detail}", fix="Retried by the limiter; if it persists, report it with this message.")

    def __repr__(self) -> str:
        return f"LiteLLM({self.model!r}, api_base={self.api_base!r})"


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name)


def _refused(exc: BaseException) -> bool:
    """Whether the error chain holds a refused connection or an unresolvable host."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, (ConnectionRefusedError, socket.gaierror)):
            return True
        if type(node).__name__ == "ConnectError" and ("refused" in str(node).lower() or "name or service not known" in str(node).lower()):
            return True
        node = node.__cause__ or node.__context__
    return False


def _retry_after(exc: BaseException) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if the provider sent one."""
    for source in (getattr(exc, "litellm_response_headers", None), getattr(getattr(exc, "response", None), "headers", None)):
        if not source:
            continue
        try:
            if source.get("retry-after-ms"):
                return float(source.get("retry-after-ms")) / 1000.0
            value = source.get("retry-after")
        except (AttributeError, TypeError, ValueError):
            continue
        if not value:
            continue
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:  # an HTTP date
            return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            continue
    return None
