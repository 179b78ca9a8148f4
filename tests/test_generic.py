"""The generic layer (any N, any widths) and its proof (issue 3 items 1, 3, 5)."""

from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

import lagrange_bp as lbp
from lagrange_bp.cli import main
from lagrange_bp.functions import SoftmaxActivation, get_activation, get_loss
from lagrange_bp.generic import (
    LAYER,
    derive_generic,
    is_zero,
    normalize,
    output_adjoint_for,
    vjp_for,
)
from lagrange_bp.matrices import ARG_U, ARG_V, BATCH, elementwise, entrywise
from lagrange_bp.render_generic import matrix_form, render_generic, text
from lagrange_bp.verify_general import verify_general


def test_generic_equations_are_the_textbook_ones() -> None:
    """CONVENTIONS §1 in batch form: Λ^k = W^{k+1ᵀ} G^{k+1}, ∂L/∂W^k = −G^k X^{k-1ᵀ},
    ∂L/∂b^k = −G^k 1, Λ^N = −(1/B) ∂ℓ/∂x; each record's G^k and Λ^N."""
    g, layer = derive_generic(), LAYER
    assert g.adjoint.rhs == layer.W_next.T * layer.G_next
    assert g.weight_gradient.rhs == -layer.G * layer.X_prev.T
    assert g.bias_gradient.rhs == normalize(-layer.G * sp.OneMatrix(BATCH, 1))
    i = g.output_index
    assert str(i["lambda"]) == "-Derivative(ℓ(X[p, q], Y[p, q]), X[p, q])/B"
    assert text(matrix_form(output_adjoint_for(get_loss("mse")))) == "(1/B) (Y - X^k)"
    assert text(matrix_form(output_adjoint_for(get_loss("cross_entropy")))) == "(1/B) (Y ⊘ X^k)"
    sigmoid = get_activation("sigmoid").kernel_vjp(layer.Z, layer.X, layer.Lam, 0)
    assert text(matrix_form(sigmoid)) == "X^k ⊙ (1 - X^k) ⊙ Λ^k"  # σ' = x(1 − x), no [u ↦ …]
    assert text(matrix_form(vjp_for(get_activation("identity")))) == "Λ^k"
    tanh_vjp = sp.HadamardProduct(elementwise(1 - sp.tanh(ARG_U) ** 2, layer.Z), layer.Lam)
    assert is_zero(vjp_for(get_activation("tanh")) - tanh_vjp)
    softmax, ce = get_activation("softmax"), get_loss("cross_entropy")
    fused = softmax.kernel_output_vjp(ce, layer.Z, layer.X, layer.Y, 0)
    assert fused == entrywise((ARG_V - ARG_U) / BATCH, layer.X, layer.Y)  # G^N = (Y − X^N)/B
    index = g.softmax_index
    assert (
        index["fused_unit_sum"] == index["y"][index["j"]] / BATCH - index["S"][index["j"]] / BATCH
    )


def test_general_proof_holds() -> None:
    report = verify_general()
    assert report.ok, str(report)
    assert [s.label for s in report.steps] == ["g1", "g2", "g3", "g4", "g5"]
    text = str(report)
    assert text.startswith("General proof (any depth N, any widths n_k, any batch size B): PROVEN")
    assert "by induction λ^k = −∂J/∂x^k, k = N..1" in text
    assert "3-2-3-1, relu/softplus/identity, mse: 33 entries" in text
    assert "this simplifies to -S[j]/B + y[j]/B" in text
    assert "mse: Λ^N = −(1/B) ∂ℓ/∂x = (1/B) (Y - X^N)" in text
    assert "output softmax + cross_entropy: kernels' G^N = (1/B) (Y - X^N) = Dσᵀ Λ^N" in text
    assert "Derivative(" not in text and "Lambda(" not in text and "HadamardProduct" not in text


def test_general_proof_of_a_custom_activation_on_width_one_layers() -> None:
    """SymPy's ElementwiseApplyFunction, rebuilt at 1×1, applies σ to the matrix itself and
    z·tanh(z) then raised; ``Applied`` keeps the entrywise meaning at every size."""
    spec = lbp.NetworkSpec((1, 1, 1), ("z*tanh(z)", "z**2"), "mse")
    report = verify_general((spec,))
    assert report.ok, str(report)
    assert "1-1-1, z*tanh(z) | z**2, mse: 8 entries of x, λ, ∂L/∂W, ∂L/∂b equal exactly" in str(
        report
    )


def _tampered(**changes: object) -> object:
    return dataclasses.replace(derive_generic(), **changes)


def test_a_wrong_generic_vjp_fails_the_general_proof() -> None:
    g, layer = derive_generic(), LAYER
    H = g.vjp.rhs.args[0]  # σ'_k(Z^k), with Λ^k the other factor
    wrong = sp.Eq(layer.G, sp.HadamardProduct(H, 2 * layer.Lam), evaluate=False)
    report = verify_general(derivation=_tampered(vjp=wrong))
    assert not report.ok
    assert [s.ok for s in report.steps] == [True, True, True, False, True]
    assert "identity: G^k = " in report.steps[3].detail


def test_a_wrong_fused_output_term_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def wrong(self: object, loss: object, Z: object, X: object, Y: object, axis: int) -> object:
        return entrywise((ARG_U - ARG_V) / BATCH, X, Y)  # the sign slip: (X − Y)/B

    monkeypatch.setattr(SoftmaxActivation, "kernel_output_vjp", wrong)
    report = verify_general()
    assert not report.steps[3].ok
    assert "output softmax + mse: the kernels' G^N differs from Dσᵀ Λ^N" in report.steps[3].detail


def test_a_wrong_adjoint_fails_the_induction_step() -> None:
    g = derive_generic()
    raw = dict(g.raw)
    raw["adjoint"] = -raw["adjoint"]
    report = verify_general(derivation=_tampered(raw=raw))
    assert not report.steps[1].ok and report.steps[1].detail.startswith("Λ^k = ")


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown"])
def test_general_rendering(fmt: str) -> None:
    out = render_generic(fmt)
    if fmt == "text":
        assert "  Λ^k = W^{k+1}ᵀ G^{k+1}    [interior layer]" in out
        assert "  ∂L/∂W^k = -G^k X^{k-1}ᵀ" in out
        assert "  G^k = σ'_k(Z^k) ⊙ Λ^k    [any elementwise activation]" in out
        assert "backward: for k = N..1" in out
    else:
        assert r"\Lambda^{(k)} &= {W^{(k+1)}}^{\top} G^{(k+1)}" in out
        assert r"\sigma'_k\left(Z^{(k)}\right) \odot \Lambda^{(k)}" in out
        assert (
            r"\frac{\partial \mathcal{L}}{\partial W^{(k)}} &= -G^{(k)} {X^{(k-1)}}^{\top}" in out
        )
        assert "mapsto" not in out and r"\text{cross}\_\text{entropy}" in out and r"\ell" in out
        assert out.count(r"\begin{align*}") == out.count(r"\end{align*}") == 6
        if fmt == "markdown":
            assert out.count("$$") == 12 and "### 1. ∂L/∂Λ^k = 0 gives the forward pass" in out
    with pytest.raises(ValueError, match="unknown format 'pdf'"):
        render_generic("pdf")


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
    from lagrange_bp.render_generic import latex

    g = derive_generic()
    assert latex(g.vjp.rhs, layer="k+1") == (
        r"\sigma'_{k+1}\left(Z^{(k+1)}\right) \odot \Lambda^{(k+1)}"
    )
    mse = matrix_form(output_adjoint_for(get_loss("mse")))
    assert latex(mse, layer="N") == r"\frac{1}{B} \left(Y - X^{(N)}\right)"
    with pytest.raises(ValueError, match="layer must be 'k', 'k\\+1' or 'N'"):
        latex(g.forward.rhs, layer="j")
