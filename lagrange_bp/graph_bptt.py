"""Backpropagation through time for any number of steps T, read off the exact derivation.

``recurrent(...)`` unrolled over T steps is derived exactly (``derive_graph``) at T = 3; each
multiplier λ^{h_t} and each gradient of the shared parameters is a sum of terms labelled by
origin (``adjoint_terms``, ``gradient_terms``). Which origins occur at which step t is *read*
from those labels (λ^{h_t} from o_t and from h_{t+1}; a parameter's uses h_t or o_t), written
as step ranges in T (t = 1..T, t < T, t = T, t = 2..T), and every term is checked, entry by
entry, to be the textbook term at its step; at T = 4 the ranges read again must agree and the
terms be the textbook's again. What is printed for general T is built from the ranges read:

  λ_{o_t} = −∂ℓ(y_t, o_t)/∂o_t                          at the output steps
  λ_{h_t} = Vᵀ(σ_o'(z^o_t) ⊙ λ_{o_t}) + W_hᵀ(σ'(z_{t+1}) ⊙ λ_{h_{t+1}})   (each where read)
  ∂L/∂W_x = −Σ_t (σ'(z_t) ⊙ λ_{h_t}) x_tᵀ,  ∂L/∂W_h = −Σ_t (σ'(z_t) ⊙ λ_{h_t}) h_{t−1}ᵀ,
  ∂L/∂b = −Σ_t σ'(z_t) ⊙ λ_{h_t},  ∂L/∂V = −Σ_t (σ_o'(z^o_t) ⊙ λ_{o_t}) h_tᵀ,  ∂L/∂c likewise

with W_x = cell.W0 (hidden, inputs), W_h = cell.W1 (hidden, hidden), b = cell.b (hidden,),
V = out.W (outputs, hidden), c = out.b (outputs,); a vector σ (softmax) has Dσ(z)ᵀ λ for σ' ⊙ λ.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import sympy as sp

from .functions import X_VAR, Y_VAR, Z_VAR, Activation, Elementwise, get_activation, get_loss
from .graph import GraphSpec, recurrent
from .graph_kkt import GraphDerivation, activations, derive_graph
from .lagrangian import ALPHA, DECAY, LOSS

READ_AT = (3, 4)  # T at which the pattern is read (first) and checked again (both)
PROBE = {"inputs": 2, "hidden": 2}  # widths of the probe derivations (outputs: ≤ 2)
ROLES = {"W_x": "cell.W0", "W_h": "cell.W1", "b": "cell.b", "V": "out.W", "c": "out.b"}
KWARGS = (
    "inputs",
    "hidden",
    "outputs",
    "steps",
    "activation",
    "output_activation",
    "loss",
    "outputs_at",
    "weight_decay",
)


@dataclass(frozen=True)
class Steps:
    """A range of steps t: ``start`` (1, 2, or "T") to ``end`` ("T" or "T-1")."""

    start: int | str
    end: str

    def at(self, T: int) -> list[int]:
        """The steps of the range for a concrete T."""
        first = T if self.start == "T" else int(self.start)
        last = T if self.end == "T" else T - 1
        return list(range(first, last + 1))

    def text(self) -> str:
        """``t = 1..T``, ``t = T``, ``t = 1..T−1``."""
        if self.start == "T":
            return "t = T"
        return f"t = {self.start}..{'T' if self.end == 'T' else 'T−1'}"

    def latex(self) -> str:
        if self.start == "T":
            return "t = T"
        return rf"t = {self.start}, \dots, {'T' if self.end == 'T' else 'T-1'}"


def read_range(steps: set[int], T: int, what: str) -> Steps:
    """The range in T that the concrete steps are at this T (``ArithmeticError`` if none)."""
    if steps == {T}:
        return Steps("T", "T")
    for start in (1, 2):
        for end, last in (("T", T), ("T-1", T - 1)):
            if steps == set(range(start, last + 1)) and last >= start:
                return Steps(start, end)
    raise ArithmeticError(f"{what}: steps {sorted(steps)} of T = {T} are no range in T")


# --- the recurrent spec ----------------------------------------------------------------------


def recurrent_kwargs(spec: GraphSpec) -> dict[str, Any] | None:
    """The arguments of ``recurrent`` that build ``spec``, or None when it is not one."""
    names = spec.input_names
    if not names or names != tuple(f"x{t}" for t in range(1, len(names) + 1)):
        return None
    try:
        cell, out = spec.node("h1"), spec.node(spec.outputs[-1])
    except KeyError:
        return None
    every = len(spec.outputs) > 1 or (len(names) == 1 and spec.outputs == ("o1",))
    kw: dict[str, Any] = {
        "inputs": spec.input_widths[0],
        "hidden": cell.width,
        "outputs": out.width,
        "steps": len(names),
        "activation": cell.activation,
        "output_activation": out.activation,
        "loss": spec.loss,
        "outputs_at": "every" if every else "last",
        "weight_decay": spec.weight_decay,
    }
    try:
        return kw if recurrent(**kw) == spec else None
    except (ValueError, TypeError):
        return None


def _as_kwargs(spec_or_kwargs: GraphSpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(spec_or_kwargs, GraphSpec):
        kw = recurrent_kwargs(spec_or_kwargs)
        if kw is None:
            raise ValueError(
                f"bptt: {spec_or_kwargs.describe()} is not a network built by lagrange_bp."
                "recurrent(...)"
            )
        return kw
    if not isinstance(spec_or_kwargs, dict):
        raise TypeError(
            f"bptt takes a GraphSpec from recurrent(...) or its keyword arguments, got "
            f"{type(spec_or_kwargs).__name__}"
        )
    unknown = sorted(set(spec_or_kwargs) - set(KWARGS))
    if unknown:
        raise ValueError(f"bptt: unknown arguments {unknown}; known: {', '.join(KWARGS)}")
    spec = recurrent(**spec_or_kwargs)  # every check of recurrent
    kw = recurrent_kwargs(spec)
    assert kw is not None
    return kw


def probe(kw: dict[str, Any], T: int) -> GraphSpec:
    """The recurrent spec of ``kw`` at small widths and T steps."""
    return recurrent(**(kw | PROBE | {"outputs": min(kw["outputs"], 2), "steps": T}))


# --- reading the pattern -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """Where each term occurs, as ranges of t: ``outputs`` (the steps with an o_t), ``adjoint``
    (kind "out" or "next" → the t whose λ^{h_t} has it) and ``gradients`` (role → the t of
    its uses with a term)."""

    outputs: Steps
    adjoint: tuple[tuple[str, Steps], ...]
    gradients: tuple[tuple[str, Steps], ...]
    decayed: tuple[str, ...] = ()  # the roles whose gradient has the weight decay's α θ


def _kind(origin: str, t: int) -> str:
    """The origin of a term of λ^{h_t}: "out" (o_t) or "next" (h_{t+1})."""
    if origin == f"o{t}":
        return "out"
    if origin == f"h{t + 1}":
        return "next"
    raise ArithmeticError(f"λ^h{t} has a term from {origin!r}, neither o{t} nor h{t + 1}")


def _use_step(origin: str, role: str) -> int:
    """The step t of a use h_t (cell parameters) or o_t (output parameters)."""
    prefix = "h" if role in ("W_x", "W_h", "b") else "o"
    if not (origin.startswith(prefix) and origin[1:].isdigit()):
        raise ArithmeticError(f"{ROLES[role]} has a term from {origin!r}, not a use {prefix}_t")
    return int(origin[1:])


def read_pattern(d: GraphDerivation, T: int) -> Pattern:
    """The ranges in T of every term of the derivation of a recurrent spec with T steps."""
    adjoint: dict[str, set[int]] = {"out": set(), "next": set()}
    for t in range(1, T + 1):
        kinds = {_kind(o, t) for lam in d.symbols.lam[f"h{t}"] for o in d.adjoint_terms[lam]}
        for k in kinds:
            adjoint[k].add(t)
    gradients, decayed = {}, []
    for role, name in ROLES.items():
        terms = [d.gradient_terms[p] for p in d.params[name]]
        uses = [{_use_step(o, role) for o in t if o != DECAY} for t in terms]
        if any(u != uses[0] for u in uses):
            raise ArithmeticError(f"the entries of {name} have terms from different steps")
        gradients[role] = read_range(uses[0], T, name)
        with_decay = {DECAY in t for t in terms}
        if len(with_decay) != 1:
            raise ArithmeticError(f"some entries of {name} have the weight decay's term, not all")
        if with_decay == {True}:
            decayed.append(role)
    outs = {int(o[1:]) for o in d.spec.outputs}
    return Pattern(
        read_range(outs, T, "outputs"),
        tuple((k, read_range(s, T, f"λ^h_t from {k}")) for k, s in adjoint.items() if s),
        tuple(gradients.items()),
        tuple(decayed),
    )


# --- the textbook template, instantiated in the derivation's symbols ---------------------------


class Template:
    """The textbook's term at step t, entry by entry, written as the derivation writes it."""

    def __init__(self, d: GraphDerivation) -> None:
        self.d, self.sym = d, d.symbols
        self.acts = activations(d.spec, d.abstract)
        self.definition = {eq.lhs: eq.rhs for eq in d.preactivations}
        self.states: dict[sp.Expr, sp.Expr] = {}
        for n in d.spec.nodes:
            if n.op == "layer":
                applied = self.acts[n.params or ""].apply(list(self.sym.z[n.name]))
                self.states |= {
                    s: x for s, x in zip(applied, self.sym.states[n.name]) if not s.is_Symbol
                }

    def public(self, e: sp.Expr) -> sp.Expr:
        return e.xreplace(self.states).xreplace(self.definition)

    def g(self, node: str) -> list[sp.Expr]:
        """Dσ(z_v)ᵀ λ_v (σ'(z_v) ⊙ λ_v for an elementwise σ), entry by entry."""
        z, lam = list(self.sym.z[node]), list(self.sym.lam[node])
        act = self.acts[self.d.spec.node(node).params or ""]
        s = act.apply(z)
        return [self.public(sp.Add(*[lk * sp.diff(sk, zj) for lk, sk in zip(lam, s)])) for zj in z]

    def adjoint(self, kind: str, t: int, i: int) -> sp.Expr:
        """Entry i of Vᵀ(σ_o' ⊙ λ_{o_t}) (kind "out") or W_hᵀ(σ' ⊙ λ_{h_{t+1}}) ("next")."""
        node, W = (f"o{t}", "out.W") if kind == "out" else (f"h{t + 1}", "cell.W1")
        g, w = self.g(node), self.d.params[W]
        return sp.Add(*[w[k, i] * g[k] for k in range(len(g))])

    def loss(self, t: int, i: int) -> sp.Expr:
        """−∂ℓ/∂o_t[i]: the output's own term of λ^{o_t}."""
        o = self.sym.states[f"o{t}"][i]
        x = [s for n in self.d.spec.outputs for s in self.sym.states[n]]
        return -sp.diff(get_loss(self.d.spec.loss).apply(x, list(self.sym.y)), o)

    def gradient(self, role: str, t: int, i: int, j: int) -> sp.Expr:
        """Entry (i, j) of use t's term: −g_t xᵀ with x = x_t, h_{t−1} or h_t (W_x, W_h, V); −g_t
        for a bias."""
        node = f"h{t}" if role in ("W_x", "W_h", "b") else f"o{t}"
        g = self.g(node)[i]
        right = {"W_x": f"x{t}", "W_h": f"h{t - 1}", "V": f"h{t}"}.get(role)
        return -g if right is None else -g * self.sym.states[right][j]


def _same(derived: sp.Expr, template: sp.Expr) -> bool:
    return bool(derived == template or sp.expand(derived - template) == 0)


def check_template(d: GraphDerivation, pattern: Pattern, T: int) -> int:
    """Every term of every λ^{h_t}, λ^{o_t} and gradient of the derivation (T steps) is the
    template's at its step, and there are no others; the number of terms checked.
    ``ArithmeticError`` names the first that differs."""
    tpl, checked = Template(d), 0
    for t in range(1, T + 1):
        for i, lam in enumerate(d.symbols.lam[f"h{t}"]):
            want = {k: s for k, s in pattern.adjoint if t in s.at(T)}
            got = {_kind(o, t): e for o, e in d.adjoint_terms[lam].items()}
            checked += _compare(str(lam), got, {k: tpl.adjoint(k, t, i) for k in want})
    for t in pattern.outputs.at(T):
        for i, lam in enumerate(d.symbols.lam[f"o{t}"]):
            checked += _compare(str(lam), dict(d.adjoint_terms[lam]), {LOSS: tpl.loss(t, i)})
    for role, steps in pattern.gradients:
        matrix = d.params[ROLES[role]]
        for i in range(matrix.rows):
            for j in range(matrix.cols):
                p = matrix[i, j]
                got = d.gradient_terms[p]
                uses = {_use_step(o, role): e for o, e in got.items() if o != DECAY}
                terms = {t: tpl.gradient(role, t, i, j) for t in steps.at(T)}
                checked += _compare(f"∂L/∂{p}", dict(uses), dict(terms))
                if role in pattern.decayed:  # the decay's term: α θ, at no step
                    checked += _compare(f"∂L/∂{p}", {DECAY: got[DECAY]}, {DECAY: ALPHA * p})
    return checked


def _compare(where: str, got: dict[Any, sp.Expr], want: dict[Any, sp.Expr]) -> int:
    if set(got) != set(want):
        raise ArithmeticError(f"{where}: terms from {sorted(got)}, the template has {sorted(want)}")
    for key, e in want.items():
        if not _same(got[key], e):
            raise ArithmeticError(f"{where}, term {key}: derived {got[key]}, template {e}")
    return len(want)


# --- the general-T equations -------------------------------------------------------------------


@dataclass(frozen=True)
class BPTT:
    """The BPTT equations for any T, read off the exact derivation (``read_bptt``)."""

    kwargs: tuple[tuple[str, Any], ...]
    pattern: Pattern
    read_at: tuple[int, ...]
    checked: int  # terms compared with the template, over the T's of ``read_at``

    @property
    def cell(self) -> Activation:
        return get_activation(dict(self.kwargs)["activation"])

    @property
    def output(self) -> Activation:
        return get_activation(dict(self.kwargs)["output_activation"])


@cache
def _read(kwargs: tuple[tuple[str, Any], ...]) -> BPTT:
    kw, (first, *others) = dict(kwargs), READ_AT
    d = derive_graph(probe(kw, first))
    pattern = read_pattern(d, first)
    checked = check_template(d, pattern, first)
    for T in others:
        again = derive_graph(probe(kw, T))
        if read_pattern(again, T) != pattern:
            raise ArithmeticError(f"the pattern read at T = {T} differs from that at T = {first}")
        checked += check_template(again, pattern, T)
    return BPTT(kwargs, pattern, READ_AT, checked)


def read_bptt(spec_or_kwargs: GraphSpec | dict[str, Any]) -> BPTT:
    """Derive the recurrent network at T = 3 and 4 (small widths), read where each term occurs
    and check every term against the textbook template: the equations for every T."""
    kw = _as_kwargs(spec_or_kwargs)
    kw.pop("steps")
    return _read(tuple(sorted((k, v) for k, v in kw.items() if k not in PROBE)))


def _sub(t: str) -> str:
    """A subscript: ``t`` as is, ``{t+1}`` braced."""
    return t if len(t) == 1 else "{" + t + "}"


def _g(t: str, act: Activation, output: bool = False, tex: bool = False) -> str:
    """σ'(z_t) ⊙ λ_{h_t} (``output``: σ_o'(z^o_t) ⊙ λ_{o_t}); Dσ(z)ᵀ λ for a vector σ."""
    s = _sub(t)
    if tex:
        sig, z = (r"\sigma_o", f"z^{{o}}_{s}") if output else (r"\sigma", f"z_{s}")
        lam = rf"\lambda_{{{'o' if output else 'h'}_{s}}}"
        return rf"{sig}'({z}) \odot {lam}" if act.elementwise else rf"D{sig}({z})^\top {lam}"
    sig, z = ("σ_o", f"z^o_{s}") if output else ("σ", f"z_{s}")
    lam = f"λ_{{{'o' if output else 'h'}_{s}}}"
    return f"{sig}'({z}) ⊙ {lam}" if act.elementwise else f"D{sig}({z})ᵀ {lam}"


def equations(b: BPTT, tex: bool = False) -> list[tuple[str, str]]:
    """(left side, right side) of each general-T equation, as text or LaTeX."""
    return _forward(b, tex) + _adjoint(b, tex) + _gradients(b, tex) + _derivatives(b, tex)


def _forward(b: BPTT, tex: bool) -> list[tuple[str, str]]:
    outs = b.pattern.outputs
    if tex:
        return [
            ("z_t", r"W_x x_t + W_h h_{t-1} + b, \quad t = 1, \dots, T, \quad h_0 = 0"),
            ("h_t", rf"\sigma(z_t), \quad \sigma = {b.cell.latex}"),
            ("z^{o}_t", rf"V h_t + c, \quad {outs.latex()}"),
            ("o_t", rf"\sigma_o(z^{{o}}_t), \quad \sigma_o = {b.output.latex}"),
        ]
    return [
        ("z_t", "W_x x_t + W_h h_{t−1} + b,  t = 1..T,  h_0 = 0"),
        ("h_t", f"σ(z_t),  σ = {b.cell.text}"),
        ("z^o_t", f"V h_t + c,  {outs.text()}"),
        ("o_t", f"σ_o(z^o_t),  σ_o = {b.output.text}"),
    ]


def _adjoint(b: BPTT, tex: bool) -> list[tuple[str, str]]:
    """λ_{o_t}, then λ_{h_T} and λ_{h_t} (t < T), each with the terms read at that step."""
    outs, loss = b.pattern.outputs, get_loss(dict(b.kwargs)["loss"])
    entry = -loss.gradient.xreplace({X_VAR: sp.Symbol("o_t"), Y_VAR: sp.Symbol("y_t")})
    if tex:
        rhs = (
            rf"-\frac{{\partial \ell(y_t, o_t)}}{{\partial o_t}} = {sp.latex(entry)} "
            rf"\ \text{{entrywise}}, \quad {outs.latex()}"
        )
        rows = [(r"\lambda_{o_t}", rhs)]
    else:
        rows = [("λ_{o_t}", f"−∂ℓ(y_t, o_t)/∂o_t = {entry} entrywise,  {outs.text()}")]
    adjoint = dict(b.pattern.adjoint)
    for case, t in (("T", "T"), ("T-1", "t")):
        terms = [_adjoint_term(k, t, b, tex) for k in ("out", "next") if _covers(adjoint, k, case)]
        when = "" if case == "T" else (r", \quad t = T-1, \dots, 1" if tex else ",  t = T−1, …, 1")
        lhs = rf"\lambda_{{h_{t}}}" if tex else f"λ_{{h_{t}}}"
        rows.append((lhs, (" + ".join(terms) or "0") + when))
    return rows


def _covers(adjoint: dict[str, Steps], kind: str, case: str) -> bool:
    """Whether λ^{h_t} has the term ``kind`` at t = T (case "T") or at every t < T ("T-1")."""
    steps = adjoint.get(kind)
    if steps is None:
        return False
    return steps.end == "T" if case == "T" else steps.start == 1


def _adjoint_term(kind: str, t: str, b: BPTT, tex: bool) -> str:
    """Vᵀ(σ_o'(z^o_t) ⊙ λ_{o_t}) (from o_t) or W_hᵀ(σ'(z_{t+1}) ⊙ λ_{h_{t+1}}) (from h_{t+1})."""
    if kind == "out":
        g, w = _g(t, b.output, True, tex), "V"
    else:
        g, w = _g("T+1" if t == "T" else "t+1", b.cell, False, tex), "W_h"
    return rf"{w}^\top\left({g}\right)" if tex else f"{w}ᵀ({g})"


def _gradients(b: BPTT, tex: bool) -> list[tuple[str, str]]:
    """∂L/∂θ = −Σ_t (σ' ⊙ λ)(x)ᵀ over the steps read for each shared parameter."""
    rows = []
    for role, steps in b.pattern.gradients:
        s = "T" if steps.start == "T" else "t"
        output = role in ("V", "c")
        g = _g(s, b.output if output else b.cell, output, tex)
        minus = "-" if tex else "−"
        factor = {"W_x": f"x_{s}", "W_h": f"h_{{{s}{minus}1}}", "V": f"h_{s}"}.get(role)
        if factor is None:
            body = g
        else:
            body = rf"\left({g}\right) {factor}^\top" if tex else f"({g}) {factor}ᵀ"
        lhs = rf"\frac{{\partial \mathcal{{L}}}}{{\partial {role}}}" if tex else f"∂L/∂{role}"
        decay = (
            (rf" + \alpha {role}" if tex else f" + α {role}") if role in b.pattern.decayed else ""
        )
        rows.append((lhs, _sum(steps, body, tex, decay)))
    return rows


def _sum(steps: Steps, body: str, tex: bool, decay: str = "") -> str:
    """−Σ_{t=a}^{b} body, or −body when the only step is t = T; then ``decay`` (+ α θ)."""
    if steps.start == "T":
        return (f"-{body}" if tex else f"−{body}") + decay
    end = "T" if steps.end == "T" else ("T-1" if tex else "T−1")
    note = ""
    if steps.start == 2:
        note = (
            r"\quad (\text{no } t = 1 \text{ term: } h_0 = 0)"
            if tex
            else "  (no t = 1 term: h_0 = 0)"
        )
    if tex:
        return rf"-\sum_{{t={steps.start}}}^{{{end}}} {body}{decay}{note}"
    return f"−Σ_{{t={steps.start}}}^{{{end}}} {body}{decay}{note}"


def _derivatives(b: BPTT, tex: bool) -> list[tuple[str, str]]:
    """σ'(z_t) and σ_o'(z^o_t) written in the states h_t, o_t where the record has that form."""
    rows = []
    for act, output in ((b.cell, False), (b.output, True)):
        if not isinstance(act, Elementwise):
            continue
        state = "o_t" if output else "h_t"
        z = "z^o_t" if output else "z_t"
        if act.output_form is not None:
            value = act.output_form.xreplace({X_VAR: sp.Symbol(state)})
        else:
            value = act.derivative.xreplace({Z_VAR: sp.Symbol(z)})
        if tex:
            lhs = r"\sigma_o'(z^{o}_t)" if output else r"\sigma'(z_t)"
            rows.append((lhs, sp.latex(value)))
        else:
            rows.append(((("σ_o'" if output else "σ'") + f"({z})"), str(value)))
    return rows
