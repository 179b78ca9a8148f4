"""Step 2b: what a user's expression must satisfy before it is built, checked at construction.

A parsed activation is refused with a ``ValueError`` naming the point unless:
  * σ is continuous on every real z (SymPy's ``continuous_domain``);
  * σ, σ' and the kernels' σ' in x = σ(z) are real and finite at moderate z (|z| ≤ 5), and the
    kernels' printed forms agree there with the exact values (30 digits) to 1e-9;
  * the printed forms do not overflow where the exact value is a float64 (z up to ±800): an
    expression the stability rewrites of ``primitives.stable`` cannot cure is reported.
A loss is refused unless f and ∂f/∂x are real and finite, and printed accurately, at outputs
the network's output activation can produce and at targets of its task. Together these make
every string the parser accepts either compile and train, or fail here, up front.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import sympy as sp
from sympy.calculus.util import continuous_domain

from .functions import X_VAR, Y_VAR, Z_VAR, Activation, Elementwise, Loss, canonical
from .matrices import ARG_U, ARG_V, ARG_W, BATCH, entrywise
from .primitives import EXTREME, FLOAT_MAX, MODERATE, exact_value, explicit

RTOL = 1e-9


def _printed(expr: sp.Expr, args: tuple[sp.Symbol, ...], what: str) -> Callable[..., Any]:
    """expr as the kernels print it: a NumPy function of one array per argument."""
    from .codegen import numpy_function

    mats = tuple(sp.MatrixSymbol(f"A{i}", BATCH, 1) for i in range(len(args)))
    body = expr.xreplace(dict(zip(args, (ARG_U, ARG_V, ARG_W))))
    try:
        return numpy_function(entrywise(body, *mats), mats)
    except (NotImplementedError, ValueError) as exc:
        raise ValueError(f"{what} cannot be printed as NumPy code: {exc}") from None


def _point(values: dict[sp.Symbol, sp.Expr]) -> str:
    return ", ".join(f"{s} = {float(v):g}" for s, v in values.items())


def _compare(
    what: str,
    exact: sp.Expr,
    printed: sp.Expr,
    args: tuple[sp.Symbol, ...],
    points: list[dict[sp.Symbol, sp.Expr]],
    moderate: bool,
) -> None:
    """``printed`` (through the kernel printer) against ``exact`` (30 digits) at points."""
    fn = _printed(printed, args, what)
    for at in points:
        value = exact_value(exact, at)
        if value is None or value == sp.oo or abs(float(value)) > FLOAT_MAX:
            if moderate:
                shown = (
                    "beyond float64's range" if value is not None else "not a finite real number"
                )
                raise ValueError(f"{what} is {shown} at {_point(at)}")
            continue  # an exact value float64 cannot hold: overflow there is true, not ours
        with np.errstate(all="ignore"):
            got = float(fn(*[np.array([[float(at[a])]]) for a in args])[0, 0])
        if not math.isfinite(got):
            raise ValueError(
                f"{what} overflows in floating point at {_point(at)}, where its value is "
                f"{float(value):.6g}: write it in a stable form (e.g. softplus(z) for "
                f"log(1 + exp(z)), sigmoid(z) for 1/(1 + exp(-z)))"
            )
        if moderate and abs(got - float(value)) > RTOL * max(1.0, abs(float(value))):
            raise ValueError(
                f"{what} is printed inaccurately at {_point(at)}: {got!r} instead of "
                f"{float(value)!r}"
            )


def _risky(expr: sp.Expr) -> list[sp.Expr]:
    """The parts that can leave the reals or blow up: log, tan, and powers other than
    non-negative integer ones; smallest first."""
    parts = {
        e
        for e in sp.preorder_traversal(expr)
        if isinstance(e, (sp.log, sp.tan)) or (e.is_Pow and not (e.exp.is_Integer and e.exp >= 0))
    }
    return sorted(parts, key=lambda e: (sp.count_ops(e), sp.default_sort_key(e)))


def domain_problem(expr: sp.Expr, var: sp.Symbol) -> str | None:
    """Where a part of expr is not defined and continuous on all reals, in words; else None.

    Each risky part is given to SymPy's ``continuous_domain`` on its own (the whole expression
    can take it minutes); a part it cannot analyse counts as a problem, not as a pass.
    """
    for part in _risky(expr):
        if not part.has(var):
            continue
        try:
            domain = continuous_domain(explicit(part), var, sp.S.Reals)
        except (NotImplementedError, ValueError, TypeError, RecursionError):
            return f"SymPy cannot establish where {canonical(part)} is defined"
        if domain != sp.S.Reals:
            return f"{canonical(part)} is only on {domain}"
    return None


def check_activation(act: Elementwise) -> None:
    """Refuse, with a ``ValueError`` naming the point, an activation the kernels cannot serve."""
    name = f"activation {act.text!r}"
    problem = domain_problem(act.definition, Z_VAR)
    if problem:
        raise ValueError(
            f"{name} is not defined and continuous for every real z: {problem}; an activation "
            f"must be, since pre-activations can take any real value"
        )
    moderate = [{Z_VAR: z} for z in MODERATE]
    extreme = [{Z_VAR: z} for z in EXTREME]
    for what, exact, printed in (
        (name, act.definition, act.forward_form),
        (f"the derivative σ' of {name}", act.derivative, act.derivative_form),
    ):
        _compare(what, exact, printed, (Z_VAR,), moderate, True)
        _compare(what, exact, printed, (Z_VAR,), extreme, False)
    if act.output_form is not None:  # σ' = p(x): probed at x = σ(z), as the kernels use it
        xs = [
            {X_VAR: v}
            for v in (exact_value(act.definition, at) for at in moderate)
            if v is not None
        ]
        p = act.output_form
        _compare(f"the derivative σ' of {name}, written in x = σ(z),", p, p, (X_VAR,), xs, True)


@cache  # records are one object per key; a spec, its chain graph and each replay ask again
def check_loss(loss: Loss, output: Activation) -> None:
    """Refuse a loss that is not real and finite where the output layer and the targets put it."""
    name = f"loss {loss.text!r}"
    targets = (0, 1) if loss.classification else (-1, 0, sp.Rational(1, 2), 1, 2)
    points = [{X_VAR: x, Y_VAR: sp.Float(y, 30)} for x in output.output_samples() for y in targets]
    where = f" (with output activation {output.text!r})"
    for what, exact, printed in (
        (name + where, loss.term, loss.term_form),
        (f"the derivative ∂f/∂x of {name}{where}", loss.gradient, loss.gradient_form),
    ):
        _compare(what, exact, printed, (X_VAR, Y_VAR), points, True)
