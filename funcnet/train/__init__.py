"""Training: the pure step, the runners that execute it, ``fit``, and scoring.

========== ==================================================================
step       ``make_step`` (the textbook optimizer step), ``make_epoch`` (lax.scan), per-step
           randomness
runners    the five ways ``fit`` runs the step (NumPy, jit, scan, mesh-jit, mesh-scan)
           behind one ``Runner`` interface
metrics    ``predict``, ``accuracy`` and the metrics ``fit`` records
loop       ``fit``, ``History``, ``Resume``, ``Interrupted``
========== ==================================================================
"""

from __future__ import annotations

from .loop import History, Interrupted, Resume, fit
from .metrics import Metric, accuracy, evaluate, predict, probabilities, scored_params, scoring_net
from .runners import Runner, compiled, make_runner, to_backend
from .step import make_epoch, make_step, step_rngs

__all__ = [
    "History",
    "Interrupted",
    "Metric",
    "Resume",
    "Runner",
    "accuracy",
    "compiled",
    "evaluate",
    "fit",
    "make_epoch",
    "make_runner",
    "make_step",
    "predict",
    "probabilities",
    "scored_params",
    "scoring_net",
    "step_rngs",
    "to_backend",
]
