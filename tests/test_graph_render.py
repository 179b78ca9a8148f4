"""Graphs printed (issue 16, step 2b): text, LaTeX, Markdown and JSON with the sums over
consumers and over uses visible; user text escaped; BPTT for any T read off the derivation and
checked against it at several T."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import sympy as sp
from conftest import pdflatex

import lagrange_bp as lbp
from lagrange_bp.graph_bptt import (
    Steps,
    check_template,
    probe,
    read_bptt,
    read_pattern,
    read_range,
    recurrent_kwargs,
)
from lagrange_bp.graph_render import FORMATS, bptt, entry_latex, render, tex_name


def residual(activation: str = "tanh", name: str = "h2") -> lbp.GraphSpec:
    """h1 read by h2 and by the sum s; x0 read by h1 and by the output (a skip)."""
    g = lbp.Graph(inputs=3)
    x0 = g.inputs[0]
    h1 = g.layer(x0, 2, "tanh", name="h1")
    h2 = g.layer(h1, 2, activation, name=name)
    s = g.add(h1, h2, name="s")
    out = g.layer([s, x0], 2, "softmax", name="out")
    return g.output(out, loss="cross_entropy")


def rnn(outputs_at: str = "every", steps: int = 3) -> lbp.GraphSpec:
    return lbp.recurrent(inputs=1, hidden=2, outputs=1, steps=steps, outputs_at=outputs_at)


@cache
def derivation(spec: lbp.GraphSpec) -> lbp.GraphDerivation:
    d = lbp.derive(spec)
    assert isinstance(d, lbp.GraphDerivation)
    return d


SPECS = {"residual": residual(), "rnn": rnn()}


# --- every format shows the sums ----------------------------------------------------------------


def test_text_labels_each_consumer_and_use() -> None:
    text = render(derivation(SPECS["residual"]), "text")
    line = next(x for x in text.splitlines() if "⇒   λ^h1[1] =" in x)
    assert "(h2: " in line and "(s: " in line  # λ^h1 sums over its consumers h2 and s
    assert "λ^h1 sums over the 2 places h1 is read: h2, s" in text
    text = render(derivation(SPECS["rnn"]), "text")
    line = next(x for x in text.splitlines() if x.startswith("  ∂L/∂cell.b[1] ="))
    assert "(h1: " in line and "(h2: " in line and "(h3: " in line  # the uses of the cell
    assert "λ^h1 sums over the 2 places h1 is read: o1, h2" in text


@pytest.mark.parametrize("name", list(SPECS))
def test_latex_braces_each_term_with_its_origin(name: str) -> None:
    tex = render(derivation(SPECS[name]), "latex")
    assert tex.count(r"\begin{align*}") == tex.count(r"\end{align*}") >= 7
    assert tex.isascii(), "pdflatex needs ASCII source"
    if name == "residual":
        assert r"}_{\mathrm{h2}} + \underbrace{" in tex and r"}_{\mathrm{s}}" in tex
        assert r"\lambda^{(\mathrm{h1})} \text{ sums over the 2 places it is read: }" in tex
        assert r"\mathrm{out.W1}_{1,3}" in tex  # the skip x0 → out
    else:
        row = next(
            r
            for r in tex.splitlines()
            if r.startswith(r"\frac{\partial \mathcal{L}}{\partial \mathrm{cell.b}_{1}}")
        )
        assert row.count(r"\underbrace{") == 3
        assert all(rf"}}_{{\mathrm{{h{t}}}}}" in row for t in (1, 2, 3))
        assert r"\text{parameters } \mathrm{cell} \text{ are shared by }" in tex
        assert r"\lambda_{h_t} &= V^\top" in tex  # the BPTT block for any T


@pytest.mark.parametrize("name", list(SPECS))
def test_markdown_has_a_heading_and_display_per_block(name: str) -> None:
    d = derivation(SPECS[name])
    md = render(d, "markdown")
    assert md.startswith("## lagrange_bp derivation: graph ")
    assert md.count("$$") == 2 * md.count("\n### ")
    assert "### 2. dL/dx\\_v = 0: adjoint, in reverse topological order" in md
    assert r"\underbrace{" in md
    assert d._repr_markdown_() == md
    assert d._repr_latex_().startswith("$$\\begin{align*}") and "%" not in d._repr_latex_()


@pytest.mark.parametrize("name", list(SPECS))
def test_json_keeps_the_terms_of_every_sum(name: str) -> None:
    d = derivation(SPECS[name])
    doc = json.loads(render(d, "json"))
    assert lbp.graph_from_json(json.dumps(doc["graph"])) == d.spec
    assert len(doc["adjoint"]) == len(d.adjoint) and len(doc["gradients"]) == len(d.gradients)
    adjoint = {row["lhs"]: row for row in doc["adjoint"]}
    gradients = {row["param"]: row for row in doc["gradients"]}
    if name == "residual":
        assert [t["origin"] for t in adjoint["λ^h1[1]"]["terms"]] == ["h2", "s"]
        assert [t["origin"] for t in adjoint["λ^out[1]"]["terms"]] == ["ℓ"]
        assert doc["consumers"]["x0"] == ["h1", "out"] and "bptt" not in doc
    else:
        assert [t["use"] for t in gradients["cell.b[1]"]["terms"]] == ["h1", "h2", "h3"]
        assert [t["use"] for t in gradients["cell.W1[1,1]"]["terms"]] == ["h2", "h3"]
        assert doc["shared"] == {"cell": ["h1", "h2", "h3"], "out": ["o1", "o2", "o3"]}
        assert doc["bptt"]["read_at"] == [3, 4] and doc["bptt"]["terms_checked"] > 0
    for row, eq in zip(doc["adjoint"], d.adjoint):  # one term per origin, as derived
        assert row["lhs"] == str(eq.lhs)
        assert [t["origin"] for t in row["terms"]] == list(d.adjoint_terms[eq.lhs])


def test_render_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'html'"):
        render(derivation(SPECS["residual"]), "html")
    assert FORMATS == ("text", "latex", "json", "markdown")


# --- names and user text ------------------------------------------------------------------------


def test_entry_and_name_latex() -> None:
    assert entry_latex("λ^h1[2]") == r"\lambda^{(\mathrm{h1})}_{2}"
    assert entry_latex("z^f_2[1]") == r"z^{(\mathrm{f\_2})}_{1}"
    assert entry_latex("f_2[1]") == r"x^{(\mathrm{f\_2})}_{1}"  # never f_2_{1}
    assert entry_latex("cell.W0[1,2]") == r"\mathrm{cell.W0}_{1,2}"
    assert entry_latex("y[3]") == "y_{3}"
    assert tex_name("a{b}") == r"\text{a}\{\text{b}\}"  # not a name: escaped as text


def hostile() -> lbp.GraphSpec:
    """Markdown's * and LaTeX's _ in the activation, a layer name and the loss."""
    return residual("z*tanh(z)**2", name="my_layer")


def test_user_text_is_escaped_for_latex_and_markdown() -> None:
    d = derivation(hostile())
    assert "z*tanh(z)**2" in d.spec.describe() and "my_layer" in d.spec.describe()
    md = render(d, "markdown")
    heading = md.splitlines()[0]
    assert r"z\*tanh(z)\*\*2" in heading and r"my\_layer" in heading
    assert r"cross\_entropy" in heading and "z*tanh" not in heading
    tex = render(d, "latex")
    body = "\n".join(r for r in tex.splitlines() if not r.startswith("%"))
    assert "my_layer" not in body and "cross_entropy" not in body
    assert r"\mathrm{my\_layer}" in body and r"cross}\_\text{entropy" in body


def compiles(tmp_path: Path, name: str, tex: str) -> None:
    """pdflatex turns the blocks, in a minimal document, into a PDF."""
    doc = "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
    pdflatex(tmp_path, name, f"{doc}{tex}\n\\end{{document}}\n", fits=False)


@pytest.mark.parametrize("name", ["residual", "rnn", "hostile", "shared_underscore"])
def test_latex_compiles(tmp_path: Path, name: str) -> None:
    if name == "hostile":
        spec = hostile()
    elif name == "shared_underscore":  # default names of shared uses: f_2, f_3
        g = lbp.Graph(inputs=1)
        h = g.layer(g.inputs[0], 1, "sigmoid", name="f")
        h = g.layer(h, 1, "sigmoid", name="f", share=True)
        h = g.layer(h, 1, "sigmoid", name="f", share=True)
        spec = g.output(h, loss="mse")
        assert spec.order == ("x0", "f", "f_2", "f_3")
    else:
        spec = SPECS[name]
    compiles(tmp_path, name, render(derivation(spec), "latex"))


# --- BPTT for any T -----------------------------------------------------------------------------


@pytest.mark.parametrize("outputs_at", ["last", "every"])
def test_bptt_pattern_is_read_off_and_the_same_at_every_T(outputs_at: str) -> None:
    kw = recurrent_kwargs(rnn(outputs_at))
    assert kw is not None
    patterns = []
    for T in (3, 4, 5):
        d = derivation(probe(kw, T))
        pattern = read_pattern(d, T)
        patterns.append(pattern)
        assert check_template(d, pattern, T) > 0  # every term is the template's at its step
    assert patterns[0] == patterns[1] == patterns[2]
    adjoint, gradients = dict(patterns[0].adjoint), dict(patterns[0].gradients)
    assert adjoint["next"] == Steps(1, "T-1")  # λ_{h_t} gets W_hᵀ(σ' ⊙ λ_{h_{t+1}}) for t < T
    assert gradients["W_x"] == gradients["b"] == Steps(1, "T")
    assert gradients["W_h"] == Steps(2, "T")  # h_0 = 0: no t = 1 term
    every = Steps(1, "T") if outputs_at == "every" else Steps("T", "T")
    assert adjoint["out"] == gradients["V"] == gradients["c"] == patterns[0].outputs == every


def test_bptt_template_holds_at_real_widths_and_fails_on_a_wrong_term() -> None:
    """The template read at the probe widths is the derivation at other widths and T too."""
    spec = lbp.recurrent(2, 3, 2, 5, "sigmoid", "softmax", "cross_entropy", "every")
    d = derivation(spec)
    pattern = read_bptt(spec).pattern
    assert read_pattern(d, 5) == pattern
    assert check_template(d, pattern, 5) > 100
    lam = d.symbols.lam["h2"][0]
    d.adjoint_terms[lam] = dict(d.adjoint_terms[lam]) | {"h3": sp.Integer(0)}
    try:
        with pytest.raises(ArithmeticError, match=r"λ\^h2\[1\], term next"):
            check_template(d, pattern, 5)
    finally:
        derivation.cache_clear()


def test_read_range() -> None:
    assert read_range({3}, 3, "x") == Steps("T", "T")
    assert read_range({1, 2}, 3, "x") == Steps(1, "T-1")
    assert read_range({2, 3, 4}, 4, "x") == Steps(2, "T")
    assert Steps(2, "T").at(5) == [2, 3, 4, 5] and Steps(1, "T-1").at(1) == []
    with pytest.raises(ArithmeticError, match="no range in T"):
        read_range({1, 3}, 3, "x")


def test_bptt_prints_the_textbook_equations() -> None:
    last = bptt({"inputs": 2, "hidden": 4, "outputs": 1, "steps": 5})
    assert "λ_{h_T} = Vᵀ(σ_o'(z^o_T) ⊙ λ_{o_T})" in last
    assert "λ_{h_t} = W_hᵀ(σ'(z_{t+1}) ⊙ λ_{h_{t+1}}),  t = T−1, …, 1" in last
    assert "∂L/∂W_x = −Σ_{t=1}^{T} (σ'(z_t) ⊙ λ_{h_t}) x_tᵀ" in last
    assert "∂L/∂W_h = −Σ_{t=2}^{T} (σ'(z_t) ⊙ λ_{h_t}) h_{t−1}ᵀ  (no t = 1 term: h_0 = 0)" in last
    assert "∂L/∂b = −Σ_{t=1}^{T} σ'(z_t) ⊙ λ_{h_t}" in last
    assert "∂L/∂V = −(σ_o'(z^o_T) ⊙ λ_{o_T}) h_Tᵀ" in last
    assert "σ'(z_t) = 1 - h_t**2" in last
    every = bptt(rnn("every"))
    assert "λ_{h_t} = Vᵀ(σ_o'(z^o_t) ⊙ λ_{o_t}) + W_hᵀ(σ'(z_{t+1}) ⊙ λ_{h_{t+1}})" in every
    assert "∂L/∂V = −Σ_{t=1}^{T} (σ_o'(z^o_t) ⊙ λ_{o_t}) h_tᵀ" in every
    soft = bptt(lbp.recurrent(1, 2, 3, 2, "tanh", "softmax", "cross_entropy"))
    assert "Dσ_o(z^o_T)ᵀ λ_{o_T}" in soft and "= y_t/o_t entrywise" in soft
    tex = bptt(rnn("every"), "latex")
    assert r"\frac{\partial \mathcal{L}}{\partial W_h} &= -\sum_{t=2}^{T}" in tex
    assert tex.isascii()
    assert bptt(rnn(), "markdown").startswith("### Backpropagation through time")
    doc = json.loads(bptt(rnn(), "json"))
    assert any(e["lhs"] == "∂L/∂W_h" for e in doc["equations"])
    assert "Backpropagation through time" in render(derivation(rnn()), "text")
    assert "Backpropagation through time" not in render(derivation(SPECS["residual"]), "text")


def test_bptt_refuses_what_is_not_a_recurrent_network() -> None:
    with pytest.raises(ValueError, match=r"not a network built by lagrange_bp\.recurrent"):
        bptt(SPECS["residual"])
    with pytest.raises(ValueError, match="unknown arguments"):
        bptt({"inputs": 1, "hidden": 2, "outputs": 1, "steps": 2, "cells": 3})
    with pytest.raises(TypeError, match="GraphSpec from recurrent"):
        bptt([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown format"):
        bptt(rnn(), "html")
    assert recurrent_kwargs(SPECS["residual"]) is None
    assert recurrent_kwargs(lbp.recurrent(1, 1, 1, 1, outputs_at="every"))["outputs_at"] == "every"
