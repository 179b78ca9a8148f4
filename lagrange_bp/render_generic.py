"""Print the generic-layer equations as a student reads them: text, LaTeX or Markdown.

Matrices carry the layer as a superscript (W^{(k)}), ⊙ is the elementwise product, σ_k(·) and
σ'_k(·) act entry by entry, 1 is the all-ones vector, samples are the columns of X^{(k)}.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
from sympy import HadamardPower, HadamardProduct, MatrixSymbol, OneMatrix
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .display import tex_text
from .functions import ACTIVATIONS, LOSSES, Activation, Loss, get_activation, get_loss
from .generic import (
    LAYER,
    N_K,
    N_NEXT,
    SAMPLES_AXIS,
    SIGMA_K,
    SIGMA_NEXT,
    GenericDerivation,
    derive_generic,
    normalize,
    output_adjoint_for,
)
from .matrices import ARG_U, BATCH, Entrywise

FORMATS = ("text", "latex", "markdown")
Z_K = MatrixSymbol("Z^k", N_K, BATCH)
Z_NEXT = MatrixSymbol("Z^{k+1}", N_NEXT, BATCH)
_LATEX_NAMES = {"Λ": r"\Lambda", "σ": r"\sigma", "ℓ": r"\ell"}


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


OUTPUT = {
    LAYER.X: MatrixSymbol("X^N", N_K, BATCH),
    LAYER.Lam: MatrixSymbol("Λ^N", N_K, BATCH),
    LAYER.Z: MatrixSymbol("Z^N", N_K, BATCH),
}


def matrix_form(e: sp.Basic) -> sp.Basic:
    """Entrywise functions written as a textbook writes them: products as ⊙, quotients as ⊘,
    sums and scalar factors as such, and function names applied to whole matrices
    (−(x − y)/B of (X, Y) is (−1/B)(X − Y), y/x is Y ⊘ X, 1 − tanh(u)² of Z is
    1 − tanh(Z) ⊙ tanh(Z)). Parts that do not separate stay entrywise; the whole expression
    tree is rewritten."""
    if isinstance(e, Entrywise):
        return _separated(e.function.expr, dict(zip(e.function.variables, e.matrices)), e.shape)
    if isinstance(e, ElementwiseApplyFunction):
        if _func_name(e.function.expr):
            return e
        (u,) = e.function.variables
        return _separated(e.function.expr, {u: matrix_form(e.expr)}, e.shape)
    if isinstance(e, sp.MatrixExpr) and e.args:
        args = [matrix_form(a) if isinstance(a, sp.MatrixExpr) else a for a in e.args]
        if isinstance(e, HadamardProduct):  # 1 ⊙ A = A
            args = [a for a in args if not isinstance(a, OneMatrix)] or args[:1]
            return HadamardProduct(*args) if len(args) > 1 else args[0]
        return e.func(*args) if args != list(e.args) else e
    return e


def _separated(body: sp.Expr, of: dict[sp.Symbol, sp.MatrixExpr], shape: tuple) -> sp.Basic:
    """The matrix expression whose entries are ``body`` at the entries of ``of``'s matrices."""
    variables = tuple(of)

    def build(b: sp.Expr) -> sp.Basic:
        used = [v for v in variables if b.has(v)]
        if not used:
            return b * OneMatrix(*shape)
        if b in of:
            return of[b]
        if b.is_Mul:
            scalar = sp.Mul(*[a for a in b.args if not a.has(*variables)])
            parts = [a for a in b.args if a.has(*variables)]
            if scalar != 1:
                return sp.MatMul(scalar, build(sp.Mul(*parts)), evaluate=False)
            if len(parts) > 1:  # x ⊙ (1 − x): plain factors before sums
                parts.sort(key=lambda p: p.is_Add)
                return HadamardProduct(*[build(p) for p in parts])
        if b.is_Add:
            return sp.MatAdd(*[build(a) for a in b.args])
        if b.is_Pow and b.exp.is_Integer and b.exp != 0:
            return HadamardPower(build(b.base), b.exp)
        if len(used) == 1 and isinstance(b, sp.Function) and len(b.args) == 1:
            inner = build(b.args[0])
            u = used[0]
            return ElementwiseApplyFunction(sp.Lambda(u, b.func(u)), inner)
        return Entrywise(sp.Lambda(variables, b), *of.values())

    return normalize(build(_readable(body)))


def _flip(e: sp.Expr) -> sp.Expr:
    """−c·(a − b)·… written c·(b − a)·…: a negative coefficient goes into a sum's signs."""
    if not e.is_Mul or not e.could_extract_minus_sign():
        return e
    sums = [a for a in e.args if a.is_Add]
    if not sums:
        return e
    rest = sp.Mul(*[a for a in e.args if a is not sums[0]])
    return sp.Mul(-rest, -sums[0], evaluate=False)


def _readable(body: sp.Expr) -> sp.Expr:
    """The shorter of the factored and expanded forms of a rational body, signs inside sums
    (x(1 − x) for sigmoid', 1 − x² for tanh', (1/B)(y − x) for mse); others as they are."""
    if body.atoms(sp.Function, sp.Derivative):
        return body
    forms = [_flip(sp.factor(body)), _flip(sp.expand(body))]
    return min(forms, key=sp.count_ops)


_ONE_NAMES = ("1", r"\mathbf{1}")


class _Notation:
    """What the text and LaTeX printers share: ⊙ and ⊘, all-ones, sums with their positive
    terms first, and functions applied to a matrix by name."""

    _print: Callable[..., str]  # from the printer this is mixed into
    parenthesize: Callable[..., str]

    ODOT = ("⊙", r"\odot")
    OSLASH = ("⊘", r"\oslash")
    tex = 0  # 0 text, 1 LaTeX

    def _print_HadamardProduct(self, e: HadamardProduct) -> str:
        num = sorted((a for a in e.args if not _is_reciprocal(a)), key=_factor_order)
        den = [a.args[0] for a in e.args if _is_reciprocal(a)]
        top = f" {self.ODOT[self.tex]} ".join(self.parenthesize(a, 45) for a in num) or self._one()
        if not den:
            return top
        bottom = f" {self.ODOT[self.tex]} ".join(self.parenthesize(a, 45) for a in den)
        if len(den) > 1:
            bottom = self._paren(bottom)
        if len(num) > 1:
            top = self._paren(top)
        return f"{top} {self.OSLASH[self.tex]} {bottom}"

    def _print_HadamardPower(self, e: sp.HadamardPower) -> str:
        base, power = e.args
        if power == -1:
            return f"{self._one()} {self.OSLASH[self.tex]} {self.parenthesize(base, 45)}"
        if power == 2:
            b = self.parenthesize(base, 45)
            return f"{b} {self.ODOT[self.tex]} {b}"
        b = self.parenthesize(base, 100)
        return f"{b}^{{⊙{power}}}" if not self.tex else f"{{{b}}}^{{\\odot {power}}}"

    def _print_MatAdd(self, e: sp.MatAdd) -> str:
        terms = sorted(e.args, key=_negative)
        out = self._print(terms[0])
        for t in terms[1:]:
            if _negative(t):
                out += " - " + self._print(-t)
            else:
                out += " + " + self._print(t)
        return out

    def _one(self) -> str:
        return _ONE_NAMES[self.tex]

    def _paren(self, text: str) -> str:
        return rf"\left({text}\right)" if self.tex else f"({text})"

    def _applied(self, e: ElementwiseApplyFunction) -> str:
        """f(M) for a function f applied entry by entry (the body is f(u))."""
        name = _func_name(e.function.expr)
        arg = self._print(e.expr)
        if name:
            return f"{name[self.tex]}{self._paren(arg)}"
        stand_in = sp.Symbol("\0")
        body = self._print(e.function.expr.xreplace({e.function.variables[0]: stand_in}))
        return body.replace(self._print(stand_in), arg)


def _is_reciprocal(e: sp.Basic) -> bool:
    return isinstance(e, sp.HadamardPower) and e.args[1] == -1


def _negative(e: sp.Basic) -> bool:
    """Whether a term of a sum prints with a leading minus (its scalar factor is negative)."""
    return isinstance(e, sp.MatMul) and e.as_coeff_mmul()[0].could_extract_minus_sign()


def _factor_order(e: sp.Basic) -> int:
    """⊙ factors print as X ⊙ (1 − X) ⊙ Λ: plain factors, then sums, then the multiplier."""
    if isinstance(e, MatrixSymbol) and e.name.startswith("Λ"):
        return 2
    return 1 if isinstance(e, sp.MatAdd) else 0


class TextPrinter(_Notation, StrPrinter):
    def _print_MatrixSymbol(self, e: MatrixSymbol) -> str:
        return e.name

    def _print_Transpose(self, e: sp.Transpose) -> str:
        return f"{self.parenthesize(e.arg, 100)}ᵀ"

    def _print_MatMul(self, e: sp.MatMul) -> str:
        coeff, rest = e.as_coeff_mmul()
        factors = " ".join(
            "1 1ᵀ" if _square_ones(a) else self.parenthesize(a, 50) for a in rest.args
        )
        if coeff == 1:
            return factors
        sign, magnitude = ("-", -coeff) if coeff.could_extract_minus_sign() else ("", coeff)
        if magnitude == 1:
            return sign + factors
        shown = self._print(magnitude)
        return sign + (shown if magnitude.is_Atom else f"({shown})") + " " + factors

    def _print_Trace(self, e: sp.Trace) -> str:
        return f"tr({self._print(e.arg)})"

    def _print_OneMatrix(self, e: OneMatrix) -> str:
        return "1ᵀ" if e.shape[0] == 1 else "1"

    def _print_ElementwiseApplyFunction(self, e: ElementwiseApplyFunction) -> str:
        return self._applied(e)

    def _print_Entrywise(self, e: Entrywise) -> str:
        return _entrywise_call(self, e, "∂{f}/∂{x}", "{f}")

    def _print_Derivative(self, e: sp.Derivative) -> str:
        """σ'(a) for a function of one argument, ∂ℓ/∂x(a, b) for ℓ(x, y)."""
        f, (x, _) = e.expr, e.variable_count[0]
        if not isinstance(f, sp.Function) or x not in f.args:
            return super()._print_Derivative(e)
        args = ", ".join(self._print(a) for a in f.args)
        if len(f.args) == 1:
            return f"{self._print(f.func)}'({args})"
        return f"∂{self._print(f.func)}/∂{'xyz'[f.args.index(x)]}({args})"

    def _print_step(self, e: sp.Function) -> str:
        return f"1[{self._print(e.args[0])} > 0]"


class TexPrinter(_Notation, LatexPrinter):
    tex = 1

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

    def _print_MatMul(self, e: sp.MatMul) -> str:
        coeff, rest = e.as_coeff_mmul()
        factors = " ".join(
            r"\mathbf{1}\mathbf{1}^{\top}" if _square_ones(a) else self.parenthesize(a, 50)
            for a in rest.args
        )
        if coeff == 1:
            return factors
        if coeff == -1:
            return "-" + factors
        return rf"{self._print(coeff)} {factors}"

    def _print_OneMatrix(self, e: OneMatrix) -> str:
        return r"\mathbf{1}^{\top}" if e.shape[0] == 1 else r"\mathbf{1}"

    def _print_UndefinedFunction(self, e: object) -> str:
        name = str(e)
        return _LATEX_NAMES.get(name, name)

    _print_FunctionClass = _print_UndefinedFunction

    def _print_ElementwiseApplyFunction(self, e: ElementwiseApplyFunction) -> str:
        return self._applied(e)

    def _print_Entrywise(self, e: Entrywise) -> str:
        return _entrywise_call(
            self, e, r"\frac{{\partial {f}}}{{\partial {x}}}", "{f}", r"\left({args}\right)"
        )


def _square_ones(e: sp.Basic) -> bool:
    return isinstance(e, OneMatrix) and e.shape[0] != 1 and e.shape[1] != 1


def _entrywise_call(
    printer: StrPrinter, e: Entrywise, derivative: str, name: str, call: str = "({args})"
) -> str:
    """f(A, C) or ∂f/∂u(A, C) for a body that is one function (or its partial derivative) of
    the variables in order; otherwise the body printed with each variable's matrix."""
    body, variables = e.function.expr, e.function.variables
    args = ", ".join(printer._print(m) for m in e.matrices)
    scalar = sp.S.One
    if body.is_Mul:
        scalar, body = body.as_independent(*variables, as_Add=False)
    if isinstance(body, sp.Derivative) and body.expr.args == variables:
        (x, _), f = body.variable_count[0], body.expr.func
        head = derivative.format(f=printer._print(f), x="x" if x == variables[0] else "y")
    elif isinstance(body, sp.Function) and body.args == variables:
        head = name.format(f=printer._print(body.func))
    else:
        stand_ins = {v: sp.Symbol(f"\\{i}") for i, v in enumerate(variables)}
        text = printer._print(body.xreplace(stand_ins))
        for v, m in zip(stand_ins.values(), e.matrices):
            text = text.replace(printer._print(v), printer._print(m))
        return text
    out = head + call.format(args=args)
    if scalar == 1:
        return out
    sign, magnitude = ("-", -scalar) if scalar.could_extract_minus_sign() else ("", scalar)
    shown = printer._print(magnitude)
    if not magnitude.is_Atom and not isinstance(printer, LatexPrinter):
        shown = f"({shown})"
    return f"{sign}{shown} {out}"


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


Note = tuple[str, str]  # (text, LaTeX) of the words beside an equation


def _words(text: str) -> Note:
    """Plain words as text and as LaTeX (``tex_text``: right in LaTeX and in MathJax)."""
    return text, tex_text(text)


def sections(g: GenericDerivation) -> list[tuple[str, list[tuple[str, sp.Basic, Note]]]]:
    """(title, [(lhs, rhs, note)]) in derivation order; notes are (text, LaTeX) words."""
    acts = [get_activation(a) for a in ACTIVATIONS]
    losses = [get_loss(lo) for lo in LOSSES]
    vjps = [vjp_row(a) for a in acts]
    fused = [(a, lo) for a in acts for lo in losses if fuses(a, lo)]
    none: Note = ("", "")
    return [
        (
            "Generic layer k, any N and widths, batch B (samples are columns)",
            [("L", g.interior_lagrangian + g.decay, _words(_lagrangian_note(g)))],
        ),
        ("1. ∂L/∂Λ^k = 0 gives the forward pass", [("X^k", g.forward.rhs, none)]),
        (
            "2. ∂L/∂X^k = 0 gives the adjoint recursion",
            [
                ("Λ^k", g.adjoint.rhs, _words("interior layer")),
                ("G^k", g.vjp.rhs, _words("any elementwise activation")),
                (
                    "Λ^N",
                    matrix_form(g.output_adjoint.rhs).xreplace(OUTPUT),
                    ("output layer, any loss ℓ", r"\text{output layer, any loss } \ell"),
                ),
                *[
                    ("Λ^N", matrix_form(output_adjoint_for(lo)).xreplace(OUTPUT), _words(lo.text))
                    for lo in losses
                ],
            ],
        ),
        (
            "3. ∂L/∂W^k and ∂L/∂b^k give the gradient",
            [
                ("∂L/∂W^k", g.weight_gradient.rhs, none),
                ("∂L/∂b^k", g.bias_gradient.rhs, none),
            ],
        ),
        (
            "G^k = Dσ(Z^k)ᵀ Λ^k for each activation (Dσ: the Jacobian of σ)",
            [
                *vjps,
                *[fused_row(a, lo) for a, lo in fused],
            ],
        ),
    ]


Row = tuple[str, sp.Basic, Note]

#: the weight decay line of the algorithm: (text, LaTeX)
DECAY_STEP = (
    "∂L/∂W^k above gets + α W^k: J has (α/2) Σ_k ‖W^k‖² (biases are not decayed)",
    r"\frac{\partial \mathcal{L}}{\partial W^{(k)}} \mathrel{+}= \alpha W^{(k)}: \quad J"
    r" \text{ has } \frac{\alpha}{2} \sum_k \left\| W^{(k)} \right\|^2 \text{ (biases are"
    r" not decayed)}",
)


def _lagrangian_note(g: GenericDerivation) -> str:
    if g.decay != 0:
        return "the terms of L with layer k and k+1 states, and J's weight decay term of W^k"
    return "the terms of L with layer k and k+1 states"


def vjp_row(act: Activation) -> Row:
    """("G^k", G^k = Dσ(Z^k)ᵀ Λ^k as the kernels compute it, the activation's name)."""
    return "G^k", matrix_form(_display_vjp(act)), _vjp_note(act)


def fuses(act: Activation, loss: Loss) -> bool:
    """Whether the output pair has a simplified G^N (softmax with cross-entropy)."""
    return loss.requires_output == act.key and loss.classification


def fused_row(act: Activation, loss: Loss) -> Row:
    """("G^N", the simplified output term, as derived and checked, the pair's names)."""
    rhs = matrix_form(act.kernel_output_vjp(loss, LAYER.Z, LAYER.X, LAYER.Y, 0))
    return (
        "G^N",
        rhs.xreplace(OUTPUT),
        _words(f"{act.text} and {loss.text}, each column of Y sums to 1"),
    )


def row_latex(lhs: str, rhs: sp.Basic, note: Note) -> str:
    """One ``align*`` row: lhs &= rhs, and the note in a third column."""
    return f"{_lhs_tex(lhs)} &= {_tex(rhs)}" + (f" && {note[1]}" if note[1] else "")


#: the algorithm the equations give, batch form (samples are columns): (step, text, LaTeX)
ALGORITHM_STEPS = [
    (
        "forward",
        "for k = 1..N:  Z^k = W^k X^{k-1} + b^k 1ᵀ,  X^k = σ_k(Z^k)",
        r"\text{for } k = 1, \dots, N: \quad Z^{(k)} = W^{(k)} X^{(k-1)}"
        r" + b^{(k)} \mathbf{1}^{\top}, \quad X^{(k)} = \sigma_k\left(Z^{(k)}\right)",
    ),
    (
        "output",
        "Λ^N = −(1/B) ∂ℓ/∂x (X^N, Y) entry by entry   (G^N = (1/B)(Y − X^N) for softmax "
        "+ cross-entropy)",
        r"\Lambda^{(N)} = -\frac{1}{B} \frac{\partial \ell}{\partial x}\left(X^{(N)}, Y\right)"
        r" \quad \left(G^{(N)} = \frac{1}{B}\left(Y - X^{(N)}\right) \text{ for softmax with"
        r" cross-entropy}\right)",
    ),
    (
        "backward",
        "for k = N..1:  G^k = Dσ(Z^k)ᵀ Λ^k,  ∂L/∂W^k = −G^k X^{k-1}ᵀ,  ∂L/∂b^k = −G^k 1,  "
        "Λ^{k-1} = W^kᵀ G^k",
        r"\text{for } k = N, \dots, 1: \quad G^{(k)} = D\sigma_k\left(Z^{(k)}\right)^{\top}"
        r" \Lambda^{(k)}, \\ & \qquad \frac{\partial \mathcal{L}}{\partial W^{(k)}} = -G^{(k)}"
        r" {X^{(k-1)}}^{\top}, \quad \frac{\partial \mathcal{L}}{\partial b^{(k)}} = -G^{(k)}"
        r" \mathbf{1}, \quad \Lambda^{(k-1)} = {W^{(k)}}^{\top} G^{(k)}",
    ),
    (
        "update",
        "W^k ← W^k − η ∂L/∂W^k,  b^k ← b^k − η ∂L/∂b^k",
        r"W^{(k)} \leftarrow W^{(k)} - \eta \frac{\partial \mathcal{L}}{\partial W^{(k)}},"
        r" \quad b^{(k)} \leftarrow b^{(k)} - \eta \frac{\partial \mathcal{L}}{\partial b^{(k)}}",
    ),
    (
        "link",
        "Λ^k = −∂J/∂X^k and δ^k = −G^k = ∂J/∂Z^k (the chain rule's δ)",
        r"\Lambda^{(k)} = -\frac{\partial J}{\partial X^{(k)}}, \quad \delta^{(k)} = -G^{(k)}"
        r" = \frac{\partial J}{\partial Z^{(k)}} \quad \text{(the chain rule's } \delta)",
    ),
]
ALGORITHM = [f"{step + ':':10}{text}" for step, text, _ in ALGORITHM_STEPS]


def algorithm_rows() -> list[str]:
    """The algorithm's ``align*`` rows, one step per row (the backward step takes two)."""
    return [rf"\text{{{step}:}} \quad & {tex}" for step, _, tex in ALGORITHM_STEPS]


def algorithm_latex() -> str:
    """The algorithm as an ``align*`` block, one step per row."""
    return "\\begin{align*}\n" + " \\\\\n".join(algorithm_rows()) + "\n\\end{align*}"


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
                f"  {lhs} = {_t(rhs)}" + (f"    [{note[0]}]" if note[0] else "")
                for lhs, rhs, note in rows
            ]
        else:
            lines = [row_latex(lhs, rhs, note) for lhs, rhs, note in rows]
            if title.startswith("Generic"):
                lines.insert(0, f"Z^{{(k)}} &= {TexPrinter().doprint(LAYER.Z)}")
            body = "\\begin{align*}\n" + " \\\\\n".join(lines) + "\n\\end{align*}"
            out.append(
                f"### {title}\n\n$$\n{body}\n$$" if fmt == "markdown" else f"% {title}\n{body}"
            )
        out.append("")
    head = "The backpropagation algorithm that follows"
    decay = g.decay != 0
    if fmt == "text":
        out += [head + ":"] + [f"  {line}" for line in ALGORITHM]
        out += [f"  {'decay:':10}{DECAY_STEP[0]}"] if decay else []
    else:
        steps = algorithm_rows() + ([rf"\text{{decay:}} \quad & {DECAY_STEP[1]}"] if decay else [])
        tex = "\\begin{align*}\n" + " \\\\\n".join(steps) + "\n\\end{align*}"
        out += [f"### {head}", "", "$$", tex, "$$"] if fmt == "markdown" else [f"% {head}", tex]
    return "\n".join(out).rstrip() + "\n"


def _display_vjp(act: Activation) -> sp.MatrixExpr:
    """G^k as the kernels compute it: σ' written in X^k = σ(Z^k) where the record has that
    form (derived and checked: X ⊙ (1 − X) for sigmoid), else σ'(Z^k)."""
    return act.kernel_vjp(LAYER.Z, LAYER.X, LAYER.Lam, SAMPLES_AXIS)


def _vjp_note(act: Activation) -> Note:
    text, tex = _words(act.text)
    form = getattr(act, "output_form", None)
    if form is None or form.is_number:  # no x-form, or a constant σ' (an affine σ)
        return text, tex
    return (
        f"{text}, σ' in X^k = σ(Z^k)",
        rf"{tex}\text{{, }} \sigma' \text{{ in }} X^{{(k)}} = \sigma\left(Z^{{(k)}}\right)",
    )


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
