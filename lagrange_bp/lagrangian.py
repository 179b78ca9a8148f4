"""Step 3: the symbols of one sample and the Lagrangian of CONVENTIONS §1 (B = 1).

L = ℓ(y, x^N) + Σ_k λ^kᵀ (x^k − σ_k(W^k x^{k-1} + b^k)),  k = 1..N,
plus (α/2) Σ_k ‖W^k‖² when the spec has a weight decay α (the symbol ``ALPHA``; its value
enters only the kernels, so that the proofs hold for every α).

Every entry is its own SymPy Symbol, named as printed for a reader: ``x^1[2]`` is x^1_2,
``W^2[1,3]`` is W^2_{13}, ``λ^2[1]`` is λ^2_1 (entries 1-based, layers k = 1..N, x^0 the input).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from .functions import Activation, abstract_activation, get_activation, get_loss
from .spec import NetworkSpec


@dataclass
class Symbols:
    """Column matrices of ``Entry`` symbols, keyed by layer k."""

    x: dict[int, sp.Matrix]  # x[0] = x⁰ (input), x[k] = x^k, k = 1..N
    lam: dict[int, sp.Matrix]  # λ^k, k = 1..N
    W: dict[int, sp.Matrix]  # W^k, shape (n_k, n_{k-1})
    b: dict[int, sp.Matrix]  # b^k, shape (n_k, 1)
    z: dict[int, sp.Matrix]  # display names for z^k = W^k x^{k-1} + b^k
    y: sp.Matrix


_GREEK = {"λ": r"\lambda"}

#: the weight decay α of the objective's (α/2) Σ_k ‖W^k‖²
ALPHA = sp.Symbol("α", nonnegative=True)


class Entry(sp.Symbol):
    """One entry of a vector or matrix, named as printed for a reader (``x^1[2]``), whose LaTeX
    is the textbook's x^{(1)}_{2}: stock ``sympy.latex`` and Jupyter show it that way."""

    @classmethod
    def class_key(cls) -> tuple[int, int, str]:
        """Sort as a plain Symbol of the same name, so that SymPy's canonical orderings (and the
        sign it picks inside an even function: cosh(x − y) or cosh(y − x)) do not change."""
        return sp.Symbol.class_key()

    def _latex(self, printer: object) -> str:
        base, _, rest = self.name.partition("[")
        base, _, layer = base.partition("^")
        tex = _GREEK.get(base, base) + (f"^{{({layer})}}" if layer else "")
        return f"{tex}_{{{rest.rstrip(']')}}}" if rest else tex


def _vector(name: str, n: int) -> sp.Matrix:
    return sp.Matrix(n, 1, [Entry(f"{name}[{i}]", real=True) for i in range(1, n + 1)])


def make_symbols(widths: tuple[int, ...]) -> Symbols:
    """One Symbol for every x^k_i, λ^k_i, W^k_ij, b^k_i, z^k_i, x⁰_i and y_i."""
    layers = range(1, len(widths))
    W = {
        k: sp.Matrix(
            widths[k],
            widths[k - 1],
            lambda i, j, k=k: Entry(f"W^{k}[{i + 1},{j + 1}]", real=True),
        )
        for k in layers
    }
    return Symbols(
        x={k: _vector(f"x^{k}", widths[k]) for k in (0, *layers)},
        lam={k: _vector(f"λ^{k}", widths[k]) for k in layers},
        W=W,
        b={k: _vector(f"b^{k}", widths[k]) for k in layers},
        z={k: _vector(f"z^{k}", widths[k]) for k in layers},
        y=_vector("y", widths[-1]),
    )


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


def decay(spec: NetworkSpec, sym: Symbols) -> list[sp.Expr]:
    """The terms (α/2) (W^k_ij)² of the objective's weight decay (α/2) Σ_k ‖W^k‖², one per
    weight (so that ∂/∂W^k_ij reads one term); none when the spec has no weight decay."""
    if not spec.weight_decay:
        return []
    return [ALPHA / 2 * w**2 for k in sym.W for w in sym.W[k]]


def lagrangian(
    spec: NetworkSpec, sym: Symbols, activations: dict[int, Activation]
) -> tuple[sp.Expr, sp.Expr]:
    """L and the loss ℓ(y, x^N); L has the weight decay terms, if any, and each layer adds
    λ^kᵀ c^k with c^k = x^k − σ_k(z^k)."""
    loss = get_loss(spec.loss).apply(list(sym.x[spec.depth]), list(sym.y))
    terms = [loss, *decay(spec, sym)]
    for k in range(1, spec.depth + 1):
        sigma_z = activations[k].apply(preactivation(sym, k))
        terms += [li * (xi - si) for li, xi, si in zip(sym.lam[k], sym.x[k], sigma_z)]
    return sp.Add(*terms), loss
