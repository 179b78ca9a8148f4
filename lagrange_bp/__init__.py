"""lagrange_bp: backpropagation derived from the Lagrangian of a multilayer perceptron."""

from .kkt import Derivation, derive
from .model import Model, compile
from .spec import ACTIVATIONS, LOSSES, MAX_EXACT_WEIGHTS, NetworkSpec
from .verify import Report, Step, verify

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "MAX_EXACT_WEIGHTS",
    "Derivation",
    "Model",
    "NetworkSpec",
    "Report",
    "Step",
    "compile",
    "derive",
    "verify",
]
__version__ = "0.1.0"
