"""The public surface is small and deliberate: adding or removing a name must be a visible change."""

import importlib
import subprocess
import sys

import promptopt

EXPECTED = {
    "APE", "BayesJointSearch", "EASE", "OPRO", "PE2",
    "BudgetExceeded", "Candidate", "ConfigError", "Demo", "EvalResult", "Example", "ExampleResult", "LM", "LMRequest",
    "LMResponse", "Ledger", "OptimizationResult", "PairwiseJudge", "PromptOptError", "RandomSearch", "RubricJudge",
    "Storage", "Strategy", "StrategyContext", "Task", "TaskEvaluator", "Trial", "load_instruction_induction",
    "load_prompt", "load_task", "make_lm", "open_store", "optimize", "register_strategy", "resume", "__version__",
}


def test_all_is_pinned():
    assert set(promptopt.__all__) >= EXPECTED
    extra = set(promptopt.__all__) - EXPECTED
    assert not extra, f"new public names {extra}: add them to EXPECTED on purpose"
    for name in promptopt.__all__:
        assert hasattr(promptopt, name), name


def test_every_error_derives_from_one_root():
    errors = importlib.import_module("promptopt.errors")
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), errors.PromptOptError), name


def test_import_is_light():
    """`import promptopt` must not pull heavy optional engines (litellm, torch, llama.cpp, optuna)."""
    code = "import sys, promptopt; print(','.join(m for m in ('litellm','torch','llama_cpp','optuna','ot') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
