"""lagrange_bp: backpropagation derived from the Lagrangian of a multilayer perceptron."""

from typing import Any

from . import grading
from .checkpoint import CheckpointError
from .functions import ACTIVATIONS, LOSSES
from .generic import GenericDerivation
from .generic import derive_generic as derive_general
from .grading import Grade, grade
from .graph import Graph, GraphSpec, chain_graph, recurrent
from .graph_general import verify_graph_general
from .graph_json import graph_from_json
from .graph_kkt import GraphDerivation
from .graph_model import GraphModel
from .kkt import Derivation, derive
from .model import Model, compile
from .rules import RuleReport, check_rule
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec
from .train import TrainingDiverged, TrainResult, evaluate, train
from .verify import Report, Step, verify
from .verify_general import verify_general


def to_torch(spec: NetworkSpec, dtype: Any = None, device: Any = None, **options: Any) -> Any:
    """The spec as a ``torch.nn.Module`` whose backward is the derived adjoint, printed for
    PyTorch (``torch_export.to_torch``: dtype torch.float64 by default, ``seed=``,
    ``params=``). PyTorch is imported here, not with the package: ImportError without it."""
    from .torch_export import to_torch as export

    return export(spec, dtype, device, **options)


__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "MAX_EXACT_WEIGHTS",
    "CheckpointError",
    "Derivation",
    "GenericDerivation",
    "Grade",
    "Graph",
    "GraphDerivation",
    "GraphModel",
    "GraphSpec",
    "Model",
    "NetworkSpec",
    "Report",
    "RuleReport",
    "Step",
    "TrainResult",
    "TrainingDiverged",
    "chain_graph",
    "check_rule",
    "compile",
    "derive",
    "derive_general",
    "evaluate",
    "grade",
    "grading",
    "graph_from_json",
    "recurrent",
    "to_torch",
    "train",
    "verify",
    "verify_general",
    "verify_graph_general",
]
__version__ = "0.1.0"
