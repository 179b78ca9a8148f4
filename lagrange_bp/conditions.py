"""The homework's answer, one typeset statement at a time: the problem, each stationarity (KKT)
condition written as an equation = 0 before it is solved, the activations' G^k and the algorithm.

Every right-hand side comes from the generic derivation (``generic.derive_generic``: SymPy's
matrix calculus on the batch Lagrangian, σ and ℓ undefined), and a concrete loss enters through
its record; nothing here is typed in. Each statement carries its text (terminals, ``str``) and
its LaTeX (Jupyter's ``_repr_latex_``, documents), so a notebook shows the objects themselves::

    g = lbp.derive_general()
    g.problem("mse")            # min J = (1/B) Σ_i ℓ(y_i, x_i^N) s.t. ..., with ℓ defined
    for c in g.conditions("mse"):
        c                       # ∂L/∂X^N = (1/B)(X^N − Y) + Λ^N = 0  ⇒  Λ^N = (1/B)(Y − X^N)
    g.activations()             # G^k = Dσ(Z^k)ᵀ Λ^k for every built-in activation
    g.algorithm()               # the backpropagation algorithm that follows
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .display import tex_text
from .functions import X_VAR, Y_VAR, Loss, get_loss
from .generic import LAYER, GenericDerivation, for_loss
from .render_generic import (
    ALGORITHM,
    OUTPUT,
    TexPrinter,
    TextPrinter,
    algorithm_latex,
    latex,
    matrix_form,
    sections,
    text,
)


@dataclass(frozen=True)
class Typeset:
    """A statement as text (``str``, ``repr``) and as LaTeX (a ``$$`` display in Jupyter)."""

    text: str
    latex: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_latex_(self) -> str:
        return f"$$\n{self.latex}\n$$"


@dataclass(frozen=True)
class Condition:
    """One stationarity condition: ∂L/∂v as SymPy derives it, set to 0 and solved where it
    determines a variable (the forward and backward passes); for W and b it *is* the gradient.

    ``derivative`` and ``solved`` are SymPy matrix expressions of the generic layer k (layer N
    where ``layer == "N"``); ``solved`` is ``(lhs, rhs)`` or None.
    """

    variable: str  # "Λ^k", "X^N", "X^k", "W^k", "b^k"
    layer: str  # "k" or "N": which layer's names the expressions print with
    derivative: sp.Basic
    named: sp.Basic | None  # the same derivative with G^k named, for W and b
    solved: tuple[sp.Basic, sp.Basic] | None
    gives: tuple[str, str]  # what the condition gives: (text, LaTeX)

    def _text(self, e: sp.Basic) -> str:
        return text(e.xreplace(OUTPUT) if self.layer == "N" else e)

    def __str__(self) -> str:
        head = f"∂L/∂{self.variable} = {self._text(self.derivative)}"
        if self.named is not None:
            head += f" = {self._text(self.named)}"
        if self.solved is None:
            return f"{head}    [{self.gives[0]}]"
        lhs, rhs = self.solved
        return f"{head} = 0  ⇒  {self._text(lhs)} = {self._text(rhs)}    [{self.gives[0]}]"

    def __repr__(self) -> str:
        return str(self)

    def latex_terms(self) -> tuple[str, str, str | None]:
        """The condition's LaTeX pieces: ∂L/∂v, what it equals (the derivative, and for W and
        b the same with G named), and the solved form "lhs = rhs" (None for W and b)."""
        derivative = latex(self.derivative, layer=self.layer)
        if self.named is not None:
            derivative += " = " + latex(self.named, layer=self.layer)
        var = rf"\frac{{\partial \mathcal{{L}}}}{{\partial {_VARIABLE_TEX[self.variable]}}}"
        if self.solved is None:
            return var, derivative, None
        lhs, rhs = (latex(e, layer=self.layer) for e in self.solved)
        return var, derivative, f"{lhs} = {rhs}"

    def to_latex(self) -> str:
        """The condition as one LaTeX equation line (no display delimiters)."""
        var, derivative, solved = self.latex_terms()
        words = rf"\qquad \left(\text{{{self.gives[1]}}}\right)"
        if solved is None:
            return f"{var} = {derivative}{words}"
        return rf"{var} = {derivative} = 0 \;\Longrightarrow\; {solved}{words}"

    def _repr_latex_(self) -> str:
        return f"$$\n{self.to_latex()}\n$$"


_VARIABLE_TEX = {
    "Λ^k": r"\Lambda^{(k)}",
    "X^N": r"X^{(N)}",
    "X^k": r"X^{(k)}",
    "W^k": r"W^{(k)}",
    "b^k": r"b^{(k)}",
}


def _loss(loss: str | Loss | None) -> Loss | None:
    if loss is None or isinstance(loss, Loss):
        return loss
    return get_loss(loss)


def conditions(g: GenericDerivation, loss: str | Loss | None = None) -> list[Condition]:
    """Every stationarity condition of L in solving order: ∂L/∂Λ^k (forward), ∂L/∂X^N (the
    output multiplier, with its 1/B), ∂L/∂X^k for k < N (the backward recursion), ∂L/∂W^k and
    ∂L/∂b^k (the gradient). With ``loss`` (a name, an expression string or a record) the
    output condition has ℓ replaced by that loss; otherwise ℓ stays abstract."""
    record = _loss(loss)
    s, raw = LAYER, g.stationarity
    output = raw["X^N"] if record is None else for_loss(raw["X^N"], record)
    lam_n = g.output_adjoint.rhs if record is None else for_loss(g.output_adjoint.rhs, record)
    return [
        Condition("Λ^k", "k", raw["Λ^k"], None, (s.X, g.forward.rhs), _FORWARD),
        Condition("X^N", "N", matrix_form(output), None, (s.Lam, matrix_form(lam_n)), _OUTPUT),
        Condition("X^k", "k", raw["X^k"], None, (s.Lam, g.adjoint.rhs), _BACKWARD),
        Condition("W^k", "k", g.raw["weight_gradient"], g.weight_gradient.rhs, None, _GRADIENT),
        Condition("b^k", "k", g.raw["bias_gradient"], g.bias_gradient.rhs, None, _GRADIENT),
    ]


_FORWARD = ("forward pass, k = 1..N", r"forward pass, $k = 1, \dots, N$")
_OUTPUT = ("output layer: the 1/B of J", r"output layer: the $1/B$ of $J$")
_BACKWARD = (
    "k < N: backward pass, G^{k+1} = Dσ_{k+1}(Z^{k+1})ᵀ Λ^{k+1}",
    r"$k < N$: backward pass, $G^{(k+1)} = D\sigma_{k+1}\left(Z^{(k+1)}\right)^{\top}"
    r" \Lambda^{(k+1)}$",
)
_GRADIENT = (
    "the gradient; = 0 is the last KKT condition",
    r"the gradient; $= 0$ is the last KKT condition",
)


def problem(loss: str | Loss = "mse") -> Typeset:
    """The training problem for a batch of B samples, with ℓ defined from the loss record."""
    record = _loss(loss)
    assert record is not None
    j = sp.Symbol("j")
    xj, yj = sp.Symbol("x_j", real=True), sp.Symbol("y_j", real=True)
    term = record.term.xreplace({X_VAR: xj, Y_VAR: yj})
    ell = sp.Sum(term, (j, 1, sp.Symbol("n_N")))
    name = tex_text(record.text)  # a custom loss's name is the user's text: escaped
    tex = (
        r"\min_{W, b}\; J = \frac{1}{B} \sum_{i=1}^{B} \ell\left(y_i, x_i^{(N)}\right)"
        r" \quad \text{subject to} \quad x_i^{(k)} = \sigma_k\left(W^{(k)} x_i^{(k-1)}"
        r" + b^{(k)}\right),\; k = 1, \dots, N,\; i = 1, \dots, B, \\"
        rf" \ell(y, x) = {sp.latex(ell)} \qquad \left({name}\right)"
    )
    txt = (
        "min over W, b of J = (1/B) Σ_i ℓ(y_i, x_i^N) subject to "
        "x_i^k = σ_k(W^k x_i^{k-1} + b^k), k = 1..N, i = 1..B,\n"
        f"ℓ(y, x) = Σ_j {sp.sstr(term)}, j = 1..n_N    [{record.text}]"
    )
    return Typeset(txt, r"\begin{gathered}" + tex + r"\end{gathered}")


def lagrangian() -> Typeset:
    """The Lagrangian per sample, and the same sum in batch form: the columns of Λ^k are the
    samples' λ_i^k, and tr(ΛᵀM) = Σ_i λ_iᵀ m_i."""
    tex = (
        r"\mathcal{L} &= \frac{1}{B} \sum_{i=1}^{B} \ell\left(y_i, x_i^{(N)}\right)"
        r" + \sum_{i=1}^{B} \sum_{k=1}^{N} \lambda_i^{(k)\top}\left(x_i^{(k)}"
        r" - \sigma_k\left(W^{(k)} x_i^{(k-1)} + b^{(k)}\right)\right) \\"
        r" &= J + \sum_{k=1}^{N} \operatorname{tr}\left(\Lambda^{(k)\top}\left(X^{(k)}"
        r" - \sigma_k\left(Z^{(k)}\right)\right)\right), \qquad Z^{(k)} = "
        + TexPrinter().doprint(LAYER.Z)
    )
    txt = (
        "L = (1/B) Σ_i ℓ(y_i, x_i^N) + Σ_i Σ_k λ_i^kᵀ (x_i^k − σ_k(W^k x_i^{k-1} + b^k))\n"
        f"  = J + Σ_k tr(Λ^kᵀ (X^k − σ_k(Z^k))),  Z^k = {TextPrinter().doprint(LAYER.Z)}"
    )
    return Typeset(txt, r"\begin{aligned}" + tex + r"\end{aligned}")


def activations(g: GenericDerivation) -> Typeset:
    """G^k = Dσ(Z^k)ᵀ Λ^k for each built-in activation, as the kernels compute it (σ' in X^k
    where the record has that form), and the fused softmax + cross-entropy G^N."""
    title, rows = sections(g)[-1]
    lines_tex = [
        rf"{'G^{(N)}' if lhs == 'G^N' else 'G^{(k)}'} &= {latex(rhs)} && {note[1]}"
        for lhs, rhs, note in rows
    ]
    lines_text = [f"{lhs} = {text(rhs)}    [{note[0]}]" for lhs, rhs, note in rows]
    return Typeset(
        title + ":\n" + "\n".join(lines_text),
        r"\begin{aligned}" + r" \\ ".join(lines_tex) + r"\end{aligned}",
    )


def algorithm() -> Typeset:
    """The backpropagation algorithm the conditions give (batch form, samples as columns)."""
    body = algorithm_latex().replace(r"\begin{align*}", r"\begin{aligned}")
    return Typeset("\n".join(ALGORITHM), body.replace(r"\end{align*}", r"\end{aligned}"))


def batch_bridge(n: int = 2, batch: int = 3) -> tuple[sp.Eq, bool]:
    """tr(ΛᵀM) = Σ_i λ_iᵀ m_i with λ_i, m_i the columns, expanded at n × batch by SymPy: the
    equation and whether both sides are identical (they are: the trace sums column products)."""
    lam = sp.Matrix(n, batch, lambda r, c: sp.Symbol(f"lambda_{c + 1},{r + 1}"))
    m = sp.Matrix(n, batch, lambda r, c: sp.Symbol(f"m_{c + 1},{r + 1}"))
    trace = (lam.T * m).trace()
    columns = sp.Add(*[(lam[:, i].T * m[:, i])[0, 0] for i in range(batch)])
    shown = sp.Trace(sp.MatrixSymbol("Λ", n, batch).T * sp.MatrixSymbol("M", n, batch))
    return sp.Eq(shown, columns, evaluate=False), sp.expand(trace - columns) == 0
