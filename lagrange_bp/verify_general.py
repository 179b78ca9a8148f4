"""Step 5b: the general proof — any depth N, any widths — from the generic layer.

By induction on k = N, ..., 1 that λ^k = −∂J/∂x^k (matrix-batch form, symbolic widths and B):
  (g1) base: the output adjoint Λ^N equals −∂J/∂X^N, for mse and cross-entropy;
  (g2) step: if Λ^{k+1} = −∂J/∂X^{k+1}, the derived adjoint Λ^k equals −∂J/∂X^k, where
       ∂J/∂X^k is the chain rule through X^{k+1} = σ_{k+1}(W^{k+1} X^k + b^{k+1} 1);
  (g3) then ∂L/∂W^k = ∂J/∂W^k and ∂L/∂b^k = ∂J/∂b^k;
  (g4) each activation's G^k: elementwise σ' is SymPy's derivative of σ; softmax's index-form
       G_j equals its matrix lift; the fused softmax–CE term is the derived one under Σ y = 1;
  (g5) the generic equations instantiated at concrete sizes equal ``derive(spec)``'s, checked
       exactly in GF(p) — SymPy's matrix calculus has silent wrong-result cases (DESIGN §5).
(g1)–(g3) are exact symbolic identities with σ an undefined function, so they hold for every
differentiable σ, every N and every width.
"""

from __future__ import annotations

import random
import time

import sympy as sp
from sympy import MatrixSymbol, OneMatrix, Trace

from .field import Degenerate, Evaluator, Oracle, P, seed_value
from .functions import ACTIVATION_FUNCTIONS, get_activation
from .general import (
    N_K,
    N_NEXT,
    N_PREV,
    SIGMA_K,
    SIGMA_NEXT,
    B,
    GeneralDerivation,
    S,
    U,
    _loss_term,
    derive_general,
    elementwise,
    is_zero,
    normalize,
    output_adjoint_for,
    vjp_for,
)
from .kkt import Derivation, derive
from .spec import NetworkSpec
from .verify import Progress, Report, Step

#: Specs whose instantiation (g5) ``verify --general`` checks: every activation, both losses.
DEFAULT_SPECS = (
    NetworkSpec((2, 3, 2), ("tanh", "sigmoid"), "mse"),
    NetworkSpec((3, 2, 3, 1), ("relu", "softplus", "identity"), "mse"),
    NetworkSpec((2, 3, 3), ("sigmoid", "softmax"), "cross_entropy"),
    NetworkSpec((2, 3, 2, 2), ("softmax", "tanh", "softmax"), "mse"),
)


def _chain_rule_vjp(
    sigma: object,
    W: MatrixSymbol,
    X: MatrixSymbol,
    b: MatrixSymbol,
    upstream: MatrixSymbol,
    wrt: MatrixSymbol,
) -> sp.MatrixExpr:
    """∂/∂wrt of Tr(upstreamᵀ σ(W X + b 1)): the chain rule through one layer."""
    return Trace(upstream.T * elementwise(sigma, W * X + b * OneMatrix(1, B))).diff(wrt)


def check_base(g: GeneralDerivation) -> tuple[bool, str]:
    """(g1) Λ^N = −∂J/∂X^N."""
    lines = []
    for loss, eq in g.output_adjoint.items():
        dJ = Trace(_loss_term(loss, S.X, S.Y)).diff(S.X)
        if not is_zero(eq.rhs + dJ):
            return False, f"{loss}: Λ^N = {eq.rhs} but −∂J/∂X^N = {normalize(-dJ)}"
        lines.append(f"{loss}: Λ^N = {eq.rhs} = −∂J/∂X^N")
    return True, "\n".join(lines)


def check_step(g: GeneralDerivation) -> tuple[bool, str]:
    """(g2) with Λ^{k+1} = −P, P = ∂J/∂X^{k+1}: Λ^k = −(chain rule ∂J/∂X^k)."""
    P_next = MatrixSymbol("P^{k+1}", N_NEXT, B)
    chain = _chain_rule_vjp(SIGMA_NEXT, S.W_next, S.X, S.b_next, P_next, S.X)
    derived = g.raw["adjoint"].xreplace({S.Lam_next: -P_next})
    if not is_zero(derived + chain):
        return False, f"Λ^k = {normalize(derived)} but −∂J/∂X^k = {normalize(-chain)}"
    return True, (
        f"∂J/∂X^k = {normalize(chain)} (chain rule, P^{{k+1}} = ∂J/∂X^{{k+1}} = −Λ^{{k+1}})"
        f"\nso Λ^k = W^{{k+1}}ᵀ G^{{k+1}} = −∂J/∂X^k: by induction λ^k = −∂J/∂x^k, k = N..1"
    )


def check_gradients(g: GeneralDerivation) -> tuple[bool, str]:
    """(g3) with Λ^k = −P, P = ∂J/∂X^k: ∂L/∂W^k = ∂J/∂W^k and ∂L/∂b^k = ∂J/∂b^k."""
    P = MatrixSymbol("P^k", N_K, B)
    for name, param in (("weight_gradient", S.W), ("bias_gradient", S.b)):
        chain = _chain_rule_vjp(SIGMA_K, S.W, S.X_prev, S.b, P, param)
        derived = g.raw[name].xreplace({S.Lam: -P})
        if not is_zero(derived - chain):
            return False, f"∂L/∂{param} = {normalize(derived)} but ∂J/∂{param} = {normalize(chain)}"
    return True, "∂L/∂W^k = −G^k X^{k-1}ᵀ = ∂J/∂W^k and ∂L/∂b^k = −G^k 1 = ∂J/∂b^k"


def check_vjps(g: GeneralDerivation) -> tuple[bool, str]:
    """(g4) every activation's G^k."""
    lines = []
    for name, act in ACTIVATION_FUNCTIONS.items():
        if name == "softmax":
            continue
        fn = act.function if act.function is not None else (lambda u: u)
        expected = elementwise(sp.diff(fn(U), U), S.Z)
        if not is_zero(g.vjp[name].rhs - sp.HadamardProduct(expected, S.Lam)):
            return False, f"{name}: G^k = {g.vjp[name].rhs} is not σ'(Z^k) ⊙ Λ^k"
        lines.append(f"{name}: G^k = σ'(Z^k) ⊙ Λ^k with σ'(u) = {sp.diff(fn(U), U)}")
    f = g.softmax_index
    if sp.simplify(sp.expand(f["vjp"] - f["vjp_lifted"])) != 0:
        return False, f"softmax: index form {f['vjp']} ≠ lift {f['vjp_lifted']}"
    for index_form, matrix, unit in (
        (f["vjp"], g.vjp["softmax"].rhs, False),
        (f["fused_unit_sum"], g.fused_softmax_ce.rhs, True),
    ):
        bad = _lift_mismatch(f, index_form, matrix, unit)
        if bad:
            return False, bad
    lines.append(
        f"softmax: G_j = Σ_i λ_i ∂S_i/∂z_j = {f['vjp']} = {f['vjp_lifted']}, "
        "lifted to G^k = S ⊙ (Λ^k − 1 1ᵀ(S ⊙ Λ^k))"
    )
    lines.append(
        f"softmax + cross-entropy: G_j = {f['fused']}; with Σ_i y_i = 1 (one-hot y) "
        f"this simplifies to {f['fused_unit_sum']}, lifted to G^N = −(X^N − Y)/B"
    )
    lines.append("each lift equals its index form entry by entry for n = 1..5 (and (g5) below)")
    return True, "\n".join(lines)


def _lift_mismatch(
    f: dict, index_form: sp.Expr, matrix: sp.MatrixExpr, unit_sum: bool, n_max: int = 5
) -> str:
    """Compare an index-form G_j with the j-th row of its matrix lift, for n = 1..n_max."""
    for n in range(1, n_max + 1):
        s, lam, y = (sp.symbols(f"{c}1:{n + 1}") for c in ("s", "l", "y"))
        if unit_sum:
            y = (*y[:-1], 1 - sum(y[:-1]))
        dims = {N_K: n, B: 1}
        table = {
            S.X.subs(dims): sp.ImmutableMatrix(s),
            S.Lam.subs(dims): sp.ImmutableMatrix(lam),
            S.Y.subs(dims): sp.ImmutableMatrix(y),
        }
        lifted = sp.Matrix(matrix.subs(dims).xreplace(table).doit().as_explicit())
        bases = {f["S"]: s, f["λ"]: lam, f["y"]: y}
        for j in range(1, n + 1):
            e = index_form.subs({f["n"]: n, f["j"]: j, B: 1}).doit()
            e = e.replace(
                lambda t: isinstance(t, sp.Indexed),
                lambda t, bases=bases: bases[t.base][int(t.indices[0]) - 1],
            )
            if sp.simplify(e - lifted[j - 1]) != 0:
                return f"lift {matrix} differs from index form {index_form} at n = {n}, j = {j}"
    return ""


def instantiate(
    expr: sp.Basic, d: Derivation, k: int, extra: dict[MatrixSymbol, sp.Matrix] | None = None
) -> sp.Matrix:
    """The generic expression of layer k at the sizes of ``d`` (B = 1), as an explicit Matrix."""
    s, w, n = d.symbols, d.spec.widths, d.spec.depth
    dims = {B: 1, N_PREV: w[k - 1], N_K: w[k], N_NEXT: w[k + 1] if k < n else 1}
    e = expr.subs(dims)
    table = {
        S.X_prev: s.x[k - 1],
        S.X: s.x[k],
        S.Lam: s.lam[k],
        S.W: s.W[k],
        S.b: s.b[k],
        S.Y: d.target,
    }
    if k < n:
        table |= {
            S.X_next: s.x[k + 1],
            S.Lam_next: s.lam[k + 1],
            S.W_next: s.W[k + 1],
            S.b_next: s.b[k + 1],
        }
    table |= extra or {}
    mapping = {generic.subs(dims): sp.ImmutableMatrix(m) for generic, m in table.items()}
    return sp.Matrix(e.xreplace(mapping).doit().as_explicit())


def generic_layer_equations(spec: NetworkSpec, d: Derivation, g: GeneralDerivation) -> dict:
    """Per layer k: x^k, λ^k and the gradients from the generic equations, at spec's sizes."""
    out: dict[str, dict[int, sp.Matrix]] = {"x": {}, "lam": {}, "G": {}, "W": {}, "b": {}}
    acts, n = spec.activations, spec.depth
    fused = spec.loss == "cross_entropy" and acts[-1] == "softmax"
    for k in range(1, n + 1):
        act = get_activation(acts[k - 1])
        if act.name == "softmax":
            z = list(instantiate(S.Z, d, k))
            out["x"][k] = sp.Matrix(act.apply(z))
        else:
            out["x"][k] = instantiate(elementwise(act.of, S.Z), d, k)
    for k in range(n, 0, -1):
        vjp = g.vjp[acts[k - 1]] if acts[k - 1] in g.vjp else vjp_for(acts[k - 1])
        G = g.fused_softmax_ce.rhs if (fused and k == n) else vjp.rhs
        out["G"][k] = instantiate(G, d, k)
        if k == n:
            adj = g.output_adjoint.get(spec.loss, None)
            adj = adj if adj is not None else output_adjoint_for(spec.loss)
            out["lam"][k] = instantiate(adj.rhs, d, k)
        else:
            out["lam"][k] = instantiate(g.adjoint.rhs, d, k, {S.G_next: out["G"][k + 1]})
        out["W"][k] = instantiate(g.weight_gradient.rhs, d, k, {S.G: out["G"][k]})
        out["b"][k] = instantiate(g.bias_gradient.rhs, d, k, {S.G: out["G"][k]})
    return out


def check_instances(
    g: GeneralDerivation, specs: tuple[NetworkSpec, ...], seed: int
) -> tuple[bool, str]:
    """(g5) generic equations at concrete sizes equal derive(spec)'s, exactly in GF(p)."""
    lines = []
    for spec in specs:
        d = derive(spec)
        ok, msg = _compare_instance(spec, d, g, random.Random(seed))
        if not ok:
            return False, f"{spec.describe()}: {msg}"
        lines.append(f"{spec.describe()}: {msg}")
    return True, "\n".join(lines)


def _compare_instance(
    spec: NetworkSpec, d: Derivation, g: GeneralDerivation, rng: random.Random
) -> tuple[bool, str]:
    for _ in range(10):
        point = {s: rng.randrange(P) for s in list(d.input) + list(d.target) + d.param_symbols()}
        if spec.loss == "cross_entropy":  # the fused term holds for Σ_j y_j = 1
            ys = list(d.target)
            point[ys[-1]] = (1 - sum(point[y] for y in ys[:-1])) % P
        ev = Evaluator({s: seed_value(v) for s, v in point.items()}, Oracle(rng.randrange(2**64)))
        try:
            for eq in d.forward + d.adjoint:
                ev.env[eq.lhs] = ev(eq.rhs)
            return _compare_values(spec, d, generic_layer_equations(spec, d, g), ev)
        except Degenerate:
            continue
    return False, "every sampled point hit a division by zero"


def _compare_values(spec: NetworkSpec, d: Derivation, gen: dict, ev: Evaluator) -> tuple[bool, str]:
    s, count = d.symbols, 0
    for k in range(1, spec.depth + 1):
        pairs = list(
            zip(s.x[k], gen["x"][k], [eq.rhs for eq in d.forward if eq.lhs in set(s.x[k])])
        )
        for sym, generic, concrete in pairs:
            if ev(generic).v != ev(concrete).v:
                return False, f"x at {sym}: generic {generic} ≠ derived {concrete}"
            count += 1
        adjoint = {eq.lhs: eq.rhs for eq in d.adjoint}
        for sym, generic in zip(s.lam[k], gen["lam"][k]):
            if ev(generic).v != ev(adjoint[sym]).v:
                return False, f"{sym}: generic {generic} ≠ derived {adjoint[sym]}"
            count += 1
        W, b = d.params[k - 1]
        for p, generic in list(zip(W, gen["W"][k])) + list(zip(b, gen["b"][k])):
            if ev(generic).v != ev(d.gradients[p]).v:
                return False, f"∂L/∂{p}: generic {generic} ≠ derived {d.gradients[p]}"
            count += 1
    return True, f"{count} entries of x, λ, ∂L/∂W, ∂L/∂b equal exactly"


def verify_general(
    specs: tuple[NetworkSpec, ...] = DEFAULT_SPECS,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    derivation: GeneralDerivation | None = None,
) -> Report:
    """The general proof (any N, any widths) and its check against concrete derivations."""
    start = time.perf_counter()
    g = derivation if derivation is not None else derive_general()
    report = Report(NetworkSpec((1, 1), "identity"), derive_seconds=time.perf_counter() - start)
    report.title = "General proof (any depth N, any widths n_k, any batch size B)"
    exact = "exact symbolic matrix identity (SymPy matrix calculus, σ undefined, symbolic sizes)"
    steps = [
        ("g1", "base: Λ^N = −∂J/∂X^N", exact, lambda: check_base(g)),
        ("g2", "step: Λ^{k+1} = −∂J/∂X^{k+1} ⇒ Λ^k = −∂J/∂X^k", exact, lambda: check_step(g)),
        (
            "g3",
            "at the KKT point ∂L/∂W^k = ∂J/∂W^k and ∂L/∂b^k = ∂J/∂b^k",
            exact,
            lambda: check_gradients(g),
        ),
        (
            "g4",
            "each activation's G^k = J_σ(Z^k)ᵀ Λ^k",
            "exact symbolic (index form for softmax)",
            lambda: check_vjps(g),
        ),
        (
            "g5",
            "the generic equations at concrete sizes equal derive(spec)'s",
            "exact evaluation in GF(2^61-1) at a random KKT point per spec",
            lambda: check_instances(g, specs, seed),
        ),
    ]
    for label, claim, method, check in steps:
        t = time.perf_counter()
        ok, detail = check()
        report.steps.append(Step(label, claim, ok, method, detail, time.perf_counter() - t))
        if progress:
            progress(f"verify --general: ({label}) {'ok' if ok else 'FAILED'}")
    return report
