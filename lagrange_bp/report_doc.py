"""A printable derivation: a standalone LaTeX document (or a Markdown page) that reads as a
complete homework answer for a batch of B samples.

For one network (``latex_document``, ``markdown_page``): the batch problem with J and ℓ defined,
the Lagrangian with a multiplier per sample and constraint, why the conditions separate per
sample (and where the 1/B of J goes), every KKT condition as an equation = 0 and then solved,
the matrix form of the batch (from the generic derivation), the algorithm, a worked example
with numbers (B = 2, one update, computed from the derived equations and checked against the
compiled model) and the proof in full. For the generic layer (``general_document``): the
problem, the conditions, the algorithm and the general proof.

Both formats come from one list of blocks, so they say the same thing. Text a user could have
written (a custom activation or loss, a proof step's details) is always escaped: ``tex_prose``
for LaTeX, ``markdown_text`` for Markdown; formulas are SymPy's LaTeX of parsed expressions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

from . import __version__
from .batch import (
    EXAMPLE_BATCH,
    FULL_MAX_PARAMS,
    FULL_MAX_WIDTH,
    TOLERANCE,
    WorkedExample,
    batch_output_adjoint,
    worked_example,
)
from .conditions import Condition, conditions
from .display import markdown_text, script_token
from .functions import LOSSES, X_VAR, Y_VAR, Activation, Loss, get_activation, get_loss
from .generic import GenericDerivation
from .kkt import Derivation
from .render import DocLatexPrinter, doc_latex, doc_signed_form
from .render_generic import algorithm_rows, fused_row, fuses, row_latex, sections, vjp_row
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
    "⊘": r"$\oslash$",
    "×": r"$\times$",
    "⇒": r"$\Rightarrow$",
    "←": r"$\leftarrow$",
    "→": r"$\rightarrow$",
    "↦": r"$\mapsto$",
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


def tex_prose(text: str) -> str:
    """Plain text as LaTeX text-mode source that breaks across lines: special characters
    escaped, the package's Unicode signs as math, and its shorthand x^k, x^{k-1}, σ_k, 2^61 as
    real super- and subscripts. Nothing in ``text`` acts as LaTeX, and the result is ASCII."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        script = script_token(text, i) if ch in "^_" else None
        if script is not None:
            token, i = script
            command = "textsuperscript" if ch == "^" else "textsubscript"
            out.append(rf"\{command}{{{tex_prose(token)}}}")
            continue
        if ch == "-" and text[i + 1 : i + 2] == "-":  # --general, not an en dash
            ch = "-{}"
        out.append(
            _SPECIAL.get(ch)
            or _UNICODE.get(ch)
            or (ch if len(ch) > 1 or (ord(ch) < 128 and ch.isprintable()) else "?")
        )
        i += 1
    return "".join(out).replace("$$", "")  # adjacent math signs as one formula


# --- one document, two formats ---------------------------------------------------------------
Segment = tuple[str, str]  # (kind: "text", "math" or "code", its text)


class Plain(str):
    """Text shown as written (escaped), never read as math: a user's name or expression."""


class Code(Plain):
    """A command or Python expression, set in a typewriter font."""


def prose(*parts: str) -> tuple[Segment, ...]:
    """Sentences: each ``str`` part is text with ``$...$`` math, each ``Plain`` part is text."""
    out: list[Segment] = []
    for part in parts:
        if isinstance(part, Plain):
            out.append(("code" if isinstance(part, Code) else "text", str(part)))
            continue
        out += [(("text", "math")[i % 2], p) for i, p in enumerate(part.split("$")) if p]
    return tuple(out)


@dataclass(frozen=True)
class Heading:
    level: int  # 1 section, 2 subsection
    text: tuple[Segment, ...]


@dataclass(frozen=True)
class Para:
    text: tuple[Segment, ...]


@dataclass(frozen=True)
class Display:
    """An ``align*`` of rows (``&`` aligns, ``&&`` starts a note column)."""

    rows: tuple[str, ...]


@dataclass(frozen=True)
class Raw:
    latex: str
    markdown: str


Block = Heading | Para | Display | Raw
ROWS_PER_DISPLAY = 40  # a long align* is split, so TeX never holds thousands of rows at once


def _latex_text(text: tuple[Segment, ...]) -> str:
    shown = {
        "math": lambda t: f"${t}$",
        "code": lambda t: rf"\texttt{{{tex_prose(t)}}}",
        "text": tex_prose,
    }
    return "".join(shown[kind](t) for kind, t in text)


def _markdown_text(text: tuple[Segment, ...]) -> str:
    shown = {
        "math": lambda t: f"${t}$",
        "code": lambda t: f"`{t}`",
        "text": markdown_text,
    }
    return "".join(shown[kind](t) for kind, t in text)


def _align(rows: tuple[str, ...] | list[str]) -> list[str]:
    chunks = [rows[i : i + ROWS_PER_DISPLAY] for i in range(0, len(rows), ROWS_PER_DISPLAY)]
    return ["\\begin{align*}\n" + " \\\\\n".join(c) + "\n\\end{align*}" for c in chunks]


def to_latex(title: str, blocks: list[Block]) -> str:
    """The blocks as a complete pdflatex document (amsmath, amssymb, T1 Latin Modern)."""
    out = [
        r"\documentclass[10pt]{article}",
        r"\usepackage[margin=2cm]{geometry}",
        r"\usepackage{amsmath,amssymb}",
        r"\usepackage[T1]{fontenc}",
        r"\usepackage{lmodern}",
        r"\allowdisplaybreaks",
        r"\setlength{\emergencystretch}{3em}",
        r"\setlength{\parindent}{0pt}",
        r"\setlength{\parskip}{0.5\baselineskip}",
        rf"\title{{Backpropagation from the KKT conditions of the Lagrangian:\\ {title}}}",
        rf"\date{{Derived and proven by lagrange\_bp {__version__}}}",
        r"\begin{document}",
        r"\maketitle",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(rf"\{'sub' * (b.level - 1)}section{{{_latex_text(b.text)}}}")
        elif isinstance(b, Para):
            out.append(_latex_text(b.text) + "\n")
        elif isinstance(b, Display):
            out += _align(b.rows)
        else:
            out.append(b.latex)
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def to_markdown(title: str, blocks: list[Block]) -> str:
    """The blocks as a Markdown page: headings, prose with $ math, $$ displays."""
    out = [f"# Backpropagation from the KKT conditions of the Lagrangian: {title}", ""]
    out += [f"*Derived and proven by lagrange\\_bp {__version__}*", ""]
    numbers = [0, 0]  # numbered as LaTeX numbers them, so "Section 3" means the same
    for b in blocks:
        if isinstance(b, Heading):
            numbers[b.level - 1] += 1
            numbers[b.level :] = [0] * (2 - b.level)
            number = ".".join(str(n) for n in numbers[: b.level])
            out += [f"{'#' * (b.level + 1)} {number} {_markdown_text(b.text)}", ""]
        elif isinstance(b, Para):
            out += [_markdown_text(b.text), ""]
        elif isinstance(b, Display):
            out += [f"$$\n{body}\n$$\n" for body in _align(b.rows)]
        else:
            out += [b.markdown, ""]
    return "\n".join(out).rstrip() + "\n"


# --- fitting formulas to the page ------------------------------------------------------------
LINE = 84.0  # width of a display line, in the units of ``formula_width`` (about one math letter)


def formula_width(tex: str) -> float:
    """A rough width of a formula in math letters: scripts count 0.7, a stacked super- and
    subscript once, commands one letter, binary operators and relations with their spacing."""
    s = re.sub(r"\\(left|right|big|Big)\b|\\[,;:!]|\\q?quad", " ", tex)
    s = re.sub(r"\\(frac|text|operatorname|mathcal|mathbf|mathbb)\b", "", s)
    s = re.sub(r"\\[a-zA-Z]+", "#", s)
    s = re.sub(
        r"\^\{([^{}]*)\}_\{([^{}]*)\}",
        lambda m: "~" * round(0.7 * max(len(m[1]), len(m[2]))),
        s,
    )
    s = re.sub(r"[_^]\{([^{}]*)\}", lambda m: "~" * round(0.7 * len(m[1])), s)
    operators = len(re.findall(r"[-+=<>]|#", s))
    return len(re.sub(r"[{}\s&]", "", s)) + 1.2 * operators


def _terms(e: sp.Expr, show: Callable[[sp.Expr], str]) -> list[str]:
    """A long sum as its terms' LaTeX with their signs (+ t, − t), positive terms first; a
    short one (or any other expression) whole."""
    whole = show(e)
    if not e.is_Add or formula_width(whole) <= LINE / 2:
        return [whole]
    out = []
    for t in _ordered_terms(e):
        sign = "-" if t.could_extract_minus_sign() else "+"
        out.append(f"{sign} {show(-t if sign == '-' else t)}")
    first = out[0].removeprefix("+ ")
    out[0] = first if not first.startswith("- ") else "-" + first[2:]
    return out


def _ordered_terms(e: sp.Expr, negate: bool = False) -> list[sp.Expr]:
    """The terms of a sum in the order the document prints them: SymPy's, positive first (of
    the negated sum when ``negate``)."""
    terms = e.as_ordered_terms() if e.is_Add else [e]
    return sorted(terms, key=lambda t: bool(t.could_extract_minus_sign()) != negate)


def pack_rows(
    lead: str,
    pieces: list[str],
    indent: str = r"&\quad ",
    column: float | None = None,
    line: float = LINE,
) -> list[str]:
    """``lead`` followed by the pieces, broken into rows that fit the page (``line`` wide).
    ``column``: the width of the left column every row is indented by (else ``lead``'s)."""
    offset = formula_width(lead.split("&")[0]) if column is None else column
    rows: list[str] = []
    row = lead.rstrip()
    for piece in pieces:
        used = formula_width(row) + formula_width(piece) + (offset if rows or column else 0)
        fits = used <= line
        if not fits and row not in (lead.rstrip(), indent.rstrip()):
            rows.append(row)
            row = indent.rstrip()
        row += " " + piece
    return [*rows, row]


def _term_pieces(d: Derivation, minus: bool, t: sp.Expr, first: bool) -> list[str]:
    """One term with its sign; a long c·(a − b − …) opened into pieces c \\Big(a, − b, …\\Big)
    that rows can break between."""
    sign = ("-" if minus else "") if first else ("- " if minus else "+ ")
    tex = doc_latex(d, t, shorten=False)
    factors = sp.Mul.make_args(t)
    sums = [f for f in factors if f.is_Add]
    if formula_width(tex) <= 0.6 * LINE or len(sums) != 1:
        return [sign + tex]
    rest = doc_latex(d, sp.Mul(*[f for f in factors if f is not sums[0]]), shorten=False)
    inner = _sum_pieces(d, sums[0])
    head = f"{sign}{rest}" + r" \Big(" + inner[0]
    return [head, *inner[1:-1], inner[-1] + r" \Big)"] if len(inner) > 1 else [head + r" \Big)"]


def _sum_pieces(d: Derivation, e: sp.Expr, negate: bool = False, first: bool = True) -> list[str]:
    """The terms of a sum (``negate``: of its negative) with their signs, positive first."""
    out: list[str] = []
    for i, t in enumerate(_ordered_terms(e, negate)):
        minus = bool(t.could_extract_minus_sign())
        out += _term_pieces(d, minus != negate, -t if minus else t, first and i == 0)
    return out


def _pieces(d: Derivation, e: sp.Expr, prefer_negative: bool = False) -> list[str]:
    """``e`` as the document shows it (``signed_form``: signs gathered in front), in pieces
    that rows can break between when it is too long for one."""
    negative, body = doc_signed_form(d, e, prefer_negative)
    if not body.is_Add:
        return _term_pieces(d, negative, body, True)
    whole = doc_latex(d, body, shorten=False)
    if formula_width(whole) <= 0.6 * LINE:
        return [rf"-\left({whole}\right)" if negative else whole]
    inner = _sum_pieces(d, body)
    if not negative:
        return inner
    return [r"-\Big(" + inner[0], *inner[1:-1], inner[-1] + r"\Big)"]


def _equation_rows(lhs: str, condition: list[str], solved_lhs: str, solved: list[str]) -> list[str]:
    """lhs = condition = 0 ⇒ solved_lhs = solved: one row when it fits, else the condition's
    rows (broken between pieces) and then the solution's."""
    one = f"{lhs} &= {' '.join(condition)} = 0 \\;\\Rightarrow\\; {solved_lhs} = {' '.join(solved)}"
    if formula_width(one) <= LINE:
        return [one]
    rows = pack_rows(f"{lhs} &=", condition)
    rows[-1] += " = 0"
    then = rf"&\Rightarrow\; {solved_lhs} ="
    return rows + pack_rows(then, solved, indent=r"&\qquad", column=formula_width(lhs))


def _noted(rows: list[str]) -> tuple[str, ...]:
    """Rows with notes (``&& note``) as an aligned column when the widest formula and the
    widest note fit the page together; otherwise each note after its own formula, or on the
    next row when that would run off the page."""
    parts = [row.split(" && ", 1) for row in rows]
    widest = max(formula_width(p[0]) for p in parts)
    notes = max((formula_width(p[1]) for p in parts if len(p) == 2), default=0.0)
    if widest + notes <= LINE:
        return tuple(rows)
    out = []
    for p in parts:
        if len(p) == 1:
            out.append(p[0])
        elif formula_width(p[0]) + formula_width(p[1]) <= LINE:
            out.append(rf"{p[0]} \qquad {p[1]}")
        else:
            out += [p[0], rf"&\qquad {p[1]}"]
    return tuple(out)


def _number(v: float) -> str:
    """Six significant digits, 10^k for small and large magnitudes, no −0."""
    s = f"{v:.6g}"
    if s in ("-0", "0"):
        return "0"
    if "e" in s:
        mantissa, exponent = s.split("e")
        return rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return s


def _matrix(m: np.ndarray) -> str:
    rows = np.atleast_2d(m)
    body = r" \\ ".join(" & ".join(_number(float(v)) for v in row) for row in rows)
    return rf"\begin{{pmatrix}} {body} \end{{pmatrix}}"


def _column(v: np.ndarray) -> str:
    return _matrix(np.asarray(v).reshape(-1, 1))


# --- the concrete document -------------------------------------------------------------------
DL = r"\frac{\partial \mathcal{L}_i}{\partial %s}"


def _dli(var: str) -> str:
    return DL % var


def _title(d: Derivation) -> str:
    s = d.spec
    return f"{'-'.join(map(str, s.widths))} network, {', '.join(s.activations)}, loss {s.loss}"


def _sigmas(d: Derivation) -> str:
    """σ_1 = tanh, σ_2 = softmax (runs of one activation joined: σ_1 = … = σ_4 = tanh)."""
    names = [get_activation(a) for a in d.spec.activations]
    parts, k = [], 0
    while k < len(names):
        end = k
        while end + 1 < len(names) and names[end + 1] is names[k]:
            end += 1
        if end == k:
            lhs = rf"\sigma_{{{k + 1}}}"
        elif end == k + 1:
            lhs = rf"\sigma_{{{k + 1}}} = \sigma_{{{end + 1}}}"
        else:
            lhs = rf"\sigma_{{{k + 1}}} = \dots = \sigma_{{{end + 1}}}"
        parts.append(f"{lhs} = {names[k].latex}")
        k = end + 1
    return r",\quad ".join(parts)


def loss_latex(loss: Loss, n: str = "n_N") -> str:
    """ℓ(y, x) = Σ_j f(x_j, y_j) from the record's f, the constant factor in front of the sum:
    ½ Σ_j (x_j − y_j)² for mse, −Σ_j y_j log x_j for cross-entropy."""
    xj, yj = sp.Symbol("x_j", real=True), sp.Symbol("y_j", real=True)
    coeff, rest = loss.term.xreplace({X_VAR: xj, Y_VAR: yj}).as_coeff_Mul()
    sign = "-" if coeff < 0 else ""
    factor = "" if abs(coeff) == 1 else sp.latex(abs(coeff)) + " "
    body = sp.latex(rest)
    if rest.is_Add:
        body = rf"\left({body}\right)"
    return rf"\ell(y, x) = {sign}{factor}\sum_{{j=1}}^{{{n}}} {body}"


_PROBLEM = (
    r"&\min_{W, b}\; J = \frac{1}{B} \sum_{i=1}^{B} \ell\left(y_i, x^{(N)}_i\right)",
    r"&\text{subject to}\quad x^{(k)}_i = \sigma_k\left(W^{(k)} x^{(k-1)}_i + b^{(k)}\right), "
    r"\quad k = 1, \dots, N,\; i = 1, \dots, B,",
)


def _problem(d: Derivation) -> list[Block]:
    s = d.spec
    widths = ", ".join(f"n_{{{k}}} = {w}" for k, w in enumerate(s.widths))
    loss = get_loss(s.loss)
    return [
        Heading(1, prose("The problem")),
        Para(
            prose(
                f"The network has $N = {s.depth}$ layers of widths ${widths}$ and computes, "
                "layer by layer,"
            )
        ),
        Display(
            (
                r"x^{(k)} &= \sigma_k\left(W^{(k)} x^{(k-1)} + b^{(k)}\right), \quad "
                r"k = 1, \dots, N, \qquad " + _sigmas(d),
            )
        ),
        Para(
            prose(
                "Training it on a batch of $B$ samples $(x^{(0)}_i, y_i)$, $i = 1, \\dots, B$, "
                "is the equality-constrained problem"
            )
        ),
        Display(_PROBLEM),
        Para(prose("where $\\ell$ is the loss of one sample, here ", Plain(loss.text), ":")),
        Display((loss_latex(loss, str(s.widths[-1])),)),
        Para(
            prose(
                "With a multiplier vector $\\lambda^{(k)}_i \\in \\mathbb{R}^{n_k}$ for each "
                "sample $i$ and layer $k$ (one entry per scalar constraint), the Lagrangian is"
            )
        ),
        Display(
            (
                r"\mathcal{L} &= J + \sum_{i=1}^{B} \sum_{k=1}^{N} \lambda^{(k)\top}_i "
                r"\left(x^{(k)}_i - \sigma_k\left(z^{(k)}_i\right)\right) "
                r"= \sum_{i=1}^{B} \mathcal{L}_i, \qquad z^{(k)}_i = W^{(k)} x^{(k-1)}_i "
                r"+ b^{(k)},",
                r"\mathcal{L}_i &= \frac{1}{B}\, \ell\left(y_i, x^{(N)}_i\right) + "
                r"\sum_{k=1}^{N} \lambda^{(k)\top}_i \left(x^{(k)}_i - "
                r"\sigma_k\left(z^{(k)}_i\right)\right).",
            )
        ),
        Para(
            prose(
                "The states $x^{(k)}_i$ and multipliers $\\lambda^{(k)}_i$ of sample $i$ occur "
                "in $\\mathcal{L}_i$ only, so the conditions "
                "$\\partial\\mathcal{L}/\\partial\\lambda^{(k)}_i = 0$ and "
                "$\\partial\\mathcal{L}/\\partial x^{(k)}_i = 0$ separate: each sample has its "
                "own, the same equations for every sample. The parameters are shared: "
                "$\\partial\\mathcal{L}/\\partial W^{(k)} = \\sum_{i=1}^{B} "
                "\\partial\\mathcal{L}_i/\\partial W^{(k)}$, and likewise for $b^{(k)}$. "
                "Sections 2 and 3 therefore show the equations of one sample $i$ with its index "
                "dropped: $x^{(k)}$ stands for $x^{(k)}_i$, $\\lambda^{(k)}$ for "
                "$\\lambda^{(k)}_i$, $y$ for $y_i$. The batch size enters in one place only: "
                "$\\mathcal{L}_i$ carries $\\ell$ with the factor $1/B$ of $J$, so the output "
                "condition gives $\\lambda^{(N)} = -\\frac{1}{B} \\nabla_x "
                "\\ell(y, x^{(N)})$, and every $\\lambda^{(k)}$, linear in $\\lambda^{(N)}$, "
                "carries the $1/B$ with it."
            )
        ),
    ]


def _lagrangian(d: Derivation) -> list[Block]:
    lam_list = [v for k in d.symbols.lam for v in d.symbols.lam[k]]
    constraints = [
        rf"+ {doc_latex(d, lam)} \left({doc_latex(d, d.stationarity[lam])}\right)"
        for lam in lam_list
    ]
    loss = _sum_pieces(d, d.loss)
    if len(loss) == 1 or formula_width(" ".join(loss)) <= 0.6 * LINE:
        loss = [rf"\frac{{1}}{{B}} \left({doc_latex(d, d.loss)}\right)"]
    else:
        loss = [rf"\frac{{1}}{{B}} \Big({loss[0]}", *loss[1:-1], loss[-1] + r" \Big)"]
    rows = pack_rows(r"\mathcal{L}_i &=", loss + constraints)
    where: tuple[str, ...] = (
        r"z^{(k)}_j &= \sum_{m=1}^{n_{k-1}} W^{(k)}_{j,m} x^{(k-1)}_m + b^{(k)}_j",
    )
    if max(d.spec.widths) <= FULL_MAX_WIDTH:
        printer = DocLatexPrinter(d)  # the sums written out: no z^{(k)} for them
        show = printer.doprint
        where = tuple(
            row
            for eq in d.preactivations
            for row in pack_rows(f"{sp.latex(eq.lhs)} &=", _terms(eq.rhs, show))
        )
    return [
        Heading(1, prose("The Lagrangian of one sample")),
        Para(prose("Written out entry by entry ($B$ stays a symbol):")),
        Display(tuple(rows)),
        Para(prose("where")),
        Display(where),
    ]


def _adjoint_condition(d: Derivation, x: sp.Symbol, lam: sp.Symbol, rhs: sp.Expr) -> list[str]:
    """∂L_i/∂x^k_j, which is λ^k_j − (its solution), shown so: λ minus the solution's terms."""
    if sp.expand(d.stationarity[x] - (lam - rhs)) != 0:
        raise ArithmeticError(f"∂L/∂{x} is not {lam} − ({rhs})")
    negative, body = doc_signed_form(d, rhs)
    return [sp.latex(lam), *_sum_pieces(d, body, negate=not negative, first=False)]


def _kkt(d: Derivation) -> list[Block]:
    n = d.spec.depth
    lam_list = [v for k in d.symbols.lam for v in d.symbols.lam[k]]
    forward = [
        row
        for eq, lam in zip(d.forward, lam_list)
        for row in _equation_rows(
            _dli(sp.latex(lam)),
            [doc_latex(d, d.stationarity[lam])],
            sp.latex(eq.lhs),
            [doc_latex(d, eq.rhs)],
        )
    ]
    output = [
        row
        for c in batch_output_adjoint(d)
        for row in _equation_rows(
            _dli(sp.latex(c.state)),
            _pieces(d, c.condition),
            sp.latex(c.multiplier),
            _pieces(d, c.adjoint),
        )
    ]
    x_of = {lam: x for k in d.symbols.lam for x, lam in zip(d.symbols.x[k], d.symbols.lam[k])}
    top = set(d.symbols.lam[n])
    interior = [
        row
        for eq in d.adjoint
        if eq.lhs not in top
        for row in _equation_rows(
            _dli(sp.latex(x_of[eq.lhs])),
            _adjoint_condition(d, x_of[eq.lhs], eq.lhs, eq.rhs),
            sp.latex(eq.lhs),
            _pieces(d, eq.rhs),
        )
    ]
    gradients = [
        row
        for p, g in d.gradients.items()
        for row in pack_rows(f"{_dli(sp.latex(p))} &=", _pieces(d, g, prefer_negative=True))
    ]
    blocks: list[Block] = [
        Heading(1, prose("The KKT conditions")),
        Para(
            prose(
                "Each condition is $\\partial\\mathcal{L}_i/\\partial v = 0$ for one variable "
                "$v$, differentiated by SymPy and written in the states and multipliers "
                "(at the KKT point $\\sigma_k(z^{(k)}) = x^{(k)}$, so for example "
                "$\\tanh'(z) = 1 - x^2$)."
            )
        ),
        Heading(2, prose("$\\partial\\mathcal{L}_i/\\partial\\lambda = 0$ gives the forward pass")),
        Display(tuple(forward)),
        Heading(
            2,
            prose(
                "$\\partial\\mathcal{L}_i/\\partial x = 0$ gives the adjoint recursion, "
                "from $k = N$ down"
            ),
        ),
        Para(
            prose(
                "At the output, $x^{(N)}$ occurs only in $\\frac{1}{B}\\ell$ and in its own "
                "constraint, so the $1/B$ of $J$ appears here:"
            )
        ),
        Display(tuple(output)),
    ]
    if interior:
        blocks += [
            Para(
                prose(
                    "Below the output, $x^{(k)}$ occurs in its own constraint and in layer $k+1$'s:"
                )
            ),
            Display(tuple(interior)),
        ]
    return [
        *blocks,
        Heading(
            2,
            prose(
                "$\\partial\\mathcal{L}_i/\\partial W$ and $\\partial\\mathcal{L}_i/\\partial b$ "
                "give the gradient"
            ),
        ),
        Para(
            prose(
                "Summed over the batch, $\\partial\\mathcal{L}/\\partial\\theta = "
                "\\sum_{i=1}^{B} \\partial\\mathcal{L}_i/\\partial\\theta$ for every weight and "
                "bias $\\theta$; at the KKT point (the forward and adjoint equations hold) it "
                "equals $\\partial J/\\partial\\theta$, the gradient backpropagation computes. "
                "Each sample contributes"
            )
        ),
        Display(tuple(gradients)),
        Para(
            prose(
                "and one step of gradient descent with learning rate $\\eta$ is "
                "$\\theta \\leftarrow \\theta - \\eta\\, \\partial\\mathcal{L}/\\partial\\theta$ "
                "for every weight and bias."
            )
        ),
    ]


_NOTES = {  # what each condition gives, short enough to sit beside it
    "Λ^k": r"forward pass, $k = 1, \dots, N$",
    "X^N": r"output layer: the $1/B$ of $J$",
    "X^k": r"$k < N$: backward pass",
    "W^k": "the gradient",
    "b^k": "the gradient",
}


def _condition_block(c: Condition) -> list[str]:
    """A generic condition: ∂L/∂v = … = 0 on one row, ⟹ the solution on the next."""
    var, derivative, solved = c.latex_terms()
    note = rf"&& \text{{{_NOTES[c.variable]}}}"
    if solved is None:
        return [f"{var} &= {derivative} {note}"]
    return [f"{var} &= {derivative} = 0 {note}", rf"&\Longrightarrow\; {solved}"]


_COLUMNS = (
    "Put the samples side by side as columns: $X^{(k)} = [x^{(k)}_1 \\cdots x^{(k)}_B]$ "
    "($n_k \\times B$), $Y = [y_1 \\cdots y_B]$, $\\Lambda^{(k)} = [\\lambda^{(k)}_1 \\cdots "
    "\\lambda^{(k)}_B]$, and $Z^{(k)} = W^{(k)} X^{(k-1)} + b^{(k)} \\mathbf{1}^\\top$ with "
    "$\\mathbf{1}$ the vector of $B$ ones. For an $n \\times B$ matrix $M$ with columns $m_i$, "
    "$\\operatorname{tr}(\\Lambda^\\top M) = \\sum_{i=1}^{B} \\lambda_i^\\top m_i$, so the "
    "Lagrangian is"
)
_TRACE = (
    r"\mathcal{L} = J + \sum_{k=1}^{N} \operatorname{tr}\left(\Lambda^{(k)\top}"
    r"\left(X^{(k)} - \sigma_k\left(Z^{(k)}\right)\right)\right)",
)


def _matrix_form(d: Derivation, g: GenericDerivation) -> list[Block]:
    loss = get_loss(d.spec.loss)
    acts: list[Activation] = []
    for a in d.spec.activations:
        if get_activation(a) not in acts:
            acts.append(get_activation(a))
    rows = [row for c in conditions(g, loss) for row in _condition_block(c)]
    rows += [row_latex(*vjp_row(a)) for a in acts]
    output = get_activation(d.spec.activations[-1])
    if fuses(output, loss):
        rows.append(row_latex(*fused_row(output, loss)))
    return [
        Heading(1, prose("The batch in matrix form")),
        Para(prose(_COLUMNS)),
        Display(_TRACE),
        Para(
            prose(
                "and column $i$ of $\\Lambda^{(k)}$ is the multiplier $\\lambda^{(k)}_i$ of "
                "Sections 1 to 3. lagrange_bp differentiates this Lagrangian once, for a "
                "generic layer $k$ with symbolic widths and batch size (the general proof, ",
                Code("lagrange-bp verify --general"),
                ", checks it for every $N$). With "
                "$G^{(k)} = D\\sigma_k(Z^{(k)})^\\top \\Lambda^{(k)}$, column by column the "
                "vector-Jacobian product of layer $k$, and $\\frac{\\partial \\ell}{\\partial x}"
                "(X^{(N)}, Y)$ the matrix whose column $i$ is "
                "$\\nabla_x \\ell(y_i, x^{(N)}_i)$, the conditions are",
            )
        ),
        Display(_noted(rows)),
        Para(
            prose(
                "The products with $X^{(k-1)\\top}$ and with $\\mathbf{1}$ sum over the "
                "samples: they are the sums $\\sum_i \\partial\\mathcal{L}_i/\\partial\\theta$ "
                "of Section 3, and the $1/B$ of $J$ sits in $\\Lambda^{(N)}$."
            )
        ),
    ]


_LINK = (
    "For one sample this is the chain rule: $\\lambda^{(k)} = -\\partial J/\\partial x^{(k)}$, "
    "and $\\delta^{(k)} = \\partial J/\\partial z^{(k)} = -\\sigma_k'(z^{(k)}) \\odot "
    "\\lambda^{(k)}$ (for softmax $-D\\sigma_k^\\top \\lambda^{(k)}$) is backpropagation's "
    "error signal. In it the backward pass reads $\\delta^{(N)} = \\frac{1}{B}\\, "
    "\\sigma_N'(z^{(N)}) \\odot \\nabla_x \\ell(y, x^{(N)})$, $\\delta^{(k)} = \\sigma_k'(z^{(k)}) "
    "\\odot W^{(k+1)\\top} \\delta^{(k+1)}$, and $\\partial J/\\partial W^{(k)} = \\sum_i "
    "\\delta^{(k)}_i x^{(k-1)\\top}_i$, $\\partial J/\\partial b^{(k)} = \\sum_i \\delta^{(k)}_i$."
)


def _algorithm() -> list[Block]:
    return [
        Heading(1, prose("The backpropagation algorithm that follows")),
        Para(
            prose(
                "The conditions, solved in order, are one pass over the batch (samples as "
                "columns; $D\\sigma_k(Z^{(k)})^\\top \\Lambda^{(k)} = \\sigma_k'(Z^{(k)}) \\odot "
                "\\Lambda^{(k)}$ for an elementwise $\\sigma_k$):"
            )
        ),
        Display(tuple(algorithm_rows())),
        Para(prose(_LINK)),
    ]


def _example(d: Derivation) -> list[Block]:
    ex = worked_example(d)
    head = Heading(
        1, prose(f"A worked example: $B = {EXAMPLE_BATCH}$ samples, one step with $\\eta = 0.1$")
    )
    if ex is None:
        return [
            head,
            Para(prose("No worked example: the loss or an activation is not finite at the data.")),
        ]
    how = (
        "Every number below is computed from the derived equations of Sections 2 and 3, sample "
        "by sample with SymPy's ",
        Code("lambdify"),
        f", $\\lambda^{{(N)}}$ carrying $1/B = 1/{ex.batch}$ and "
        "$\\partial\\mathcal{L}/\\partial\\theta = \\sum_i \\partial\\mathcal{L}_i/"
        "\\partial\\theta$, and agrees with the compiled model ",
        Code("lbp.compile(spec)"),
        " (its forward, adjoint, loss_and_grad and sgd_step) to within "
        f"$10^{{{round(np.log10(TOLERANCE))}}}$ relative; shown to six significant digits. "
        "Columns are samples.",
    )
    targets = "one-hot" if get_loss(d.spec.loss).classification else "uniform in $[0, 1]$"
    data = (
        f"Data and initial parameters: inputs uniform in $[-1, 1]$, targets {targets}, biases "
        "uniform in $[-0.2, 0.2]$ (",
        Code(f"numpy.random.default_rng({ex.seed})"),
        "), weights ",
        Code(f"lbp.compile(spec).init_params(seed={ex.seed})"),
        ", all rounded to two decimals.",
    )
    if not ex.full:
        return [head, *_example_summary(d, ex, how, data)]
    return [head, Para(prose(*how)), Para(prose(*data)), *_example_full(d, ex)]


def _example_full(d: Derivation, ex: WorkedExample) -> list[Block]:
    n = d.spec.depth
    params = tuple(
        rf"W^{{({k})}} &= {_matrix(W)}, \quad b^{{({k})}} = {_column(b)}"
        for k, (W, b) in enumerate(ex.params, 1)
    )
    forward = [
        rf"Z^{{({k})}} &= {_matrix(ex.Z[k - 1].T)}, \quad X^{{({k})}} = "
        rf"{_matrix(ex.states[k - 1].T)}"
        for k in range(1, n + 1)
    ]
    forward.append(rf"J &= {_number(ex.loss)}")
    adjoint = tuple(rf"\Lambda^{{({k})}} &= {_matrix(ex.lams[k - 1].T)}" for k in range(n, 0, -1))
    step = []
    for k, (Ws, bs) in enumerate(d.params, 1):
        gW = np.array([ex.grads[s] for s in Ws]).reshape(Ws.shape)
        gb = np.array([ex.grads[s] for s in bs])
        newW = np.array([ex.updated[s] for s in Ws]).reshape(Ws.shape)
        newb = np.array([ex.updated[s] for s in bs])
        step += [
            rf"\frac{{\partial \mathcal{{L}}}}{{\partial W^{{({k})}}}} &= {_matrix(gW)}, \quad "
            rf"\frac{{\partial \mathcal{{L}}}}{{\partial b^{{({k})}}}} = {_column(gb)}",
            rf"W^{{({k})}} &\leftarrow {_matrix(newW)}, \quad b^{{({k})}} \leftarrow "
            rf"{_column(newb)}",
        ]
    return [
        Display(
            (
                rf"X^{{(0)}} &= {_matrix(ex.X.T)}, \quad Y = {_matrix(ex.Y.T)}",
                *params,
            )
        ),
        Para(prose("The forward pass ($\\partial\\mathcal{L}_i/\\partial\\lambda = 0$) and $J$:")),
        Display(tuple(forward)),
        Para(
            prose(
                "The adjoint pass from the output down ($\\partial\\mathcal{L}_i/\\partial x = "
                "0$; column $i$ of $\\Lambda^{(k)}$ is $\\lambda^{(k)}_i$):"
            )
        ),
        Display(adjoint),
        Para(
            prose(
                "The gradient summed over the samples, and the step $\\theta \\leftarrow "
                "\\theta - \\eta\\, \\partial\\mathcal{L}/\\partial\\theta$ with $\\eta = "
                f"{ex.lr}$:"
            )
        ),
        Display(tuple(step)),
        Para(
            prose(
                f"At the new parameters $J = {_number(ex.loss_after or 0.0)}$ "
                f"(it was ${_number(ex.loss)}$)."
            )
        ),
    ]


def _example_summary(
    d: Derivation, ex: WorkedExample, how: tuple[str, ...], data: tuple[str, ...]
) -> list[Block]:
    rows = [rf"J &= {_number(ex.loss)}"]
    for p, g in ex.grads.items():
        old = ex.initial[p]
        rows.append(
            rf"\frac{{\partial \mathcal{{L}}}}{{\partial {sp.latex(p)}}} &= {_number(g)}, "
            rf"\quad {sp.latex(p)} \leftarrow {_number(old)} - {ex.lr} \cdot "
            rf"\left({_number(g)}\right) = {_number(ex.updated[p])}"
        )
    return [
        Para(
            prose(
                f"This network has {d.spec.n_params} parameters; the example is printed in full "
                f"for networks of at most {FULL_MAX_PARAMS} parameters and width at most "
                f"{FULL_MAX_WIDTH}. Shown here: $J$ and the first entries of layer 1. ",
                *data,
            )
        ),
        Para(prose(*how)),
        Display(tuple(rows)),
    ]


def proof_blocks(report: Report, title: str = "Proof summary") -> list[Block]:
    """Every step's claim, method and full details: typeset in LaTeX, verbatim in Markdown."""
    items = []
    for st in report.steps:
        details = [
            (r"\hspace*{1.5em}" if line.startswith(" ") else "") + tex_prose(line.strip())
            for line in st.detail.splitlines()
        ]
        verdict = "proven" if st.ok else "NOT proven"
        items.append(
            rf"\item[({tex_prose(st.label)}) {verdict}] {tex_prose(st.claim)}. "
            rf"\emph{{Method:}} {tex_prose(st.method)} ({st.seconds:.2f}\,s)."
            + "".join(rf"\newline {line}" for line in details)
        )
    head = str(report).splitlines()[0]
    latex_body = "\n".join(
        [
            tex_prose(head) + ".\n",
            r"\begin{description}",
            *items,
            r"\end{description}",
        ]
    )
    markdown_body = f"```text\n{report}\n```"
    return [Heading(1, prose(title)), Raw(latex_body, markdown_body)]


def _concrete_blocks(d: Derivation, report: Report, g: GenericDerivation) -> list[Block]:
    return [
        *_problem(d),
        *_lagrangian(d),
        *_kkt(d),
        *_matrix_form(d, g),
        *_algorithm(),
        *_example(d),
        *proof_blocks(report),
    ]


def _plain_objective(d: Derivation) -> None:
    """The document is written per sample, L = Σ_i L_i; a weight decay term belongs to no
    sample, so a spec with one is refused (its equations print with ``derive``)."""
    if d.spec.weight_decay:
        raise ValueError(
            "the printable document covers the objective without weight decay; for "
            f"{d.spec.describe()} print the equations (derive without --output) or the generic "
            "layer with weight decay (derive --general --weight-decay ALPHA --output ...)"
        )


def latex_document(d: Derivation, report: Report) -> str:
    """A complete LaTeX document (pdflatex, amsmath) for the derivation ``d`` and its proof."""
    from .generic import derive_generic

    _plain_objective(d)
    return to_latex(tex_escape(_title(d)), _concrete_blocks(d, report, derive_generic()))


def markdown_page(d: Derivation, report: Report) -> str:
    """The same document as a Markdown page with $ and $$ math, the proof verbatim."""
    from .generic import derive_generic

    _plain_objective(d)
    return to_markdown(markdown_text(_title(d)), _concrete_blocks(d, report, derive_generic()))


# --- the general document --------------------------------------------------------------------
GENERAL_TITLE = "the generic layer (any depth, any widths, batch B)"


def _general_problem(g: GenericDerivation) -> list[Block]:
    examples: list[str] = []
    for name in LOSSES:
        lo = get_loss(name)
        examples += ["; " if examples else "", Plain(lo.text), f": $f = {sp.latex(lo.term)}$"]
    window = sections(g)[0][1][0]
    return [
        Heading(1, prose("The problem")),
        Para(
            prose(
                "A network of $N$ layers with any widths $n_0, \\dots, n_N$ computes "
                "$x^{(k)} = \\sigma_k(W^{(k)} x^{(k-1)} + b^{(k)})$, $k = 1, \\dots, N$. "
                "Training it on a batch of $B$ samples $(x^{(0)}_i, y_i)$ is the problem"
            )
        ),
        Display(_PROBLEM),
        Para(
            prose(
                "with $\\ell(y, x) = \\sum_{j=1}^{n_N} f(x_j, y_j)$ the loss of one sample, a "
                "sum over its outputs (",
                *examples,
                "). With the samples as columns, $X^{(k)} = [x^{(k)}_1 \\cdots x^{(k)}_B]$, "
                "$\\Lambda^{(k)} = [\\lambda^{(k)}_1 \\cdots \\lambda^{(k)}_B]$, "
                "$Z^{(k)} = W^{(k)} X^{(k-1)} + b^{(k)} \\mathbf{1}^\\top$ ($\\mathbf{1}$: $B$ "
                "ones), and $\\operatorname{tr}(\\Lambda^\\top M) = \\sum_{i=1}^{B} "
                "\\lambda_i^\\top m_i$ for the columns $m_i$ of $M$, the Lagrangian with one "
                "multiplier per sample and constraint is",
            )
        ),
        Display(
            (
                r"\mathcal{L} &= J + \sum_{i=1}^{B} \sum_{k=1}^{N} \lambda^{(k)\top}_i "
                r"\left(x^{(k)}_i - \sigma_k\left(z^{(k)}_i\right)\right)",
                r"&= J + \sum_{k=1}^{N} \operatorname{tr}\left(\Lambda^{(k)\top}"
                r"\left(X^{(k)} - \sigma_k\left(Z^{(k)}\right)\right)\right).",
            )
        ),
        Para(
            prose(
                "Column $i$ of $\\Lambda^{(k)}$ is the multiplier $\\lambda^{(k)}_i$ of sample "
                "$i$. The terms of $\\mathcal{L}$ that contain layer $k$'s states "
                "$X^{(k)}$ and multipliers $\\Lambda^{(k)}$ are"
            )
        ),
        Display((row_latex(*window).split(" && ")[0].replace(r"\mathcal{L} &=", "&", 1),)),
        Para(
            prose(
                "and, at the output, $J$. SymPy differentiates them with $\\sigma_k$ and $f$ "
                "undefined functions and the widths and $B$ symbols, so every result holds for "
                "any differentiable activation and loss, any $N$ and any widths. Below, "
                "$\\frac{\\partial \\ell}{\\partial x}(X^{(N)}, Y)$ is the matrix of "
                "$\\partial f/\\partial x$ at the entries of $X^{(N)}$ and $Y$: its column $i$ "
                "is $\\nabla_x \\ell(y_i, x^{(N)}_i)$."
            )
        ),
    ]


def _general_blocks(g: GenericDerivation, report: Report) -> list[Block]:
    rows = [row for c in conditions(g) for row in _condition_block(c)]
    for name in LOSSES:
        (output,) = [c for c in conditions(g, name) if c.variable == "X^N"]
        note = r"&& \text{" + tex_prose(get_loss(name).text) + ", "
        rows += [r.replace(r"&& \text{", note, 1) for r in _condition_block(output)]
    _, activations = sections(g)[-1]
    return [
        *_general_problem(g),
        Heading(1, prose("The KKT conditions")),
        Para(
            prose(
                "Each stationarity condition of $\\mathcal{L}$ as SymPy derives it, set to 0 "
                "and solved, with $G^{(k)} = D\\sigma_k(Z^{(k)})^\\top \\Lambda^{(k)}$ "
                "(column by column the vector-Jacobian product of layer $k$); the last rows "
                "are the output condition for each built-in loss:"
            )
        ),
        Display(_noted(rows)),
        Heading(
            2,
            prose(
                "$G^{(k)} = D\\sigma(Z^{(k)})^\\top \\Lambda^{(k)}$ for each activation "
                "($D\\sigma$: the Jacobian of $\\sigma$)"
            ),
        ),
        Display(_noted([row_latex(*row) for row in activations])),
        *_algorithm(),
        *proof_blocks(report, "Proof summary: the general proof"),
    ]


def general_document(fmt: str, g: GenericDerivation, report: Report) -> str:
    """The generic layer's derivation as a complete LaTeX document or Markdown page, with the
    general proof (``verify_general``) in full."""
    blocks = _general_blocks(g, report)
    if fmt == "latex":
        return to_latex(tex_escape(GENERAL_TITLE), blocks)
    if fmt == "markdown":
        return to_markdown(markdown_text(GENERAL_TITLE), blocks)
    raise ValueError(f"a general document is latex or markdown, not {fmt!r}")
