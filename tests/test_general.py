"""The generic layer (any N, any widths) and its proof (issue 3 items 1, 3, 5)."""

from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.cli import main
from lagrange_bp.general import B, S, U, derive_general, elementwise, normalize
from lagrange_bp.render_general import render_general
from lagrange_bp.verify_general import verify_general


def test_generic_equations_are_the_textbook_ones() -> None:
    """DESIGN §2 in batch form: Λ^k = W^{k+1ᵀ} G^{k+1}, ∂L/∂W^k = −G^k X^{k-1ᵀ},
    ∂L/∂b^k = −G^k 1."""
    g = derive_general()
    assert g.adjoint.rhs == S.W_next.T * S.G_next
    assert g.weight_gradient.rhs == -S.G * S.X_prev.T
    assert g.bias_gradient.rhs == normalize(-S.G * sp.OneMatrix(B, 1))
    assert str(g.output_adjoint["mse"].rhs) == "(-1/B)*(X^k - Y)"
    tanh_vjp = sp.HadamardProduct(elementwise(1 - sp.tanh(U) ** 2, S.Z), S.Lam)
    assert normalize(g.vjp["tanh"].rhs - tanh_vjp) in (0, sp.ZeroMatrix(*tanh_vjp.shape))
    assert g.fused_softmax_ce.rhs == normalize((S.Y - S.X) / B)
    index = g.softmax_index
    assert index["fused_unit_sum"] == index["y"][index["j"]] / B - index["S"][index["j"]] / B


def test_general_proof_holds() -> None:
    report = verify_general()
    assert report.ok, str(report)
    assert [s.label for s in report.steps] == ["g1", "g2", "g3", "g4", "g5"]
    text = str(report)
    assert text.startswith("General proof (any depth N, any widths n_k, any batch size B): PROVEN")
    assert "by induction λ^k = −∂J/∂x^k, k = N..1" in text
    assert "3-2-3-1, relu/softplus/identity, mse: 33 entries" in text
    assert "this simplifies to -S[j]/B + y[j]/B" in text


def _tampered(**changes: object) -> object:
    return dataclasses.replace(derive_general(), **changes)


def test_a_wrong_activation_vjp_fails_the_general_proof() -> None:
    g = derive_general()
    wrong = dict(g.vjp)
    wrong["tanh"] = sp.Eq(
        S.G, sp.HadamardProduct(elementwise(1 + sp.tanh(U) ** 2, S.Z), S.Lam), evaluate=False
    )
    report = verify_general(derivation=_tampered(vjp=wrong))
    assert not report.ok
    assert [s.ok for s in report.steps] == [True, True, True, False, False]
    assert "tanh: G^k = " in report.steps[3].detail


def test_a_wrong_fused_term_fails() -> None:
    wrong = sp.Eq(S.G, normalize((S.X - S.Y) / B), evaluate=False)
    report = verify_general(derivation=_tampered(fused_softmax_ce=wrong))
    assert not report.steps[3].ok and "differs from index form" in report.steps[3].detail
    assert not report.steps[4].ok


def test_a_wrong_adjoint_fails_the_induction_step() -> None:
    g = derive_general()
    raw = dict(g.raw)
    raw["adjoint"] = -raw["adjoint"]
    report = verify_general(derivation=_tampered(raw=raw))
    assert not report.steps[1].ok and report.steps[1].detail.startswith("Λ^k = ")


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown"])
def test_general_rendering(fmt: str) -> None:
    out = render_general(fmt)
    if fmt == "text":
        assert "  Λ^k = W^{k+1}ᵀ G^{k+1}    [interior layer]" in out
        assert "  ∂L/∂W^k = -G^k X^{k-1}ᵀ" in out
        assert "  G^k = σ'_k(Z^k) ⊙ Λ^k    [any elementwise activation]" in out
        assert "backward: for k = N..1" in out
    else:
        assert r"\Lambda^{(k)} &= {W^{(k+1)}}^{\top} G^{(k+1)}" in out
        assert r"\sigma'_k\left(Z^{(k)}\right) \odot \Lambda^{(k)}" in out
        assert (
            r"\frac{\partial \mathcal{L}}{\partial W^{(k)}} &= - G^{(k)} {X^{(k-1)}}^{\top}" in out
        )
        assert out.count(r"\begin{align*}") == out.count(r"\end{align*}") == 5
        if fmt == "markdown":
            assert out.count("$$") == 10 and "### 1. ∂L/∂Λ^k = 0 gives the forward pass" in out
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        render_general("pdf")


def test_cli_general(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", "--general"]) == 0
    assert "1. ∂L/∂Λ^k = 0 gives the forward pass:" in capsys.readouterr().out
    assert main(["derive", "--general", "--format", "markdown"]) == 0
    assert "$$" in capsys.readouterr().out
    assert main(["verify", "--general"]) == 0
    assert ": PROVEN" in capsys.readouterr().out
    assert (
        main(
            [
                "verify",
                "--general",
                "--widths",
                "2,3,2",
                "--activations",
                "relu,softmax",
                "--loss",
                "cross_entropy",
            ]
        )
        == 0
    )
    assert "2-3-2, relu/softmax, cross_entropy: " in capsys.readouterr().out
    assert main(["derive", "--general", "--format", "json"]) == 2
    assert "not json" in capsys.readouterr().err
    assert main(["derive", "--general", "--widths", "2,2"]) == 2


def test_concrete_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive", "--widths", "2,1", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## lagrange_bp derivation: network 2-1")
    assert out.count("$$") == 2 * out.count(r"\begin{align*}")


def test_api_exports() -> None:
    assert callable(lbp.compile) and lbp.Model.__name__ == "Model"


def test_latex_at_another_layer() -> None:
    from lagrange_bp.render_general import latex

    g = derive_general()
    assert latex(g.vjp["σ"].rhs, layer="k+1") == (
        r"\sigma'_{k+1}\left(Z^{(k+1)}\right) \odot \Lambda^{(k+1)}"
    )
    assert (
        latex(g.output_adjoint["mse"].rhs, layer="N") == r"- \frac{1}{B} \left(X^{(N)} - Y\right)"
    )
    with pytest.raises(ValueError, match="layer must be 'k', 'k\\+1' or 'N'"):
        latex(g.forward.rhs, layer="j")
