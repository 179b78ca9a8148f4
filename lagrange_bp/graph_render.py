"""Print a graph derivation as text, in derivation order, with its sums made visible.

Pre-activations Σ_j W_j x_{u_j} + b are shown as z^v[i] (defined once). An adjoint of a node
read by several consumers, and a gradient of a parameter used by several layers, is printed as
its terms by origin: ``(out: ...) + (h2: ...)``, each term the derivative of that consumer's
(or use's) piece of L; ``ℓ`` labels the loss's term.
"""

from __future__ import annotations

import sympy as sp

from .functions import get_activation, get_loss
from .graph import GraphSpec, NodeSpec
from .graph_kkt import LOSS, GraphDerivation


def _short(d: GraphDerivation, e: sp.Expr) -> sp.Expr:
    return e.xreplace(d.z_display())


def _sum(d: GraphDerivation, terms: dict[str, sp.Expr], total: sp.Expr) -> str:
    """One term per origin, labelled, when there are several; else the expression."""
    if len(terms) < 2:
        return str(_short(d, total))
    return " + ".join(f"({o}: {_short(d, t)})" for o, t in terms.items())


def node_line(spec: GraphSpec, n: NodeSpec) -> str:
    """``h1 = tanh(h1.W x0 + h1.b), width 8`` and the like."""
    if n.op == "input":
        return f"{n.name}: input, width {n.width}"
    if n.op == "zeros":
        return f"{n.name} = 0, width {n.width} (a constant)"
    if n.op == "add":
        return f"{n.name} = {' + '.join(n.inputs)}, width {n.width}"
    z = " + ".join(f"{w} {u}" for w, u in zip(n.weight_names, n.inputs)) + f" + {n.bias_name}"
    uses = spec.uses(n.params or "")
    shared = f", parameters {n.params} shared by {', '.join(uses)}" if len(uses) > 1 else ""
    return f"{n.name} = {get_activation(n.activation or '').text}({z}), width {n.width}{shared}"


def _lagrangian(d: GraphDerivation) -> list[str]:
    spec = d.spec
    outs = ", ".join(spec.outputs)
    return [
        f"Lagrangian of the {spec.describe()}; one sample:",
        f"  L = ℓ(y, ({outs})) + Σ_v λ^vᵀ (x_v − f_v),  ℓ = {get_loss(spec.loss).text} summed "
        "over the outputs, v over the layer and add nodes",
        f"    = {_short(d, d.lagrangian)}",
        "nodes, in topological order:",
        *[f"  {node_line(spec, n)}" for n in spec.nodes],
        "where z^v = Σ_j W_j x_{u_j} + b:",
        *[f"  {eq.lhs} = {eq.rhs}" for eq in d.preactivations],
    ]


def _forward(d: GraphDerivation) -> list[str]:
    out = ["", "1. ∂L/∂λ^v = 0 gives the forward pass, in topological order:"]
    lams = [s for m in d.symbols.lam.values() for s in m]
    for eq, lam in zip(d.forward, lams):
        condition = _short(d, d.stationarity[lam])
        out.append(f"  ∂L/∂{lam} = {condition} = 0   ⇒   {eq.lhs} = {_short(d, eq.rhs)}")
    return out


def _adjoint(d: GraphDerivation) -> list[str]:
    spec = d.spec
    out = ["", "2. ∂L/∂x_v = 0 gives the adjoint, solved in reverse topological order:"]
    x_of = {lam: x for v, m in d.symbols.lam.items() for x, lam in zip(d.symbols.states[v], m)}
    node_of = {lam: v for v, m in d.symbols.lam.items() for lam in m}
    shown: set[str] = set()
    for eq in d.adjoint:
        v = node_of[eq.lhs]
        if v not in shown:
            shown.add(v)
            out += _origins_line(spec, v)
        x = x_of[eq.lhs]
        rhs = _sum(d, d.adjoint_terms[eq.lhs], eq.rhs)
        out.append(f"  ∂L/∂{x} = {_short(d, d.stationarity[x])} = 0   ⇒   {eq.lhs} = {rhs}")
    return out


def _origins_line(spec: GraphSpec, v: str) -> list[str]:
    origins = [*spec.consumers(v), *([LOSS] if v in spec.outputs else [])]
    if len(origins) < 2:
        return []
    return [
        f"  λ^{v} sums over the {len(origins)} places {v} is read: {', '.join(origins)} "
        f"(λ^{v} = Σ_c J_cᵀ λ^c{' − ∂ℓ/∂' + v if LOSS in origins else ''})"
    ]


def _gradients(d: GraphDerivation) -> list[str]:
    spec = d.spec
    out = ["", "3. ∂L/∂θ gives the gradient (at the KKT point, = ∂J/∂θ):"]
    for group, first in spec.groups.items():
        uses = spec.uses(group)
        if len(uses) > 1:
            out.append(
                f"  parameters {group} are shared by {len(uses)} layers {', '.join(uses)}: "
                f"each ∂L/∂θ sums over these uses (a use whose term is 0 is left out)"
            )
        for name in (*first.weight_names, first.bias_name):
            for p in d.params[name]:
                out.append(f"  ∂L/∂{p} = {_sum(d, d.gradient_terms[p], d.gradients[p])}")
    return out


def graph_text(d: GraphDerivation) -> str:
    """The Lagrangian, the nodes and the three groups of stationarity conditions."""
    out = _lagrangian(d) + _forward(d) + _adjoint(d) + _gradients(d)
    out += [
        "",
        "Update rule, learning rate η:  θ ← θ − η ∂L/∂θ for every parameter (one per shared set)",
        "Link to the chain rule: λ^v = −∂J/∂x_v for every node v.",
    ]
    return "\n".join(out)
