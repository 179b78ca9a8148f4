"""lagrange_bp: backpropagation derived from the Lagrangian of a multilayer perceptron."""

from .checkpoint import CheckpointError
from .functions import ACTIVATIONS, LOSSES
from .kkt import Derivation, derive
from .model import Model, compile
from .rules import RuleReport, check_rule
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec
from .train import TrainingDiverged, TrainResult, evaluate, train
from .verify import Report, Step, verify

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "MAX_EXACT_WEIGHTS",
    "CheckpointError",
    "Derivation",
    "Model",
    "NetworkSpec",
    "Report",
    "RuleReport",
    "Step",
    "TrainResult",
    "TrainingDiverged",
    "check_rule",
    "compile",
    "derive",
    "evaluate",
    "train",
    "verify",
]
__version__ = "0.1.0"
