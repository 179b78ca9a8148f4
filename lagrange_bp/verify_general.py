"""Step 5b: the general proof — any depth N, any widths — from the generic layer.

By induction on k = N, ..., 1 that λ^k = −∂J/∂x^k (matrix-batch form, symbolic widths and B):
  (g1) base: the output adjoint Λ^N equals −∂J/∂X^N for any loss summed over entries (ℓ
       abstract, index form), and each loss record's Λ^N is that with ℓ made concrete;
  (g2) step: if Λ^{k+1} = −∂J/∂X^{k+1}, the derived adjoint Λ^k equals −∂J/∂X^k, where
       ∂J/∂X^k is the chain rule through X^{k+1} = σ_{k+1}(W^{k+1} X^k + b^{k+1} 1);
  (g3) then ∂L/∂W^k = ∂J/∂W^k and ∂L/∂b^k = ∂J/∂b^k;
  (g4) each activation record's G^k: elementwise, the abstract σ'(Z^k) ⊙ Λ^k with σ' SymPy's
       derivative of σ; softmax's index-form G_j equals its matrix lift; and each output pair's
       G^N as the kernels print it (Λ^N substituted and simplified) equals Dσᵀ Λ^N;
  (g5) the generic equations instantiated at concrete sizes equal ``derive(spec)``'s, checked
       exactly in GF(p) — SymPy's matrix calculus has silent wrong-result cases (CONVENTIONS §4).
(g1)–(g3) are exact symbolic identities with σ and ℓ undefined functions, so they hold for every
differentiable σ and ℓ, every N and every width.
"""

from __future__ import annotations

import dataclasses
import random
import time

import sympy as sp
from sympy import MatrixSymbol, OneMatrix, Trace
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .field import Degenerate, Evaluator, Oracle, P, retry, seed_value
from .functions import ACTIVATIONS, LOSSES, Activation, Loss, get_activation, get_loss
from .generic import (
    LAYER,
    N_K,
    N_NEXT,
    N_PREV,
    SIGMA_K,
    SIGMA_NEXT,
    GenericDerivation,
    derive_generic,
    for_loss,
    is_zero,
    normalize,
    output_adjoint_for,
    vjp_for,
)
from .kkt import Derivation, derive
from .lagrangian import ALPHA
from .matrices import BATCH, Entrywise, elementwise
from .primitives import explicit
from .spec import NetworkSpec
from .verify import Progress, Report, timed_step

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
    return Trace(upstream.T * elementwise(sigma, W * X + b * OneMatrix(1, BATCH))).diff(wrt)


def _losses(specs: tuple[NetworkSpec, ...]) -> list[Loss]:
    return [get_loss(k) for k in dict.fromkeys([*LOSSES, *(s.loss for s in specs)])]


def _activations(specs: tuple[NetworkSpec, ...]) -> list[Activation]:
    keys = [*ACTIVATIONS, *(a for s in specs for a in s.activations)]
    return [get_activation(k) for k in dict.fromkeys(keys)]


def check_base(g: GenericDerivation, specs: tuple[NetworkSpec, ...]) -> tuple[bool, str]:
    """(g1) Λ^N = −∂J/∂X^N for an abstract ℓ, then for each loss record."""
    f = g.output_index
    if sp.simplify(f["lambda"] + f["dJ"]) != 0:
        return False, f"Λ^N_pq = {shown_expr(f['lambda'])} but −∂J/∂X^N_pq = {shown_expr(-f['dJ'])}"
    lines = [
        f"∂L/∂X^N_pq = {shown_expr(f['condition'])} = 0 gives Λ^N_pq = {shown_expr(f['lambda'])} "
        "= −∂J/∂X^N_pq "
        "(ℓ abstract, summed over i = 1..n, j = 1..B)"
    ]
    ok, records = check_loss_records(g, _losses(specs))
    return ok, records if not ok else "\n".join([*lines, records])


def check_loss_records(g: GenericDerivation, losses: list[Loss]) -> tuple[bool, str]:
    """Each loss record's Λ^N = −(1/B) ∂ℓ/∂x is the abstract Λ^N with ℓ made concrete."""
    lines = []
    for loss in losses:
        mine, expected = output_adjoint_for(loss), for_loss(g.output_adjoint.rhs, loss)
        if sp.simplify(mine.function.expr - expected.function.expr) != 0:
            return False, f"{loss.text}: Λ^N = {mine} but the derivation gives {expected}"
        lines.append(f"{loss.text}: Λ^N = −(1/B) ∂ℓ/∂x = {_body(mine)}")
    return True, "\n".join(lines)


def check_step(g: GenericDerivation) -> tuple[bool, str]:
    """(g2) with Λ^{k+1} = −P, P = ∂J/∂X^{k+1}: Λ^k = −(chain rule ∂J/∂X^k)."""
    P_next = MatrixSymbol("P^{k+1}", N_NEXT, BATCH)
    chain = _chain_rule_vjp(SIGMA_NEXT, LAYER.W_next, LAYER.X, LAYER.b_next, P_next, LAYER.X)
    derived = g.raw["adjoint"].xreplace({LAYER.Lam_next: -P_next})
    if not is_zero(derived + chain):
        return False, f"Λ^k = {shown_expr(derived)} but −∂J/∂X^k = {shown_expr(-chain)}"
    return True, (
        f"∂J/∂X^k = {shown_expr(chain)} (chain rule, P^{{k+1}} = ∂J/∂X^{{k+1}} = −Λ^{{k+1}})"
        f"\nso Λ^k = W^{{k+1}}ᵀ G^{{k+1}} = −∂J/∂X^k: by induction λ^k = −∂J/∂x^k, k = N..1"
    )


def check_gradients(g: GenericDerivation) -> tuple[bool, str]:
    """(g3) with Λ^k = −P, P = ∂J/∂X^k: ∂L/∂W^k = ∂J/∂W^k and ∂L/∂b^k = ∂J/∂b^k."""
    P = MatrixSymbol("P^k", N_K, BATCH)
    for name, param in (("weight_gradient", LAYER.W), ("bias_gradient", LAYER.b)):
        chain = _chain_rule_vjp(SIGMA_K, LAYER.W, LAYER.X_prev, LAYER.b, P, param)
        if g.decay != 0:  # J's own term (α/2) Tr(W^kᵀ W^k), differentiated apart (module doc)
            chain = chain + g.decay.diff(param)
        derived = g.raw[name].xreplace({LAYER.Lam: -P})
        if not is_zero(derived - chain):
            return (
                False,
                f"∂L/∂{param} = {shown_expr(derived)} but ∂J/∂{param} = {shown_expr(chain)}",
            )
    if g.decay != 0:
        return True, (
            "∂L/∂W^k = −G^k X^{k-1}ᵀ + α W^k = ∂J/∂W^k (J with (α/2) Σ_k ‖W^k‖², α any) and "
            "∂L/∂b^k = −G^k 1 = ∂J/∂b^k"
        )
    return True, "∂L/∂W^k = −G^k X^{k-1}ᵀ = ∂J/∂W^k and ∂L/∂b^k = −G^k 1 = ∂J/∂b^k"


def check_vjps(g: GenericDerivation, specs: tuple[NetworkSpec, ...]) -> tuple[bool, str]:
    """(g4) every activation record's G^k, and the kernels' output G^N of each pair in use."""
    lines = []
    for act in _activations(specs):
        if act.elementwise:
            if not is_zero(vjp_for(act) - _with_derivative(g.vjp.rhs, act)):
                return False, f"{act.text}: G^k = {vjp_for(act)} is not σ'(Z^k) ⊙ Λ^k"
            ok, line = act.check_derivative(1)
            if not ok:
                return False, line
            lines.append("G^k = σ'(Z^k) ⊙ Λ^k with " + line)
    f = g.softmax_index
    if sp.simplify(sp.expand(f["vjp"] - f["vjp_lifted"])) != 0:
        return False, f"softmax: index form {f['vjp']} ≠ lift {f['vjp_lifted']}"
    softmax = get_activation("softmax")
    bad = _lift_mismatch(f, f["vjp"], vjp_for(softmax), False)
    if bad:
        return False, bad
    lines.append(
        f"softmax: G_j = Σ_i λ_i ∂S_i/∂z_j = {f['vjp']} = {f['vjp_lifted']}, "
        "lifted to G^k = S ⊙ (Λ^k − 1 1ᵀ(S ⊙ Λ^k)), equal entry by entry for n = 1..5"
    )
    lines.append(
        f"softmax + cross-entropy: G_j = {f['fused']}; with Σ_i y_i = 1 (one-hot y) "
        f"this simplifies to {f['fused_unit_sum']}"
    )
    for act, loss in _pairs(specs):
        bad = _output_mismatch(act, loss)
        if bad:
            return False, bad
        G = act.kernel_output_vjp(loss, _Z, LAYER.X, LAYER.Y, 0)
        body = _body(G)
        lines.append(f"output {act.text} + {loss.text}: kernels' G^N = {body} = Dσᵀ Λ^N (n = 1..3)")
    return True, "\n".join(lines)


_Z = MatrixSymbol("Z^k", N_K, BATCH)


def _with_derivative(abstract: sp.Basic, act: Activation) -> sp.Basic:
    """The abstract G^k = σ'(Z^k) ⊙ Λ^k with σ' the record's derivative."""
    z = sp.Symbol("z", real=True)

    def concrete(e: sp.Lambda) -> sp.Lambda:
        return sp.Lambda(e.variables, act.derivative.xreplace({z: e.variables[0]}))  # type: ignore[attr-defined]

    return abstract.replace(lambda e: isinstance(e, sp.Lambda) and e.expr.has(SIGMA_K), concrete)


def shown_expr(e: sp.Basic) -> str:
    """An expression in the notation of the printed derivation (⊙, σ'_k(·), ∂ℓ/∂x(·, ·))."""
    from .render_generic import matrix_form, text

    return text(matrix_form(normalize(e)) if isinstance(e, sp.MatrixExpr) else e)


def _body(G: sp.MatrixExpr) -> str:
    from .render_generic import OUTPUT, matrix_form, text

    return text(matrix_form(G).xreplace(OUTPUT | {_Z: OUTPUT[LAYER.Z]}))


def _pairs(specs: tuple[NetworkSpec, ...]) -> list[tuple[Activation, Loss]]:
    """(output activation, loss) of every spec, and every built-in pair a spec may use."""
    keys = [(a, lo) for a in ACTIVATIONS for lo in LOSSES]
    keys += [(s.activations[-1], s.loss) for s in specs]
    pairs = []
    for a, lo in dict.fromkeys(keys):
        act, loss = get_activation(a), get_loss(lo)
        if loss.requires_output is None or loss.requires_output == act.key:
            pairs.append((act, loss))
    return pairs


def _output_mismatch(act: Activation, loss: Loss, n_max: int = 3) -> str:
    """The kernels' G^N against Dσ(Z)ᵀ Λ^N, entry by entry at n = 1..n_max (B = 1)."""
    for n in range(1, n_max + 1):
        z, y = sp.symbols(f"z1:{n + 1}", real=True), list(sp.symbols(f"y1:{n + 1}", real=True))
        if loss.classification:
            y[-1] = 1 - sum(y[:-1])
        x = act.apply(list(z))
        dims = {N_K: n, BATCH: 1}
        table = {
            _Z.subs(dims): sp.ImmutableMatrix(z),
            LAYER.X.subs(dims): sp.ImmutableMatrix(x),
            LAYER.Y.subs(dims): sp.ImmutableMatrix(y),
        }
        kernel = act.kernel_output_vjp(loss, _Z, LAYER.X, LAYER.Y, 0)
        derived = act.vjp(_Z, LAYER.X, loss.output_adjoint(LAYER.X, LAYER.Y), 0)
        values = [
            sp.Matrix(sized(e, dims).xreplace(table).doit().as_explicit())
            for e in (kernel, derived)
        ]
        for j in range(n):
            diff = explicit(values[0][j] - values[1][j]).rewrite(sp.exp)
            if sp.simplify(diff) != 0:
                return (
                    f"output {act.text} + {loss.text}: the kernels' G^N differs from "
                    f"Dσᵀ Λ^N at n = {n}, entry {j + 1}: {values[0][j]} vs {values[1][j]}"
                )
    return ""


def sized(e: sp.MatrixExpr, dims: dict) -> sp.MatrixExpr:
    """``e`` at concrete sizes. SymPy's ElementwiseApplyFunction, rebuilt at shape 1×1, calls
    its function on the matrix itself (for σ = z·tanh(z) a matrix times tanh(matrix), which
    raises), so each first becomes the equivalent one-matrix ``Entrywise``."""
    e = e.replace(
        lambda t: isinstance(t, ElementwiseApplyFunction),
        lambda t: Entrywise(t.function, t.expr),
    )
    return e.subs(dims)


def _lift_mismatch(
    f: dict, index_form: sp.Expr, matrix: sp.MatrixExpr, unit_sum: bool, n_max: int = 5
) -> str:
    """Compare an index-form G_j with the j-th row of its matrix lift, for n = 1..n_max."""
    for n in range(1, n_max + 1):
        s, lam, y = (sp.symbols(f"{c}1:{n + 1}") for c in ("s", "l", "y"))
        if unit_sum:
            y = (*y[:-1], 1 - sum(y[:-1]))
        dims = {N_K: n, BATCH: 1}
        table = {
            LAYER.X.subs(dims): sp.ImmutableMatrix(s),
            LAYER.Lam.subs(dims): sp.ImmutableMatrix(lam),
            LAYER.Y.subs(dims): sp.ImmutableMatrix(y),
        }
        lifted = sp.Matrix(sized(matrix, dims).xreplace(table).doit().as_explicit())
        bases = {f["S"]: s, f["λ"]: lam, f["y"]: y}
        for j in range(1, n + 1):
            e = index_form.subs({f["n"]: n, f["j"]: j, BATCH: 1}).doit()
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
    s, w, n, layer = d.symbols, d.spec.widths, d.spec.depth, LAYER
    dims = {BATCH: 1, N_PREV: w[k - 1], N_K: w[k], N_NEXT: w[k + 1] if k < n else 1}
    e = sized(expr, dims)
    table = {
        layer.X_prev: s.x[k - 1],
        layer.X: s.x[k],
        layer.Lam: s.lam[k],
        layer.W: s.W[k],
        layer.b: s.b[k],
    }
    table[layer.Y] = d.target
    if k < n:
        table |= {layer.X_next: s.x[k + 1], layer.Lam_next: s.lam[k + 1]}
        table |= {layer.W_next: s.W[k + 1], layer.b_next: s.b[k + 1]}
    table |= extra or {}
    mapping = {generic.subs(dims): sp.ImmutableMatrix(m) for generic, m in table.items()}
    return sp.Matrix(e.xreplace(mapping).doit().as_explicit())


def generic_layer_equations(spec: NetworkSpec, d: Derivation, g: GenericDerivation) -> dict:
    """Per layer k: x^k, λ^k and the gradients from the generic equations, at spec's sizes."""
    out: dict[str, dict[int, sp.Matrix]] = {"x": {}, "lam": {}, "G": {}, "W": {}, "b": {}}
    acts, n, layer = [get_activation(a) for a in spec.activations], spec.depth, LAYER
    for k in range(1, n + 1):
        out["x"][k] = sp.Matrix(acts[k - 1].apply(list(instantiate(layer.Z, d, k))))
    for k in range(n, 0, -1):
        if k == n:
            out["lam"][k] = instantiate(output_adjoint_for(get_loss(spec.loss)), d, k)
        else:
            out["lam"][k] = instantiate(g.adjoint.rhs, d, k, {layer.G_next: out["G"][k + 1]})
        out["G"][k] = instantiate(vjp_for(acts[k - 1]), d, k, {layer.Lam: out["lam"][k]})
        out["W"][k] = instantiate(g.weight_gradient.rhs, d, k, {layer.G: out["G"][k]})
        out["b"][k] = instantiate(g.bias_gradient.rhs, d, k, {layer.G: out["G"][k]})
    return out


def check_instances(
    g: GenericDerivation, specs: tuple[NetworkSpec, ...], seed: int
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
    spec: NetworkSpec, d: Derivation, g: GenericDerivation, rng: random.Random
) -> tuple[bool, str]:

    def attempt() -> tuple[bool, str]:
        data = list(d.input) + list(d.target) + d.param_symbols()
        point = {s: rng.randrange(P) for s in data + ([ALPHA] if spec.weight_decay else [])}
        ev = Evaluator({s: seed_value(v) for s, v in point.items()}, Oracle(rng.randrange(2**64)))
        for eq in d.forward + d.adjoint:
            ev.env[eq.lhs] = ev(eq.rhs)
        return _compare_values(spec, d, generic_layer_equations(spec, d, g), ev)

    try:
        return retry(attempt)
    except Degenerate:
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
    derivation: GenericDerivation | None = None,
    weight_decay: bool = False,
) -> Report:
    """The general proof (any N, any widths) and its check against concrete derivations;
    ``weight_decay=True`` proves the objective with (α/2) Σ_k ‖W^k‖² (for every α), checked
    against the specs with α = 1/100."""
    start = time.perf_counter()
    g = derivation if derivation is not None else derive_generic(weight_decay)
    if weight_decay:
        specs = tuple(dataclasses.replace(spec, weight_decay=0.01) for spec in specs)
    report = Report(
        "General proof (any depth N, any widths n_k, any batch size B"
        + (", weight decay α)" if g.decay != 0 else ")"),
        derive_seconds=time.perf_counter() - start,
    )
    exact = "exact symbolic identity (SymPy calculus, σ and ℓ undefined, symbolic sizes)"
    report.steps = [
        timed_step(label, claim, method, check, progress, "verify --general")
        for label, claim, method, check in [
            ("g1", "base: Λ^N = −∂J/∂X^N", exact, lambda: check_base(g, specs)),
            ("g2", "step: Λ^{k+1} = −∂J/∂X^{k+1} ⇒ Λ^k = −∂J/∂X^k", exact, lambda: check_step(g)),
            (
                "g3",
                "at the KKT point ∂L/∂W^k = ∂J/∂W^k and ∂L/∂b^k = ∂J/∂b^k",
                exact,
                lambda: check_gradients(g),
            ),
            (
                "g4",
                "each activation's G^k = Dσ(Z^k)ᵀ Λ^k, and the kernels' output G^N",
                "exact symbolic (index form for softmax; entry by entry at small n for G^N)",
                lambda: check_vjps(g, specs),
            ),
            (
                "g5",
                "the generic equations at concrete sizes equal derive(spec)'s",
                "exact evaluation in GF(2^61-1) at a random KKT point per spec",
                lambda: check_instances(g, specs, seed),
            ),
        ]
    ]
    return report
