"""Print a derivation for a reader: plain text, LaTeX or JSON, in derivation order.

Pre-activations W^k x^{k-1} + b^k are shown as z^k_i (defined once), so the equations read
x^1[2] = tanh(z^1[2]) instead of repeating every weighted sum.
"""

from __future__ import annotations

import json
from typing import Any

import sympy as sp
from sympy.printing.latex import LatexPrinter

from .kkt import Derivation
from .primitives import softmax

FORMATS = ("text", "latex", "json", "markdown")


def _short(d: Derivation, expr: sp.Expr) -> sp.Expr:
    return expr.xreplace(d.z_display())


def latex_of(d: Derivation, expr: sp.Expr) -> str:
    """An equation side as LaTeX, pre-activations shown as z^{(k)}_i."""
    return sp.latex(_short(d, expr))


def _condition(d: Derivation, var: sp.Symbol) -> sp.Expr:
    return _short(d, d.stationarity[var])


def _header(d: Derivation) -> str:
    s = d.spec
    layers = f"{s.depth} layer" + ("s" if s.depth != 1 else "")
    decay = f", weight decay α = {s.weight_decay!r}" if s.weight_decay else ""
    return (
        f"network {'-'.join(map(str, s.widths))} (N = {layers}), activations "
        f"{', '.join(s.activations)}, loss {s.loss}{decay}; one sample"
    )


def to_text(d: Derivation) -> str:
    """The Lagrangian and the three groups of KKT conditions, in derivation order."""
    lam_of = {x: lam for k in d.symbols.lam for x, lam in zip(d.symbols.x[k], d.symbols.lam[k])}
    out = [
        f"Lagrangian of the {_header(d)}:",
        "  L = ℓ(y, x^N)"
        + (" + (α/2) Σ_k ‖W^k‖²" if d.spec.weight_decay else "")
        + " + Σ_k λ^kᵀ (x^k − σ_k(z^k))",
        f"    = {_short(d, d.lagrangian)}",
        "where z^k = W^k x^{k-1} + b^k:",
        *[f"  {eq.lhs} = {eq.rhs}" for eq in d.preactivations],
        "",
        "1. ∂L/∂λ^k = 0 gives the forward pass, k = 1..N:",
    ]
    for eq, lam in zip(d.forward, [s for k in d.symbols.lam for s in d.symbols.lam[k]]):
        out.append(f"  ∂L/∂{lam} = {_condition(d, lam)} = 0   ⇒   {eq.lhs} = {_short(d, eq.rhs)}")
    out += ["", "2. ∂L/∂x^k = 0 gives the adjoint (backward) recursion, solved from k = N down:"]
    x_of = {lam: x for x, lam in lam_of.items()}
    for eq in d.adjoint:
        x = x_of[eq.lhs]
        out.append(f"  ∂L/∂{x} = {_condition(d, x)} = 0   ⇒   {eq.lhs} = {_short(d, eq.rhs)}")
    out += ["", "3. ∂L/∂W^k and ∂L/∂b^k give the gradient (at the KKT point, = ∂J/∂θ):"]
    out += [f"  ∂L/∂{p} = {_short(d, g)}" for p, g in d.gradients.items()]
    out += [
        "",
        "Update rule, learning rate η:  W^k ← W^k − η ∂L/∂W^k,   b^k ← b^k − η ∂L/∂b^k",
        "Link to the chain rule: λ^k = −∂J/∂x^k, and δ^k = ∂J/∂z^k = −σ'_k(z^k) ⊙ λ^k.",
    ]
    return "\n".join(out)


def dl_latex(var: str) -> str:
    """∂L/∂var as a LaTeX fraction."""
    return rf"\frac{{\partial \mathcal{{L}}}}{{\partial {var}}}"


def to_latex(d: Derivation) -> str:
    """The same content as LaTeX ``align*`` blocks (for a document or a notebook)."""
    lam_list = [s for k in d.symbols.lam for s in d.symbols.lam[k]]
    x_of = {lam: x for k in d.symbols.lam for x, lam in zip(d.symbols.x[k], d.symbols.lam[k])}

    def block(title: str, rows: list[str]) -> list[str]:
        return [f"% {title}", r"\begin{align*}", " \\\\\n".join(rows), r"\end{align*}", ""]

    sym = sp.latex

    out = [f"% lagrange_bp derivation: {_header(d)}"]
    out += block("Lagrangian", [r"\mathcal{L} &= " + latex_of(d, d.lagrangian)])
    out += block(
        "pre-activations z^k = W^k x^{k-1} + b^k",
        [f"{sym(eq.lhs)} &= {sp.latex(eq.rhs)}" for eq in d.preactivations],
    )
    out += block(
        "1. dL/dlambda = 0: forward pass",
        [
            f"{dl_latex(sym(lam))} &= {latex_of(d, d.stationarity[lam])} = 0 "
            rf"\;\Rightarrow\; {sym(eq.lhs)} = {latex_of(d, eq.rhs)}"
            for eq, lam in zip(d.forward, lam_list)
        ],
    )
    out += block(
        "2. dL/dx = 0: adjoint recursion, from k = N down",
        [
            f"{dl_latex(sym(x_of[eq.lhs]))} &= {latex_of(d, d.stationarity[x_of[eq.lhs]])} = 0 "
            rf"\;\Rightarrow\; {sym(eq.lhs)} = {latex_of(d, eq.rhs)}"
            for eq in d.adjoint
        ],
    )
    out += block(
        "3. dL/dW, dL/db: gradient",
        [f"{dl_latex(sym(p))} &= {latex_of(d, g)}" for p, g in d.gradients.items()],
    )
    out += block(
        "update rule",
        [
            rf"W^{{(k)}} &\leftarrow W^{{(k)}} - \eta {dl_latex('W^{(k)}')}, \quad "
            rf"b^{{(k)}} \leftarrow b^{{(k)}} - \eta {dl_latex('b^{(k)}')}"
        ],
    )
    return "\n".join(out)


def to_json(d: Derivation) -> str:
    """Machine-readable derivation: every equation as text and as LaTeX."""

    def eq(lhs: sp.Symbol, rhs: sp.Expr, condition: sp.Expr | None = None) -> dict[str, str]:
        row = {
            "lhs": str(lhs),
            "rhs": str(_short(d, rhs)),
            "latex": f"{sp.latex(lhs)} = {latex_of(d, rhs)}",
        }
        if condition is not None:
            row["condition"] = f"{_short(d, condition)} = 0"
        return row

    lam_list = [s for k in d.symbols.lam for s in d.symbols.lam[k]]
    x_of = {lam: x for k in d.symbols.lam for x, lam in zip(d.symbols.x[k], d.symbols.lam[k])}
    doc = {
        "spec": {
            "widths": list(d.spec.widths),
            "activations": list(d.spec.activations),
            "loss": d.spec.loss,
            "weight_decay": d.spec.weight_decay,
        },
        "lagrangian": {"text": str(_short(d, d.lagrangian)), "latex": latex_of(d, d.lagrangian)},
        "preactivations": [  # written out: shortening W x + b to z would print z = z
            {
                "lhs": str(e.lhs),
                "rhs": str(e.rhs),
                "latex": f"{sp.latex(e.lhs)} = {sp.latex(e.rhs)}",
            }
            for e in d.preactivations
        ],
        "forward": [eq(e.lhs, e.rhs, d.stationarity[lam]) for e, lam in zip(d.forward, lam_list)],
        "adjoint": [eq(e.lhs, e.rhs, d.stationarity[x_of[e.lhs]]) for e in d.adjoint],
        "gradients": [
            {"param": str(p), "expr": str(_short(d, g)), "latex": latex_of(d, g)}
            for p, g in d.gradients.items()
        ],
        "seconds": round(d.seconds, 4),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


MARKDOWN_TITLES = {
    "pre-activations z^k = W^k x^{k-1} + b^k": "Pre-activations z^k = W^k x^(k-1) + b^k",
    "1. dL/dlambda = 0: forward pass": "1. ∂L/∂λ = 0 gives the forward pass",
    "2. dL/dx = 0: adjoint recursion, from k = N down": (
        "2. ∂L/∂x = 0 gives the adjoint recursion, from k = N down"
    ),
    "3. dL/dW, dL/db: gradient": "3. ∂L/∂W and ∂L/∂b give the gradient",
    "update rule": "Update rule",
}


def markdown_escape(text: str) -> str:
    """Text for a Markdown heading: every character Markdown or HTML could act on is escaped,
    so an expression such as z*tanh(z)*z shows as written."""
    return "".join("\\" + ch if ch in "\\`*_[]<>|~" else ch for ch in text)


def to_markdown(d: Derivation) -> str:
    """The LaTeX blocks as a Markdown page: a heading and a $$ display per block."""
    out = []
    for line in to_latex(d).splitlines():
        if line.startswith("% "):
            if line.startswith("% lagrange_bp derivation: "):
                head, _, spec = line[2:].partition(": ")
                out.append(f"## {head}: {markdown_escape(spec)}")
            else:
                out.append("### " + MARKDOWN_TITLES.get(line[2:], markdown_escape(line[2:])))
        elif line == r"\begin{align*}":
            out += ["", "$$", line]
        elif line == r"\end{align*}":
            out += [line, "$$"]
        else:
            out.append(line)
    return "\n".join(out)


def render(d: Derivation, fmt: str = "text") -> str:
    """``fmt`` is one of text, latex, json, markdown."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    fns = {"text": to_text, "latex": to_latex, "json": to_json, "markdown": to_markdown}
    return fns[fmt](d)


# --- display forms of the printable derivation (report_doc) ----------------------------------
# A derived gradient such as x λ (x² − 1) reads like a sign slip next to −x λ (1 − x²); these
# rewrites only move signs: each sum is written with its constant positive (1 − x²), and the
# signs are gathered in front, so a gradient reads −(G x) and an adjoint W (x λ (1 − x) − …).
# ``signed_form`` checks with SymPy that the shown expression equals the derived one.


def _flip(e: sp.Expr) -> sp.Expr:
    """−e, with the sign taken into a power's base: (x − y)³ becomes (y − x)³."""
    return sp.Pow(-e.base, e.exp) if e.is_Pow else -e


def _orient(e: sp.Expr, prefer_negative: bool) -> tuple[bool, sp.Expr, bool]:
    """(negative, body, flexible) with e = −body when negative, else body. A sum with a
    constant term takes the sign that makes the constant positive (1 − x², not x² − 1); one
    whose terms all have one sign takes that sign; a mixed one (a − b) is flexible: its sign
    can go either way, and the preferred one is taken."""
    if e.is_Number:
        return bool(e < 0), abs(e), False
    if e.is_Add:
        return _orient_sum(e, prefer_negative)
    if e.is_Mul:
        return _orient_product(e, prefer_negative)
    if e.is_Pow and e.base.is_Add and e.exp.is_Integer:
        negative, base, flexible = _orient(e.base, False)
        if e.exp % 2 == 0:
            return False, sp.Pow(base, e.exp), False
        return negative, sp.Pow(base, e.exp), flexible
    return False, e, False


def _orient_sum(e: sp.Expr, prefer_negative: bool) -> tuple[bool, sp.Expr, bool]:
    parts = [_orient(t, False) for t in e.args]
    constant = e.as_coeff_Add()[0]
    minus = sum(n for n, _, _ in parts)
    flexible = constant == 0 and 0 < minus < len(parts)
    if constant != 0:
        negative = bool(constant < 0)
    else:
        negative = prefer_negative if flexible else minus == len(parts)
    return negative, sp.Add(*[-b if n != negative else b for n, b, _ in parts]), flexible


def _orient_product(e: sp.Expr, prefer_negative: bool) -> tuple[bool, sp.Expr, bool]:
    coeff, factors = e.as_coeff_mul()
    negative = bool(coeff < 0)
    out: list[sp.Expr] = []
    flexible: list[int] = []
    for f in factors:
        n, body, flex = _orient(f, False)
        negative ^= n
        if flex:
            flexible.append(len(out))
        out.append(body)
    if negative != prefer_negative and flexible:
        i = flexible.pop(0)
        out[i] = _flip(out[i])
        negative = not negative
    return negative, abs(coeff) * sp.Mul(*out), bool(flexible)


def signed_form(expr: sp.Expr, prefer_negative: bool = False) -> tuple[bool, sp.Expr]:
    """(negative, body) with expr = −body when negative, else body, every sum in body oriented
    as above. ``prefer_negative`` shows a − b as −(b − a) (a gradient reads as −(G x)).
    Raises ``ArithmeticError`` if the rewrite changed the value (it only moves signs)."""
    negative, body, _ = _orient(expr, prefer_negative)
    if sp.expand((-body if negative else body) - expr) != 0:
        raise ArithmeticError(f"display rewrite of {expr} is not equal to it: {body}")
    return negative, body


class DocLatexPrinter(LatexPrinter):
    """LaTeX of a concrete derivation for the printable document: each sum's positive terms
    first (y − x, not −x + y), and softmax_i of a whole layer's pre-activations written
    softmax_i(z^{(k)}) instead of listing the n_k entries."""

    def __init__(self, d: Derivation) -> None:
        super().__init__()
        self._vectors = {tuple(d.symbols.z[k]): k for k in d.symbols.z}

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list[sp.Expr]:
        terms = list(super()._as_ordered_terms(expr, order=order))
        if isinstance(expr, sp.Add):
            terms.sort(key=lambda t: bool(t.could_extract_minus_sign()))
        return terms

    def _print(self, expr: object, **kwargs: Any) -> str:
        if isinstance(expr, softmax) and tuple(expr.args[1:]) in self._vectors:
            k = self._vectors[tuple(expr.args[1:])]
            return rf"\operatorname{{softmax}}_{{{expr.args[0]}}}\left(z^{{({k})}}\right)"
        return str(super()._print(expr, **kwargs))


_PRINTERS: list[tuple[Derivation, DocLatexPrinter]] = []  # the last few, for a document's
# tens of thousands of formulas (building one reads every z^{(k)} entry)


def _printer(d: Derivation) -> DocLatexPrinter:
    for known, printer in _PRINTERS:
        if known is d:
            return printer
    _PRINTERS.insert(0, (d, DocLatexPrinter(d)))
    del _PRINTERS[4:]
    return _PRINTERS[0][1]


def doc_latex(d: Derivation, expr: sp.Expr, shorten: bool = True) -> str:
    """An expression of ``d`` as the document shows it: pre-activations as z^{(k)}_i
    (``shorten=False`` for one already written so), positive terms first."""
    return str(_printer(d).doprint(_short(d, expr) if shorten else expr))


def doc_signed_form(
    d: Derivation, expr: sp.Expr, prefer_negative: bool = False
) -> tuple[bool, sp.Expr]:
    """``signed_form`` of ``expr`` with its pre-activations written z^{(k)}_i."""
    return signed_form(_short(d, expr), prefer_negative)
