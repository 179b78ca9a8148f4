"""Graphs the graph tests share: a residual MLP with two skips, and the general proof's own
graphs with a node read by three consumers (one of them also an output) and shared layers (one
encoder for two inputs, a layer twice in depth); and the PyTorch autograd reference the graph
tests compare with."""

from __future__ import annotations

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp.graph_general import shared, three_consumers

__all__ = ["shared", "three_consumers", "torch_autograd", "two_skips"]


def two_skips() -> lbp.GraphSpec:
    """A residual MLP with two skips and a layer reading the input again."""
    g = lbp.Graph(inputs=3)
    x0 = g.inputs[0]
    h1 = g.layer(x0, 4, "tanh", name="h1")
    h2 = g.layer(h1, 4, "tanh", name="h2")
    s1 = g.add(h1, h2, name="s1")
    h3 = g.layer(s1, 4, "sigmoid", name="h3")
    s2 = g.add(s1, h3, name="s2")
    return g.output(g.layer([s2, x0], 3, "softmax", name="out"), loss="cross_entropy")


def torch_autograd(spec: lbp.GraphSpec, params: dict, X: np.ndarray, Y: np.ndarray) -> tuple:
    """PyTorch: J (mean over rows of ℓ), ∂J/∂θ and ∂J/∂x_v for every layer and add node."""
    torch = pytest.importorskip("torch")
    acts = {
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "identity": lambda z: z,
        "relu": torch.relu,
        "softplus": torch.nn.functional.softplus,
        "softmax": lambda z: torch.softmax(z, dim=1),
    }
    theta = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    x, start = {}, 0
    for n in spec.nodes:
        if n.op == "input":
            x[n.name] = Xt[:, start : start + n.width]
            start += n.width
        elif n.op == "zeros":
            x[n.name] = torch.zeros(len(X), n.width, dtype=torch.float64)
        elif n.op == "add":
            x[n.name] = sum(x[u] for u in n.inputs)
        else:
            z = theta[n.bias_name] + sum(
                x[u] @ theta[w].T for w, u in zip(n.weight_names, n.inputs)
            )
            x[n.name] = acts[n.activation](z)
        if n.op in ("layer", "add"):
            x[n.name].retain_grad()
    out = torch.cat([x[o] for o in spec.outputs], dim=1)
    per_sample = (
        -(Yt * torch.log(out)).sum(1)
        if spec.loss == "cross_entropy"
        else 0.5 * ((out - Yt) ** 2).sum(1)
    )
    J = per_sample.mean()
    J.backward()
    grads = {k: t.grad.numpy() for k, t in theta.items()}
    dJdx = {v: t.grad.numpy() for v, t in x.items() if t.grad is not None}
    return float(J.detach()), grads, dJdx, out.detach().numpy()
