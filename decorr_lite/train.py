"""Training on CIFAR-10, by the names the notebooks and the README use.

The code lives in modules by job: ``config`` (``TrainConfig`` and its checks), ``record`` (a run's
result and key), ``runs`` (your run cache, then the run bank, and the ``out`` folder), ``training`` (``train_ssl`` and the training step),
``evaluation`` (what a run measures) and ``classroom`` (what the notebooks share). This module
gathers their public names, so that ``from decorr_lite.train import train_ssl`` keeps working.
"""

from .classroom import seed_runs, step_cost, summary_table, train_runs
from .config import TrainConfig, classroom_settings
from .evaluation import embed, recalibrated
from .record import RUN_FORMAT, TrainResult, run_key
from .runs import cached_run, load_run
from .settings import autocast
from .training import build_loss, check_runnable, prepare_model, train_ssl, training_step

__all__ = [
    "RUN_FORMAT",
    "TrainConfig",
    "TrainResult",
    "autocast",
    "build_loss",
    "cached_run",
    "check_runnable",
    "classroom_settings",
    "embed",
    "load_run",
    "prepare_model",
    "recalibrated",
    "run_key",
    "seed_runs",
    "step_cost",
    "summary_table",
    "train_runs",
    "train_ssl",
    "training_step",
]
