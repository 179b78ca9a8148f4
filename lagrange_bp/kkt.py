"""Step 4: the KKT (stationarity) conditions of L, solved into forward, adjoint and gradient.

Every equation below comes out of SymPy's differentiation of the Lagrangian:
  ∂L/∂λ^k = 0  → x^k = σ_k(z^k)                    (forward pass, k = 1..N)
  ∂L/∂x^k = 0  → λ^k in terms of x and λ^{k+1}      (adjoint, back-substituted from k = N)
  ∂L/∂W^k, ∂L/∂b^k                                  (gradient; update θ ← θ − η ∂L/∂θ)

SymPy differentiates L written in the pre-activation symbols z^k_i; the linear map
z^k = W^k x^{k-1} + b^k enters by the chain rule, dL/dv = ∂L/∂v + Σ ∂L/∂z^k_i ∂z^k_i/∂v, each
factor a SymPy derivative. This is L.diff(v) (the same function), but it differentiates each
σ_k once per z instead of once per weight: softmax layers, whose every output contains every z,
no longer grow the work with the square of the width. Adjoints and gradients are then written
in the states and multipliers (CONVENTIONS §2): at the KKT point σ_k(z^k) = x^k, so each
application of σ_k becomes x^k (tanh' = 1 − x², softmax's Jacobian S_i(δ_ij − S_j) with S = x);
what remains of z (relu' = step(z), …) is written out as W^k x^{k-1} + b^k.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import sympy as sp

from .functions import Activation, get_loss
from .graph import GraphSpec
from .lagrangian import (
    Symbols,
    decay,
    lagrangian,
    layer_activations,
    make_symbols,
    preactivation,
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


def _total_derivative(
    spec: NetworkSpec, sym: Symbols, acts: dict[int, Activation]
) -> tuple[
    Callable[[sp.Symbol], sp.Expr], Callable[[sp.Expr], sp.Expr], Callable[[sp.Expr], sp.Expr]
]:
    """(dL/dv by the chain rule through z, the public form of an adjoint or gradient (σ_k(z^k)
    as x^k, z written out), and the plain form with z written out (the forward conditions))."""
    n = spec.depth
    loss = get_loss(spec.loss).apply(list(sym.x[n]), list(sym.y))
    terms = [loss, *decay(spec, sym)]
    for k in range(1, n + 1):
        sigma_z = acts[k].apply(list(sym.z[k]))
        terms += [li * (xi - si) for li, xi, si in zip(sym.lam[k], sym.x[k], sigma_z)]
    dLz = partials(sp.Add(*terms))
    definition = {z: e for k in range(1, n + 1) for z, e in zip(sym.z[k], preactivation(sym, k))}
    through: dict[sp.Symbol, list[sp.Symbol]] = defaultdict(list)
    for z, e in definition.items():
        for v in e.free_symbols:
            through[v].append(z)
    dz = {z: partials(e) for z, e in definition.items()}  # ∂z/∂v: one term W x of the sum
    dLdz: dict[sp.Symbol, sp.Expr] = {}

    def total(v: sp.Symbol) -> sp.Expr:
        for z in through.get(v, []):
            if z not in dLdz:
                dLdz[z] = dLz(z)
        return dLz(v) + sp.Add(*[dLdz[z] * dz[z](v) for z in through.get(v, [])])

    states = {  # σ_k(z^k)_i → x^k_i; the identity's σ(z) = z has nothing to write
        s: x
        for k in range(1, n + 1)
        for s, x in zip(acts[k].apply(list(sym.z[k])), sym.x[k])
        if not s.is_Symbol
    }

    def stateless(e: sp.Expr) -> sp.Expr:
        return e.xreplace(definition)

    def public(e: sp.Expr) -> sp.Expr:
        return e.xreplace(states).xreplace(definition)

    return total, public, stateless


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
    n = spec.depth
    sym = make_symbols(spec.widths)
    acts = layer_activations(spec, abstract)
    L, loss = lagrangian(spec, sym, acts)
    total, public, stateless = _total_derivative(spec, sym, acts)

    stationarity: dict[sp.Symbol, sp.Expr] = {}
    preacts: list[sp.Eq] = []
    forward: list[sp.Eq] = []
    for k in range(1, n + 1):  # ∂L/∂λ^k = 0 → x^k
        for zk, expr in zip(sym.z[k], preactivation(sym, k)):
            preacts.append(sp.Eq(zk, expr, evaluate=False))
        for lam, xk in zip(sym.lam[k], sym.x[k]):
            stationarity[lam] = stateless(total(lam))
            forward.append(sp.Eq(xk, solve_linear(stationarity[lam], xk), evaluate=False))

    adjoint: list[sp.Eq] = []
    solved: set[sp.Symbol] = set()
    for k in range(n, 0, -1):  # ∂L/∂x^k = 0 → λ^k, back-substitution from layer N
        for xk, lam in zip(sym.x[k], sym.lam[k]):
            stationarity[xk] = public(total(xk))
            rhs = solve_linear(stationarity[xk], lam)
            pending = {s for m in range(1, k + 1) for s in sym.lam[m]} - solved
            if rhs.free_symbols & pending:
                raise ArithmeticError(f"adjoint system is not triangular at {lam}: {rhs}")
            adjoint.append(sp.Eq(lam, rhs, evaluate=False))
        solved |= set(sym.lam[k])

    gradients: dict[sp.Symbol, sp.Expr] = {}
    for k in range(1, n + 1):  # ∂L/∂W^k, ∂L/∂b^k
        for p in list(sym.W[k]) + list(sym.b[k]):
            stationarity[p] = gradients[p] = public(total(p))

    return Derivation(
        spec=spec,
        abstract=abstract,
        symbols=sym,
        lagrangian=L,
        loss=loss,
        params=[(sym.W[k], sym.b[k]) for k in range(1, n + 1)],
        input=sym.x[0],
        target=sym.y,
        stationarity=stationarity,
        preactivations=preacts,
        forward=forward,
        adjoint=adjoint,
        gradients=gradients,
        seconds=time.perf_counter() - start,
    )
