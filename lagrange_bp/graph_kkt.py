"""The exact per-sample derivation for a graph (``GraphSpec``): L, forward, adjoint, gradient.

One sample (B = 1), one Symbol per entry of every node state x_v, multiplier λ^v, parameter
(a shared parameter set has one set of symbols), input and target:

  L = ℓ(y, x_outputs) + Σ_v λ^vᵀ (x_v − f_v(x_{u_1}, ..., θ)),   v over layer and add nodes

  ∂L/∂λ^v = 0 → x_v = f_v(...)                 forward, in topological order
  ∂L/∂x_v = 0 → λ^v = −∂ℓ/∂x_v + Σ_c J_cᵀ λ^c  adjoint, solved in reverse topological order
  ∂L/∂θ                                       gradient, at the KKT point = ∂J/∂θ

Nothing of the sums is written by hand. L is kept as pieces, one per origin: the loss ℓ and
each node's term λ^vᵀ (x_v − f_v). SymPy differentiates each piece (a layer's piece written in
its pre-activation symbols z^v, and z^v = Σ_j W_j x_{u_j} + b entering by the chain rule, as in
``kkt``: σ differentiated once per z), and ∂L/∂s is the sum of the pieces' partials. A state
read by several consumers c gets one nonzero partial from each consumer's piece: the adjoint
sums over the consumers. A shared parameter appears in the z of each of its uses: its gradient
sums over the uses. The per-origin terms are kept (``adjoint_terms``, ``gradient_terms``) to
show these sums; their total is the derived equation.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from functools import cache

import sympy as sp

from .functions import Activation, abstract_activation, get_activation, get_loss
from .graph import GraphSpec, NodeSpec
from .kkt import partials, solve_linear
from .lagrangian import Entry
from .spec import MAX_EXACT_WEIGHTS

LOSS = "ℓ"  # the origin name of the loss piece (never a node name)


@dataclass
class GraphSymbols:
    """Column matrices of ``Entry`` symbols, keyed by node or parameter name."""

    states: dict[str, sp.Matrix]  # every node: inputs data, zeros 0, others x_v
    lam: dict[str, sp.Matrix]  # λ^v, layer and add nodes
    z: dict[str, sp.Matrix]  # z^v, layer nodes (display symbols)
    params: dict[str, sp.Matrix]  # "p.W" (n_v, n_u), "p.b" (n_v, 1)
    y: sp.Matrix  # targets of the outputs, concatenated


def _vector(name: str, n: int) -> sp.Matrix:
    return sp.Matrix(n, 1, [Entry(f"{name}[{i}]", real=True) for i in range(1, n + 1)])


def _matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: Entry(f"{name}[{i + 1},{j + 1}]", real=True))


def make_symbols(spec: GraphSpec) -> GraphSymbols:
    """One Symbol per entry of x_v, λ^v, z^v, every parameter (once per set) and y."""
    states, lam, z = {}, {}, {}
    for n in spec.nodes:
        if n.op == "zeros":
            states[n.name] = sp.zeros(n.width, 1)
            continue
        states[n.name] = _vector(n.name, n.width)
        if n.op != "input":
            lam[n.name] = _vector(f"λ^{n.name}", n.width)
        if n.op == "layer":
            z[n.name] = _vector(f"z^{n.name}", n.width)
    params = {
        name: _matrix(name, *shape) if len(shape) == 2 else _vector(name, shape[0])
        for name, shape in spec.param_shapes().items()
    }
    return GraphSymbols(states, lam, z, params, _vector("y", sum(spec.output_widths)))


@cache
def _abstract(k: int) -> Activation:
    return abstract_activation(k)


def activations(spec: GraphSpec, abstract: bool = False) -> dict[str, Activation]:
    """σ per parameter set: the spec's, or undefined functions σ_k (k = 1.. by set)."""
    groups = spec.groups
    if abstract:
        return {g: _abstract(k) for k, g in enumerate(groups, start=1)}
    return {g: get_activation(n.activation or "") for g, n in groups.items()}


def preactivation(sym: GraphSymbols, node: NodeSpec) -> list[sp.Expr]:
    """z^v = Σ_j W_j x_{u_j} + b, entry by entry."""
    z = sym.params[node.bias_name]
    for w, u in zip(node.weight_names, node.inputs):
        z = z + sym.params[w] * sym.states[u]
    return list(z)


def node_function(
    sym: GraphSymbols, node: NodeSpec, acts: dict[str, Activation], z: list[sp.Expr]
) -> list[sp.Expr]:
    """f_v: σ(z) for a layer (z given), Σ_j x_{u_j} for an add."""
    if node.op == "layer":
        return acts[node.params or ""].apply(z)
    total = sp.zeros(node.width, 1)
    for u in node.inputs:
        total += sym.states[u]
    return list(total)


def loss_of(spec: GraphSpec, sym: GraphSymbols) -> sp.Expr:
    """ℓ = Σ_o ℓ(y_o, x_o): the outputs' states concatenated against y."""
    x = [s for o in spec.outputs for s in sym.states[o]]
    return get_loss(spec.loss).apply(x, list(sym.y))


def pieces(
    spec: GraphSpec, sym: GraphSymbols, acts: dict[str, Activation], in_z: bool
) -> dict[str, list[sp.Expr]]:
    """The terms of L by origin: each node's λ^v ⊙ (x_v − f_v), then the loss. ``in_z``: a
    layer's f_v in its symbols z^v; else with z written out."""
    out: dict[str, list[sp.Expr]] = {}
    for n in spec.nodes:
        if n.op in ("layer", "add"):
            z: list[sp.Expr] = []
            if n.op == "layer":
                z = list(sym.z[n.name]) if in_z else preactivation(sym, n)
            f = node_function(sym, n, acts, z)
            out[n.name] = [
                li * (xi - fi) for li, xi, fi in zip(sym.lam[n.name], sym.states[n.name], f)
            ]
    out[LOSS] = [loss_of(spec, sym)]
    return out


class Chain:
    """∂L/∂s for any symbol s as its terms by origin, by the chain rule through z."""

    def __init__(self, spec: GraphSpec, sym: GraphSymbols, acts: dict[str, Activation]) -> None:
        by_origin = pieces(spec, sym, acts, in_z=True)
        self.origins = list(by_origin)
        self.d = {o: partials(sp.Add(*terms)) for o, terms in by_origin.items()}
        self.has = {o: set().union(*(t.free_symbols for t in ts)) for o, ts in by_origin.items()}
        self.definition: dict[sp.Symbol, sp.Expr] = {}
        self.through: dict[sp.Symbol, list[str]] = defaultdict(list)  # s → layers whose z has s
        for n in spec.nodes:
            if n.op == "layer":
                self.definition |= dict(zip(sym.z[n.name], preactivation(sym, n)))
                for s in set().union(*(e.free_symbols for e in preactivation(sym, n))):
                    self.through[s].append(n.name)
        self.z = sym.z
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
            if s in self.through and o in self.through[s]:
                parts += [self._dLdz(z) * self.dz[z](s) for z in self.z[o]]
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
    sym = make_symbols(spec)
    acts = activations(spec, abstract)
    chain = Chain(spec, sym, acts)
    stationarity: dict[sp.Symbol, sp.Expr] = {}
    preacts, forward = _forward(spec, sym, chain, stationarity)
    adjoint, adjoint_terms = _adjoint(spec, sym, chain, stationarity)
    gradients, gradient_terms = _gradients(sym, chain, stationarity)
    written = pieces(spec, sym, acts, in_z=False)
    return GraphDerivation(
        spec=spec,
        abstract=abstract,
        symbols=sym,
        lagrangian=sp.Add(*[t for ts in written.values() for t in ts]),
        loss=written[LOSS][0],
        params=sym.params,
        input=sp.Matrix([s for name in spec.input_names for s in sym.states[name]]),
        target=sym.y,
        stationarity=stationarity,
        preactivations=preacts,
        forward=forward,
        adjoint=adjoint,
        gradients=gradients,
        adjoint_terms=adjoint_terms,
        gradient_terms=gradient_terms,
        seconds=time.perf_counter() - start,
    )


def _forward(
    spec: GraphSpec, sym: GraphSymbols, chain: Chain, stationarity: dict[sp.Symbol, sp.Expr]
) -> tuple[list[sp.Eq], list[sp.Eq]]:
    """∂L/∂λ^v = 0 → x_v, in topological order; and the pre-activations for display."""
    preacts: list[sp.Eq] = []
    forward: list[sp.Eq] = []
    for n in spec.nodes:
        if n.op not in ("layer", "add"):
            continue
        if n.op == "layer":
            for zi, e in zip(sym.z[n.name], preactivation(sym, n)):
                preacts.append(sp.Eq(zi, e, evaluate=False))
        for lam, x in zip(sym.lam[n.name], sym.states[n.name]):
            stationarity[lam] = chain.stateless(sp.Add(*chain.terms(lam).values()))
            forward.append(sp.Eq(x, solve_linear(stationarity[lam], x), evaluate=False))
    return preacts, forward


def _adjoint(
    spec: GraphSpec, sym: GraphSymbols, chain: Chain, stationarity: dict[sp.Symbol, sp.Expr]
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
    sym: GraphSymbols, chain: Chain, stationarity: dict[sp.Symbol, sp.Expr]
) -> tuple[dict[sp.Symbol, sp.Expr], dict[sp.Symbol, dict[str, sp.Expr]]]:
    """∂L/∂θ for every parameter entry, as a sum over the layers that use it."""
    gradients: dict[sp.Symbol, sp.Expr] = {}
    by_use: dict[sp.Symbol, dict[str, sp.Expr]] = {}
    for matrix in sym.params.values():
        for p in matrix:
            by_use[p] = {o: chain.public(t) for o, t in chain.terms(p).items()}
            stationarity[p] = gradients[p] = sp.Add(*by_use[p].values())
    return gradients, by_use
