"""The learning loop: datasets from the conversation log, trainers, the evaluation gate and versions."""

from .examples import ExportReport, export_logs, log_examples, seed_examples
from .gate import GateResult, promote, rollback
from .runs import LEARNING_RATES, METHODS, RunRequest, TrainError, run_training
from .trainers import TrainSettings, train

__all__ = [
    "ExportReport", "export_logs", "log_examples", "seed_examples", "GateResult", "promote", "rollback",
    "LEARNING_RATES", "METHODS", "RunRequest", "TrainError", "run_training", "TrainSettings", "train",
]
