"""A printable derivation: a standalone LaTeX document (or a Markdown page) of one network.

The problem, the Lagrangian, the three groups of KKT conditions, the backpropagation algorithm
that follows, and a summary of the proof — each formula derived and proven by lagrange_bp.
"""

from __future__ import annotations

import sympy as sp

from . import __version__
from .kkt import Derivation
from .render import dl_latex, latex_of, to_markdown
from .verify import Report

_UNICODE = {
    "∂": r"$\partial$",
    "λ": r"$\lambda$",
    "Λ": r"$\Lambda$",
    "σ": r"$\sigma$",
    "θ": r"$\theta$",
    "δ": r"$\delta$",
    "η": r"$\eta$",
    "ℓ": r"$\ell$",
    "∇": r"$\nabla$",
    "Σ": r"$\Sigma$",
    "≠": r"$\neq$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "−": "-",
    "–": "--",
    "…": "...",
    "ᵀ": r"$^\top$",
    "⊙": r"$\odot$",
    "×": r"$\times$",
    "⇒": r"$\Rightarrow$",
    "′": "'",
    "·": r"$\cdot$",
    "∈": r"$\in$",
}
_SPECIAL = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "^": r"\^{}",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "~": r"\~{}",
}


def tex_escape(text: str) -> str:
    """Plain text (with the package's Unicode math signs) as LaTeX text-mode source."""
    out = []
    for ch in text:
        out.append(_SPECIAL.get(ch) or _UNICODE.get(ch) or (ch if ord(ch) < 128 else "?"))
    return "".join(out)


ALGORITHM_TEX = [
    r"\textbf{forward:} for $k = 1,\dots,N$: $z^{(k)} = W^{(k)} x^{(k-1)} + b^{(k)}$, "
    r"$x^{(k)} = \sigma_k(z^{(k)})$;",
    r"\textbf{output:} $\lambda^{(N)} = -\frac{1}{B}\nabla_{x}\ell(y, x^{(N)})$;",
    r"\textbf{backward:} for $k = N,\dots,1$: $\frac{\partial \mathcal{L}}{\partial W^{(k)}} = "
    r"-\left(\sigma_k'(z^{(k)}) \odot \lambda^{(k)}\right) x^{(k-1)\top}$, "
    r"$\frac{\partial \mathcal{L}}{\partial b^{(k)}} = -\sigma_k'(z^{(k)}) \odot \lambda^{(k)}$, "
    r"$\lambda^{(k-1)} = W^{(k)\top}\left(\sigma_k'(z^{(k)}) \odot \lambda^{(k)}\right)$;",
    r"\textbf{update:} $W^{(k)} \leftarrow W^{(k)} - \eta \frac{\partial \mathcal{L}}"
    r"{\partial W^{(k)}}$, $b^{(k)} \leftarrow b^{(k)} - \eta \frac{\partial \mathcal{L}}"
    r"{\partial b^{(k)}}$ (softmax layers use their Jacobian $D\sigma^\top \lambda$).",
    r"\textbf{link to the chain rule:} $\lambda^{(k)} = -\partial J/\partial x^{(k)}$ and "
    r"$\delta^{(k)} = -\sigma_k'(z^{(k)}) \odot \lambda^{(k)} = \partial J/\partial z^{(k)}$.",
]


def _align(rows: list[str]) -> str:
    return "\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}\n"


def latex_document(d: Derivation, report: Report) -> str:
    """A complete LaTeX document (pdflatex, amsmath) for the derivation ``d`` and its proof."""
    s = d.spec
    lam_list = [v for k in d.symbols.lam for v in d.symbols.lam[k]]
    terms = sp.Add.make_args(d.lagrangian)
    lagrangian = [r"\mathcal{L} &= " + latex_of(d, terms[0])] + [
        r"&\quad + " + latex_of(d, t) for t in terms[1:]
    ]
    title = tex_escape(
        f"{'-'.join(map(str, s.widths))} network, {', '.join(s.activations)}, loss {s.loss}"
    )
    out = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[margin=2cm]{geometry}",
        r"\usepackage{amsmath,amssymb}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{lmodern}",
        r"\allowdisplaybreaks",
        rf"\title{{Backpropagation from the KKT conditions of the Lagrangian:\\ {title}}}",
        rf"\date{{Derived and proven by lagrange\_bp {__version__}}}",
        r"\begin{document}",
        r"\maketitle",
        r"\section{The problem}",
        "Training one sample is the equality-constrained problem",
        r"\[ \min_{W, b}\ \ell\left(y, x^{(N)}\right) \quad\text{subject to}\quad "
        r"x^{(k)} = \sigma_k\left(W^{(k)} x^{(k-1)} + b^{(k)}\right),\ k = 1,\dots,"
        + str(s.depth)
        + r". \]",
        r"with Lagrangian $\mathcal{L} = \ell(y, x^{(N)}) + \sum_k \lambda^{(k)\top}"
        r"\left(x^{(k)} - \sigma_k(z^{(k)})\right)$, where "
        r"$z^{(k)} = W^{(k)} x^{(k-1)} + b^{(k)}$.",
        r"\section{The Lagrangian}",
        _align(lagrangian),
        "where",
        _align([f"{sp.latex(eq.lhs)} &= {sp.latex(eq.rhs)}" for eq in d.preactivations]),
        r"\section{The KKT conditions}",
        r"\subsection{$\partial\mathcal{L}/\partial\lambda = 0$ gives the forward pass}",
        _align(
            [
                f"{dl_latex(sp.latex(lam))} &= {latex_of(d, d.stationarity[lam])} = 0 "
                f"\\;\\Rightarrow\\; {sp.latex(eq.lhs)} = {latex_of(d, eq.rhs)}"
                for eq, lam in zip(d.forward, lam_list)
            ]
        ),
        r"\subsection{$\partial\mathcal{L}/\partial x = 0$ gives the adjoint recursion, "
        r"from $k = N$ down}",
        _align([f"{sp.latex(eq.lhs)} &= {latex_of(d, eq.rhs)}" for eq in d.adjoint]),
        r"\subsection{$\partial\mathcal{L}/\partial W$ and $\partial\mathcal{L}/\partial b$ "
        r"give the gradient}",
        _align([f"{dl_latex(sp.latex(p))} &= {latex_of(d, g)}" for p, g in d.gradients.items()]),
        r"\section{The backpropagation algorithm that follows}",
        r"\begin{enumerate}",
        *[rf"\item {line}" for line in ALGORITHM_TEX],
        r"\end{enumerate}",
        r"\section{Proof summary}",
        tex_escape(str(report).splitlines()[0]) + ".",
        r"\begin{description}",
        *[
            rf"\item[({st.label}) {'proven' if st.ok else 'NOT proven'}] {tex_escape(st.claim)}. "
            rf"\emph{{Method:}} {tex_escape(st.method)}. "
            rf"{tex_escape(st.detail.splitlines()[0]) if st.detail else ''} "
            rf"({st.seconds:.2f}\,s)"
            for st in report.steps
        ],
        r"\end{description}",
        r"\end{document}",
    ]
    return "\n".join(out) + "\n"


def markdown_page(d: Derivation, report: Report) -> str:
    """The derivation as a Markdown page with $$ displays, and the proof report."""
    return to_markdown(d) + "\n\n## Proof\n\n```text\n" + str(report) + "\n```\n"
