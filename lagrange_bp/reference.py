"""Hand-written chain-rule backpropagation in NumPy — no SymPy. Used only to check the model.

Samples are rows. ``loss_and_grad`` and ``adjoint`` follow the textbook δ recursion
δ^N = ∂J/∂z^N, δ^k = (δ^{k+1} W^{k+1}) ⊙ σ'_k(z^k), ∂J/∂W^k = δ^kᵀ x^{k-1}, with λ^k = −∂J/∂x^k.
``HandTrainer`` is the same algorithm with preallocated buffers: the benchmarks' baseline.
"""

from __future__ import annotations

import numpy as np

Params = list[tuple[np.ndarray, np.ndarray]]


def activate(name: str, z: np.ndarray) -> np.ndarray:
    """σ(z) by rows."""
    if name == "identity":
        return z.copy()
    if name == "sigmoid":
        return 0.5 * np.tanh(0.5 * z) + 0.5
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "softplus":
        return np.logaddexp(0.0, z)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"unknown activation {name!r}")


def vjp(name: str, z: np.ndarray, x: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    """J_σ(z)ᵀ · upstream, row by row."""
    if name == "identity":
        return upstream.copy()
    if name == "sigmoid":
        return upstream * x * (1.0 - x)
    if name == "tanh":
        return upstream * (1.0 - x * x)
    if name == "relu":
        return upstream * (z > 0)
    if name == "softplus":
        return upstream * (0.5 * np.tanh(0.5 * z) + 0.5)
    if name == "softmax":
        return x * (upstream - (x * upstream).sum(axis=1, keepdims=True))
    raise ValueError(f"unknown activation {name!r}")


def forward(
    params: Params, activations: tuple[str, ...], X: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pre-activations z^1..z^N and states x^0..x^N."""
    xs, zs = [X], []
    for (W, b), act in zip(params, activations):
        zs.append(xs[-1] @ W.T + b)
        xs.append(activate(act, zs[-1]))
    return zs, xs


def loss(loss_name: str, z: np.ndarray, x: np.ndarray, Y: np.ndarray) -> float:
    """J = (1/B) Σ ℓ; cross-entropy through a stable log-softmax of z."""
    B = len(Y)
    if loss_name == "mse":
        return 0.5 * float(np.sum((x - Y) ** 2)) / B
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return -float(np.sum(Y * logp)) / B


def loss_and_grad(
    params: Params, activations: tuple[str, ...], loss_name: str, X: np.ndarray, Y: np.ndarray
) -> tuple[float, Params, list[np.ndarray]]:
    """J, ∇J by the chain rule, and −∂J/∂x^k for k = 1..N."""
    zs, xs = forward(params, activations, X)
    B, n = len(X), len(params)
    dx = (xs[-1] - Y) / B if loss_name == "mse" else None  # ∂J/∂x^N
    grads: Params = [None] * n  # type: ignore[list-item]
    neg_dx: list[np.ndarray] = [None] * n  # type: ignore[list-item]
    for k in range(n - 1, -1, -1):
        if k == n - 1 and loss_name == "cross_entropy":
            delta = (xs[-1] - Y) / B  # ∂J/∂z^N for softmax + CE
            neg_dx[k] = Y / (B * xs[-1])
        else:
            neg_dx[k] = -dx
            delta = vjp(activations[k], zs[k], xs[k + 1], dx)
        grads[k] = (delta.T @ xs[k], delta.sum(axis=0))
        dx = delta @ params[k][0]
    return loss(loss_name, zs[-1], xs[-1], Y), grads, neg_dx


class HandTrainer:
    """SGD on mini-batches, written by hand with preallocated buffers (tanh/relu/sigmoid/identity
    hidden layers, softmax + cross-entropy or any σ + mse output)."""

    def __init__(
        self,
        widths: tuple[int, ...],
        activations: tuple[str, ...],
        loss_name: str,
        batch: int,
        dtype: np.dtype | str = np.float64,
    ) -> None:
        self.acts, self.loss, n = activations, loss_name, len(widths) - 1
        self.x = [None] + [np.empty((batch, w), dtype) for w in widths[1:]]
        self.z = [None] + [np.empty((batch, w), dtype) for w in widths[1:]]
        self.d = [None] + [np.empty((batch, w), dtype) for w in widths[1:]]
        self.gW = [None] + [np.empty((widths[k], widths[k - 1]), dtype) for k in range(1, n + 1)]
        self.gb = [None] + [np.empty(widths[k], dtype) for k in range(1, n + 1)]
        self.r = np.empty((batch, 1), dtype)

    def step(self, params: Params, X: np.ndarray, Y: np.ndarray, lr: float) -> None:
        """One SGD step in place on params (X has exactly ``batch`` rows)."""
        n, x, z, d = len(params), self.x, self.z, self.d
        x[0] = X
        for k in range(1, n + 1):
            W, b = params[k - 1]
            np.matmul(x[k - 1], W.T, out=z[k])
            z[k] += b
            act = self.acts[k - 1]
            if act == "tanh":
                np.tanh(z[k], out=x[k])
            elif act == "relu":
                np.maximum(z[k], 0.0, out=x[k])
            elif act == "sigmoid":
                np.multiply(z[k], 0.5, out=x[k])
                np.tanh(x[k], out=x[k])
                x[k] *= 0.5
                x[k] += 0.5
            elif act == "softmax":
                np.max(z[k], axis=1, keepdims=True, out=self.r)
                np.subtract(z[k], self.r, out=x[k])
                np.exp(x[k], out=x[k])
                np.sum(x[k], axis=1, keepdims=True, out=self.r)
                x[k] /= self.r
            else:
                np.copyto(x[k], z[k])
        B = len(X)
        np.subtract(x[n], Y, out=d[n])  # δ^N = (x^N − y)/B (mse + identity / softmax + CE)
        d[n] *= 1.0 / B
        if self.loss == "mse" and self.acts[-1] != "identity":
            self._local(n, d[n])
        for k in range(n, 0, -1):
            W, b = params[k - 1]
            if k > 1:
                np.matmul(d[k], W, out=d[k - 1])
                self._local(k - 1, d[k - 1])
            np.matmul(d[k].T, x[k - 1], out=self.gW[k])
            self.gW[k] *= lr
            W -= self.gW[k]
            np.sum(d[k], axis=0, out=self.gb[k])
            self.gb[k] *= lr
            b -= self.gb[k]

    def _local(self, k: int, d: np.ndarray) -> None:
        act, x, z = self.acts[k - 1], self.x[k], self.z[k]
        if act == "tanh":
            np.square(x, out=z)
            np.subtract(1.0, z, out=z)
            d *= z
        elif act == "relu":
            d *= z > 0
        elif act == "sigmoid":
            np.subtract(1.0, x, out=z)
            z *= x
            d *= z
