"""Language models: one protocol (batch of requests in, responses out), backends and wrappers.

``make_lm("embedded")`` builds the standard stack ``CachedLM(LedgeredLM(LimitedLM(backend)))``;
``lm.ledger`` counts what it cost. Heavy dependencies (llama-cpp-python, litellm) load on first
use, not on import.
"""

from promptopt.lm._cache import CachedLM
from promptopt.lm._factory import default_cache_path, make_backend, make_lm
from promptopt.lm._faults import FAULT_KINDS, FaultyLM
from promptopt.lm._ledger import Ledger, LedgeredLM
from promptopt.lm._limiter import LimitedLM
from promptopt.lm._litellm import LiteLLM
from promptopt.lm._llamacpp import LlamaCppLM, default_model_path
from promptopt.lm._scripted import ScriptedLM
from promptopt.lm._types import LM, BaseLM, LMRequest, LMResponse, Message, TokenLogprob, Usage, canonical_json

__all__ = [
    "LM",
    "BaseLM",
    "LMRequest",
    "LMResponse",
    "Message",
    "TokenLogprob",
    "Usage",
    "canonical_json",
    "make_lm",
    "make_backend",
    "default_cache_path",
    "default_model_path",
    "LlamaCppLM",
    "LiteLLM",
    "ScriptedLM",
    "CachedLM",
    "Ledger",
    "LedgeredLM",
    "LimitedLM",
    "FaultyLM",
    "FAULT_KINDS",
]
