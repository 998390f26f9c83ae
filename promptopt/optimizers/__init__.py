"""Strategies. Importing this package registers every built-in strategy by name."""

from promptopt.optimizers._base import STRATEGIES, History, Strategy, StrategyContext, Trial, make_strategy, register_strategy
from promptopt.optimizers.ape import APE
from promptopt.optimizers.bayes import BayesJointSearch
from promptopt.optimizers.ease import EASE
from promptopt.optimizers.opro import OPRO
from promptopt.optimizers.pe2 import PE2
from promptopt.optimizers.random_search import RandomSearch

__all__ = ["Strategy", "StrategyContext", "History", "Trial", "register_strategy", "make_strategy", "STRATEGIES", "RandomSearch", "APE", "PE2", "OPRO", "EASE", "BayesJointSearch"]
