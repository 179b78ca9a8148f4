"""Hand-written NumPy training steps, written by hand for the graph benchmark (not generated):
backpropagation through time for the Elman RNN of ``lbp.recurrent`` (tanh cell, identity
output at the last step, mse), and a residual MLP with tanh layers and a softmax output.

Both use preallocated buffers and in-place NumPy calls, as a careful hand-written trainer
would; parameters are dicts with the names of the GraphSpec, so that both sides start from
the same weights and must end with the same ones.
"""

from __future__ import annotations

import numpy as np


class HandRNN:
    """h_t = tanh(W_x x_t + W_h h_{t-1} + b), h_0 = 0; o = V h_T + c; J = (1/B) Σ ½‖o − y‖²."""

    def __init__(self, inputs: int, hidden: int, outputs: int, steps: int, batch: int) -> None:
        self.n, self.T = inputs, steps
        self.h = np.zeros((steps + 1, batch, hidden))  # h[0] = 0
        self.tmp = np.empty((batch, hidden))
        self.g = np.empty((batch, hidden))
        self.lam = np.empty((batch, hidden))
        self.o = np.empty((batch, outputs))
        self.go = np.empty((batch, outputs))
        self.dWx = np.empty((hidden, inputs))
        self.dWh = np.empty((hidden, hidden))
        self.db = np.empty(hidden)
        self.dV = np.empty((outputs, hidden))
        self.dc = np.empty(outputs)
        self.tWx, self.tWh, self.tb = (
            np.empty_like(self.dWx),
            np.empty_like(self.dWh),
            np.empty(hidden),
        )

    def sgd_step(self, p: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, lr: float) -> float:
        Wx, Wh, b, V, c = p["cell.W0"], p["cell.W1"], p["cell.b"], p["out.W"], p["out.b"]
        h, n, T, B = self.h, self.n, self.T, len(X)
        for t in range(1, T + 1):
            np.matmul(X[:, (t - 1) * n : t * n], Wx.T, out=h[t])
            if t > 1:
                np.matmul(h[t - 1], Wh.T, out=self.tmp)
                h[t] += self.tmp
            h[t] += b
            np.tanh(h[t], out=h[t])
        np.matmul(h[T], V.T, out=self.o)
        self.o += c
        np.subtract(self.o, Y, out=self.go)
        loss = 0.5 * float(np.vdot(self.go, self.go)) / B
        self.go /= B
        np.matmul(self.go, V, out=self.lam)
        np.matmul(self.go.T, h[T], out=self.dV)
        np.sum(self.go, axis=0, out=self.dc)
        for t in range(T, 0, -1):
            np.square(h[t], out=self.g)
            np.subtract(1.0, self.g, out=self.g)
            self.g *= self.lam
            x_t = X[:, (t - 1) * n : t * n]
            if t == T:
                np.matmul(self.g.T, x_t, out=self.dWx)
                np.matmul(self.g.T, h[t - 1], out=self.dWh)
                np.sum(self.g, axis=0, out=self.db)
            else:
                np.matmul(self.g.T, x_t, out=self.tWx)
                self.dWx += self.tWx
                if t > 1:
                    np.matmul(self.g.T, h[t - 1], out=self.tWh)
                    self.dWh += self.tWh
                np.sum(self.g, axis=0, out=self.tb)
                self.db += self.tb
            if t > 1:
                np.matmul(self.g, Wh, out=self.lam)
        for theta, d in ((Wx, self.dWx), (Wh, self.dWh), (b, self.db), (V, self.dV), (c, self.dc)):
            d *= lr
            theta -= d
        return loss


class HandResidual:
    """h1 = tanh(W1 x + b1), h2 = tanh(W2 h1 + b2), s = h1 + h2, h3 = tanh(W3 s + b3),
    s2 = s + h3, o = softmax(W4 s2 + b4); J = −(1/B) Σ y log o."""

    def __init__(self, n_in: int, hidden: int, n_out: int, batch: int) -> None:
        shape = (batch, hidden)
        self.h1, self.h2, self.h3 = np.empty(shape), np.empty(shape), np.empty(shape)
        self.s, self.s2 = np.empty(shape), np.empty(shape)
        self.lam, self.g, self.tmp = np.empty(shape), np.empty(shape), np.empty(shape)
        self.lam_s = np.empty(shape)
        self.z4, self.o, self.go = (np.empty((batch, n_out)) for _ in range(3))
        self.rows = np.empty((batch, 1))
        self.d = {
            "h1.W": np.empty((hidden, n_in)),
            "h2.W": np.empty((hidden, hidden)),
            "h3.W": np.empty((hidden, hidden)),
            "out.W": np.empty((n_out, hidden)),
        }
        self.db = np.empty(hidden)
        self.dc = np.empty(n_out)

    def _layer(self, out: np.ndarray, x: np.ndarray, W: np.ndarray, b: np.ndarray) -> None:
        np.matmul(x, W.T, out=out)
        out += b
        np.tanh(out, out=out)

    def _update(
        self, p: dict[str, np.ndarray], name: str, g: np.ndarray, x: np.ndarray, lr: float
    ) -> None:
        dW = self.d[f"{name}.W"]
        db = self.dc if name == "out" else self.db
        np.matmul(g.T, x, out=dW)
        dW *= lr
        p[f"{name}.W"] -= dW
        np.sum(g, axis=0, out=db)
        db *= lr
        p[f"{name}.b"] -= db

    def _tanh_g(self, h: np.ndarray, lam: np.ndarray) -> np.ndarray:
        np.square(h, out=self.g)
        np.subtract(1.0, self.g, out=self.g)
        self.g *= lam
        return self.g

    def sgd_step(self, p: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, lr: float) -> float:
        B = len(X)
        self._layer(self.h1, X, p["h1.W"], p["h1.b"])
        self._layer(self.h2, self.h1, p["h2.W"], p["h2.b"])
        np.add(self.h1, self.h2, out=self.s)
        self._layer(self.h3, self.s, p["h3.W"], p["h3.b"])
        np.add(self.s, self.h3, out=self.s2)
        np.matmul(self.s2, p["out.W"].T, out=self.z4)
        self.z4 += p["out.b"]
        np.max(self.z4, axis=1, keepdims=True, out=self.rows)
        self.z4 -= self.rows
        np.exp(self.z4, out=self.o)
        np.sum(self.o, axis=1, keepdims=True, out=self.rows)
        loss = -float(np.vdot(Y, self.z4 - np.log(self.rows))) / B
        self.o /= self.rows
        np.subtract(Y, self.o, out=self.go)
        self.go /= B
        np.matmul(self.go, p["out.W"], out=self.lam_s)  # λ_s2, and λ_s starts as it
        self._update(p, "out", self.go, self.s2, -lr)
        g = self._tanh_g(self.h3, self.lam_s)  # λ_h3 = λ_s2
        np.matmul(g, p["h3.W"], out=self.tmp)
        self.lam_s += self.tmp  # λ_s = λ_s2 + W3ᵀ G3
        self._update(p, "h3", g, self.s, -lr)
        g = self._tanh_g(self.h2, self.lam_s)  # λ_h2 = λ_s
        np.matmul(g, p["h2.W"], out=self.lam)
        self.lam += self.lam_s  # λ_h1 = λ_s + W2ᵀ G2
        self._update(p, "h2", g, self.h1, -lr)
        g = self._tanh_g(self.h1, self.lam)
        self._update(p, "h1", g, X, -lr)
        return loss
