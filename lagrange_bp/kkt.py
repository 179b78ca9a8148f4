"""Step 4: the KKT (stationarity) conditions of L, solved into forward, adjoint and gradient.

Every equation below comes out of SymPy's differentiation of the Lagrangian:
  ∂L/∂λ^k = 0  → x^k = σ_k(z^k)                    (forward pass, k = 1..N)
  ∂L/∂x^k = 0  → λ^k in terms of x and λ^{k+1}      (adjoint, back-substituted from k = N)
  ∂L/∂W^k, ∂L/∂b^k                                  (gradient; update θ ← θ − η ∂L/∂θ)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sympy as sp

from .lagrangian import Symbols, lagrangian, layer_activations, make_symbols, preactivation
from .spec import MAX_EXACT_WEIGHTS, NetworkSpec


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


def derive(
    spec: NetworkSpec,
    *,
    abstract: bool = False,
    max_weights: int | None = MAX_EXACT_WEIGHTS,
) -> Derivation:
    """Build L for one sample and derive the forward, adjoint and gradient equations.

    ``abstract=True`` keeps every σ_k an undefined function (σ'_k its derivative).
    ``max_weights`` bounds Σ n_k n_{k-1}; ``None`` lifts the bound.
    """
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
    spec.check_exact_size(max_weights)
    start = time.perf_counter()
    n = spec.depth
    sym = make_symbols(spec.widths)
    L, loss = lagrangian(spec, sym, layer_activations(spec, abstract))

    stationarity: dict[sp.Symbol, sp.Expr] = {}
    preacts: list[sp.Eq] = []
    forward: list[sp.Eq] = []
    for k in range(1, n + 1):  # ∂L/∂λ^k = 0 → x^k
        for zk, expr in zip(sym.z[k], preactivation(sym, k)):
            preacts.append(sp.Eq(zk, expr, evaluate=False))
        for lam, xk in zip(sym.lam[k], sym.x[k]):
            stationarity[lam] = L.diff(lam)
            forward.append(sp.Eq(xk, solve_linear(stationarity[lam], xk), evaluate=False))

    adjoint: list[sp.Eq] = []
    solved: set[sp.Symbol] = set()
    for k in range(n, 0, -1):  # ∂L/∂x^k = 0 → λ^k, back-substitution from layer N
        for xk, lam in zip(sym.x[k], sym.lam[k]):
            stationarity[xk] = L.diff(xk)
            rhs = solve_linear(stationarity[xk], lam)
            pending = {s for m in range(1, k + 1) for s in sym.lam[m]} - solved
            if rhs.free_symbols & pending:
                raise ArithmeticError(f"adjoint system is not triangular at {lam}: {rhs}")
            adjoint.append(sp.Eq(lam, rhs, evaluate=False))
        solved |= set(sym.lam[k])

    gradients: dict[sp.Symbol, sp.Expr] = {}
    for k in range(1, n + 1):  # ∂L/∂W^k, ∂L/∂b^k
        for p in list(sym.W[k]) + list(sym.b[k]):
            stationarity[p] = gradients[p] = L.diff(p)

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
