"""Step 3: the symbols of one sample and the Lagrangian of CONVENTIONS §1 (B = 1).

For any graph of constraints x_v = f_v(x_{u_1}, …, θ) (``GraphSpec``), L is kept as pieces by
origin (``pieces``): L = ℓ(y, x_outputs) + Σ_v λ^vᵀ (x_v − f_v) [+ (α/2) Σ ‖W‖²]. The chain
(``NetworkSpec``) is the graph x⁰ → layer1 → … → layerN (``graph.chain_graph``), whose pieces
read, in the MLP's own symbols (``chain_symbols``),
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
from .graph import GraphSpec, NodeSpec
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


_GREEK = {"λ": r"\lambda", "α": r"\alpha"}


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


#: the weight decay α of the objective's (α/2) Σ_k ‖W^k‖² (LaTeX \alpha)
ALPHA = Entry("α", nonnegative=True)


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
def abstract_layer(k: int) -> Activation:
    """σ_k as an undefined function with derivative σ'_k (one object per k)."""
    return abstract_activation(k)


def layer_activations(spec: NetworkSpec, abstract: bool = False) -> dict[int, Activation]:
    """σ_k for k = 1..N: the spec's, or undefined functions σ_k with derivative σ'_k."""
    if abstract:
        return {k: abstract_layer(k) for k in range(1, spec.depth + 1)}
    return {k: get_activation(a) for k, a in enumerate(spec.activations, start=1)}


# ``preactivation`` and ``decay`` serve the proof's chain-rule side (``verify``), which builds J
# apart from the engine's pieces below, so that the two sides of the proof stay independent.


def preactivation(sym: Symbols, k: int) -> list[sp.Expr]:
    """z^k = W^k x^{k-1} + b^k, entry by entry."""
    W, x, b = sym.W[k], sym.x[k - 1], sym.b[k]
    return [sp.Add(*[W[i, c] * x[c] for c in range(x.rows)], b[i]) for i in range(b.rows)]


def decay(spec: NetworkSpec, sym: Symbols) -> list[sp.Expr]:
    """The terms (α/2) (W^k_ij)² of the objective's weight decay (α/2) Σ_k ‖W^k‖², one per
    weight (so that ∂/∂W^k_ij reads one term); none when the spec has no weight decay."""
    if not spec.weight_decay:
        return []
    return [ALPHA / 2 * w**2 for k in sym.W for w in sym.W[k]]


LOSS = "ℓ"  # the origin of the loss's piece of L (never a node name: those are ASCII)
DECAY = "weight decay"  # the origin of the weight decay's piece (node names have no spaces)


@dataclass
class GraphSymbols:
    """Column matrices of ``Entry`` symbols, keyed by node or parameter name."""

    states: dict[str, sp.Matrix]  # every node: inputs data, zeros 0, others x_v
    lam: dict[str, sp.Matrix]  # λ^v, layer and add nodes
    z: dict[str, sp.Matrix]  # z^v, layer nodes (display symbols)
    params: dict[str, sp.Matrix]  # "p.W" (n_v, n_u), "p.b" (n_v, 1)
    y: sp.Matrix  # targets of the outputs, concatenated


def _matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: Entry(f"{name}[{i + 1},{j + 1}]", real=True))


def graph_symbols(spec: GraphSpec) -> GraphSymbols:
    """One Symbol per entry of x_v, λ^v, z^v, every parameter (once per set) and y."""
    states, lam, z = {}, {}, {}
    for n in spec.nodes:
        if n.op == "zeros":
            states[n.name] = sp.zeros(n.width, 1)
            continue
        states[n.name] = _vector(n.name, n.width)
        if n.op != "input":
            lam[n.name] = _vector(f"λ^{n.name}", n.width)
        if n.op == "layer":
            z[n.name] = _vector(f"z^{n.name}", n.width)
    params = {
        name: _matrix(name, *shape) if len(shape) == 2 else _vector(name, shape[0])
        for name, shape in spec.param_shapes().items()
    }
    return GraphSymbols(states, lam, z, params, _vector("y", sum(spec.output_widths)))


def chain_symbols(graph: GraphSpec, sym: Symbols) -> GraphSymbols:
    """The chain's symbols (x^k, λ^k, W^k, b^k) keyed by the nodes of ``chain_graph``; a
    ``ValueError`` unless ``graph`` is that chain at the widths of ``sym``."""
    layers = [n for n in graph.nodes if n.op == "layer"]
    order = [graph.input_names[0], *(n.name for n in layers)]
    widths = tuple(sym.x[k].rows for k in range(len(sym.x)))
    if (
        len(graph.nodes) != len(order)
        or any(n.inputs != (u,) for n, u in zip(layers, order))
        or (*graph.input_widths, *(n.width for n in layers)) != widths
    ):
        raise ValueError(f"{graph.describe()} is not the chain of widths {widths}")
    return GraphSymbols(
        states={graph.input_names[0]: sym.x[0]}
        | {n.name: sym.x[k] for k, n in enumerate(layers, start=1)},
        lam={n.name: sym.lam[k] for k, n in enumerate(layers, start=1)},
        z={n.name: sym.z[k] for k, n in enumerate(layers, start=1)},
        params={
            name: m
            for k, n in enumerate(layers, start=1)
            for name, m in ((n.weight_names[0], sym.W[k]), (n.bias_name, sym.b[k]))
        },
        y=sym.y,
    )


def node_preactivation(sym: GraphSymbols, node: NodeSpec) -> list[sp.Expr]:
    """z^v = Σ_j W_j x_{u_j} + b, entry by entry (one flat sum per entry: SymPy's matrix
    product of Symbol matrices costs ~100 ms at 30 × 30)."""
    b = sym.params[node.bias_name]
    pairs = [(sym.params[w], sym.states[u]) for w, u in zip(node.weight_names, node.inputs)]
    return [
        sp.Add(*[W[i, c] * x[c] for W, x in pairs for c in range(x.rows)], b[i])
        for i in range(b.rows)
    ]


def node_function(
    sym: GraphSymbols, node: NodeSpec, acts: dict[str, Activation], z: list[sp.Expr]
) -> list[sp.Expr]:
    """f_v: σ(z) for a layer (z given), Σ_j x_{u_j} for an add."""
    if node.op == "layer":
        return acts[node.params or ""].apply(z)
    total = sp.zeros(node.width, 1)
    for u in node.inputs:
        total += sym.states[u]
    return list(total)


def loss_of(spec: GraphSpec, sym: GraphSymbols) -> sp.Expr:
    """ℓ = Σ_o ℓ(y_o, x_o): the outputs' states concatenated against y."""
    x = [s for o in spec.outputs for s in sym.states[o]]
    return get_loss(spec.loss).apply(x, list(sym.y))


def pieces(
    spec: GraphSpec,
    sym: GraphSymbols,
    acts: dict[str, Activation],
    in_z: bool,
    weight_decay: bool = False,
) -> dict[str, list[sp.Expr]]:
    """The terms of L by origin: each node's λ^v ⊙ (x_v − f_v), the loss (``LOSS``) and, with
    ``weight_decay``, the terms (α/2) w² of every weight entry (``DECAY``). ``in_z``: a layer's
    f_v in its symbols z^v; else with z written out."""
    out: dict[str, list[sp.Expr]] = {}
    for n in spec.nodes:
        if n.op in ("layer", "add"):
            z: list[sp.Expr] = []
            if n.op == "layer":
                z = list(sym.z[n.name]) if in_z else node_preactivation(sym, n)
            f = node_function(sym, n, acts, z)
            out[n.name] = [
                li * (xi - fi) for li, xi, fi in zip(sym.lam[n.name], sym.states[n.name], f)
            ]
    out[LOSS] = [loss_of(spec, sym)]
    if weight_decay:
        weights = [w for first in spec.groups.values() for w in first.weight_names]
        out[DECAY] = [ALPHA / 2 * w**2 for name in weights for w in sym.params[name]]
    return out
