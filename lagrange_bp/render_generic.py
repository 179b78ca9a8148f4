"""Print the generic-layer equations as a student reads them: text, LaTeX or Markdown.

Matrices carry the layer as a superscript (W^{(k)}), ⊙ is the elementwise product, σ_k(·) and
σ'_k(·) act entry by entry, 1 is the all-ones vector, samples are the columns of X^{(k)}.
"""

from __future__ import annotations

import sympy as sp
from sympy import HadamardProduct, MatrixSymbol, OneMatrix
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .functions import ACTIVATIONS, LOSSES, get_activation, get_loss
from .generic import (
    LAYER,
    N_K,
    N_NEXT,
    SIGMA_K,
    SIGMA_NEXT,
    GenericDerivation,
    derive_generic,
    normalize,
    output_adjoint_for,
    vjp_for,
)
from .matrices import ARG_U, BATCH, Entrywise, elementwise

FORMATS = ("text", "latex", "markdown")
Z_K = MatrixSymbol("Z^k", N_K, BATCH)
Z_NEXT = MatrixSymbol("Z^{k+1}", N_NEXT, BATCH)
_LATEX_NAMES = {"Λ": r"\Lambda", "σ": r"\sigma"}


def _short(e: sp.Basic) -> sp.Basic:
    return e.xreplace({LAYER.Z: Z_K, LAYER.Z_next: Z_NEXT})


def _func_name(body: sp.Expr) -> tuple[str, str] | None:
    """(text, LaTeX) name when the Lambda body is σ(u) or σ'(u) of an abstract σ."""
    for fn, k in ((SIGMA_K, "k"), (SIGMA_NEXT, "{k+1}")):
        if body == fn(ARG_U):
            return f"σ_{k}", rf"\sigma_{k}"
        if body == sp.Derivative(fn(ARG_U), ARG_U):
            return f"σ'_{k}", rf"\sigma'_{k}"
    return None


OUTPUT = {LAYER.X: MatrixSymbol("X^N", N_K, BATCH), LAYER.Lam: MatrixSymbol("Λ^N", N_K, BATCH)}


def matrix_form(e: sp.Basic) -> sp.Basic:
    """An entrywise function of several matrices written with ⊙, sums and σ(·) where its body
    separates (−(x − y)/B is (−1/B)(X − Y)); other expressions are returned as they are."""
    if not isinstance(e, Entrywise):
        return e
    variables, mats = e.function.variables, e.matrices

    def build(body: sp.Expr) -> sp.Basic:
        used = [v for v in variables if body.has(v)]
        if not used:
            return body * sp.OneMatrix(*e.shape)
        if body.is_Mul:
            scalar = sp.Mul(*[a for a in body.args if not a.has(*variables)])
            parts = [a for a in body.args if a.has(*variables)]
            if scalar != 1:
                return scalar * build(sp.Mul(*parts))
            if len(parts) > 1:
                return sp.HadamardProduct(*[build(p) for p in parts])
        if body.is_Add:
            return sp.MatAdd(*[build(a) for a in body.args])
        if len(used) == 1:
            M = mats[variables.index(used[0])]
            return M if body == used[0] else elementwise(body.xreplace({used[0]: ARG_U}), M)
        return Entrywise(e.function.func(variables, body), *mats)

    body = e.function.expr
    return normalize(build(sp.factor(body) if not body.atoms(sp.Function) else body))


class TextPrinter(StrPrinter):
    def _print_MatrixSymbol(self, e: MatrixSymbol) -> str:
        return e.name

    def _print_Transpose(self, e: sp.Transpose) -> str:
        return f"{self.parenthesize(e.arg, 100)}ᵀ"

    def _print_MatMul(self, e: sp.MatMul) -> str:
        coeff, rest = e.as_coeff_mmul()
        factors = " ".join(self.parenthesize(a, 50) for a in rest.args)
        if coeff == 1:
            return factors
        return ("-" if coeff == -1 else f"{self.parenthesize(coeff, 50)} ") + factors

    def _print_Trace(self, e: sp.Trace) -> str:
        return f"tr({self._print(e.arg)})"

    def _print_HadamardProduct(self, e: HadamardProduct) -> str:
        return " ⊙ ".join(self.parenthesize(a, 45) for a in e.args)

    def _print_OneMatrix(self, e: OneMatrix) -> str:
        return "1ᵀ" if e.shape[0] == 1 else ("1" if e.shape[1] == 1 else "1 1ᵀ")

    def _print_ElementwiseApplyFunction(self, e: ElementwiseApplyFunction) -> str:
        name = _func_name(e.function.expr)
        arg = self._print(e.expr)
        if name:
            return f"{name[0]}({arg})"
        return f"[u ↦ {self._print(e.function.expr)}]({arg})"

    def _print_Entrywise(self, e: Entrywise) -> str:
        args = ", ".join(self._print(m) for m in e.matrices)
        names = ", ".join(map(str, e.function.variables))
        return f"[({names}) ↦ {self._print(e.function.expr)}]({args})"


class TexPrinter(LatexPrinter):
    def _print_MatrixSymbol(self, e: MatrixSymbol) -> str:
        name = e.name
        for k, v in _LATEX_NAMES.items():
            name = name.replace(k, v)
        if "^" in name:
            base, sup = name.split("^", 1)
            return f"{base}^{{({sup.strip('{}')})}}"
        return name

    def _print_Transpose(self, e: sp.Transpose) -> str:
        base = self.parenthesize(e.arg, 100)
        return rf"{{{base}}}^{{\top}}" if "^" in base else rf"{base}^{{\top}}"

    def _print_HadamardProduct(self, e: HadamardProduct) -> str:
        return r" \odot ".join(self.parenthesize(a, 45) for a in e.args)

    def _print_OneMatrix(self, e: OneMatrix) -> str:
        if e.shape[0] == 1:
            return r"\mathbf{1}^{\top}"
        return r"\mathbf{1}" if e.shape[1] == 1 else r"\mathbf{1}\mathbf{1}^{\top}"

    def _print_ElementwiseApplyFunction(self, e: ElementwiseApplyFunction) -> str:
        name = _func_name(e.function.expr)
        arg = self._print(e.expr)
        if name:
            return rf"{name[1]}\left({arg}\right)"
        return rf"\left[u \mapsto {self._print(e.function.expr)}\right]\!\left({arg}\right)"

    def _print_Entrywise(self, e: Entrywise) -> str:
        args = ", ".join(self._print(m) for m in e.matrices)
        names = ", ".join(map(str, e.function.variables))
        return (
            rf"\left[({names}) \mapsto {self._print(e.function.expr)}\right]\!\left({args}\right)"
        )


def _t(e: sp.Basic) -> str:
    return TextPrinter().doprint(_short(e))


def latex(e: sp.Basic, layer: str = "k") -> str:
    """A generic-layer matrix expression as textbook LaTeX: W^{(k+1)\\top} (σ' ⊙ Λ).

    ``layer="N"`` writes layer k's symbols as the output layer's, ``layer="k+1"`` as the next
    layer's (X^{(k)} → X^{(k+1)}, σ_k → σ_{k+1}, …), for showing one equation at another layer.
    """
    if layer == "N":
        e = e.xreplace(OUTPUT)
    elif layer == "k+1":
        e = e.xreplace(
            {
                LAYER.Z: Z_NEXT,
                LAYER.X: LAYER.X_next,
                LAYER.Lam: LAYER.Lam_next,
                LAYER.G: LAYER.G_next,
            }
        )
        e = e.replace(SIGMA_K, SIGMA_NEXT)
    elif layer != "k":
        raise ValueError(f"layer must be 'k', 'k+1' or 'N', got {layer!r}")
    return _tex(e)


def text(e: sp.Basic) -> str:
    """A generic-layer matrix expression as a student writes it: W^{k+1}ᵀ (σ'(Z) ⊙ Λ)."""
    return _t(e)


def _tex(e: sp.Basic) -> str:
    return TexPrinter().doprint(_short(e))


def sections(g: GenericDerivation) -> list[tuple[str, list[tuple[str, sp.Basic, str]]]]:
    """(title, [(lhs, rhs, note)]) in derivation order; notes are plain words."""
    acts = [get_activation(a) for a in ACTIVATIONS]
    losses = [get_loss(lo) for lo in LOSSES]
    vjps = [("G^k", vjp_for(a), a.text) for a in acts]
    fused = [
        (a, lo) for a in acts for lo in losses if lo.requires_output == a.key and lo.classification
    ]
    return [
        (
            "Generic layer k, any N and widths, batch B (samples are columns)",
            [("L", g.interior_lagrangian, "the terms of L with layer k and k+1 states")],
        ),
        ("1. ∂L/∂Λ^k = 0 gives the forward pass", [("X^k", g.forward.rhs, "")]),
        (
            "2. ∂L/∂X^k = 0 gives the adjoint recursion",
            [
                ("Λ^k", g.adjoint.rhs, "interior layer"),
                ("G^k", g.vjp.rhs, "any elementwise activation"),
                ("Λ^N", g.output_adjoint.rhs.xreplace(OUTPUT), "output layer, any loss ℓ"),
                *[
                    ("Λ^N", matrix_form(output_adjoint_for(lo)).xreplace(OUTPUT), lo.text)
                    for lo in losses
                ],
            ],
        ),
        (
            "3. ∂L/∂W^k and ∂L/∂b^k give the gradient",
            [
                ("∂L/∂W^k", g.weight_gradient.rhs, ""),
                ("∂L/∂b^k", g.bias_gradient.rhs, ""),
            ],
        ),
        (
            "G^k = J_σ(Z^k)ᵀ Λ^k for each activation",
            [
                *vjps,
                *[
                    (
                        "G^N",
                        matrix_form(a.kernel_output_vjp(lo, LAYER.Z, LAYER.X, LAYER.Y, 0)).xreplace(
                            OUTPUT
                        ),
                        f"{a.text} and {lo.text}, rows of Y sum to 1",
                    )
                    for a, lo in fused
                ],
            ],
        ),
    ]


ALGORITHM = [
    "forward:  for k = 1..N:  Z^k = W^k X^{k-1} + b^k 1ᵀ,  X^k = σ_k(Z^k)",
    "output:   Λ^N = −(1/B) ∇_X ℓ(Y, X^N)   (or G^N = −(X^N − Y)/B for softmax + CE)",
    "backward: for k = N..1:  G^k = J_σ(Z^k)ᵀ Λ^k,  ∂L/∂W^k = −G^k X^{k-1}ᵀ,  ∂L/∂b^k = −G^k 1,"
    "  Λ^{k-1} = W^kᵀ G^k",
    "update:   W^k ← W^k − η ∂L/∂W^k,  b^k ← b^k − η ∂L/∂b^k",
    "link:     Λ^k = −∂J/∂X^k and δ^k = −G^k = ∂J/∂Z^k (the chain rule's δ)",
]


def render_generic(fmt: str = "text", g: GenericDerivation | None = None) -> str:
    """The generic-layer derivation in ``fmt``: text, latex (align* blocks) or markdown."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    g = g or derive_generic()
    out: list[str] = []
    for title, rows in sections(g):
        if fmt == "text":
            out.append(title + ":")
            if title.startswith("Generic"):
                out.append(f"  Z^k = {TextPrinter().doprint(LAYER.Z)}")
            out += [
                f"  {lhs} = {_t(rhs)}" + (f"    [{note}]" if note else "")
                for lhs, rhs, note in rows
            ]
        else:
            lines = [
                f"{_lhs_tex(lhs)} &= {_tex(rhs)}" + (rf" && \text{{{note}}}" if note else "")
                for lhs, rhs, note in rows
            ]
            if title.startswith("Generic"):
                lines.insert(0, f"Z^{{(k)}} &= {TexPrinter().doprint(LAYER.Z)}")
            body = "\\begin{align*}\n" + " \\\\\n".join(lines) + "\n\\end{align*}"
            out.append(
                f"### {title}\n\n$$\n{body}\n$$" if fmt == "markdown" else f"% {title}\n{body}"
            )
        out.append("")
    head = "The backpropagation algorithm that follows:"
    if fmt == "text":
        out += [head] + [f"  {line}" for line in ALGORITHM]
    elif fmt == "markdown":
        out += [f"### {head}", ""] + [f"{i}. {line}" for i, line in enumerate(ALGORITHM, 1)]
    else:
        out += [f"% {head}"] + [f"% {line}" for line in ALGORITHM]
    return "\n".join(out).rstrip() + "\n"


def _lhs_tex(lhs: str) -> str:
    lhs = lhs.split(" (")[0]
    tex = {
        "Z^k": "Z^{(k)}",
        "L": r"\mathcal{L}",
        "X^k": "X^{(k)}",
        "Λ^k": r"\Lambda^{(k)}",
        "Λ^N": r"\Lambda^{(N)}",
        "G^k": "G^{(k)}",
        "G^N": "G^{(N)}",
        "∂L/∂W^k": r"\frac{\partial \mathcal{L}}{\partial W^{(k)}}",
        "∂L/∂b^k": r"\frac{\partial \mathcal{L}}{\partial b^{(k)}}",
    }
    return tex[lhs]
