"""The exact per-sample derivation for a graph (``GraphSpec``): L, forward, adjoint, gradient.

One sample (B = 1), one Symbol per entry of every node state x_v, multiplier λ^v, parameter
(a shared parameter set has one set of symbols), input and target (``lagrangian.graph_symbols``):

  L = ℓ(y, x_outputs) + Σ_v λ^vᵀ (x_v − f_v(x_{u_1}, ..., θ)),   v over layer and add nodes

  ∂L/∂λ^v = 0 → x_v = f_v(...)                 forward, in topological order
  ∂L/∂x_v = 0 → λ^v = −∂ℓ/∂x_v + Σ_c J_cᵀ λ^c  adjoint, solved in reverse topological order
  ∂L/∂θ                                       gradient, at the KKT point = ∂J/∂θ

Nothing of the sums is written by hand: ``kkt.solve``, the one engine that also derives the
MLP (as a chain graph), differentiates L's pieces by origin. A state read by several consumers
c gets one nonzero partial from each consumer's piece: the adjoint sums over the consumers. A
shared parameter appears in the z of each of its uses: its gradient sums over the uses. The
per-origin terms are kept (``adjoint_terms``, ``gradient_terms``) to show these sums; their
total is the derived equation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

from .functions import Activation, get_activation
from .graph import GraphSpec
from .kkt import solve
from .lagrangian import GraphSymbols, abstract_layer, graph_symbols
from .spec import MAX_EXACT_WEIGHTS


def activations(spec: GraphSpec, abstract: bool = False) -> dict[str, Activation]:
    """σ per parameter set: the spec's, or undefined functions σ_k (k = 1.. by set)."""
    groups = spec.groups
    if abstract:
        return {g: abstract_layer(k) for k, g in enumerate(groups, start=1)}
    return {g: get_activation(n.activation or "") for g, n in groups.items()}


@dataclass
class GraphDerivation:
    """The exact derivation of a graph for one sample (``derive(graph_spec)``)."""

    spec: GraphSpec
    abstract: bool
    symbols: GraphSymbols
    lagrangian: sp.Expr
    loss: sp.Expr
    params: dict[str, sp.Matrix]  # name → W (n_v, n_u) or b (n_v, 1)
    input: sp.Matrix  # the inputs' entries, concatenated (n_X, 1)
    target: sp.Matrix  # y, (n_Y, 1)
    stationarity: dict[sp.Symbol, sp.Expr]  # ∂L/∂s for every λ, x and parameter entry
    preactivations: list[sp.Eq]  # z^v[i] = Σ_j W_j x_{u_j} + b, for display
    forward: list[sp.Eq]  # x_v[i] = f_v, topological order
    adjoint: list[sp.Eq]  # λ^v[i] = ..., reverse topological order
    gradients: dict[sp.Symbol, sp.Expr]  # ∂L/∂θ for every parameter entry
    adjoint_terms: dict[sp.Symbol, dict[str, sp.Expr]]  # λ^v[i] = Σ over origins (ℓ, consumers)
    gradient_terms: dict[sp.Symbol, dict[str, sp.Expr]]  # ∂L/∂θ = Σ over uses
    seconds: float

    def param_symbols(self) -> list[sp.Symbol]:
        """Every parameter entry, set by set, W_j before b, row-major."""
        return [s for m in self.params.values() for s in m]

    def z_display(self) -> dict[sp.Expr, sp.Symbol]:
        """Map each Σ_j W_j x_{u_j} + b to its symbol z^v[i]."""
        return {eq.rhs: eq.lhs for eq in self.preactivations}

    def __str__(self) -> str:
        from .graph_render import graph_text

        return graph_text(self)

    def _repr_markdown_(self) -> str:
        from .graph_render import to_markdown

        return to_markdown(self)

    def _repr_latex_(self) -> str:
        from .graph_render import graph_display_latex

        return graph_display_latex(self)

    def __repr__(self) -> str:
        return (
            f"<GraphDerivation {self.spec.describe()}: {len(self.forward)} forward, "
            f"{len(self.adjoint)} adjoint, {len(self.gradients)} gradient equations>"
        )


def derive_graph(
    spec: GraphSpec, *, abstract: bool = False, max_weights: int | None = MAX_EXACT_WEIGHTS
) -> GraphDerivation:
    """Build L for one sample of the graph and derive forward, adjoint and gradient equations.

    ``abstract=True`` keeps σ an undefined function per parameter set (σ'_k its derivative).
    """
    if not isinstance(spec, GraphSpec):
        raise TypeError(f"spec must be a lagrange_bp.GraphSpec, got {type(spec).__name__}")
    spec.check_exact_size(max_weights)
    start = time.perf_counter()
    sym = graph_symbols(spec)
    kkt = solve(spec, sym, activations(spec, abstract), weight_decay=bool(spec.weight_decay))
    return GraphDerivation(
        spec=spec,
        abstract=abstract,
        symbols=sym,
        lagrangian=kkt.lagrangian,
        loss=kkt.loss,
        params=sym.params,
        input=sp.Matrix([s for name in spec.input_names for s in sym.states[name]]),
        target=sym.y,
        stationarity=kkt.stationarity,
        preactivations=kkt.preactivations,
        forward=kkt.forward,
        adjoint=kkt.adjoint,
        gradients=kkt.gradients,
        adjoint_terms=kkt.adjoint_terms,
        gradient_terms=kkt.gradient_terms,
        seconds=time.perf_counter() - start,
    )
