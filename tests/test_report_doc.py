"""The printable derivation: a standalone LaTeX document and a Markdown page (issue 5 item 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lagrange_bp.cli import main
from lagrange_bp.report_doc import tex_escape


def test_tex_escape() -> None:
    assert tex_escape("a_b ^ 50% & {x}") == r"a\_b \^{} 50\% \& \{x\}"
    assert tex_escape("∂L/∂λ ≠ 0") == r"$\partial$L/$\partial$$\lambda$ $\neq$ 0"


def write(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    out = tmp_path / f"derivation.{'tex' if fmt == 'latex' else 'md'}"
    assert (
        main(
            [
                "derive",
                "--widths",
                "2,3,2",
                "--activations",
                "tanh,softmax",
                "--loss",
                "cross_entropy",
                "--format",
                fmt,
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert f"written to {out}" in capsys.readouterr().out
    return out.read_text(encoding="utf-8")


def test_latex_document_is_complete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tex = write(tmp_path, "latex", capsys)
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    for section in (
        "The problem",
        "The Lagrangian",
        "The KKT conditions",
        "The backpropagation algorithm that follows",
        "Proof summary",
    ):
        assert rf"\section{{{section}}}" in tex
    assert tex.count(r"\begin{align*}") == tex.count(r"\end{align*}") == 5
    assert r"\item[(e) proven]" in tex and "PROVEN" in tex
    assert all(ord(ch) < 128 for ch in tex), "pdflatex needs ASCII source"
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs TeX Live (.ci/run): pdflatex must be present")
        pytest.skip("pdflatex is not installed")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "derivation.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "derivation.pdf").read_bytes()[:5] == b"%PDF-"


def test_markdown_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md = write(tmp_path, "markdown", capsys)
    assert md.startswith("## lagrange_bp derivation: network 2-3-2")
    assert md.count("$$") == 2 * md.count(r"\begin{align*}")
    assert "## Proof" in md and ": PROVEN" in md


def test_output_to_an_unwritable_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "no" / "such" / "dir" / "d.tex"
    assert main(["derive", "--format", "latex", "--output", str(bad)]) == 2
    assert "cannot write --output" in capsys.readouterr().err
