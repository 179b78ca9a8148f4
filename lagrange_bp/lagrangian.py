"""Step 3: the symbols of one sample and the Lagrangian of CONVENTIONS §1 (B = 1).

L = ℓ(y, x^N) + Σ_k λ^kᵀ (x^k − σ_k(W^k x^{k-1} + b^k)),  k = 1..N.

Every entry is its own SymPy Symbol, named as printed for a reader: ``x^1[2]`` is x^1_2,
``W^2[1,3]`` is W^2_{13}, ``λ^2[1]`` is λ^2_1 (entries 1-based, layers k = 1..N, x^0 the input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import sympy as sp

from .functions import Activation, abstract_activation, get_activation, get_loss
from .spec import NetworkSpec


@dataclass
class Symbols:
    """Column matrices of Symbols, keyed by layer k; ``latex_names`` maps each to its LaTeX."""

    x: dict[int, sp.Matrix]  # x[0] = x⁰ (input), x[k] = x^k, k = 1..N
    lam: dict[int, sp.Matrix]  # λ^k, k = 1..N
    W: dict[int, sp.Matrix]  # W^k, shape (n_k, n_{k-1})
    b: dict[int, sp.Matrix]  # b^k, shape (n_k, 1)
    z: dict[int, sp.Matrix]  # display names for z^k = W^k x^{k-1} + b^k
    y: sp.Matrix
    latex_names: dict[sp.Symbol, str] = field(default_factory=dict)


def _vector(name: str, latex: str, n: int, names: dict[sp.Symbol, str]) -> sp.Matrix:
    entries = []
    for i in range(1, n + 1):
        s = sp.Symbol(f"{name}[{i}]", real=True)
        names[s] = f"{latex}_{{{i}}}"
        entries.append(s)
    return sp.Matrix(n, 1, entries)


def make_symbols(widths: tuple[int, ...]) -> Symbols:
    """One Symbol for every x^k_i, λ^k_i, W^k_ij, b^k_i, z^k_i, x⁰_i and y_i."""
    names: dict[sp.Symbol, str] = {}
    n_layers = len(widths) - 1
    x = {k: _vector(f"x^{k}", f"x^{{({k})}}", widths[k], names) for k in range(n_layers + 1)}
    lam = {
        k: _vector(f"λ^{k}", rf"\lambda^{{({k})}}", widths[k], names)
        for k in range(1, n_layers + 1)
    }
    b = {k: _vector(f"b^{k}", f"b^{{({k})}}", widths[k], names) for k in range(1, n_layers + 1)}
    z = {k: _vector(f"z^{k}", f"z^{{({k})}}", widths[k], names) for k in range(1, n_layers + 1)}
    W = {}
    for k in range(1, n_layers + 1):
        rows = []
        for i in range(1, widths[k] + 1):
            row = []
            for j in range(1, widths[k - 1] + 1):
                s = sp.Symbol(f"W^{k}[{i},{j}]", real=True)
                names[s] = f"W^{{({k})}}_{{{i},{j}}}"
                row.append(s)
            rows.append(row)
        W[k] = sp.Matrix(rows)
    y = _vector("y", "y", widths[-1], names)
    return Symbols(x=x, lam=lam, W=W, b=b, z=z, y=y, latex_names=names)


@cache
def _abstract(k: int) -> Activation:
    return abstract_activation(k)


def layer_activations(spec: NetworkSpec, abstract: bool = False) -> dict[int, Activation]:
    """σ_k for k = 1..N: the spec's, or undefined functions σ_k with derivative σ'_k."""
    if abstract:
        return {k: _abstract(k) for k in range(1, spec.depth + 1)}
    return {k: get_activation(a) for k, a in enumerate(spec.activations, start=1)}


def preactivation(sym: Symbols, k: int) -> list[sp.Expr]:
    """z^k = W^k x^{k-1} + b^k, entry by entry."""
    return list(sym.W[k] * sym.x[k - 1] + sym.b[k])


def lagrangian(
    spec: NetworkSpec, sym: Symbols, activations: dict[int, Activation]
) -> tuple[sp.Expr, sp.Expr]:
    """L and the loss ℓ(y, x^N); each layer adds λ^kᵀ c^k with c^k = x^k − σ_k(z^k)."""
    loss = get_loss(spec.loss).apply(list(sym.x[spec.depth]), list(sym.y))
    terms = [loss]
    for k in range(1, spec.depth + 1):
        sigma_z = activations[k].apply(preactivation(sym, k))
        terms += [li * (xi - si) for li, xi, si in zip(sym.lam[k], sym.x[k], sigma_z)]
    return sp.Add(*terms), loss
