"""The printable derivation (issue 12 item 5): a complete homework answer for a batch.

A standalone LaTeX document and a Markdown page: the batch problem with J and ℓ, the Lagrangian
with one multiplier per sample and constraint, every KKT condition = 0 and solved (the 1/B of J
in the output condition), the matrix form, the algorithm, a worked example whose numbers are the
compiled model's (and a hand-written backprop's), and the proof in full; all ASCII, user text
escaped, and compiled with pdflatex where it is installed (always in CI).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from conftest import pdflatex

import lagrange_bp as lbp
from lagrange_bp import batch
from lagrange_bp.cli import main
from lagrange_bp.generic import derive_generic
from lagrange_bp.matrices import BATCH
from lagrange_bp.model import Model
from lagrange_bp.render import doc_latex, doc_signed_form, render, signed_form
from lagrange_bp.render_generic import render_generic
from lagrange_bp.report_doc import (
    general_document,
    latex_document,
    markdown_page,
    tex_escape,
    tex_prose,
)

SOFTMAX = lbp.NetworkSpec((2, 3, 2), ("tanh", "softmax"), "cross_entropy")
RELU = lbp.NetworkSpec((2, 2, 1), ("relu", "sigmoid"), "mse")
TANH = lbp.NetworkSpec((2, 2, 1), ("tanh", "sigmoid"), "mse")
CUSTOM = lbp.NetworkSpec((2, 2, 1), ("z*tanh(z)", "softplus"), "(x - y)**4")
LARGE = lbp.NetworkSpec((8, 8, 3), "tanh", "mse")  # 99 parameters: the example in part


@cache
def derivation(spec: lbp.NetworkSpec) -> lbp.Derivation:
    return lbp.derive(spec)


@cache
def document(spec: lbp.NetworkSpec, fmt: str = "latex") -> str:
    d = derivation(spec)
    report = lbp.verify(spec, derivation=d)
    return latex_document(d, report) if fmt == "latex" else markdown_page(d, report)


@cache
def general(fmt: str) -> str:
    return general_document(fmt, derive_generic(), general_report())


@cache
def general_report() -> lbp.Report:
    return lbp.verify_general()


def compiles(tmp_path: Path, name: str, tex: str) -> None:
    """pdflatex sets ``tex`` without errors and without a line running off the page."""
    pdflatex(tmp_path, name, tex)


# --- escaping --------------------------------------------------------------------------------
def test_tex_escape() -> None:
    assert tex_escape("a_b ^ 50% & {x}") == r"a\_b \^{} 50\% \& \{x\}"
    assert tex_escape("∂L/∂λ ≠ 0") == r"$\partial$L/$\partial$$\lambda$ $\neq$ 0"


def test_tex_prose_escapes_and_typesets_the_shorthand() -> None:
    assert tex_prose("x^k = σ_k(W^k x^{k-1})") == (
        r"x\textsuperscript{k} = $\sigma$\textsubscript{k}(W\textsuperscript{k} "
        r"x\textsuperscript{k-1})"
    )
    assert tex_prose("GF(2^61-1), cross_entropy") == r"GF(2\textsuperscript{61}-1), cross\_entropy"
    assert tex_prose("∂L/∂λ") == r"$\partial$L/$\partial\lambda$"  # one formula, not $$
    assert tex_prose("verify --general") == "verify -{}-general"  # two hyphens, no en dash
    hostile = r"\input{/etc/passwd} $x$ # & % ~ ^ é"
    out = tex_prose(hostile)
    assert r"\input" not in out and "$x$" not in out and out.isascii()
    assert out == (r"\textbackslash{}input\{/etc/passwd\} \$x\$ \# \& \% \~{} \^{} ?")


# --- the concrete document -------------------------------------------------------------------
def test_latex_document_has_every_part() -> None:
    tex = document(SOFTMAX)
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    for section in (
        "The problem",
        "The Lagrangian of one sample",
        "The KKT conditions",
        "The batch in matrix form",
        "The backpropagation algorithm that follows",
        r"A worked example: $B = 2$ samples, one step with $\eta = 0.1$",
        "Proof summary",
    ):
        assert rf"\section{{{section}}}" in tex
    # the batch problem: J with its 1/B, ℓ defined for the spec's loss, λ per sample
    assert r"J = \frac{1}{B} \sum_{i=1}^{B} \ell\left(y_i, x^{(N)}_i\right)" in tex
    assert r"\ell(y, x) = -\sum_{j=1}^{2} y_{j} \log{\left(x_{j} \right)}" in tex
    assert r"\lambda^{(k)\top}_i" in tex and r"\mathcal{L}_i &= \frac{1}{B}" in tex
    assert "index dropped" in tex and "enters in one place only" in tex
    # matrix form and algorithm from the general derivation, with the columns of Λ linked
    assert r"\operatorname{tr}(\Lambda^\top M) = \sum_{i=1}^{B} \lambda_i^\top m_i" in tex
    assert r"\Lambda^{(N)} = \frac{1}{B} \left(Y \oslash X^{(N)}\right)" in tex
    assert r"G^{(N)} &= \frac{1}{B} \left(Y - X^{(N)}\right)" in tex
    assert r"\text{backward:}" in tex and r"\delta^{(k)} = \partial J/\partial z^{(k)}" in tex
    assert tex.isascii(), "pdflatex needs ASCII source"


@pytest.mark.parametrize("spec", [SOFTMAX, RELU, CUSTOM], ids=lambda s: s.describe())
def test_every_condition_is_an_equation_then_solved(spec: lbp.NetworkSpec) -> None:
    """∂L_i/∂λ = … = 0 ⇒ x = …, ∂L_i/∂x = … = 0 ⇒ λ = … for every entry; a gradient row for
    every parameter."""
    tex, d = document(spec), derivation(spec)
    for multiplier in (True, False):
        for k in range(1, spec.depth + 1):
            for x, lam in zip(d.symbols.x[k], d.symbols.lam[k]):
                v, solved = (lam, x) if multiplier else (x, lam)
                lhs = rf"\frac{{\partial \mathcal{{L}}_i}}{{\partial {sp.latex(v)}}} &="
                start = tex.index(lhs)
                end = tex.find(r"\frac{\partial \mathcal{L}_i}", start + len(lhs))
                segment = tex[start:end]
                assert " = 0" in segment and rf"\Rightarrow\; {sp.latex(solved)} =" in segment
    for p in d.gradients:
        assert rf"\frac{{\partial \mathcal{{L}}_i}}{{\partial {sp.latex(p)}}} &=" in tex


def test_the_output_condition_carries_the_1_over_b() -> None:
    """ℓ/B in L_i: cross-entropy's λ^N = y/(B x^N), mse's (y − x^N)/B, derived by SymPy."""
    ce = batch.batch_output_adjoint(derivation(SOFTMAX))
    mse = batch.batch_output_adjoint(derivation(RELU))
    assert sp.simplify(ce[0].adjoint - _y(SOFTMAX, 0) / (BATCH * ce[0].state)) == 0
    assert sp.expand(mse[0].adjoint - (_y(RELU, 0) - mse[0].state) / BATCH) == 0
    tex = document(SOFTMAX)
    assert (
        r"\frac{\partial \mathcal{L}_i}{\partial x^{(2)}_{1}} &= \lambda^{(2)}_{1} - "
        r"\frac{y_{1}}{B x^{(2)}_{1}} = 0 \;\Rightarrow\; \lambda^{(2)}_{1} = "
        r"\frac{y_{1}}{B x^{(2)}_{1}}"
    ) in tex
    assert r"\lambda^{(2)}_{1} = \frac{y_{1} - x^{(2)}_{1}}{B}" in document(RELU)


def _y(spec: lbp.NetworkSpec, j: int) -> sp.Symbol:
    return derivation(spec).target[j]


@pytest.mark.parametrize("spec", [SOFTMAX, TANH, CUSTOM], ids=lambda s: s.describe())
def test_gradients_are_shown_as_derived_with_the_sign_in_front(spec: lbp.NetworkSpec) -> None:
    """Each displayed ∂L_i/∂θ equals the derived one (SymPy), reads −(…) with sums written
    1 − x² rather than x² − 1, and is the row the document prints."""
    d, tex = derivation(spec), document(spec)
    for p, g in d.gradients.items():
        negative, body = doc_signed_form(d, g, prefer_negative=True)
        shown = -body if negative else body
        assert sp.expand(shown - g.xreplace(d.z_display())) == 0, p
        assert negative, f"{p}: {body} should read as −(…)"
        row = rf"\frac{{\partial \mathcal{{L}}_i}}{{\partial {sp.latex(p)}}} &= -"
        assert row in tex
    assert r"\right)^{2} - 1\right)" not in tex  # no (x² − 1) next to −(1 − x²)
    if spec is TANH:
        assert (
            r"\frac{\partial \mathcal{L}_i}{\partial b^{(1)}_{1}} &= -\lambda^{(1)}_{1} "
            r"\left(1 - \left(x^{(1)}_{1}\right)^{2}\right)"
        ) in tex


def test_signed_form_only_moves_signs() -> None:
    x, y, lam = sp.symbols("x y lam")
    for e in (x * lam * (x**2 - 1), -4 * (x - y) ** 3, x * (y - x) - 2, lam * (x - y) * (y - 1)):
        for prefer in (False, True):
            negative, body = signed_form(e, prefer)
            assert sp.expand((-body if negative else body) - e) == 0
    assert signed_form(x * lam * (x**2 - 1)) == (True, x * lam * (1 - x**2))


def test_no_double_struck_one() -> None:
    """amssymb's \\mathbb{1} prints as a crossed turnstile: the indicator is \\mathbb{I}."""
    for text in (document(RELU), document(RELU, "markdown"), general("latex")):
        assert r"\mathbb{1}" not in text and r"\mathbb{I}\left[" in text


# --- the worked example ----------------------------------------------------------------------
def _matrices(tex: str) -> dict[str, np.ndarray]:
    """Every ``NAME = \\begin{pmatrix}…`` of the worked example, parsed back to numbers (an
    updated parameter, NAME ← …, as NAME')."""
    example = tex[tex.index("A worked example") : tex.index("Proof summary")]
    out = {}
    shown = r"^\s*(.*?)\s*(&=|=|&\\leftarrow|\\leftarrow)\s*\\begin\{pmatrix\}(.*)\\end\{pmatrix\}"
    for row in re.split(r" \\\\\n|\n", example):
        for part in row.split(r", \quad "):
            found = re.match(shown, part)
            if found:
                name, relation, body = found.groups()
                rows = [[_parse(v) for v in r.split("&")] for r in body.split(r"\\")]
                out[name + ("'" if "leftarrow" in relation else "")] = np.array(rows)
    return out


def _parse(v: str) -> float:
    v = v.strip()
    if r"\times" in v:
        mantissa, exponent = v.split(r"\times 10^")
        return float(mantissa) * 10.0 ** int(exponent.strip("{} "))
    return float(v)


def _close(shown: np.ndarray, exact: np.ndarray) -> bool:
    """Equal to six significant digits."""
    return bool(np.all(np.abs(shown - exact) <= 5.1e-6 * np.abs(exact) + 1e-15))


@pytest.mark.parametrize("spec", [SOFTMAX, RELU, TANH], ids=lambda s: s.describe())
def test_worked_example_numbers_are_the_compiled_models(spec: lbp.NetworkSpec) -> None:
    """Parse the document's numbers back and recompute every one with lbp.compile(spec)."""
    m, n = _matrices(document(spec)), spec.depth
    X, Y = m["X^{(0)}"].T, m["Y"].T
    params = [(m[f"W^{{({k})}}"], m[f"b^{{({k})}}"].ravel()) for k in range(1, n + 1)]
    model = Model(spec)
    assert _close(m[f"X^{{({n})}}"].T, model.forward(params, X))
    for k, lam in enumerate(model.adjoint(params, X, Y), start=1):
        assert _close(m[f"\\Lambda^{{({k})}}"].T, lam), k
    _, grads = model.loss_and_grad(params, X, Y)
    step = [(W.copy(), b.copy()) for W, b in params]
    model.sgd_step(step, X, Y, 0.1)
    for k in range(1, n + 1):
        gW, gb = grads[k - 1]
        assert _close(m[f"\\frac{{\\partial \\mathcal{{L}}}}{{\\partial W^{{({k})}}}}"], gW)
        assert _close(m[f"\\frac{{\\partial \\mathcal{{L}}}}{{\\partial b^{{({k})}}}}"].ravel(), gb)
        assert _close(m[f"W^{{({k})}}'"], step[k - 1][0])
        assert _close(m[f"b^{{({k})}}'"].ravel(), step[k - 1][1])
    loss = re.search(r"J &= (.+?)\n", document(spec))
    assert loss and _close(np.array(_parse(loss[1])), np.array(model.loss(params, X, Y)))


def test_worked_example_by_hand() -> None:
    """The same numbers from backpropagation written out by hand in NumPy (samples as columns,
    λ^N with the 1/B): 2-2-1 tanh/sigmoid with mse and 2-3-2 tanh/softmax with cross-entropy."""
    for spec in (TANH, SOFTMAX):
        m = _matrices(document(spec))
        X, Y = m["X^{(0)}"], m["Y"]
        (W1, b1), (W2, b2) = ((m[f"W^{{({k})}}"], m[f"b^{{({k})}}"]) for k in (1, 2))
        B = X.shape[1]
        x1 = np.tanh(W1 @ X + b1)
        z2 = W2 @ x1 + b2
        if spec is TANH:
            x2 = 1 / (1 + np.exp(-z2))
            lam2 = (Y - x2) / B
            G2 = x2 * (1 - x2) * lam2
        else:
            x2 = np.exp(z2) / np.exp(z2).sum(axis=0)
            lam2 = Y / (B * x2)
            G2 = x2 * (lam2 - (x2 * lam2).sum(axis=0))
        lam1 = W2.T @ G2
        G1 = (1 - x1**2) * lam1
        assert _close(m["\\Lambda^{(2)}"], lam2) and _close(m["\\Lambda^{(1)}"], lam1)
        assert _close(m[r"\frac{\partial \mathcal{L}}{\partial W^{(1)}}"], -G1 @ X.T)
        assert _close(
            m[r"\frac{\partial \mathcal{L}}{\partial b^{(2)}}"], -G2.sum(axis=1, keepdims=True)
        )
        assert _close(m["W^{(2)}'"], W2 + 0.1 * G2 @ x1.T)


def test_worked_example_in_part_for_a_larger_network() -> None:
    ex = batch.worked_example(derivation(LARGE))
    assert ex is not None and not ex.full and ex.loss_after is None
    W, b = derivation(LARGE).params[0]
    assert list(ex.grads) == [*W[0, :4], *b[:4]]
    tex = document(LARGE)
    assert "printed in full for networks of at most 50 parameters" in tex
    model = Model(LARGE)
    _, grads = model.loss_and_grad(ex.params, ex.X, ex.Y)
    assert np.allclose([ex.grads[s] for s in W[0, :4]], grads[0][0][0, :4], rtol=1e-12)
    assert rf"\leftarrow {ex.initial[W[0, 0]]:g} - 0.1 \cdot" in tex


def test_a_disagreement_with_the_compiled_model_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Model.loss_and_grad

    def off(self: Model, params: object, X: np.ndarray, Y: np.ndarray) -> object:
        loss, grads = real(self, params, X, Y)  # type: ignore[arg-type]
        return loss * (1 + 1e-6), grads

    monkeypatch.setattr(Model, "loss_and_grad", off)
    with pytest.raises(ArithmeticError, match="worked example: J from the derived equations"):
        batch.worked_example(derivation(RELU))


def test_no_worked_example_where_the_numbers_are_not_finite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = batch.example_data

    def huge(d: lbp.Derivation, seed: int) -> tuple[np.ndarray, np.ndarray, list]:
        X, Y, params = real(d, seed)
        return X * 1e200, Y, params

    monkeypatch.setattr(batch, "example_data", huge)
    spec = lbp.NetworkSpec((2, 1), "identity", "(x - y)**4")
    d = lbp.derive(spec)
    assert batch.worked_example(d) is None
    assert "No worked example" in latex_document(d, lbp.verify(spec, derivation=d))


# --- the proof, the general document, the command line ---------------------------------------
def test_proof_summary_in_full() -> None:
    d = derivation(CUSTOM)
    report = lbp.verify(CUSTOM, derivation=d)
    tex = latex_document(d, report)
    for step in report.steps:
        assert rf"\item[({step.label}) proven] {tex_prose(step.claim)}." in tex
        assert tex_prose(step.method) in tex
        for line in step.detail.splitlines():
            assert tex_prose(line.strip()) in tex, line
    assert "2-2-1 network, z*tanh(z), softplus, loss (x - y)**4" in tex  # the user's text
    md = markdown_page(d, report)
    assert str(report) in md


def test_general_document() -> None:
    tex, md = general("latex"), general("markdown")
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    for part in ("The problem", "The KKT conditions", "The backpropagation algorithm that follows"):
        assert rf"\section{{{part}}}" in tex and f" {part}" in md
    assert r"\section{Proof summary: the general proof}" in tex
    for step in general_report().steps:
        assert rf"\item[({step.label}) proven]" in tex
    assert r"\frac{\partial \mathcal{L}}{\partial X^{(N)}} &= \frac{1}{B}" in tex
    assert tex.isascii() and md.count("$$") == 2 * md.count(r"\begin{align*}")


def test_markdown_page() -> None:
    md = document(SOFTMAX, "markdown")
    assert md.startswith("# Backpropagation from the KKT conditions of the Lagrangian: 2-3-2")
    assert md.count("$$") == 2 * md.count(r"\begin{align*}")
    for heading in (
        "## 1 The problem",
        "### 3.2 $\\partial\\mathcal{L}_i/\\partial x = 0$",
        "## 4 The batch in matrix form",
        "## 5 The backpropagation algorithm that follows",
        "## 6 A worked example",
        "## 7 Proof summary",
    ):
        assert heading in md
    assert r"\delta^{(k)} = \partial J/\partial z^{(k)}" in md and ": PROVEN" in md
    assert r"J = \frac{1}{B} \sum_{i=1}^{B}" in md and "`lbp.compile(spec)`" in md


def test_cli_writes_documents_that_compile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["derive", "--widths", "2,3,2", "--activations", "tanh,softmax"]
    out = tmp_path / "derivation.tex"
    assert main([*argv, "--loss", "cross_entropy", "--format", "latex", "--output", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith(document(SOFTMAX)[:2000])
    general_tex = tmp_path / "general.tex"
    assert main(["derive", "--general", "--format", "latex", "--output", str(general_tex)]) == 0
    assert "latex derivation of the generic layer written to" in capsys.readouterr().out
    assert general_tex.read_text(encoding="ascii").startswith(r"\documentclass")
    general_md = tmp_path / "general.md"
    assert main(["derive", "--general", "--format", "markdown", "--output", str(general_md)]) == 0
    capsys.readouterr()
    assert "## 4 Proof summary: the general proof" in general_md.read_text(encoding="utf-8")
    assert main(["derive", "--general", "--format", "latex"]) == 0  # stdout: as before
    assert capsys.readouterr().out == render_generic("latex")
    compiles(tmp_path, "derivation", document(SOFTMAX))
    compiles(tmp_path, "relu", document(RELU))
    compiles(tmp_path, "custom", document(CUSTOM))
    compiles(tmp_path, "general", general_tex.read_text(encoding="ascii"))


def test_output_to_an_unwritable_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "no" / "such" / "dir" / "d.tex"
    assert main(["derive", "--format", "latex", "--output", str(bad)]) == 2
    assert "cannot write --output" in capsys.readouterr().err
    assert main(["derive", "--general", "--format", "text", "--output", str(bad)]) == 2
    assert "cannot write --output" in capsys.readouterr().err


def test_the_derivations_own_latex_is_unchanged() -> None:
    """The document has its own printer; ``render``'s LaTeX (README, notebooks) keeps
    SymPy's order and signs."""
    d = derivation(RELU)
    assert r"\lambda^{(2)}_{1} = - x^{(2)}_{1} + y_{1}" in render(d, "latex")
    assert doc_latex(d, d.adjoint[0].rhs) == r"y_{1} - x^{(2)}_{1}"
