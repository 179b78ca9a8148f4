"""A graph's printable document (``derive --graph … --format latex|markdown --output``): every
part of the derivation and the proof, as a pdflatex document that fits the page, or Markdown."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import pdflatex, run_cli
from graph_cases import two_skips

import lagrange_bp as lbp
from lagrange_bp.graph_doc import SECTIONS, graph_document, top_level_terms, wrapped
from lagrange_bp.report_doc import LINE, formula_width

RNN = lbp.recurrent(inputs=1, hidden=2, outputs=1, steps=3, weight_decay=0.1)


def hostile() -> lbp.GraphSpec:
    """LaTeX's _ and Markdown's * in a layer name, an activation and the loss."""
    g = lbp.Graph(inputs=2)
    h = g.layer(g.inputs[0], 2, "z*tanh(z)**2", name="my_layer")
    return g.output(g.layer([h, g.inputs[0]], 2, "softmax", name="out"), loss="cross_entropy")


def document(spec: lbp.GraphSpec, fmt: str) -> str:
    d = lbp.derive(spec)
    return graph_document(fmt, d, lbp.verify(spec, derivation=d))


def test_the_latex_document_has_every_part_and_the_proof() -> None:
    tex = document(RNN, "latex")
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    assert tex.isascii(), "pdflatex reads ASCII"
    for part in ("The Lagrangian", "The nodes, in topological order", "The update rule"):
        assert rf"\section{{{part}}}" in tex
    assert r"\section{Backpropagation through time, for any number of steps $T$}" in tex
    assert r"\frac{\alpha}{2} \sum \lVert W \rVert^2" in tex  # the weight decay in L
    assert tex.count("] proven]") == 0 and tex.count(" proven]") == 5  # steps (a)-(e)
    assert "NOT proven" not in tex


@pytest.mark.parametrize("name", ["rnn", "two-skips", "hostile"])
def test_the_latex_document_compiles_and_fits_the_page(tmp_path: Path, name: str) -> None:
    spec = {"rnn": RNN, "two-skips": two_skips(), "hostile": hostile()}[name]
    pdflatex(tmp_path, name, document(spec, "latex"))


def test_user_text_is_escaped_in_both_formats() -> None:
    tex, md = document(hostile(), "latex"), document(hostile(), "markdown")
    assert r"my\_layer" in tex and "my_layer" not in tex.replace(r"my\_layer", "")
    title = md.splitlines()[0]
    assert title.startswith("# Backpropagation") and r"my\_layer" in title
    assert r"z\*tanh(z)\*\*2" in title and "z*tanh" not in title
    assert md.count("$$") % 2 == 0 and "## 1 The Lagrangian" in md


def test_long_rows_break_between_whole_terms() -> None:
    assert top_level_terms(r"a + \frac{b + c}{2} - d \left(x + y\right)") == [
        "a",
        r"+ \frac{b + c}{2}",
        r"- d \left(x + y\right)",
    ]
    assert top_level_terms(r"\theta \leftarrow \theta - \eta") == [
        r"\theta \leftarrow \theta",
        r"- \eta",
    ]
    row = "L &= " + " + ".join(
        rf"\lambda_{{{i}}} \left(x_{{{i}}} - y_{{{i}}}\right)" for i in range(40)
    )
    rows = wrapped(row)
    assert len(rows) > 1 and all(formula_width(r) <= LINE + 1 for r in rows[1:])
    assert " ".join(r.replace(r"&\quad", "").replace("&=", "") for r in rows).split() == (
        row.replace("&=", "").split()
    )
    assert wrapped("x &= y") == ["x &= y"]
    assert len(SECTIONS) == 7


def test_cli_writes_the_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "g.json"
    path.write_text(two_skips().to_json())
    for fmt in ("latex", "markdown"):
        out = tmp_path / f"doc.{fmt}"
        argv = ("derive", "--graph", str(path), "--format", fmt, "--output", str(out))
        code, stdout, err = run_cli(capsys, *argv)
        assert code == 0, err
        assert f"{fmt} derivation of graph 3 → 3" in stdout
        text = out.read_text()
        assert ("Proof summary" in text) and ("NOT proven" not in text)
