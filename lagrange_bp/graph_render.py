r"""Print a graph derivation as text, LaTeX, Markdown or JSON, in derivation order, with its
sums made visible.

Pre-activations Σ_j W_j x_{u_j} + b are shown as z^v[i] (defined once). An adjoint of a node
read by several consumers, and a gradient of a parameter used by several layers, is printed as
its terms by origin: ``(out: ...) + (h2: ...)`` in text, ``\underbrace{...}_{out}`` in LaTeX,
each term the derivative of that consumer's (or use's) piece of L; ``ℓ`` labels the loss's term.
A network built by ``recurrent`` also gets backpropagation through time for any number of steps
T, read off the derivation (``graph_bptt``). LaTeX names: state x_v[i] is x^{(v)}_i, λ^v[i] is
λ^{(v)}_i, z^v[i] is z^{(v)}_i, parameter "p.W0"[i,j] is \mathrm{p.W0}_{i,j}; names are set in
\mathrm{} with _ escaped; activation and loss texts (user text) only through ``tex_text``
(LaTeX) and ``markdown_escape`` (Markdown).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.printing.latex import LatexPrinter

from .display import tex_text
from .functions import get_activation, get_loss
from .graph import NAME, GraphSpec, NodeSpec
from .graph_bptt import BPTT, equations, read_bptt, recurrent_kwargs
from .graph_kkt import GraphDerivation
from .lagrangian import ALPHA, DECAY, LOSS, Entry
from .render import dl_latex, markdown_escape
from .safe_io import ASCII_TABLE

FORMATS = ("text", "latex", "json", "markdown")


_DECAY_TEXT = " + (α/2) Σ ‖W‖²"  # over every weight matrix, each shared set once
_DECAY_TEX = r" + \frac{\alpha}{2} \sum \lVert W \rVert^2"


def _short(d: GraphDerivation, e: sp.Expr) -> sp.Expr:
    return e.xreplace(d.z_display())


def _sum(d: GraphDerivation, terms: dict[str, sp.Expr], total: sp.Expr) -> str:
    """One term per origin, labelled, when there are several; else the expression."""
    if len(terms) < 2:
        return str(_short(d, total))
    return " + ".join(f"({o}: {_short(d, t)})" for o, t in terms.items())


def node_line(spec: GraphSpec, n: NodeSpec) -> str:
    """``h1 = tanh(h1.W x0 + h1.b), width 8`` and the like."""
    if n.op == "input":
        return f"{n.name}: input, width {n.width}"
    if n.op == "zeros":
        return f"{n.name} = 0, width {n.width} (a constant)"
    if n.op == "add":
        return f"{n.name} = {' + '.join(n.inputs)}, width {n.width}"
    z = " + ".join(f"{w} {u}" for w, u in zip(n.weight_names, n.inputs)) + f" + {n.bias_name}"
    uses = spec.uses(n.params or "")
    shared = f", parameters {n.params} shared by {', '.join(uses)}" if len(uses) > 1 else ""
    return f"{n.name} = {get_activation(n.activation or '').text}({z}), width {n.width}{shared}"


def _lagrangian(d: GraphDerivation) -> list[str]:
    spec = d.spec
    outs = ", ".join(spec.outputs)
    return [
        f"Lagrangian of the {spec.describe()}; one sample:",
        f"  L = ℓ(y, ({outs})){_DECAY_TEXT if spec.weight_decay else ''} + Σ_v λ^vᵀ (x_v − f_v),"
        f"  ℓ = {get_loss(spec.loss).text} summed "
        "over the outputs, v over the layer and add nodes",
        f"    = {_short(d, d.lagrangian)}",
        "nodes, in topological order:",
        *[f"  {node_line(spec, n)}" for n in spec.nodes],
        "where z^v = Σ_j W_j x_{u_j} + b:",
        *[f"  {eq.lhs} = {eq.rhs}" for eq in d.preactivations],
    ]


def _forward(d: GraphDerivation) -> list[str]:
    out = ["", "1. ∂L/∂λ^v = 0 gives the forward pass, in topological order:"]
    lams = [s for m in d.symbols.lam.values() for s in m]
    for eq, lam in zip(d.forward, lams):
        condition = _short(d, d.stationarity[lam])
        out.append(f"  ∂L/∂{lam} = {condition} = 0   ⇒   {eq.lhs} = {_short(d, eq.rhs)}")
    return out


def _adjoint(d: GraphDerivation) -> list[str]:
    spec = d.spec
    out = ["", "2. ∂L/∂x_v = 0 gives the adjoint, solved in reverse topological order:"]
    x_of = {lam: x for v, m in d.symbols.lam.items() for x, lam in zip(d.symbols.states[v], m)}
    node_of = {lam: v for v, m in d.symbols.lam.items() for lam in m}
    shown: set[str] = set()
    for eq in d.adjoint:
        v = node_of[eq.lhs]
        if v not in shown:
            shown.add(v)
            out += _origins_line(spec, v)
        x = x_of[eq.lhs]
        rhs = _sum(d, d.adjoint_terms[eq.lhs], eq.rhs)
        out.append(f"  ∂L/∂{x} = {_short(d, d.stationarity[x])} = 0   ⇒   {eq.lhs} = {rhs}")
    return out


def _origins_line(spec: GraphSpec, v: str) -> list[str]:
    origins = [*spec.consumers(v), *([LOSS] if v in spec.outputs else [])]
    if len(origins) < 2:
        return []
    return [
        f"  λ^{v} sums over the {len(origins)} places {v} is read: {', '.join(origins)} "
        f"(λ^{v} = Σ_c J_cᵀ λ^c{' − ∂ℓ/∂' + v if LOSS in origins else ''})"
    ]


def _gradients(d: GraphDerivation) -> list[str]:
    spec = d.spec
    out = ["", "3. ∂L/∂θ gives the gradient (at the KKT point, = ∂J/∂θ):"]
    for group, first in spec.groups.items():
        uses = spec.uses(group)
        if len(uses) > 1:
            out.append(
                f"  parameters {group} are shared by {len(uses)} layers {', '.join(uses)}: "
                f"each ∂L/∂θ sums over these uses (a use whose term is 0 is left out)"
            )
        for name in (*first.weight_names, first.bias_name):
            for p in d.params[name]:
                out.append(f"  ∂L/∂{p} = {_sum(d, d.gradient_terms[p], d.gradients[p])}")
    return out


UPDATE = "Update rule, learning rate η:  θ ← θ − η ∂L/∂θ for every parameter (one per shared set)"


def graph_text(d: GraphDerivation) -> str:
    """The Lagrangian, the nodes and the three groups of stationarity conditions (and BPTT for
    any T, for a recurrent network)."""
    out = _lagrangian(d) + _forward(d) + _adjoint(d) + _gradients(d)
    b = _bptt_of(d)
    if b is not None:
        out += ["", *bptt_text(b).splitlines()]
    out += [
        "",
        UPDATE,
        "Link to the chain rule: λ^v = −∂J/∂x_v for every node v.",
    ]
    return "\n".join(out)


# --- backpropagation through time, any T -------------------------------------------------------


def _bptt_of(d: GraphDerivation) -> BPTT | None:
    """The general-T equations when ``d`` is a network built by ``recurrent``, else None."""
    return read_bptt(d.spec) if recurrent_kwargs(d.spec) is not None else None


def _bptt_title(b: BPTT) -> str:
    at = " and ".join(map(str, b.read_at))
    return (
        f"Backpropagation through time, any number of steps T (read off the exact derivation "
        f"at T = {at}, small widths: {b.checked} terms equal to these, entry by entry)"
    )


ROLE_NAMES = "W_x = cell.W0, W_h = cell.W1, b = cell.b, V = out.W, c = out.b"


def bptt_text(b: BPTT) -> str:
    """The general-T equations as text."""
    rows = [f"  {lhs} = {rhs}" for lhs, rhs in equations(b)]
    return "\n".join([_bptt_title(b) + ":", f"  {ROLE_NAMES}", *rows])


def _bptt_rows(b: BPTT) -> list[str]:
    rows = [rf"{lhs} &= {rhs}" for lhs, rhs in equations(b, tex=True)]
    names = r"W_x = \mathrm{cell.W0},\ W_h = \mathrm{cell.W1},\ b = \mathrm{cell.b},\ "
    return [rf"&{names}V = \mathrm{{out.W}},\ c = \mathrm{{out.b}}", *rows]


def bptt(spec_or_kwargs: GraphSpec | dict[str, Any], fmt: str = "text") -> str:
    """BPTT for any T of ``recurrent(**kwargs)`` (or its spec), read off and checked against the
    exact derivation (``graph_bptt.read_bptt``); ``fmt`` text, latex, markdown or json."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    b = read_bptt(spec_or_kwargs)
    if fmt == "text":
        return bptt_text(b)
    if fmt == "json":
        return json.dumps(_bptt_json(b), indent=2, ensure_ascii=False)
    blocks = [(ascii_text(_bptt_title(b)), _bptt_rows(b))]
    return _latex_blocks(blocks) if fmt == "latex" else _markdown_blocks(blocks)


def _bptt_json(b: BPTT) -> dict[str, Any]:
    return {
        "read_at": list(b.read_at),
        "terms_checked": b.checked,
        "names": ROLE_NAMES,
        "equations": [
            {"lhs": lt, "rhs": rt, "latex": f"{ll} = {rl}"}
            for (lt, rt), (ll, rl) in zip(equations(b), equations(b, tex=True))
        ],
    }


# --- LaTeX -------------------------------------------------------------------------------------


def tex_name(name: str) -> str:
    r"""A node or parameter name in \mathrm{} (``_`` escaped); other text through ``tex_text``."""
    if not all(NAME.fullmatch(part) for part in name.split(".")):
        return tex_text(name)
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


def entry_latex(name: str) -> str:
    """``λ^h1[2]`` → λ^{(h1)}_{2}, ``h1[2]`` → x^{(h1)}_{2}, ``cell.W0[1,2]`` → cell.W0_{1,2}."""
    base, _, rest = name.partition("[")
    index = rest.rstrip("]")
    head, _, node = base.partition("^")
    if node:
        tex = {"λ": r"\lambda"}.get(head, head) + f"^{{({tex_name(node)})}}"
    elif base == "y":
        tex = "y"
    elif "." in base:
        tex = tex_name(base)
    else:
        tex = f"x^{{({tex_name(base)})}}"
    return f"{tex}_{{{index}}}" if index else tex


class GraphLatexPrinter(LatexPrinter):
    """SymPy's LaTeX with the graph's entries named as ``entry_latex`` writes them."""

    def _print(self, expr: Any, **kwargs: Any) -> str:
        if isinstance(expr, Entry) and expr != ALPHA:
            return entry_latex(expr.name)
        return str(super()._print(expr, **kwargs))


def latex_of(d: GraphDerivation, e: sp.Expr) -> str:
    """An expression of ``d`` as LaTeX, pre-activations shown as z^{(v)}_i."""
    return str(GraphLatexPrinter().doprint(_short(d, e)))


def _latex_sum(d: GraphDerivation, terms: dict[str, sp.Expr], total: sp.Expr) -> str:
    """Each origin's term under a brace naming it, when there are several."""
    if len(terms) < 2:
        return latex_of(d, total)
    return " + ".join(
        rf"\underbrace{{{latex_of(d, t)}}}_{{{origin_tex(o)}}}" for o, t in terms.items()
    )


def origin_tex(origin: str) -> str:
    if origin == DECAY:
        return r"\text{weight decay}"
    return r"\ell" if origin == LOSS else tex_name(origin)


def names_tex(names: Any) -> str:
    return r",\ ".join(tex_name(n) for n in names)


def node_latex(spec: GraphSpec, n: NodeSpec) -> str:
    """One row: x^{(h1)} = \tanh(h1.W x^{(x0)} + h1.b), and the like."""
    x = f"x^{{({tex_name(n.name)})}}"
    if n.op == "input":
        return rf"{x} &: \text{{input, width {n.width}}}"
    if n.op == "zeros":
        return rf"{x} &= 0 \quad \text{{(a constant, width {n.width})}}"
    if n.op == "add":
        sources = " + ".join(f"x^{{({tex_name(u)})}}" for u in n.inputs)
        return rf"{x} &= {sources} \quad \text{{(width {n.width})}}"
    z = " + ".join(
        rf"{tex_name(w)}\, x^{{({tex_name(u)})}}" for w, u in zip(n.weight_names, n.inputs)
    )
    act = get_activation(n.activation or "").latex
    uses = spec.uses(n.params or "")
    shared = ""
    if len(uses) > 1:
        shared = rf" \quad \text{{parameters }} {tex_name(n.params or '')} \text{{ shared by }} "
        shared += names_tex(uses)
    width = rf" \quad \text{{(width {n.width})}}"
    return rf"{x} &= {act}\left({z} + {tex_name(n.bias_name)}\right){width}{shared}"


def ascii_text(text: str) -> str:
    """A title for a LaTeX comment: the notation in ASCII, one line, no control characters."""
    plain = text.translate(ASCII_TABLE).replace("→", "->")
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in plain)


def _latex_blocks(blocks: list[tuple[str, list[str]]], header: str | None = None) -> str:
    out = [f"% {header}"] if header is not None else []
    for title, rows in blocks:
        out += [f"% {title}", r"\begin{align*}", " \\\\\n".join(rows), r"\end{align*}", ""]
    return "\n".join(out)


def _markdown_blocks(blocks: list[tuple[str, list[str]]], header: str | None = None) -> str:
    out = [f"## {header}", ""] if header is not None else []
    for title, rows in blocks:
        out += [f"### {markdown_escape(title)}", "", "$$", r"\begin{align*}"]
        out += [" \\\\\n".join(rows), r"\end{align*}", "$$", ""]
    return "\n".join(out)


def graph_blocks(d: GraphDerivation) -> list[tuple[str, list[str]]]:
    """(title, LaTeX rows) of each part of the derivation, in derivation order."""
    spec, sym = d.spec, d.symbols
    lams = [s for m in sym.lam.values() for s in m]
    x_of = {lam: x for v, m in sym.lam.items() for x, lam in zip(sym.states[v], m)}
    forward = [
        rf"{dl_latex(latex_of(d, lam))} &= {latex_of(d, d.stationarity[lam])} = 0 "
        rf"\;\Rightarrow\; {latex_of(d, eq.lhs)} = {latex_of(d, eq.rhs)}"
        for eq, lam in zip(d.forward, lams)
    ]
    node_of = {lam: v for v, m in sym.lam.items() for lam in m}
    adjoint: list[str] = []
    for eq in d.adjoint:
        x, v = x_of[eq.lhs], node_of[eq.lhs]
        if eq.lhs == sym.lam[v][0]:
            adjoint += consumers_row(spec, v)
        rhs = _latex_sum(d, d.adjoint_terms[eq.lhs], eq.rhs)
        adjoint.append(
            rf"{dl_latex(latex_of(d, x))} &= {latex_of(d, d.stationarity[x])} = 0 "
            rf"\;\Rightarrow\; {latex_of(d, eq.lhs)} = {rhs}"
        )
    blocks = [
        ("Lagrangian", [*_lagrangian_tex(d)]),
        ("nodes, in topological order", [node_latex(spec, n) for n in spec.nodes]),
        (
            "pre-activations z^v = sum_j W_j x_(u_j) + b",
            [
                f"{latex_of(d, e.lhs)} &= {GraphLatexPrinter().doprint(e.rhs)}"
                for e in d.preactivations
            ],
        ),
        ("1. dL/dlambda^v = 0: forward pass, in topological order", forward),
        ("2. dL/dx_v = 0: adjoint, in reverse topological order", adjoint),
        ("3. dL/dtheta: gradient, summed over the uses of a shared parameter", _gradients_tex(d)),
        ("update rule", [r"\theta &\leftarrow \theta - \eta " + dl_latex(r"\theta")]),
    ]
    b = _bptt_of(d)
    if b is not None:
        blocks.append((ascii_text(_bptt_title(b)), _bptt_rows(b)))
    return blocks


def _lagrangian_tex(d: GraphDerivation) -> list[str]:
    spec = d.spec
    loss = get_loss(spec.loss)
    return [
        rf"&\text{{graph: }} {tex_text(ascii_text(spec.describe()))}",
        rf"\mathcal{{L}} &= \ell{_DECAY_TEX if spec.weight_decay else ''} "
        rf"+ \sum_v \lambda^{{(v)\top}} \left(x^{{(v)}} - f_v\right), "
        rf"\quad \ell = {loss.latex} \text{{ over the outputs }} {names_tex(spec.outputs)}",
        rf"&= {latex_of(d, d.lagrangian)}",
    ]


def shared_row(spec: GraphSpec, group: str) -> list[str]:
    """A row saying that the gradients of a shared parameter set sum over its uses."""
    uses = spec.uses(group)
    if len(uses) < 2:
        return []
    return [
        rf"&\text{{parameters }} {tex_name(group)} \text{{ are shared by }} "
        rf"{names_tex(uses)}\text{{: each gradient sums over these uses}}"
    ]


def consumers_row(spec: GraphSpec, v: str) -> list[str]:
    """A row saying that λ^v sums over the places v is read, when there are several."""
    origins = [*spec.consumers(v), *([LOSS] if v in spec.outputs else [])]
    if len(origins) < 2:
        return []
    names = r",\ ".join(origin_tex(o) for o in origins)
    return [
        rf"&\lambda^{{({tex_name(v)})}} \text{{ sums over the {len(origins)} places it is "
        rf"read: }} {names}"
    ]


def _gradients_tex(d: GraphDerivation) -> list[str]:
    rows = []
    for group, first in d.spec.groups.items():
        rows += shared_row(d.spec, group)
        for name in (*first.weight_names, first.bias_name):
            for p in d.params[name]:
                rhs = _latex_sum(d, d.gradient_terms[p], d.gradients[p])
                rows.append(f"{dl_latex(latex_of(d, p))} &= {rhs}")
    return rows


def to_latex(d: GraphDerivation) -> str:
    """``align*`` blocks, each after a % comment naming it (for a document or a notebook)."""
    return _latex_blocks(
        graph_blocks(d), ascii_text(f"lagrange_bp derivation: {d.spec.describe()}")
    )


def to_markdown(d: GraphDerivation) -> str:
    """A heading and a $$ display per block (Jupyter, GitHub)."""
    header = f"lagrange_bp derivation: {markdown_escape(d.spec.describe())}"
    return _markdown_blocks(graph_blocks(d), header)


# --- JSON --------------------------------------------------------------------------------------


def _terms_json(d: GraphDerivation, terms: dict[str, sp.Expr], key: str) -> list[dict[str, str]]:
    return [{key: o, "text": str(_short(d, t)), "latex": latex_of(d, t)} for o, t in terms.items()]


def to_json(d: GraphDerivation) -> str:
    """Machine-readable: every equation as text and LaTeX, sums as their terms by origin."""
    spec, sym = d.spec, d.symbols
    lams = [s for m in sym.lam.values() for s in m]
    x_of = {lam: x for v, m in sym.lam.items() for x, lam in zip(sym.states[v], m)}

    def eq(lhs: sp.Expr, rhs: sp.Expr, condition: sp.Expr) -> dict[str, Any]:
        return {
            "lhs": str(lhs),
            "rhs": str(_short(d, rhs)),
            "latex": f"{latex_of(d, lhs)} = {latex_of(d, rhs)}",
            "condition": f"{_short(d, condition)} = 0",
        }

    doc: dict[str, Any] = {
        "graph": json.loads(spec.to_json()),
        "describe": spec.describe(),
        "lagrangian": {"text": str(_short(d, d.lagrangian)), "latex": latex_of(d, d.lagrangian)},
        "nodes": [node_line(spec, n) for n in spec.nodes],
        "consumers": {n.name: list(spec.consumers(n.name)) for n in spec.nodes},
        "shared": {g: list(spec.uses(g)) for g in spec.groups},
        "preactivations": [
            {
                "lhs": str(e.lhs),
                "rhs": str(e.rhs),
                "latex": f"{latex_of(d, e.lhs)} = {GraphLatexPrinter().doprint(e.rhs)}",
            }
            for e in d.preactivations
        ],
        "forward": [eq(e.lhs, e.rhs, d.stationarity[lam]) for e, lam in zip(d.forward, lams)],
        "adjoint": [
            eq(e.lhs, e.rhs, d.stationarity[x_of[e.lhs]])
            | {"terms": _terms_json(d, d.adjoint_terms[e.lhs], "origin")}
            for e in d.adjoint
        ],
        "gradients": [
            {"param": str(p), "expr": str(_short(d, g)), "latex": latex_of(d, g)}
            | {"terms": _terms_json(d, d.gradient_terms[p], "use")}
            for p, g in d.gradients.items()
        ],
        "seconds": round(d.seconds, 4),
    }
    b = _bptt_of(d)
    if b is not None:
        doc["bptt"] = _bptt_json(b)
    return json.dumps(doc, indent=2, ensure_ascii=False)


# --- one part at a time (a notebook shows each between its own words) ---------------------------

#: the parts of a derivation, in derivation order, and their blocks in ``graph_blocks``
PARTS = {
    "lagrangian": slice(0, 3),  # L, the nodes, the pre-activations
    "forward": slice(3, 4),  # ∂L/∂λ^v = 0
    "adjoint": slice(4, 5),  # ∂L/∂x_v = 0
    "gradients": slice(5, 7),  # ∂L/∂θ, and the update rule
    "bptt": slice(7, 8),  # a network built by recurrent: BPTT for any T
}


@dataclass(frozen=True)
class GraphPart:
    """One part of a graph derivation (``part``): its text (``str``) and its titled LaTeX
    blocks, which Jupyter shows as headings and ``$$`` displays (or as LaTeX alone)."""

    name: str
    text: str
    blocks: tuple[tuple[str, tuple[str, ...]], ...]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<GraphPart {self.name}: {len(self.blocks)} block(s)>"

    def _listed(self) -> list[tuple[str, list[str]]]:
        return [(title, list(rows)) for title, rows in self.blocks]

    def _repr_markdown_(self) -> str:
        return _markdown_blocks(self._listed())

    def _repr_latex_(self) -> str:
        from .display import displays

        return displays(_latex_blocks(self._listed()))


def part(d: GraphDerivation, name: str) -> GraphPart:
    """One part of the derivation, as ``render`` prints it in full: "lagrangian" (L, the nodes
    and the pre-activations), "forward" (∂L/∂λ^v = 0, solved), "adjoint" (∂L/∂x_v = 0, solved
    in reverse topological order), "gradients" (∂L/∂θ and the update rule) or, for a network
    built by ``recurrent``, "bptt" (the equations for any T, read off the derivation)."""
    if name not in PARTS:
        raise ValueError(f"unknown part {name!r}; known: {', '.join(PARTS)}")
    if name == "bptt":
        b = _bptt_of(d)
        if b is None:
            raise ValueError(f"part 'bptt': {d.spec.describe()} is not built by recurrent(...)")
        text = bptt_text(b)
    else:
        lines = {"lagrangian": _lagrangian, "forward": _forward, "adjoint": _adjoint}
        text = "\n".join(lines[name](d) if name in lines else [*_gradients(d), "", UPDATE])
    blocks = tuple((title, tuple(rows)) for title, rows in graph_blocks(d)[PARTS[name]])
    return GraphPart(name, text.strip("\n"), blocks)


def render(d: GraphDerivation, fmt: str = "text") -> str:
    """``fmt`` is one of text, latex, json, markdown."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    fns = {"text": graph_text, "latex": to_latex, "json": to_json, "markdown": to_markdown}
    return fns[fmt](d)


def graph_display_latex(d: GraphDerivation) -> str:
    """The LaTeX blocks as $$ displays (Jupyter's ``_repr_latex_``)."""
    from .display import displays

    return displays(to_latex(d))
