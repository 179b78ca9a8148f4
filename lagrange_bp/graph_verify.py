"""Prove that a graph's derived equations (``derive_graph``) are backpropagation, step by step.

(a) ∂L/∂λ^v = 0 is exactly the forward pass x_v = f_v, rebuilt here from the spec.
(b) each adjoint solution makes ∂L/∂x_v vanish, ∂L/∂x_v taken afresh from L (``L.diff``).
(c) at the KKT point ∂L/∂θ = ∂J/∂θ for every parameter, J = ℓ(y, outputs(θ)) composed through
    the graph and differentiated by forward-mode dual numbers, one tangent per parameter: a
    shared parameter has one tangent, so its sum over uses is tested.
(d) (a)–(c) with σ an undefined function per parameter set.
(e) each concrete σ' is SymPy's derivative of σ.

(a), (b), (e) exact symbolic; (c), (d) exact randomized identity tests in GF(p) (``field``).
"""

from __future__ import annotations

import sympy as sp

from .field import CONST, Evaluator, Oracle, Value
from .functions import get_activation, get_loss
from .graph import GraphSpec
from .graph_kkt import GraphDerivation, activations, derive_graph
from .kkt import Derivation, partials
from .lagrangian import ALPHA, node_function, node_preactivation
from .spec import MAX_EXACT_WEIGHTS
from .verify import (
    Progress,
    Report,
    affine,
    check_trials,
    same_forward,
    seeded,
    timed_step,
)
from .verify import check_gradients as verify_check_gradients


def check_forward(d: GraphDerivation) -> tuple[bool, str]:
    """(a) each x_v[i] from ∂L/∂λ^v[i] = 0 equals f_v built from the spec, in topological order."""
    acts = activations(d.spec, d.abstract)
    expected = []
    for n in d.spec.nodes:
        if n.op in ("layer", "add"):
            z = node_preactivation(d.symbols, n) if n.op == "layer" else []
            f = node_function(d.symbols, n, acts, z)
            expected += list(zip(d.symbols.states[n.name], f))
    return same_forward(d.forward, expected, "the node states in topological order")


def check_adjoint(d: GraphDerivation) -> tuple[bool, str]:
    """(b) ∂L/∂x_v[i] (from L itself, σ(z^v) read as x_v) with λ^v[i] replaced is 0."""
    dL = partials(d.lagrangian)
    acts = activations(d.spec, d.abstract)
    states: dict[sp.Expr, sp.Symbol] = {}
    for n in d.spec.nodes:
        if n.op == "layer":
            f = node_function(d.symbols, n, acts, node_preactivation(d.symbols, n))
            states |= {s: x for s, x in zip(f, d.symbols.states[n.name]) if not s.is_Symbol}
    x_of = {lam: x for v, m in d.symbols.lam.items() for x, lam in zip(d.symbols.states[v], m)}
    for eq in d.adjoint:
        x = x_of[eq.lhs]
        residual = dL(x).xreplace(states).xreplace({eq.lhs: eq.rhs})
        if residual != 0 and sp.expand(residual) != 0:
            return False, f"with {eq.lhs} = {eq.rhs}, ∂L/∂{x} = {sp.expand(residual)} ≠ 0"
    count = len(d.adjoint)
    return True, f"{count} of {count} residuals ∂L/∂x_v[i] are exactly 0 (∂L/∂x taken from L)"


def _chain_rule_side(
    d: GraphDerivation,
    point: dict[sp.Symbol, int],
    oracle: Oracle,
    direction: dict[sp.Symbol, int] | None = None,
) -> tuple[list[int], int]:
    """∂J/∂θ by dual numbers through J(θ) = ℓ(y, outputs(θ)) [+ (α/2) Σ ‖W‖²], the graph
    evaluated node by node from the spec: every partial (one tangent per parameter symbol), or
    dJ(θ + t v)/dt."""
    params = d.param_symbols()
    dims = 1 if direction is not None else len(params)
    env = seeded(point, params, direction)
    ev = Evaluator(env, oracle, dims)
    acts = activations(d.spec, d.abstract)
    x: dict[str, list[Value]] = {}
    max_deg = 0
    for n in d.spec.nodes:
        if n.op == "input":
            x[n.name] = [env[s] for s in d.symbols.states[n.name]]
        elif n.op == "zeros":
            x[n.name] = [Value(0, CONST)] * n.width
        elif n.op == "add":
            x[n.name] = [_sum(ev, [x[u][i] for u in n.inputs]) for i in range(n.width)]
        else:
            z = _affine(ev, d, n.name, x, env)
            u = sp.symbols(f"u1:{len(z) + 1}", real=True)
            layer = Evaluator(dict(zip(u, z)), oracle, dims)
            x[n.name] = [layer(e) for e in acts[n.params or ""].apply(u)]
            max_deg = max(max_deg, layer.max_deg)
    outs = [v for o in d.spec.outputs for v in x[o]]
    u = sp.symbols(f"u1:{len(outs) + 1}", real=True)
    head = Evaluator(dict(zip(u, outs)) | {s: env[s] for s in d.target}, oracle, dims)
    loss = head(get_loss(d.spec.loss).apply(u, list(d.target)))
    if d.spec.weight_decay:  # + (α/2) Σ ‖W‖², each shared matrix once
        weights = [w for first in d.spec.groups.values() for w in first.weight_names]
        penalty = sp.Add(*[w**2 for name in weights for w in d.params[name]])
        loss = ev.add(loss, ev(ALPHA / 2 * penalty))
    return loss.t or [0] * dims, max(max_deg, head.max_deg, ev.max_deg)


def _sum(ev: Evaluator, values: list[Value]) -> Value:
    acc = values[0]
    for v in values[1:]:
        acc = ev.add(acc, v)
    return acc


def _affine(
    ev: Evaluator,
    d: GraphDerivation,
    name: str,
    x: dict[str, list[Value]],
    env: dict[sp.Symbol, Value],
) -> list[Value]:
    """z = Σ_j W_j x_{u_j} + b for layer node ``name``, in dual numbers."""
    n = d.spec.node(name)
    b = d.params[n.bias_name]
    out = []
    for i in range(n.width):
        acc = env[b[i]]
        for w, u in zip(n.weight_names, n.inputs):
            acc = affine(ev, [env[s] for s in d.params[w].row(i)], x[u], acc)
        out.append(acc)
    return out


def check_gradients(d: GraphDerivation, trials: int, seed: int) -> tuple[bool, str]:
    """(c)/(d) ∂L/∂θ at the KKT point equals ∂J/∂θ exactly in GF(p) at random points
    (``verify.check_gradients`` with the graph's chain-rule side)."""
    note = "; a shared parameter is one variable, so its sum over uses is tested"
    return verify_check_gradients(d, trials, seed, _chain_rule_side, note)


def check_derivatives(spec: GraphSpec) -> tuple[bool, str]:
    """(e) each σ' used is the derivative of σ's explicit definition."""
    widest: dict[str, int] = {}
    for n in spec.nodes:
        if n.activation is not None:
            widest[n.activation] = max(widest.get(n.activation, 0), n.width)
    lines = []
    for name, width in widest.items():
        ok, line = get_activation(name).check_derivative(width)
        lines.append(line)
        if not ok:
            return False, "\n".join(lines)
    return True, "\n".join(lines)


def _abstract_checks(d: GraphDerivation, trials: int, seed: int) -> tuple[bool, str]:
    details = []
    for check in (check_forward, check_adjoint):
        ok, detail = check(d)
        details.append(detail)
        if not ok:
            return False, detail
    ok, detail = check_gradients(d, trials, seed + 1)
    return ok, "\n".join([*details, detail])


_DECAY_CLAIM = " + (α/2) Σ ‖W‖², for every α"


def verify_graph(
    spec: GraphSpec,
    *,
    trials: int | None = None,
    seed: int = 0,
    max_weights: int | None = MAX_EXACT_WEIGHTS,
    derivation: GraphDerivation | Derivation | None = None,
    progress: Progress | None = None,
) -> Report:
    """Prove, step by step, that the graph's stationarity conditions are backpropagation.

    ``derivation`` replaces ``derive(spec)`` (to check a derivation from elsewhere).
    """
    trials = check_trials(2 if trials is None else trials)
    if isinstance(derivation, Derivation):
        raise TypeError("derivation= is a NetworkSpec's derivation, not a graph's")
    if derivation is not None and (derivation.spec != spec or derivation.abstract):
        raise ValueError(f"derivation is not the concrete derivation of {spec.describe()}")
    concrete = derivation if derivation is not None else derive_graph(spec, max_weights=max_weights)
    abstract = derive_graph(spec, abstract=True, max_weights=max_weights)
    seconds = concrete.seconds + abstract.seconds
    if progress:
        progress(f"verify: derived {spec.describe()}, concrete and abstract σ, in {seconds:.2f} s")
    report = Report(
        f"Proof that the stationarity conditions of L are backpropagation for {spec.describe()}",
        spec,
        derive_seconds=seconds,
    )
    exact = "exact symbolic (SymPy, structural equality after expand)"
    rand = (
        f"exact randomized identity test in GF(2^61-1), σ values from a random oracle, "
        f"{trials} points"
    )
    report.steps = [
        timed_step(
            "a",
            "∂L/∂λ^v = 0 is exactly the forward pass x_v = f_v, in topological order",
            exact,
            lambda: check_forward(concrete),
            progress,
        ),
        timed_step(
            "b",
            "the adjoint solution makes every ∂L/∂x_v vanish (λ^v sums over v's consumers)",
            exact,
            lambda: check_adjoint(concrete),
            progress,
        ),
        timed_step(
            "c",
            "at the KKT point ∂L/∂θ = ∂J/∂θ (chain rule through J(θ) = ℓ(y, outputs(θ))"
            f"{_DECAY_CLAIM if spec.weight_decay else ''}) for every parameter, a shared one "
            "summed over its uses",
            rand + ", reference: exact forward-mode dual numbers through the graph",
            lambda: check_gradients(concrete, trials, seed),
            progress,
        ),
        timed_step(
            "d",
            "(a)–(c) hold with σ an undefined function per parameter set: true for every "
            "differentiable activation",
            "(a), (b) exact symbolic; (c) " + rand,
            lambda: _abstract_checks(abstract, trials, seed),
            progress,
        ),
        timed_step(
            "e",
            "each concrete σ' in the derivation is SymPy's derivative of σ",
            "exact symbolic (SymPy's derivative of σ written in exp, log and cases)",
            lambda: check_derivatives(spec),
            progress,
        ),
    ]
    return report
