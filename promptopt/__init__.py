"""promptopt: automatic prompt optimization behind one ask/tell API.

The public surface is this module's ``__all__`` (pinned by tests/test_public_api.py);
everything in a module whose name starts with ``_`` is private.
"""

from promptopt.data import load_instruction_induction, load_task
from promptopt.errors import BudgetExceeded, ConfigError, PromptOptError
from promptopt.evaluators import EvalResult, ExampleResult, PairwiseJudge, RubricJudge, TaskEvaluator
from promptopt.lm import LM, Ledger, LMRequest, LMResponse, make_lm
from promptopt.optimizers import APE, EASE, OPRO, PE2, BayesJointSearch, RandomSearch, Strategy, StrategyContext, Trial, register_strategy
from promptopt.prompt import Candidate, Demo
from promptopt.run import OptimizationResult, optimize, resume
from promptopt.store import Storage, load_prompt, open_store
from promptopt.task import Example, Task

__version__ = "0.1.0"

__all__ = [
    "APE",
    "BayesJointSearch",
    "EASE",
    "OPRO",
    "PE2",
    "BudgetExceeded",
    "Candidate",
    "ConfigError",
    "Demo",
    "EvalResult",
    "Example",
    "ExampleResult",
    "LM",
    "LMRequest",
    "LMResponse",
    "Ledger",
    "OptimizationResult",
    "PairwiseJudge",
    "PromptOptError",
    "RandomSearch",
    "RubricJudge",
    "Storage",
    "Strategy",
    "StrategyContext",
    "Task",
    "TaskEvaluator",
    "Trial",
    "load_instruction_induction",
    "load_prompt",
    "load_task",
    "make_lm",
    "open_store",
    "optimize",
    "register_strategy",
    "resume",
    "__version__",
]
