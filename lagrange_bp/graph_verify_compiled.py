"""``verify(graph_model)``: the generated graph kernels run exactly over GF(p) (CONVENTIONS §3).

As ``verify_compiled`` does for the chain: every kernel (forward, loss, adjoint, loss_and_grad,
sgd_step) is executed from its source, exactly as ``model.source()`` shows it, in the exact
namespace of ``exact_numpy``, at the graph's widths and B = 2, and compared with an
independent reference: J(θ) composed node by node from the activation and loss records, with
forward-mode tangents pushed through the graph in topological order (a state read by several
consumers passes its tangent to each; a shared parameter's tangent enters at every use):

  forward   every output entry;      loss   J;
  adjoint   Σ λ_v ⊙ U = −dJ/dt for x_v + t U (x_v seen as free, its consumers downstream);
  gradient  Σ ∂L/∂θ ⊙ V = dJ/dt for θ + t V;   sgd_step  Σ (θ' − θ) ⊙ V = −η dJ/dt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from .exact_numpy import ExactScalar, FieldArray, namespace, random_array, summed
from .field import FRESH, Deg, Oracle, P, number
from .functions import get_activation, get_loss
from .graph_model import GraphModel
from .verify import Progress, Report
from .verify_compiled import (
    BATCH_SIZE,
    Mismatch,
    Reference,
    dot_p,
    kernel_proof,
    matmul_p,
    mod_p,
)

Arrays = dict[str, FieldArray]


class GraphReference(Reference):
    """J(θ) of a graph in GF(p) from the records, with directional derivatives."""

    def __init__(self, model: GraphModel, oracle: Oracle) -> None:
        self.gspec, self.oracle = model.spec, oracle
        self.loss = get_loss(model.spec.loss)
        self.alpha = number(sp.Rational(model.spec.decay.numerator, model.spec.decay.denominator))
        self.weights = [w for s in model.spec.groups.values() for w in s.weight_names]
        self.max_deg = 0

    def run_graph(self, params: Arrays, xs: list[FieldArray], ys: list[FieldArray]) -> None:
        """Node values, each layer's local Jacobian, J and ∂f/∂x at every output entry."""
        self.theta = {k: a.a for k, a in params.items()}
        self.x: dict[str, np.ndarray] = {}  # type: ignore[assignment]
        self.z: dict[str, np.ndarray] = {}  # type: ignore[assignment]
        self.local: dict[str, Any] = {}  # type: ignore[assignment]
        inputs = iter(xs)
        for n in self.gspec.nodes:
            if n.op == "input":
                self.x[n.name] = next(inputs).a
            elif n.op == "zeros":
                self.x[n.name] = np.zeros((BATCH_SIZE, n.width), dtype=object)
            elif n.op == "add":
                self.x[n.name] = mod_p(sum(self.x[u] for u in n.inputs))
            else:
                z = self.theta[n.bias_name] + sum(
                    matmul_p(self.x[u], self.theta[w].T) for w, u in zip(n.weight_names, n.inputs)
                )
                self.z[n.name] = mod_p(z)
                act = get_activation(n.activation or "identity")
                self.x[n.name], self.local[n.name], _ = self._activate(act, self.z[n.name], FRESH)
        self._graph_loss([y.a for y in ys])

    def _graph_loss(self, ys: list[np.ndarray]) -> None:
        """J as the kernels print it (each output's kernel_terms), and ∂f/∂x per output."""
        self.out_dfdx: dict[str, np.ndarray] = {}
        total = 0
        for o, y in zip(self.gspec.outputs, ys):
            x, act = self.x[o], get_activation(self.gspec.node(o).activation or "identity")
            self.out_dfdx[o] = self.loss_derivative(x, y)
            total += self.loss_terms(act, x, self.z.get(o, x), y)
        self.J = total * pow(BATCH_SIZE, P - 2, P) % P
        half = self.alpha * pow(2, P - 2, P)  # + (α/2) Σ ‖W‖², each shared matrix once
        self.J = (
            self.J + half * sum(dot_p(self.theta[w], self.theta[w]) for w in self.weights)
        ) % P

    def tangent(self, state: str | None = None, U: Any = None, param: str | None = None) -> int:
        """dJ/dt with x_state + t U (x_state free) or θ_param + t U, pushed forward."""
        t: dict[str, np.ndarray] = {}
        for n in self.gspec.nodes:
            if n.name == state:
                t[n.name] = U
            elif n.op in ("input", "zeros"):
                t[n.name] = np.zeros((BATCH_SIZE, n.width), dtype=object)
            elif n.op == "add":
                t[n.name] = mod_p(sum(t[u] for u in n.inputs))
            else:
                t[n.name] = self._layer_tangent(n, t, param, U)
        total = sum(dot_p(self.out_dfdx[o], t[o]) for o in self.gspec.outputs)
        decay = self.alpha * dot_p(self.theta[param], U) if param in self.weights else 0
        return (total * pow(BATCH_SIZE, P - 2, P) + decay) % P

    def _layer_tangent(self, n: Any, t: dict[str, np.ndarray], param: str | None, V: Any) -> Any:
        tz = np.zeros((BATCH_SIZE, n.width), dtype=object)
        for w, u in zip(n.weight_names, n.inputs):
            tz = tz + matmul_p(t[u], self.theta[w].T)
            if w == param:
                tz = tz + matmul_p(self.x[u], V.T)
        if n.bias_name == param:
            tz = tz + np.broadcast_to(V, tz.shape)
        local = self.local[n.name]
        return (
            mod_p(local * tz)
            if local.ndim == 2
            else mod_p(np.einsum("bij,bj->bi", local, mod_p(tz)))
        )


@dataclass
class GraphTrial:
    params: Arrays
    xs: list[FieldArray]
    ys: list[FieldArray]
    eta: ExactScalar
    oracle: Oracle
    ref: GraphReference
    rng: random.Random


def _trial(model: GraphModel, rng: random.Random) -> GraphTrial:
    spec = model.spec
    params = {k: random_array(rng, s) for k, s in spec.param_shapes().items()}
    xs = [random_array(rng, (BATCH_SIZE, w)) for w in spec.input_widths]
    ys = [random_array(rng, (BATCH_SIZE, w)) for w in spec.output_widths]
    if get_loss(spec.loss).classification:
        for y in ys:
            y.a[:, -1] = (1 - np.sum(y.a[:, :-1], axis=1)) % P
    oracle = Oracle(rng.randrange(2**64))
    ref = GraphReference(model, oracle)
    ref.run_graph(params, xs, ys)
    return GraphTrial(params, xs, ys, ExactScalar(rng.randrange(1, P), FRESH), oracle, ref, rng)


def _run(model: GraphModel, kernel: str, t: GraphTrial, *args: Any) -> tuple[Any, int]:
    source = model.source(kernel)
    globals_, engine = namespace(t.oracle, model.kernels[kernel].constants)
    exec(compile(source, f"<lagrange_bp-exact-{kernel}>", "exec"), globals_)
    shapes = model.buffer_shapes(kernel, BATCH_SIZE)
    buf = tuple(random_array(t.rng, s) for s in shapes)
    return globals_[kernel](*args, buf), engine.calls


def _copy(params: Arrays) -> Arrays:
    return {k: FieldArray(a.a.copy(), a.deg) for k, a in params.items()}


def _check(model: GraphModel, kernel: str, t: GraphTrial) -> tuple[str, int]:
    """Run one kernel at the trial's point and compare it with the reference."""
    if kernel == "forward":
        outs, calls = _run(model, kernel, t, t.params, tuple(t.xs))
        for o, out in zip(model.spec.outputs, outs):
            if (out.a != t.ref.x[o]).any():
                raise Mismatch(f"forward: X^{o} differs from the reference")
        return "every output entry", calls
    if kernel == "sgd_step":
        after = _copy(t.params)
        value, calls = _run(model, kernel, t, after, tuple(t.xs), tuple(t.ys), t.eta)
        for name, old in t.params.items():
            V = random_array(t.rng, old.a.shape).a
            step = dot_p(mod_p(after[name].a - old.a), V)
            if step != (-t.eta.v * t.ref.tangent(param=name, U=V)) % P:
                raise Mismatch(f"sgd_step: {name} is not {name} − η ∂L/∂{name} (random direction)")
        _same_loss(kernel, value, t)
        return "J, and every parameter after one step with a random η", calls
    result, calls = _run(model, kernel, t, t.params, tuple(t.xs), tuple(t.ys))
    if kernel == "loss":
        _same_loss(kernel, result, t)
        return "J", calls
    if kernel == "adjoint":
        for v, lam in result.items():
            U = random_array(t.rng, lam.a.shape).a
            if (-dot_p(lam.a, U)) % P != t.ref.tangent(state=v, U=U):
                raise Mismatch(f"adjoint: λ^{v} is not −∂J/∂x_{v} (random direction)")
        return f"λ_v for the {len(result)} layer and add nodes", calls
    value, grads = result
    _same_loss(kernel, value, t)
    for name, g in grads.items():
        V = random_array(t.rng, g.a.shape).a
        if dot_p(g.a, V) != t.ref.tangent(param=name, U=V):
            raise Mismatch(f"loss_and_grad: ∂L/∂{name} is not ∂J/∂{name} (random direction)")
    return f"J and ∂L/∂θ for the {len(grads)} parameters", calls


def _same_loss(kernel: str, value: object, t: GraphTrial) -> None:
    if ExactScalar.of(value).v != t.ref.J:
        raise Mismatch(f"{kernel}: the loss J differs from the reference")


def verify_graph_model(
    model: GraphModel, *, trials: int = 1, seed: int = 0, progress: Progress | None = None
) -> Report:
    """Prove that a graph model's generated kernels compute what the chain rule gives."""
    return kernel_proof(
        model,
        lambda rng: _trial(model, rng),
        lambda kernel, point: _check(model, kernel, point),
        trials,
        seed,
        progress,
        "through J(θ) pushed through the graph",
    )


__all__ = ["Deg", "GraphReference", "summed", "verify_graph_model"]
