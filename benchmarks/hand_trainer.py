"""The benchmarks' baseline: one SGD step written by hand in NumPy with preallocated buffers.

This is what an engineer would write for the benchmarked networks, not a general trainer: hidden
layers tanh, relu, sigmoid or identity; output softmax with cross-entropy, or any of those with
mse. Anything else raises ``ValueError`` (it never falls back to another activation). Its
sigmoid is SciPy's ``expit``, the same accurate form the generated kernels print.
"""

from __future__ import annotations

import numpy as np
import scipy.special

Params = list[tuple[np.ndarray, np.ndarray]]
HIDDEN = ("tanh", "relu", "sigmoid", "identity")


class HandTrainer:
    """SGD on mini-batches of exactly ``batch`` rows, layers k = 1..N."""

    def __init__(
        self,
        widths: tuple[int, ...],
        activations: tuple[str, ...],
        loss: str,
        batch: int,
        dtype: np.dtype | str = np.float64,
    ) -> None:
        n = len(widths) - 1
        output_ok = (activations[-1], loss) == ("softmax", "cross_entropy") or (
            loss == "mse" and activations[-1] in HIDDEN
        )
        if any(a not in HIDDEN for a in activations[:-1]) or not output_ok:
            raise ValueError(
                f"HandTrainer is written for hidden layers {', '.join(HIDDEN)} and a softmax + "
                f"cross_entropy or mse output, not {'/'.join(activations)} with {loss}"
            )
        self.acts, self.loss = activations, loss
        self.x = [np.empty(0)] + [np.empty((batch, w), dtype) for w in widths[1:]]
        self.z = [np.empty(0)] + [np.empty((batch, w), dtype) for w in widths[1:]]
        self.d = [np.empty(0)] + [np.empty((batch, w), dtype) for w in widths[1:]]
        self.gW = [np.empty(0)] + [
            np.empty((widths[k], widths[k - 1]), dtype) for k in range(1, n + 1)
        ]
        self.gb = [np.empty(0)] + [np.empty(widths[k], dtype) for k in range(1, n + 1)]
        self.r = np.empty((batch, 1), dtype)

    def step(self, params: Params, X: np.ndarray, Y: np.ndarray, lr: float) -> None:
        """One SGD step in place on params."""
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
                scipy.special.expit(z[k], out=x[k])
            elif act == "softmax":
                np.max(z[k], axis=1, keepdims=True, out=self.r)
                np.subtract(z[k], self.r, out=x[k])
                np.exp(x[k], out=x[k])
                np.sum(x[k], axis=1, keepdims=True, out=self.r)
                x[k] /= self.r
            else:
                np.copyto(x[k], z[k])
        np.subtract(x[n], Y, out=d[n])  # δ^N = (x^N − y)/B before the output σ' (mse)
        d[n] *= 1.0 / len(X)
        if self.loss == "mse":
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
        """δ^k ← δ^k ⊙ σ'_k(z^k), σ' written in x^k where it can be."""
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
