"""Hand-written chain-rule backpropagation in NumPy, used only to check the model.

Independent of the derivation: no SymPy differentiation and no generated code. It reads each
function's *definition* — the SymPy expression of the activation or loss record, as written —
and evaluates it with forward-mode dual numbers whose rules (value and derivative of exp, log,
tanh, sigmoid, relu, …) are written here by hand. A built-in is one such primitive, so it runs
exactly the hand-written code; a user's expression is differentiated by the same rules, entry by
entry. Softmax, the one vector activation, has its hand-written forward and Jacobian product.

Samples are rows. Layers are k = 1..N everywhere; lists returned here (gradients, λ) are in
layer order, index k − 1, like ``params``. The textbook δ recursion:
δ^N = ∂J/∂z^N, δ^k = (δ^{k+1} W^{k+1}) ⊙ σ'_k(z^k), ∂J/∂W^k = δ^kᵀ x^{k-1}, λ^k = −∂J/∂x^k.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.special
import sympy as sp

from .functions import X_VAR, Y_VAR, Z_VAR, Activation, get_activation, get_loss
from .primitives import relu, sigmoid, softmax, softplus, step

Params = list[tuple[np.ndarray, np.ndarray]]
Dual = tuple[np.ndarray, np.ndarray]  # (value, derivative with respect to the seeded input)
Rule = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _zero(u: np.ndarray) -> np.ndarray:
    return np.zeros_like(u)


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return np.asarray(scipy.special.expit(u))


#: f and f' of every primitive a definition can contain, by hand
RULES: dict[type, Rule] = {
    sp.exp: (np.exp, np.exp),
    sp.log: (np.log, lambda u: 1.0 / u),
    sp.tanh: (np.tanh, lambda u: 1.0 - np.tanh(u) ** 2),
    sp.sinh: (np.sinh, np.cosh),
    sp.cosh: (np.cosh, np.sinh),
    sp.sin: (np.sin, np.cos),
    sp.cos: (np.cos, lambda u: -np.sin(u)),
    sp.tan: (np.tan, lambda u: 1.0 + np.tan(u) ** 2),
    sp.atan: (np.arctan, lambda u: 1.0 / (1.0 + u * u)),
    sp.Abs: (np.abs, np.sign),
    sp.sign: (np.sign, _zero),
    sigmoid: (_sigmoid, lambda u: _sigmoid(u) * _sigmoid(-u)),
    softplus: (lambda u: np.logaddexp(0.0, u), _sigmoid),
    relu: (lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(float)),
    step: (lambda u: (u > 0).astype(float), _zero),
}


def dual(expr: sp.Expr, env: dict[sp.Symbol, Dual]) -> Dual:
    """(value, derivative) of expr, entry by entry, by the sum, product, power and chain rules."""
    if expr.is_Symbol:
        return env[expr]
    if expr.is_number:
        shape = np.shape(next(iter(env.values()))[0])
        return np.full(shape, float(expr)), np.zeros(shape)
    if expr.is_Add or expr.is_Mul:
        value, deriv = dual(expr.args[0], env)
        for a in expr.args[1:]:
            v, d = dual(a, env)
            if expr.is_Add:
                value, deriv = value + v, deriv + d
            else:
                value, deriv = value * v, deriv * v + value * d
        return value, deriv
    if expr.is_Pow:
        (b, db), (p, dp) = dual(expr.base, env), dual(expr.exp, env)
        power = b**p
        if expr.exp.is_number:  # d(b^c) = c b^(c−1) db
            return power, p * b ** (p - 1) * db
        return power, power * (dp * np.log(b) + p * db / b)  # d(b^p) = b^p (p' log b + p b'/b)
    if type(expr) in RULES and len(expr.args) == 1:
        f, df = RULES[type(expr)]
        u, du = dual(expr.args[0], env)
        return f(u), df(u) * du
    raise ValueError(f"the reference has no hand-written rule for {type(expr).__name__}")


def softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_vjp(z: np.ndarray, x: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    """J_softmax(z)ᵀ upstream = x ⊙ (upstream − Σ_j x_j upstream_j), row by row."""
    return x * (upstream - (x * upstream).sum(axis=1, keepdims=True))


#: vector activations, by their SymPy function: (forward by rows, Jacobian product)
VECTOR = {softmax: (softmax_rows, softmax_vjp)}


def _vector(act: Activation) -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    function = getattr(act, "function", None)
    if function not in VECTOR:
        raise ValueError(f"the reference has no hand-written rule for activation {act.text!r}")
    return VECTOR[function]


def activate(activation: str, z: np.ndarray) -> np.ndarray:
    """σ(z) by rows, for a built-in name or an expression in z."""
    act = get_activation(activation)
    if not act.elementwise:
        return _vector(act)[0](z)
    return dual(act.definition, {Z_VAR: (z, np.ones_like(z))})[0]  # type: ignore[attr-defined]


def vjp(activation: str, z: np.ndarray, x: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    """Dσ(z)ᵀ · upstream, row by row."""
    act = get_activation(activation)
    if not act.elementwise:
        return _vector(act)[1](z, x, upstream)
    return dual(act.definition, {Z_VAR: (z, np.ones_like(z))})[1] * upstream  # type: ignore[attr-defined]


def loss_terms(loss: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(x, y) and ∂f/∂x entry by entry, for ℓ = Σ_j f(x_j, y_j)."""
    term = get_loss(loss).term
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    return dual(term, {X_VAR: (x, np.ones_like(x)), Y_VAR: (y, np.zeros_like(y))})


def forward(
    params: Params, activations: tuple[str, ...], X: np.ndarray
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Pre-activations z^k (k = 1..N) and states x^k (k = 0..N), keyed by k."""
    zs: dict[int, np.ndarray] = {}
    xs = {0: np.asarray(X, float)}
    for k, ((W, b), act) in enumerate(zip(params, activations), start=1):
        zs[k] = xs[k - 1] @ W.T + b
        xs[k] = activate(act, zs[k])
    return zs, xs


def loss_and_grad(
    params: Params,
    activations: tuple[str, ...],
    loss: str,
    X: np.ndarray,
    Y: np.ndarray,
    weight_decay: float = 0.0,
) -> tuple[float, Params, list[np.ndarray]]:
    """J, ∇J by the chain rule, and λ^k = −∂J/∂x^k, k = 1..N (lists in layer order).

    With ``weight_decay`` α, J += (α/2) Σ_k ‖W^k‖² and ∂J/∂W^k += α W^k (biases not decayed).
    """
    zs, xs = forward(params, activations, X)
    n, B = len(params), len(X)
    f, df = loss_terms(loss, xs[n], Y)
    lam = {n: -df / B}  # λ^N = −∂J/∂x^N
    grads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in range(n, 0, -1):
        delta = -vjp(activations[k - 1], zs[k], xs[k], lam[k])  # δ^k = ∂J/∂z^k
        grads[k] = (delta.T @ xs[k - 1] + weight_decay * params[k - 1][0], delta.sum(axis=0))
        if k > 1:
            lam[k - 1] = -(delta @ params[k - 1][0])
    penalty = weight_decay / 2 * sum(float(np.vdot(W, W)) for W, _ in params)
    return (
        float(f.sum()) / B + penalty,
        [grads[k] for k in range(1, n + 1)],
        [lam[k] for k in range(1, n + 1)],
    )
