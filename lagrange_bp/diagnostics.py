"""How well the KKT conditions hold at a model's states, measured independently of its kernels.

The states x^k and multipliers λ^k come from the generated kernels; the residuals are computed
with the hand-written reference (no SymPy, no generated code):
  forward   max |x^N − σ_N(W^N x^{N-1} + b^N)|, reference against kernels   (∂L/∂λ = 0)
  adjoint   max |∂L/∂x^k|: |λ^N + (1/B) ∂ℓ/∂x^N| and |λ^k − W^{k+1ᵀ} Dσ(z^{k+1})ᵀ λ^{k+1}|
  gradient  ‖∂L/∂θ‖, which falls as training approaches a stationary point of J.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import numpy as np

from . import reference
from .model import Model, Params

if TYPE_CHECKING:
    from .graph_model import GraphModel, GraphParams


def kkt_residuals(model: Model, params: Params, X: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """forward and adjoint residuals (≈ 0 up to rounding) and the gradient norm at ``params``.

    Correct for every activation and loss, custom ones included: the residuals are computed by
    ``reference`` from the records' definitions, not from the kernels' formulas. Where the
    exact λ^N is infinite (y/x with a softmax output that underflowed to 0), entries that are
    not finite on either side are left out. ``forward_relative`` and ``adjoint_relative``
    divide each residual by the largest term it compares, so that float64's rounding unit ε is
    their yardstick (the absolute residuals scale with the states and with λ ~ 1/B).
    """
    spec = model.spec
    lams = model.adjoint(params, X, Y)
    zs, xs = reference.forward(params, spec.activations, np.asarray(X, float))
    n, B = spec.depth, len(X)
    out = model.forward(params, X)
    forward = float(np.max(np.abs(out - xs[n])))
    with np.errstate(divide="ignore", invalid="ignore"):
        _, df = reference.loss_terms(spec.loss, xs[n], Y)
    pairs = [(lams[n - 1], -df / B)]  # ∂L/∂x^N = λ^N + (1/B) ∂ℓ/∂x = 0
    for k in range(1, n):  # ∂L/∂x^k = λ^k − W^{k+1ᵀ} Dσ(z^{k+1})ᵀ λ^{k+1}, samples as rows
        G = reference.vjp(spec.activations[k], zs[k + 1], xs[k + 1], lams[k])
        pairs.append((lams[k - 1], G @ params[k][0]))
    adjoint = relative = 0.0
    for lam, solved in pairs:
        gap = lam - solved
        ok = np.isfinite(gap)
        if ok.any():
            size = max(float(np.max(np.abs(lam[ok]))), float(np.max(np.abs(solved[ok]))))
            worst = float(np.max(np.abs(gap[ok])))
            adjoint = max(adjoint, worst)
            relative = max(relative, worst / size if size > 0 else 0.0)
    _, grads = model.loss_and_grad(params, X, Y)
    gradient = float(np.sqrt(sum(np.sum(gW**2) + np.sum(gb**2) for gW, gb in grads)))
    scale = max(float(np.max(np.abs(out))), float(np.max(np.abs(xs[n]))))
    return {
        "forward": forward,
        "adjoint": adjoint,
        "gradient": gradient,
        "forward_relative": forward / scale if scale > 0 else 0.0,
        "adjoint_relative": relative,
    }


@overload
def finite_difference_gradient(
    model: Model, params: Params, X: np.ndarray, Y: np.ndarray, h: float = ...
) -> Params: ...
@overload
def finite_difference_gradient(
    model: GraphModel, params: GraphParams, X: np.ndarray, Y: np.ndarray, h: float = ...
) -> GraphParams: ...
def finite_difference_gradient(
    model: Model | GraphModel,
    params: Params | GraphParams,
    X: np.ndarray,
    Y: np.ndarray,
    h: float = 1e-5,
) -> Params | GraphParams:
    """∂J/∂θ by central differences (J(θ + h e) − J(θ − h e)) / 2h, entry by entry, shaped
    like ``params`` (which are restored exactly): a list of (W, b) for a ``Model``, a dict
    name → array for a compiled graph (``GraphModel``)."""

    def central(arr: np.ndarray) -> np.ndarray:
        grad = np.empty(arr.shape)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = model.loss(params, X, Y)  # type: ignore[arg-type]
            arr[i] = old - h
            down = model.loss(params, X, Y)  # type: ignore[arg-type]
            arr[i] = old
            grad[i] = (up - down) / (2 * h)
        return grad

    if isinstance(params, dict):
        return {name: central(arr) for name, arr in params.items()}
    return [(central(W), central(b)) for W, b in params]


def reference_gradient_gap(model: Model, params: Params, X: np.ndarray, Y: np.ndarray) -> float:
    """Largest |generated ∂L/∂θ − hand-written reference backprop| entry at ``params``."""
    _, grads = model.loss_and_grad(params, X, Y)
    spec = model.spec
    _, ref, _ = reference.loss_and_grad(
        params, spec.activations, spec.loss, X, Y, spec.weight_decay
    )
    return max(float(np.max(np.abs(a - b))) for g, r in zip(grads, ref) for a, b in zip(g, r))
