"""Step 4: the KKT (stationarity) conditions of L, solved into forward, adjoint and gradient.

One engine solves every network: a graph of constraints x_v = f_v(x_{u_1}, …, θ)
(``GraphSpec``), and the MLP as the chain x⁰ → layer1 → … → layerN (``graph.chain_graph``, in
the MLP's symbols x^k, λ^k, W^k, b^k). Every equation comes out of SymPy's differentiation of
the Lagrangian's pieces (``lagrangian.pieces``: the loss, each node's λ^vᵀ (x_v − f_v), the
weight decay):
  ∂L/∂λ^v = 0  → x_v = f_v                        (forward pass, topological order)
  ∂L/∂x_v = 0  → λ^v in terms of x and later λ    (adjoint, reverse topological order)
  ∂L/∂θ                                           (gradient; update θ ← θ − η ∂L/∂θ)

SymPy differentiates each piece written in the pre-activation symbols z^v_i; the linear map
z^v = Σ_j W_j x_{u_j} + b enters by the chain rule, dL/dv = ∂L/∂v + Σ ∂L/∂z^v_i ∂z^v_i/∂v,
each factor a SymPy derivative. This is L.diff(v) (the same function), but it differentiates
each σ once per z instead of once per weight: softmax layers, whose every output contains every
z, no longer grow the work with the square of the width. A state read by several consumers
gets one partial from each consumer's piece (the adjoint sums over consumers); a shared
parameter appears in the z of each use (its gradient sums over uses). Adjoints and gradients
are then written in the states and multipliers (CONVENTIONS §2): at the KKT point
σ(z^v) = x_v, so each application of σ becomes x_v (tanh' = 1 − x², softmax's Jacobian
S_i(δ_ij − S_j) with S = x); what remains of z (relu' = step(z), …) is written out.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import sympy as sp

from .functions import Activation
from .graph import GraphSpec, chain_graph
from .lagrangian import (
    LOSS,
    GraphSymbols,
    Symbols,
    chain_symbols,
    layer_activations,
    make_symbols,
    node_preactivation,
    pieces,
)
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec

if TYPE_CHECKING:
    from .graph_kkt import GraphDerivation


@dataclass
class Derivation:
    """The exact derivation for one sample at the spec's sizes (CONVENTIONS §3, derivation (a))."""

    spec: NetworkSpec
    abstract: bool  # True: σ_k are undefined functions with derivatives σ'_k
    symbols: Symbols
    lagrangian: sp.Expr
    loss: sp.Expr
    params: list[tuple[sp.Matrix, sp.Matrix]]  # (W^k, b^k), k = 1..N
    input: sp.Matrix  # x⁰, (n_0, 1)
    target: sp.Matrix  # y, (n_N, 1)
    stationarity: dict[sp.Symbol, sp.Expr]  # ∂L/∂s for every λ, x, W, b entry
    preactivations: list[sp.Eq]  # z^k_i = Σ_j W^k_ij x^{k-1}_j + b^k_i, for display
    forward: list[sp.Eq]  # x^k_i = ..., k = 1..N in solving order
    adjoint: list[sp.Eq]  # λ^k_i = ..., k = N..1 in solving order
    gradients: dict[sp.Symbol, sp.Expr]  # ∂L/∂W^k_ij, ∂L/∂b^k_i
    seconds: float

    def __repr__(self) -> str:
        from .display import derivation_repr

        return derivation_repr(self)

    def _repr_markdown_(self) -> str:
        from .display import derivation_markdown

        return derivation_markdown(self)

    def _repr_latex_(self) -> str:
        from .display import derivation_latex

        return derivation_latex(self)

    def param_symbols(self) -> list[sp.Symbol]:
        """All W and b entries, layer by layer, W before b, row-major."""
        out: list[sp.Symbol] = []
        for W, b in self.params:
            out += list(W) + list(b)
        return out

    def z_display(self) -> dict[sp.Expr, sp.Symbol]:
        """Map each pre-activation expression W^k x^{k-1} + b^k to its symbol z^k_i."""
        return {eq.rhs: eq.lhs for eq in self.preactivations}


def solve_linear(expr: sp.Expr, var: sp.Symbol) -> sp.Expr:
    """Solve expr = 0 for var, where expr is a·var + c with a free of var and a ≠ 0."""
    a = expr.diff(var)
    if a == 0 or var in a.free_symbols:
        raise ArithmeticError(f"stationarity condition is not linear in {var}: {expr} = 0")
    c = expr - a * var
    if var in c.free_symbols:
        c = sp.expand(c)
    return -c if a == 1 else -c / a


def partials(L: sp.Expr) -> Callable[[sp.Symbol], sp.Expr]:
    """∂L/∂v for any symbol v, differentiating only the terms of L that contain v.

    The same expression as ``L.diff(v)``, which differentiates every term; indexing the terms
    by their symbols once makes each partial cost what the few terms containing v cost.
    """
    terms = sp.Add.make_args(L)
    where: dict[sp.Symbol, list[int]] = defaultdict(list)
    for i, term in enumerate(terms):
        for s in term.free_symbols:
            where[s].append(i)
    return lambda v: sp.Add(*[terms[i].diff(v) for i in where.get(v, [])])


class ChainRule:
    """∂L/∂s for any symbol s as its terms by origin, by the chain rule through z."""

    def __init__(
        self,
        spec: GraphSpec,
        sym: GraphSymbols,
        acts: dict[str, Activation],
        weight_decay: bool = False,
    ) -> None:
        by_origin = pieces(spec, sym, acts, in_z=True, weight_decay=weight_decay)
        self.origins = list(by_origin)
        self.d = {o: partials(sp.Add(*terms)) for o, terms in by_origin.items()}
        self.has = {o: set().union(*(t.free_symbols for t in ts)) for o, ts in by_origin.items()}
        self.definition: dict[sp.Symbol, sp.Expr] = {}
        #: s → layer → the entries z^v_i whose definition has s (∂z^v_i/∂s ≠ 0)
        self.through: dict[sp.Symbol, dict[str, list[sp.Symbol]]] = defaultdict(dict)
        for n in spec.nodes:
            if n.op == "layer":
                for zi, e in zip(sym.z[n.name], node_preactivation(sym, n)):
                    self.definition[zi] = e
                    for s in e.free_symbols:
                        self.through[s].setdefault(n.name, []).append(zi)
        self.dz = {z: partials(e) for z, e in self.definition.items()}
        self.dLdz: dict[sp.Symbol, sp.Expr] = {}
        self.states = {  # σ(z^v)_i → x_v[i]; the identity's σ(z) = z has nothing to write
            s: x
            for n in spec.nodes
            if n.op == "layer"
            for s, x in zip(acts[n.params or ""].apply(list(sym.z[n.name])), sym.states[n.name])
            if not s.is_Symbol
        }

    def terms(self, s: sp.Symbol) -> dict[str, sp.Expr]:
        """∂L/∂s by origin (nonzero terms only, in the order of the origins)."""
        out: dict[str, sp.Expr] = {}
        for o in self.origins:
            parts = [self.d[o](s)] if s in self.has[o] else []
            zs = self.through[s].get(o, ()) if s in self.through else ()
            parts += [self._dLdz(z) * self.dz[z](s) for z in zs]
            term = sp.Add(*parts)
            if term != 0:
                out[o] = term
        return out

    def _dLdz(self, z: sp.Symbol) -> sp.Expr:
        if z not in self.dLdz:
            owner = next(o for o in self.origins if z in self.has[o])
            self.dLdz[z] = self.d[owner](z)
        return self.dLdz[z]

    def public(self, e: sp.Expr) -> sp.Expr:
        """σ(z^v) written as x_v, then z written out (adjoints and gradients)."""
        return e.xreplace(self.states).xreplace(self.definition)

    def stateless(self, e: sp.Expr) -> sp.Expr:
        """z written out (the forward conditions)."""
        return e.xreplace(self.definition)


@dataclass
class KKT:
    """The solved stationarity conditions of one network's L (``solve``)."""

    lagrangian: sp.Expr
    loss: sp.Expr
    stationarity: dict[sp.Symbol, sp.Expr]  # ∂L/∂s for every λ, x and parameter entry
    preactivations: list[sp.Eq]  # z^v[i] = Σ_j W_j x_{u_j} + b, for display
    forward: list[sp.Eq]  # x_v[i] = f_v, topological order
    adjoint: list[sp.Eq]  # λ^v[i] = ..., reverse topological order
    gradients: dict[sp.Symbol, sp.Expr]  # ∂L/∂θ for every parameter entry
    adjoint_terms: dict[sp.Symbol, dict[str, sp.Expr]]  # λ^v[i] = Σ over origins
    gradient_terms: dict[sp.Symbol, dict[str, sp.Expr]]  # ∂L/∂θ = Σ over uses (and decay)


def solve(
    spec: GraphSpec, sym: GraphSymbols, acts: dict[str, Activation], weight_decay: bool = False
) -> KKT:
    """Derive and solve ∂L/∂λ = 0, ∂L/∂x = 0 and ∂L/∂θ for the graph in the symbols ``sym``
    with σ per parameter set ``acts`` (see the module docstring)."""
    chain = ChainRule(spec, sym, acts, weight_decay)
    stationarity: dict[sp.Symbol, sp.Expr] = {}
    preacts, forward = _forward(spec, sym, chain, stationarity)
    adjoint, adjoint_terms = _adjoint(spec, sym, chain, stationarity)
    gradients, gradient_terms = _gradients(sym, chain, stationarity)
    written = pieces(spec, sym, acts, in_z=False, weight_decay=weight_decay)
    return KKT(
        lagrangian=sp.Add(*[t for ts in written.values() for t in ts]),
        loss=written[LOSS][0],
        stationarity=stationarity,
        preactivations=preacts,
        forward=forward,
        adjoint=adjoint,
        gradients=gradients,
        adjoint_terms=adjoint_terms,
        gradient_terms=gradient_terms,
    )


def _forward(
    spec: GraphSpec, sym: GraphSymbols, chain: ChainRule, stationarity: dict[sp.Symbol, sp.Expr]
) -> tuple[list[sp.Eq], list[sp.Eq]]:
    """∂L/∂λ^v = 0 → x_v, in topological order; and the pre-activations for display."""
    preacts: list[sp.Eq] = []
    forward: list[sp.Eq] = []
    for n in spec.nodes:
        if n.op not in ("layer", "add"):
            continue
        if n.op == "layer":
            for zi, e in zip(sym.z[n.name], node_preactivation(sym, n)):
                preacts.append(sp.Eq(zi, e, evaluate=False))
        for lam, x in zip(sym.lam[n.name], sym.states[n.name]):
            stationarity[lam] = chain.stateless(sp.Add(*chain.terms(lam).values()))
            forward.append(sp.Eq(x, solve_linear(stationarity[lam], x), evaluate=False))
    return preacts, forward


def _adjoint(
    spec: GraphSpec, sym: GraphSymbols, chain: ChainRule, stationarity: dict[sp.Symbol, sp.Expr]
) -> tuple[list[sp.Eq], dict[sp.Symbol, dict[str, sp.Expr]]]:
    """∂L/∂x_v = 0 → λ^v, in reverse topological order (each λ^v only in later λ)."""
    adjoint: list[sp.Eq] = []
    by_origin: dict[sp.Symbol, dict[str, sp.Expr]] = {}
    states = [n for n in spec.nodes if n.op in ("layer", "add")]
    for k in range(len(states) - 1, -1, -1):
        n = states[k]
        pending = {s for m in states[: k + 1] for s in sym.lam[m.name]}
        for x, lam in zip(sym.states[n.name], sym.lam[n.name]):
            terms = {o: chain.public(t) for o, t in chain.terms(x).items()}
            stationarity[x] = sp.Add(*terms.values())
            rhs = solve_linear(stationarity[x], lam)
            if rhs.free_symbols & pending:
                raise ArithmeticError(f"adjoint system is not triangular at {lam}: {rhs}")
            if terms.pop(n.name, None) != lam:
                raise ArithmeticError(f"∂L/∂{x} has not the term λ of its own node: {terms}")
            adjoint.append(sp.Eq(lam, rhs, evaluate=False))
            by_origin[lam] = {o: -t for o, t in terms.items()}
    return adjoint, by_origin


def _gradients(
    sym: GraphSymbols, chain: ChainRule, stationarity: dict[sp.Symbol, sp.Expr]
) -> tuple[dict[sp.Symbol, sp.Expr], dict[sp.Symbol, dict[str, sp.Expr]]]:
    """∂L/∂θ for every parameter entry, as a sum over the layers that use it."""
    gradients: dict[sp.Symbol, sp.Expr] = {}
    by_use: dict[sp.Symbol, dict[str, sp.Expr]] = {}
    for matrix in sym.params.values():
        for p in matrix:
            by_use[p] = {o: chain.public(t) for o, t in chain.terms(p).items()}
            stationarity[p] = gradients[p] = sp.Add(*by_use[p].values())
    return gradients, by_use


@overload
def derive(
    spec: NetworkSpec, *, abstract: bool = ..., max_weights: int | None = ...
) -> Derivation: ...
@overload
def derive(
    spec: GraphSpec, *, abstract: bool = ..., max_weights: int | None = ...
) -> GraphDerivation: ...
def derive(
    spec: NetworkSpec | GraphSpec,
    *,
    abstract: bool = False,
    max_weights: int | None = MAX_EXACT_WEIGHTS,
) -> Derivation | GraphDerivation:
    """Build L for one sample and derive the forward, adjoint and gradient equations.

    ``abstract=True`` keeps every σ_k an undefined function (σ'_k its derivative).
    ``max_weights`` bounds Σ n_k n_{k-1}; ``None`` lifts the bound. A ``GraphSpec`` (skip
    connections, shared weights, recurrence) is derived by ``graph_kkt.derive_graph``.
    """
    if isinstance(spec, GraphSpec):
        from .graph_kkt import derive_graph

        return derive_graph(spec, abstract=abstract, max_weights=max_weights)
    if not isinstance(spec, NetworkSpec):
        raise TypeError(
            f"spec must be a lagrange_bp.NetworkSpec or GraphSpec, got {type(spec).__name__}"
        )
    spec.check_exact_size(max_weights)
    start = time.perf_counter()
    sym = make_symbols(spec.widths)
    graph = chain_graph(spec)
    acts = layer_activations(spec, abstract)
    by_set = dict(zip(graph.groups, acts.values()))  # σ_k of the chain's k-th layer
    kkt = solve(graph, chain_symbols(graph, sym), by_set, weight_decay=bool(graph.weight_decay))
    n = spec.depth
    return Derivation(
        spec=spec,
        abstract=abstract,
        symbols=sym,
        lagrangian=kkt.lagrangian,
        loss=kkt.loss,
        params=[(sym.W[k], sym.b[k]) for k in range(1, n + 1)],
        input=sym.x[0],
        target=sym.y,
        stationarity=kkt.stationarity,
        preactivations=kkt.preactivations,
        forward=kkt.forward,
        adjoint=kkt.adjoint,
        gradients=kkt.gradients,
        seconds=time.perf_counter() - start,
    )
