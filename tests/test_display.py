"""Objects show well in Jupyter and at the prompt (issue 12, item 3): short reprs, Markdown and
LaTeX for derivations, reports and rule verdicts, with a user's text escaped for each format."""

from __future__ import annotations

import re

import pytest

import lagrange_bp as lbp
from lagrange_bp.display import markdown_text, tex_text
from lagrange_bp.verify import Step

SPEC = lbp.NetworkSpec((2, 2, 1), ("tanh", "z*tanh(z)*z"), "mse")


def _wrong_adjoint(W_next, z_next, lam_next, dsigma_next):
    return lam_next @ W_next  # σ' forgotten


@pytest.fixture(scope="module")
def objects() -> dict[str, object]:
    spec = lbp.NetworkSpec((2, 3, 1), "tanh", "mse")
    return {
        "derivation": lbp.derive(SPEC),
        "general": lbp.derive_general(),
        "report": lbp.verify(SPEC),
        "rule": lbp.check_rule(spec, "adjoint", _wrong_adjoint),
        "model": lbp.compile(SPEC),
    }


def test_reprs_are_one_short_line(objects: dict[str, object]) -> None:
    for name, obj in objects.items():
        text = repr(obj)
        assert "\n" not in text and len(text) < 200 and text.startswith("<"), (name, text)
    assert repr(objects["derivation"]) == (
        "<Derivation 2-2-1, tanh | z**2*tanh(z), mse: 3 forward, 3 adjoint, 9 gradient equations>"
    )
    assert repr(objects["model"]).startswith("<Model 2-2-1, tanh | z**2*tanh(z), mse, float64, 9")
    assert repr(objects["rule"]) == "<RuleReport 'adjoint' for 2-3-1, tanh/tanh, mse: WRONG>"


def test_every_object_has_markdown_and_latex(objects: dict[str, object]) -> None:
    for name in ("derivation", "general", "report", "rule"):
        obj = objects[name]
        markdown, latex = obj._repr_markdown_(), obj._repr_latex_()  # type: ignore[attr-defined]
        assert markdown.strip() and latex.startswith("$$") and latex.rstrip().endswith("$$"), name
        assert latex.count("$$") % 2 == 0
        assert latex.count(r"\begin{") == latex.count(r"\end{"), name
        assert "Derivative(" not in markdown + latex and "Lambda(" not in markdown + latex
    derivation = objects["derivation"]._repr_latex_()  # type: ignore[attr-defined]
    assert r"x^{(1)}_{1}" in derivation and r"\lambda^{(2)}_{1}" in derivation


def test_user_text_is_escaped_in_each_format(objects: dict[str, object]) -> None:
    report = objects["report"]._repr_markdown_()  # type: ignore[attr-defined]
    assert r"tanh \| z\*\*2\*tanh(z)" in report  # not a table column, not emphasis
    assert "<pre>" in report and report.count("<pre>") == 1
    assert tex_text("<img src=x onerror=y>") == r"< \text{img src=x onerror=y}> "  # no tag
    assert markdown_text("<b>*x*</b>") == r"\<b\>\*x\*\</b\>"
    latex = tex_text(r"cross_entropy \input{x} $5 100% #1 ^2")
    assert r"\input" not in latex.replace(r"\backslash \text{input}", "")
    assert re.fullmatch(
        r"(\\text\{[^{}\\$%&#_^~<>]*\}|\\[a-zA-Z]+ ?|\\[_{}$%&#]|[\^_]\{.*?\})*", latex
    )
    assert tex_text("x^{k-1} and σ_k and 2^61") == (
        r"\text{x}^{\text{k-1}}\text{ and σ}_{\text{k}}\text{ and 2}^{\text{61}}"
    )


def test_summary_is_two_lines_and_names_what_failed() -> None:
    report = lbp.verify(SPEC)
    lines = report.summary().splitlines()
    assert len(lines) == 2 and lines[0].endswith(f"PROVEN (5 steps, {report.seconds:.2f} s)")
    assert lines[1].startswith("  (a) ✓ (b) ✓ (c) ✓ (d) ✓ (e) ✓")
    report.steps.append(Step("f", "an extra claim", False, "none", "", 0.0))
    assert report.summary().splitlines()[1] == "  failed: (f) an extra claim"
    assert "✗ **failed**" in report._repr_markdown_()
