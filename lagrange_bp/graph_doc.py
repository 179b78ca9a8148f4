"""A graph's derivation and its proof as a printable document (``derive --graph … --output``).

The sections are the parts of ``graph_render.graph_blocks`` in derivation order (the
Lagrangian, the nodes, the pre-activations, each group of stationarity conditions, the update,
and BPTT for any T for a recurrent network), then the proof of ``verify(graph)`` step by step;
the document machinery is ``report_doc``'s: one list of blocks, written as a pdflatex document
or as a Markdown page. A row too wide for the page (the Lagrangian of a graph, a sum over
consumers or over uses) is broken into rows of whole terms.
"""

from __future__ import annotations

import re

import sympy as sp

from .display import markdown_text
from .graph_kkt import GraphDerivation
from .graph_render import (
    ascii_text,
    consumers_row,
    graph_blocks,
    latex_of,
    origin_tex,
    shared_row,
)
from .render import dl_latex
from .report_doc import (
    LINE,
    Block,
    Display,
    Heading,
    Para,
    Plain,
    formula_width,
    pack_rows,
    proof_blocks,
    prose,
    tex_escape,
    to_latex,
    to_markdown,
)
from .verify import Report

#: the section title of each part of ``graph_blocks``, in its order (BPTT, when present, last)
SECTIONS = (
    "The Lagrangian",
    "The nodes, in topological order",
    "The pre-activations $z^{(v)} = \\sum_j W_j x^{(u_j)} + b$",
    "$\\partial L / \\partial \\lambda^{(v)} = 0$ gives the forward pass",
    "$\\partial L / \\partial x^{(v)} = 0$ gives the adjoint, in reverse topological order",
    "$\\partial L / \\partial \\theta$ gives the gradient, summed over a parameter's uses",
    "The update rule",
)
BPTT = "Backpropagation through time, for any number of steps $T$"
#: the page width in ``formula_width``'s units for a graph's rows: its \\mathrm names (h1.W)
#: are wider than the letters that estimate counts, so less than ``LINE``
GRAPH_LINE = 0.8 * LINE
OPEN, CLOSE = re.compile(r"\\left(?![a-zA-Z])"), re.compile(r"\\right(?![a-zA-Z])")


def top_level_terms(tex: str) -> list[str]:
    """A LaTeX sum split at its top-level `` + `` and `` - `` (outside braces and \\left…
    \\right): ``a + \\frac{b + c}{2} - d`` → ``["a", "+ \\frac{b + c}{2}", "- d"]``."""
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(tex):
        if OPEN.match(tex, i) or tex[i] == "{":
            depth += 1
        elif CLOSE.match(tex, i) or tex[i] == "}":
            depth -= 1
        elif depth == 0 and i > start and tex[i : i + 3] in (" + ", " - "):
            pieces.append(tex[start:i].strip())
            start = i + 1
        i += 1
    return [p for p in [*pieces, tex[start:].strip()] if p]


def wrapped(row: str) -> list[str]:
    """A display row too wide for the page broken after its ``&=`` (or ``&\\quad``) into rows
    of whole terms; a term still too wide is opened at its outer parentheses."""
    if formula_width(row) <= GRAPH_LINE:
        return [row]
    for mark in ("&=", r"&\quad"):
        lead, sep, body = row.partition(mark)
        terms = [piece for t in top_level_terms(body) for piece in opened(t)]
        if sep and len(terms) >= 2:
            return pack_rows(f"{lead}{mark}", terms, line=GRAPH_LINE)
    return [row]


def opened(term: str) -> list[str]:
    """A term too wide for a row, ``a \\left(s_1 + s_2\\right) b``, as pieces that TeX can
    set on rows of their own: ``a \\left(s_1\\right.``, ``\\left. + s_2\\right) b``."""
    if formula_width(term) <= GRAPH_LINE / 2:
        return [term]
    match = OPEN.search(term)
    if match is None or not term.startswith("(", match.end()):
        return [term]
    inner_start, depth, i = match.end() + 1, 1, match.end() + 1
    while i < len(term) and depth:
        if OPEN.match(term, i) or term[i] == "{":
            depth += 1
        elif CLOSE.match(term, i) or term[i] == "}":
            depth -= 1
        i += 1
    close = i - 1  # the index of the matching \right
    if depth or not term.startswith(r"\right)", close):
        return [term]
    parts = top_level_terms(term[inner_start:close])
    if len(parts) < 2:
        return [term]
    head, tail = term[:inner_start], term[close + len(r"\right)") :]
    return [
        head + parts[0] + r"\right.",
        *(rf"\left. {p} \right." for p in parts[1:-1]),
        rf"\left. {parts[-1]} \right){tail}",
    ]


def sum_rows(d: GraphDerivation, lead: str, terms: dict[str, sp.Expr], total: sp.Expr) -> list[str]:
    """``lead &= Σ_o t_o``: each origin's term on rows of its own, named in the note column
    (a consumer, a use, ℓ or the weight decay); a single term as it is."""
    if len(terms) < 2:
        return wrapped(f"{lead} &= {latex_of(d, total)}")
    rows: list[str] = []
    for k, (origin, term) in enumerate(terms.items()):
        tex = latex_of(d, term)
        if k == 0:
            first = f"{lead} &= {tex}"
        else:
            first = rf"&\quad {tex}" if tex.startswith("- ") else rf"&\quad + {tex}"
        part = wrapped(first)
        part[0] += rf" && \text{{from }} {origin_tex(origin)}"
        rows += part
    return rows


def solved_rows(condition: str, var: str, rhs: list[str]) -> list[str]:
    """``∂L/∂s &= … = 0``, then ``⇒ var &= …`` (``rhs``: the rows after ``var &=``)."""
    return [*wrapped(f"{condition} = 0"), rf"\Rightarrow\; {var} {rhs[0]}", *rhs[1:]]


def condition_sections(d: GraphDerivation) -> list[list[str]]:
    """The rows of ∂L/∂λ = 0 (forward), ∂L/∂x = 0 (adjoint) and ∂L/∂θ (gradient), sums
    by origin one term a row."""
    sym = d.symbols
    lams = [s for m in sym.lam.values() for s in m]
    forward: list[str] = []
    for eq, lam in zip(d.forward, lams):
        cond = f"{dl_latex(latex_of(d, lam))} &= {latex_of(d, d.stationarity[lam])}"
        forward += solved_rows(cond, latex_of(d, eq.lhs), [f"&= {latex_of(d, eq.rhs)}"])
    x_of = {lam: x for v, m in sym.lam.items() for x, lam in zip(sym.states[v], m)}
    node_of = {lam: v for v, m in sym.lam.items() for lam in m}
    adjoint: list[str] = []
    for eq in d.adjoint:
        x, v = x_of[eq.lhs], node_of[eq.lhs]
        if eq.lhs == sym.lam[v][0]:
            adjoint += consumers_row(d.spec, v)
        cond = f"{dl_latex(latex_of(d, x))} &= {latex_of(d, d.stationarity[x])}"
        rhs = sum_rows(d, "", d.adjoint_terms[eq.lhs], eq.rhs)
        adjoint += solved_rows(cond, latex_of(d, eq.lhs), [rhs[0].lstrip(), *rhs[1:]])
    gradient: list[str] = []
    for group, first in d.spec.groups.items():
        gradient += shared_row(d.spec, group)
        for name in (*first.weight_names, first.bias_name):
            for p in d.params[name]:
                lead = dl_latex(latex_of(d, p))
                gradient += sum_rows(d, lead, d.gradient_terms[p], d.gradients[p])
    return [forward, adjoint, gradient]


def graph_document_blocks(d: GraphDerivation, report: Report) -> list[Block]:
    """The document's blocks: a paragraph on the graph, each part of the derivation, the proof."""
    blocks: list[Block] = [
        Para(
            prose(
                "The network is the ",
                Plain(d.spec.describe()),
                ". Each node $v$ is a constraint $x^{(v)} = f_v$ with its multiplier "
                "$\\lambda^{(v)}$; a node read by several consumers gets the sum of what flows "
                "back from each, and a shared parameter the sum of its uses' gradients.",
            )
        )
    ]
    parts = [rows for _, rows in graph_blocks(d)]
    parts[3:6] = condition_sections(d)  # forward, adjoint, gradient: sums one term a row
    for k, rows in enumerate(parts):
        title = SECTIONS[k] if k < len(SECTIONS) else BPTT
        blocks.append(Heading(1, prose(title)))
        blocks.append(Display(tuple(line for row in rows for line in wrapped(row))))
    return [*blocks, *proof_blocks(report)]


def graph_document(fmt: str, d: GraphDerivation, report: Report) -> str:
    """The document as ``"latex"`` (a complete pdflatex source, ASCII) or ``"markdown"``."""
    if fmt not in ("latex", "markdown"):
        raise ValueError(f"a graph document is latex or markdown, got {fmt!r}")
    blocks = graph_document_blocks(d, report)
    if fmt == "latex":
        return to_latex(tex_escape(ascii_text(d.spec.describe())), blocks)
    return to_markdown(markdown_text(d.spec.describe()), blocks)
