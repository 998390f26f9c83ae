"""Strategies. Importing this package registers every built-in strategy by name."""

from promptopt.optimizers._base import STRATEGIES, History, Strategy, StrategyContext, Trial, make_strategy, register_strategy
from promptopt.optimizers.random_search import RandomSearch

__all__ = ["Strategy", "StrategyContext", "History", "Trial", "register_strategy", "make_strategy", "STRATEGIES", "RandomSearch"]
