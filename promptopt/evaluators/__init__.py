"""Evaluators: score candidates on examples, per example, failures kept as data.

Reference metrics and the task evaluator; LLM judges (rubric, pairwise); statistics (bootstrap
confidence intervals, paired tests, racing).
"""

from promptopt.evaluators import _judges, _stats
from promptopt.evaluators._base import EvalResult, Evaluator, ExampleResult
from promptopt.evaluators._judges import *  # noqa: F401,F403 - re-exported: _judges.__all__
from promptopt.evaluators._metrics import METRIC_NAMES, Metric, get_metric, make_metric, normalize_answer
from promptopt.evaluators._stats import *  # noqa: F401,F403 - re-exported: _stats.__all__
from promptopt.evaluators._task_evaluator import TaskEvaluator

__all__ = [
    "EvalResult",
    "Evaluator",
    "ExampleResult",
    "METRIC_NAMES",
    "Metric",
    "TaskEvaluator",
    "get_metric",
    "make_metric",
    "normalize_answer",
    *_judges.__all__,
    *_stats.__all__,
]
