"""Graphs the graph tests share: a residual MLP with two skips, a node read by three consumers
(one of them also an output), and shared layers (one encoder for two inputs, a layer twice in
depth)."""

from __future__ import annotations

import lagrange_bp as lbp


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


def three_consumers() -> lbp.GraphSpec:
    """h is read by a, b and c; a is also an output (its λ has a loss term too)."""
    g = lbp.Graph(inputs=(2, 3))
    u, v = g.inputs
    h = g.layer([u, v], 3, "sigmoid", name="h")
    a = g.layer(h, 2, "tanh", name="a")
    b = g.layer(h, 2, "relu", name="b")
    c = g.layer([h, a, b], 2, "identity", name="c")
    return g.output([c, a], loss="mse")


def shared(deep: str = "softplus") -> lbp.GraphSpec:
    """One encoder shared by two inputs, and a layer (activation ``deep``) shared twice in depth."""
    g = lbp.Graph(inputs=(3, 3))
    e1 = g.layer(g.inputs[0], 3, "tanh", name="enc", node="e1")
    e2 = g.layer(g.inputs[1], 3, "tanh", name="enc", share=True, node="e2")
    s = g.add(e1, e2, name="s")
    f1 = g.layer(s, 3, deep, name="f", node="f1")
    f2 = g.layer(f1, 3, deep, name="f", share=True, node="f2")
    return g.output(g.layer(f2, 2, "softmax", name="out"), loss="cross_entropy")
