"""The general proof for graphs: any graph of layer and add nodes, any widths, any batch size.

By induction over the nodes in reverse topological order that Λ_v = −∂J/∂X_v for every layer
and add node v, and that ∂L/∂θ = ∂J/∂θ for every parameter (CONVENTIONS §5). ∂J/∂X_v is the
derivative of J(X_v) := J with X_v set free and every later node recomputed from it.

  (G1) local vjp: for each node kind ``graph_generic`` derives (layer with m = 1, 2, 3 inputs,
       add with m = 2, 3), σ undefined and widths and B symbolic, with P_v = ∂J/∂X_v = −Λ_v:
       each input's share of the adjoint = −∂/∂X_{u_j} Tr(P_vᵀ f_v), each parameter share
       = ∂/∂θ Tr(P_vᵀ f_v) (the chain rule through one node), and X_v = f_v is the forward;
  (G2) multipliers: ∂L/∂X_v = 0, derived in index form with ℓ abstract and m = 0..3 consumer
       shares C_c, gives Λ_v = [−(1/B) ∂ℓ/∂x (X_v, Y_v) for an output] + Σ_c C_c, and each loss
       record's −(1/B) ∂ℓ/∂x is that with ℓ made concrete;
  (G3) the sum: J(X_v) = Φ(X_v, …, X_v) with one copy per consumer (and one for the loss), so
       ∂J/∂X_v = Σ_i ∂_iΦ (SymPy, Φ undefined, 1..4 copies of a vector) and ∂_iΦ =
       (∂f_c/∂X_v)ᵀ ∂J/∂X_c (SymPy, K∘f with K and f undefined); likewise a shared θ, one copy
       per use. With Λ_c = −∂J/∂X_c for every consumer c (later in topological order, so proven
       before v) (G1)–(G3) give Λ_v = −∂J/∂X_v, and then ∂L/∂θ = Σ_uses share = ∂J/∂θ;
  (G4) the node-kind equations at the concrete sizes of several graphs, each share by origin and
       each sum, equal ``derive(graph_spec)``'s exactly in GF(p) at a random KKT point — SymPy's
       matrix calculus has silent wrong-result cases (CONVENTIONS §4).

``sum_by_origin`` is the one rule "a multiplier, or a shared parameter's gradient, is the sum
of its terms by origin" that (G2)–(G4) use, and ``derive_node`` gives a node kind's equations;
both are parameters of ``verify_graph_general`` (``total``, ``node_equations``), so that a wrong
rule can be shown to fail.
"""

from __future__ import annotations

import operator
import random
import time
from collections.abc import Callable, Sequence
from functools import cache, reduce

import sympy as sp
from sympy import MatrixSymbol, OneMatrix, ShapeError, Trace

from .field import Degenerate, Evaluator, Oracle, P, retry, seed_value
from .functions import LOSSES, get_activation, get_loss
from .generic import (
    LOSS_FN,
    SAMPLES_AXIS,
    SIGMA_K,
    collapse_range,
    derive_generic,
    is_zero,
    normalize,
    output_index_form,
)
from .graph import Graph, GraphSpec, NodeSpec, recurrent
from .graph_generic import N_V, NodeEquations, derive_node
from .graph_kkt import GraphDerivation, derive_graph
from .lagrangian import ALPHA, DECAY, LOSS, GraphSymbols
from .matrices import BATCH, elementwise
from .verify import Progress, Report, timed_step
from .verify_general import check_loss_records, shown_expr, sized

NodeDeriver = Callable[[str, int], NodeEquations]
Total = Callable[[Sequence[sp.Basic]], sp.Basic]

#: Node kinds whose local equations (G1) proves: (kind, number of inputs).
DEFAULT_KINDS = (("layer", 1), ("layer", 2), ("layer", 3), ("add", 2), ("add", 3))
MAX_COPIES = 4  # (G3): up to 3 consumers and the loss, or 4 uses of a parameter set


def sum_by_origin(terms: Sequence[sp.Basic]) -> sp.Basic:
    """Σ over origins: Λ_v = Σ_o term_o (loss, consumers), ∂L/∂θ = Σ_uses share (any shape)."""
    return reduce(operator.add, terms)


# --- the graphs (G4) instantiates ----------------------------------------------------------
def residual() -> GraphSpec:
    """A residual MLP with two skips: s1 = h1 + h2, s2 = s1 + h3 + h1, out reads s2 and x0."""
    g = Graph(inputs=3)
    x0 = g.inputs[0]
    h1 = g.layer(x0, 3, "tanh", name="h1")
    h2 = g.layer(h1, 3, "relu", name="h2")
    s1 = g.add(h1, h2, name="s1")
    h3 = g.layer(s1, 3, "sigmoid", name="h3")
    s2 = g.add(s1, h3, h1, name="s2")
    return g.output(g.layer([s2, x0], 3, "softmax", name="out"), loss="cross_entropy")


def three_consumers() -> GraphSpec:
    """h is read by a, b and c (c = layer([h, a, b])); a is also an output."""
    g = Graph(inputs=(2, 3))
    u, v = g.inputs
    h = g.layer([u, v], 3, "sigmoid", name="h")
    a = g.layer(h, 2, "tanh", name="a")
    b = g.layer(h, 2, "relu", name="b")
    c = g.layer([h, a, b], 2, "identity", name="c")
    return g.output([c, a], loss="mse")


def shared(deep: str = "softplus") -> GraphSpec:
    """An encoder shared by two inputs, and a layer (activation ``deep``) shared twice in
    depth."""
    g = Graph(inputs=(3, 3))
    e1 = g.layer(g.inputs[0], 3, "tanh", name="enc", node="e1")
    e2 = g.layer(g.inputs[1], 3, "tanh", name="enc", share=True, node="e2")
    s = g.add(e1, e2, name="s")
    f1 = g.layer(s, 3, deep, name="f", node="f1")
    f2 = g.layer(f1, 3, deep, name="f", share=True, node="f2")
    return g.output(g.layer(f2, 2, "softmax", name="out"), loss="cross_entropy")


def default_graphs() -> tuple[GraphSpec, ...]:
    """Residual (two skips), three consumers, shared layers, an RNN with T = 3 and outputs at
    every step."""
    rnn = recurrent(2, 3, 2, 3, output_activation="sigmoid", outputs_at="every")
    return (residual(), three_consumers(), shared(), rnn)


# --- (G1) each node kind's local vjp --------------------------------------------------------
def _definition(eq: NodeEquations) -> sp.MatrixExpr:
    """f_v written from the node's definition: σ(Σ_j W_j X_{u_j} + b 1ᵀ) or Σ_j X_{u_j}."""
    if eq.kind == "add":
        return sp.MatAdd(*eq.inputs)
    assert eq.bias is not None
    Z = sp.MatAdd(*[W * U for W, U in zip(eq.weights, eq.inputs)], eq.bias * OneMatrix(1, BATCH))
    return elementwise(SIGMA_K, Z)


def _with_upstream(eq: NodeEquations, e: sp.Basic, P_v: MatrixSymbol) -> sp.Basic:
    """A derived share with G_v = σ'(Z_v) ⊙ Λ_v written out and Λ_v = −P_v."""
    if eq.vjp is not None:
        e = e.xreplace({eq.G: eq.vjp})
    return e.xreplace({eq.Lam: -P_v})


def _differs(derived: sp.Basic, expected: sp.Basic) -> bool:
    """derived ≠ expected as matrix expressions (a shape mismatch counts as different)."""
    try:
        return not is_zero(derived - expected)
    except ShapeError:
        return True


def check_node(eq: NodeEquations) -> tuple[bool, str]:
    """One node kind: forward X_v = f_v, shares to inputs −∂Tr(P_vᵀ f_v)/∂X_{u_j}, parameter
    shares ∂Tr(P_vᵀ f_v)/∂θ, with P_v (n_v × B) = ∂J/∂X_v = −Λ_v."""
    P_v = MatrixSymbol("P_v", N_V, BATCH)
    f_v = _definition(eq)
    target = Trace(P_v.T * f_v)  # its derivative in X_{u_j} or θ: (∂f_v/∂·)ᵀ P_v
    name = f"{eq.kind}, m = {eq.m}"
    if _differs(eq.forward, f_v):
        return False, f"{name}: forward X_v = {eq.forward} is not f_v = {f_v}"
    for j, U in enumerate(eq.inputs):
        share = _with_upstream(eq, eq.to_input[j], P_v)
        if _differs(share, -target.diff(U)):
            return (
                False,
                f"{name}: share to {U} is {shown_expr(eq.to_input[j])}, not −∂J/∂{U} via v",
            )
    params = [*zip(eq.weights, eq.weight_gradients)]
    if eq.bias is not None and eq.bias_gradient is not None:
        params.append((eq.bias, eq.bias_gradient))
    for theta, share in params:
        if _differs(_with_upstream(eq, share, P_v), target.diff(theta)):
            return False, f"{name}: share to ∂L/∂{theta} is {shown_expr(share)}, not ∂J/∂{theta}"
    return True, _node_line(eq)


def _node_line(eq: NodeEquations) -> str:
    """The kind's derived equations, as printed: forward, shares to inputs and parameters."""
    ins = ", ".join(shown_expr(u) for u in eq.to_input)
    line = f"{eq.kind}, m = {eq.m}: X_v = {shown_expr(eq.forward)}; to Λ_u0, …: {ins}"
    if eq.kind == "add":
        return line
    grads = ", ".join(shown_expr(g) for g in (*eq.weight_gradients, eq.bias_gradient))
    return f"{line}; to ∂L/∂W_0, …, ∂L/∂b: {grads}"


def check_nodes(eqs: Sequence[NodeEquations]) -> tuple[bool, str]:
    """(G1) ``check_node`` for every node kind."""
    lines = []
    for eq in eqs:
        ok, line = check_node(eq)
        if not ok:
            return False, line
        lines.append(line)
    lines.append(
        "G_v = σ'(Z_v) ⊙ Λ_v; each share equals the chain rule through the node with "
        "P_v = ∂J/∂X_v = −Λ_v, σ undefined, widths n_v, n_u_j and B symbolic"
    )
    return True, "\n".join(lines)


# --- (G2) the multiplier of a node: loss term and consumer shares --------------------------
@cache
def multiplier_index_form(m: int, output: bool) -> tuple[sp.Expr, tuple[sp.Expr, ...]]:
    """∂L/∂X_pq = 0 in index form: L ⊃ Σ_ij [ℓ(X_ij, Y_ij)/B (output)] + Λ_ij (X_ij − S_ij)
    − Σ_c C^c_ij X_ij, whose X-derivative is each consumer's −share C^c (G1); solved for Λ_pq.

    Returns (Λ_pq as solved, the terms it should sum: −∂J/∂X_pq through ℓ, then C^c_pq).
    """
    i, j, p, q = sp.symbols("i j p q", integer=True)
    n = sp.Symbol("n", integer=True, positive=True)
    X, Y, Lam, S = (sp.IndexedBase(s) for s in ("X", "Y", "Λ", "S"))
    C = [sp.IndexedBase(f"C{c}") for c in range(1, m + 1)]
    body = Lam[i, j] * (X[i, j] - S[i, j]) - sp.Add(*[Cc[i, j] * X[i, j] for Cc in C])
    if output:
        body += LOSS_FN(X[i, j], Y[i, j]) / BATCH
    L = sp.Sum(body, (i, 1, n), (j, 1, BATCH))
    condition = collapse_range(sp.diff(L, X[p, q]).doit())
    solved = sp.solve(condition, Lam[p, q])
    if len(solved) != 1:
        raise ArithmeticError(f"∂L/∂X_v = 0 does not determine Λ_v: {condition}")
    loss = [-output_index_form()["dJ"]] if output else []
    return solved[0], (*loss, *(Cc[p, q] for Cc in C))


def check_multipliers(consumers: int, total: Total, losses: list[str]) -> tuple[bool, str]:
    """(G2) Λ_v from ∂L/∂X_v = 0 is ``total`` of its terms, for 0..``consumers`` consumers."""
    lines = []
    for output in (True, False):
        for m in range(0 if output else 1, consumers + 1):
            lam, terms = multiplier_index_form(m, output)
            if sp.simplify(lam - total(terms)) != 0:
                return False, f"m = {m}: ∂L/∂X_v = 0 gives Λ_pq = {shown_expr(lam)}, not {terms}"
            if m == consumers:
                kind = "output" if output else "interior"
                lines.append(f"{kind}, m = {m}: ∂L/∂X_pq = 0 gives Λ_pq = {shown_expr(lam)}")
    ok, records = check_loss_records(derive_generic(), [get_loss(k) for k in losses])
    if not ok:
        return False, records
    lines.append(
        f"likewise for m = 0..{consumers}: Λ_v = [−(1/B) ∂ℓ/∂x (X_v, Y_v), an output] + Σ_c C_c "
        "(C_c: consumer c's share, G1); −(1/B) ∂ℓ/∂x = −∂J/∂X_v through the loss (ℓ abstract)"
    )
    return True, "\n".join([*lines, records])


# --- (G3) the sum over consumers and uses ---------------------------------------------------
def _diagonal_identity(copies: int, total: Total) -> bool:
    """−d/dξ Φ(ξ, …, ξ) = total(−∂_iΦ(ξ, …, ξ)), ξ ∈ R², Φ undefined, ``copies`` copies."""
    Phi = sp.Function("Φ")
    x = sp.symbols("ξ1:3", real=True)
    ys = [sp.symbols(f"η{c}_1:3", real=True) for c in range(copies)]
    flat = [s for y in ys for s in y]
    at = {s: x[k] for y in ys for k, s in enumerate(y)}
    J = Phi(*[xk for _ in range(copies) for xk in x])
    for k in range(2):
        parts = [-sp.diff(Phi(*flat), y[k]).subs(at, simultaneous=True) for y in ys]
        if (sp.diff(J, x[k]) + total(parts)).doit() != 0:
            return False
    return True


def _edge_identity() -> bool:
    """∇_ξ K(f(ξ, w)) = (∂f/∂ξ)ᵀ ∇K(f(ξ, w)), ξ, w, f ∈ R², K and f undefined."""
    x, w, eta = (sp.symbols(f"{c}1:3", real=True) for c in ("ξ", "w", "η"))
    K = sp.Function("K")
    f = [sp.Function(f"f{k}")(*x, *w) for k in (1, 2)]
    grad_K = sp.Matrix([sp.diff(K(*eta), e) for e in eta]).subs(dict(zip(eta, f)))
    jac = sp.Matrix(2, 2, lambda a, b: sp.diff(f[a], x[b]))
    lhs = sp.Matrix([sp.diff(K(*f), xk) for xk in x])
    return bool(sp.simplify(lhs - jac.T * grad_K) == sp.zeros(2, 1))


def check_induction(copies: int, total: Total) -> tuple[bool, str]:
    """(G3) the total derivative is the sum over copies (consumers and loss, or uses)."""
    for r in range(1, copies + 1):
        if not _diagonal_identity(r, total):
            return False, f"with {r} copies: −dΦ(ξ, …, ξ)/dξ is not the sum of the −∂_iΦ"
    if not _edge_identity():
        return False, "∇_ξ K(f(ξ, w)) is not (∂f/∂ξ)ᵀ ∇K"
    return True, "\n".join(
        [
            f"dΦ(ξ, …, ξ)/dξ = Σ_i ∂_iΦ(ξ, …, ξ) for 1..{copies} copies of ξ ∈ R² (Φ undefined), "
            "and ∇_ξ K(f(ξ, w)) = (∂f/∂ξ)ᵀ ∇K(f(ξ, w)) (K, f undefined)",
            "J(X_v) = Φ(X_v, …, X_v), copy i read by consumer c_i alone (one copy per edge "
            "v → c_i, copy 0 by the loss for an output); varying copy i alone changes x_{c_i} "
            "only, so ∂_iΦ = (∂f_{c_i}/∂X_v)ᵀ ∂J/∂X_{c_i}: (G1) with P = ∂J/∂X_{c_i}",
            "induction over the nodes in reverse topological order (the order of construction "
            "is topological, so every consumer of v comes later): if Λ_c = −∂J/∂X_c for every "
            "consumer c, then by (G1)–(G2) Λ_v = Σ_c shares [+ loss term] = −∂J/∂X_v; the "
            "base is the last node, an output with no consumer (G2, m = 0)",
            "a shared parameter θ: J(θ) = Φ(θ, …, θ), one copy per use, so ∂J/∂θ = Σ_uses "
            "(∂f_v/∂θ)ᵀ ∂J/∂X_v = Σ_uses share (G1) = ∂L/∂θ; a use reading a zeros node gives 0",
        ]
    )


# --- (G4) instantiation at concrete sizes ---------------------------------------------------
class Instance:
    """A node's generic equations at the node's concrete sizes (B = 1) and symbols."""

    def __init__(
        self, spec: GraphSpec, sym: GraphSymbols, node: NodeSpec, eq: NodeEquations
    ) -> None:
        self.node, self.eq = node, eq
        self.dims = {BATCH: 1, N_V: node.width}
        self.dims |= {w: spec.node(u).width for w, u in zip(eq.widths, node.inputs)}
        table: dict[MatrixSymbol, sp.Matrix] = {eq.X: sym.states[node.name]}
        table[eq.Lam] = sym.lam[node.name]
        table |= {U: sym.states[u] for U, u in zip(eq.inputs, node.inputs)}
        if node.op == "layer":
            assert eq.bias is not None and eq.preactivation is not None
            table |= {W: sym.params[w] for W, w in zip(eq.weights, node.weight_names)}
            table[eq.bias] = sym.params[node.bias_name]
        self.table = table
        if node.op == "layer":
            act = get_activation(node.activation or "")
            self.table[eq.G] = self(act.vjp(eq.preactivation, eq.X, eq.Lam, SAMPLES_AXIS))

    def __call__(self, e: sp.Basic, extra: dict | None = None) -> sp.Matrix:
        """``e`` at these sizes, every matrix symbol replaced by its entries."""
        mapping = {
            M.subs(self.dims): sp.ImmutableMatrix(v)
            for M, v in (self.table | (extra or {})).items()
        }
        return sp.Matrix(sized(e, self.dims).xreplace(mapping).doit().as_explicit())

    def forward(self) -> sp.Matrix:
        """X_v = σ(Z_v) (σ the node's activation) or Σ_j X_{u_j}."""
        if self.node.op == "add":
            return self(self.eq.forward)
        assert self.eq.preactivation is not None
        z = list(self(self.eq.preactivation))
        return sp.Matrix(get_activation(self.node.activation or "").apply(z))


def generic_graph_equations(
    spec: GraphSpec, sym: GraphSymbols, node_equations: NodeDeriver
) -> dict[str, dict]:
    """Forward per node; every multiplier and parameter entry's terms by origin, from the
    node-kind equations at the spec's sizes."""
    nodes = [n for n in spec.nodes if n.op in ("layer", "add")]
    inst = {n.name: Instance(spec, sym, n, node_equations(n.op, len(n.inputs))) for n in nodes}
    out: dict[str, dict] = {"forward": {}, "adjoint": {}, "gradient": {}}
    loss = get_loss(spec.loss)
    ys = iter(sym.y)
    for o in spec.outputs:
        it = inst[o]
        Y = MatrixSymbol("Y_v", N_V, BATCH)
        y = sp.Matrix([next(ys) for _ in range(it.node.width)])
        term = it(loss.output_adjoint(it.eq.X, Y), {Y: y})
        for lam, t in zip(sym.lam[o], term):
            out["adjoint"].setdefault(lam, {})[LOSS] = t
    for n in nodes:
        it = inst[n.name]
        out["forward"] |= dict(zip(sym.states[n.name], it.forward()))
        for j, u in enumerate(n.inputs):
            if u in sym.lam:
                share = _like(it(it.eq.to_input[j]), sym.lam[u], f"{n.name}'s share to {u}")
                for lam, t in zip(sym.lam[u], share):
                    terms = out["adjoint"].setdefault(lam, {})
                    terms[n.name] = terms[n.name] + t if n.name in terms else t
        _parameter_shares(it, sym, out["gradient"])
    if spec.weight_decay:
        share, W = decay_share()
        for first in spec.groups.values():
            for name in first.weight_names:
                m = sym.params[name]
                entries = sp.Matrix(share.xreplace({W: sp.ImmutableMatrix(m)}).doit())
                for p, t in zip(m, _like(entries, m, f"the weight decay's share of ∂L/∂{name}")):
                    out["gradient"].setdefault(p, {})[DECAY] = t
    return out


@cache
def decay_share() -> tuple[sp.MatrixExpr, MatrixSymbol]:
    """∂/∂W (α/2) Tr(WᵀW) = α W (SymPy's matrix calculus, symbolic sizes), and W: the weight
    decay's share of a weight matrix's gradient, once per matrix however many uses it has."""
    W = MatrixSymbol("W", N_V, sp.Symbol("n_u", integer=True, positive=True))
    return normalize((ALPHA / 2 * Trace(W.T * W)).diff(W)), W


def _parameter_shares(it: Instance, sym: GraphSymbols, into: dict) -> None:
    """Each parameter entry's share from this use: −G_v X_{u_j}ᵀ, −G_v 1."""
    node, eq = it.node, it.eq
    if node.op != "layer":
        return
    assert eq.bias_gradient is not None
    pairs = [*zip(node.weight_names, eq.weight_gradients), (node.bias_name, eq.bias_gradient)]
    for name, share in pairs:
        for p, t in zip(sym.params[name], _like(it(share), sym.params[name], f"∂L/∂{name}")):
            into.setdefault(p, {})[node.name] = t


def _like(m: sp.Matrix, target: sp.Matrix, what: str) -> sp.Matrix:
    """``m``, which must have the shape of ``target`` (else ``ArithmeticError``)."""
    if m.shape != target.shape:
        raise ArithmeticError(f"{what} has shape {m.shape}, not {target.shape}")
    return m


def check_instance(
    spec: GraphSpec, d: GraphDerivation, node_equations: NodeDeriver, total: Total, seed: int
) -> tuple[bool, str]:
    """(G4) for one graph: forward, each term by origin and each sum, exactly in GF(p)."""
    try:
        gen = generic_graph_equations(spec, d.symbols, node_equations)
    except (ArithmeticError, ShapeError) as exc:
        return False, str(exc)
    rng = random.Random(seed)

    def attempt() -> tuple[bool, str]:
        data = list(d.input) + list(d.target) + d.param_symbols()
        data += [ALPHA] if spec.weight_decay else []  # α a random point too: every α
        point = {s: seed_value(rng.randrange(P)) for s in data}
        ev = Evaluator(point, Oracle(rng.randrange(2**64)))
        for eq in d.forward + d.adjoint:
            ev.env[eq.lhs] = ev(eq.rhs)
        return _compare(d, gen, ev, total)

    try:
        return retry(attempt)
    except Degenerate:
        return False, "every sampled point hit a division by zero"


def _compare(d: GraphDerivation, gen: dict, ev: Evaluator, total: Total) -> tuple[bool, str]:
    counts = [0, 0, 0]
    for eq in d.forward:
        if ev(gen["forward"][eq.lhs]).v != ev(eq.rhs).v:
            return False, f"forward {eq.lhs}: generic {gen['forward'][eq.lhs]} ≠ derived {eq.rhs}"
        counts[0] += 1
    sums = [(eq.lhs, eq.rhs, d.adjoint_terms) for eq in d.adjoint]
    sums += [(p, g, d.gradient_terms) for p, g in d.gradients.items()]
    for s, rhs, by_origin in sums:
        generic = gen["adjoint" if s in d.adjoint_terms else "gradient"].get(s, {})
        for origin in dict.fromkeys([*generic, *by_origin[s]]):
            mine, theirs = generic.get(origin, sp.S.Zero), by_origin[s].get(origin, sp.S.Zero)
            if ev(mine).v != ev(theirs).v:
                return False, f"{s}, term from {origin}: generic {mine} ≠ derived {theirs}"
            counts[1] += 1
        if ev(total(list(generic.values())) if generic else sp.S.Zero).v != ev(rhs).v:
            return False, f"{s}: the sum of the generic terms ≠ derived {rhs}"
        counts[2] += 1
    return True, (
        f"{counts[0]} forward entries, {counts[1]} terms by origin and {counts[2]} sums "
        "(multipliers and gradients) equal exactly"
    )


def check_instances(
    graphs: Sequence[tuple[GraphSpec, GraphDerivation]],
    node_equations: NodeDeriver,
    total: Total,
    seed: int,
) -> tuple[bool, str]:
    """(G4) ``check_instance`` for every graph."""
    lines = []
    for spec, d in graphs:
        ok, msg = check_instance(spec, d, node_equations, total, seed)
        lines.append(f"{spec.describe()}: {msg}")
        if not ok:
            return False, "\n".join(lines)
    return True, "\n".join(lines)


# --- the report ------------------------------------------------------------------------------
def _kinds(graphs: Sequence[GraphSpec]) -> list[tuple[str, int]]:
    """The default node kinds and every kind the graphs use."""
    used = [(n.op, len(n.inputs)) for g in graphs for n in g.nodes if n.op in ("layer", "add")]
    return sorted(dict.fromkeys([*DEFAULT_KINDS, *used]))


def _fan_out(graphs: Sequence[GraphSpec]) -> tuple[int, int]:
    """The most consumers of a node, and the most copies (G3) any node or parameter needs."""
    consumers, copies = 3, MAX_COPIES
    for g in graphs:
        for n in g.nodes:
            consumers = max(consumers, len(g.consumers(n.name)))
            copies = max(copies, len(g.consumers(n.name)) + 1, len(g.uses(n.params or "")))
    return consumers, copies


def verify_graph_general(
    graphs: Sequence[GraphSpec] | None = None,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    node_equations: NodeDeriver = derive_node,
    total: Total = sum_by_origin,
) -> Report:
    """The general proof for any graph of layer and add nodes (module docstring), checked
    against the exact derivations of ``graphs`` (default: ``default_graphs()``)."""
    graphs = tuple(default_graphs() if graphs is None else graphs)
    if not graphs or not all(isinstance(g, GraphSpec) for g in graphs):
        raise TypeError("graphs must be a non-empty sequence of lagrange_bp.GraphSpec")
    start = time.perf_counter()
    eqs = [node_equations(kind, m) for kind, m in _kinds(graphs)]
    derivations = [(g, derive_graph(g)) for g in graphs]
    derive_generic()
    consumers, copies = _fan_out(graphs)
    losses = list(dict.fromkeys([*LOSSES, *(g.loss for g in graphs)]))
    report = Report(
        "General proof for graphs (any graph of layer and add nodes, any widths n_v, any batch "
        "size B)",
        derive_seconds=time.perf_counter() - start,
    )
    exact = "exact symbolic identity (SymPy calculus, σ, ℓ, Φ undefined, symbolic sizes)"
    steps = [
        (
            "G1",
            "each node kind's local vjp: shares to its inputs and parameters = the chain rule "
            "through the node, with P_v = ∂J/∂X_v = −Λ_v",
            exact,
            lambda: check_nodes(eqs),
        ),
        (
            "G2",
            "∂L/∂X_v = 0 gives Λ_v = Σ_c (consumer c's share) [− (1/B) ∂ℓ/∂x (X_v, Y_v) for an "
            "output]",
            "exact symbolic identity (SymPy, index form, ℓ undefined, symbolic n and B)",
            lambda: check_multipliers(consumers, total, losses),
        ),
        (
            "G3",
            "the chain-rule lemmas the induction rests on: a total derivative through several "
            "copies of X_v (or of θ) is the sum over the copies; the induction itself, in reverse "
            "topological order (Λ_c = −∂J/∂X_c for all consumers c ⇒ Λ_v = −∂J/∂X_v), is argued "
            "in the details",
            exact + "; the lemmas for up to max(4, fan-out + 1) copies of a vector in R²",
            lambda: check_induction(copies, total),
        ),
        (
            "G4",
            "the node-kind equations at concrete sizes equal derive(graph)'s, term by term"
            + (
                " (with the weight decay's share ∂/∂W (α/2) Tr(WᵀW) = α W, once per matrix)"
                if any(g.weight_decay for g in graphs)
                else ""
            ),
            "exact evaluation in GF(2^61-1) at a random KKT point per graph",
            lambda: check_instances(derivations, node_equations, total, seed),
        ),
    ]
    report.steps = [
        timed_step(label, claim, method, check, progress, "verify --general (graphs)")
        for label, claim, method, check in steps
    ]
    return report
