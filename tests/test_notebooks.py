"""The homework notebooks run from a fresh kernel and reach their results (issue 5 item 4),
and notebook 01 displays every stationarity condition before it solves it (issue 12)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import lagrange_bp as lbp

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = [
    "01_homework_kkt_backprop.ipynb",
    "02_small_network_by_hand.ipynb",
    "03_training.ipynb",
    "04_assignment_solution.ipynb",
    "05_bptt_from_the_lagrangian.ipynb",
]


def summary(nb: nbformat.NotebookNode) -> dict:
    """The JSON line that the notebook's last code cell prints."""
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream")
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_reads_on_a_web_page(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    shows = [c for c in code[1:] if "rule" not in c.metadata]  # a student's answer prints nothing
    assert all(c.outputs for c in shows), "every cell after the imports shows its output"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def _latex_outputs(nb: nbformat.NotebookNode) -> list[str]:
    return [
        o["data"]["text/latex"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/latex" in o.get("data", {})
    ]


def test_homework_shows_each_stationarity_condition_as_an_equation() -> None:
    """∂L/∂Λ^k = 0, ∂L/∂X^N = 0 (with its 1/B) and ∂L/∂X^k = 0 appear as rendered equations,
    each with the derivative SymPy computed, "= 0", and the solved form; no cell builds LaTeX
    strings or reaches into the package's internals."""
    nb = nbformat.read(NOTEBOOKS / NAMES[0], as_version=4)
    shown = _latex_outputs(nb)
    dl = r"\frac{\partial \mathcal{L}}{\partial "
    wanted = {
        r"\Lambda^{(k)}}": r"X^{(k)} - \sigma_k\left(Z^{(k)}\right) = 0 \;\Longrightarrow",
        r"X^{(N)}}": r"\frac{1}{B} \frac{\partial \ell}{\partial x}\left(X^{(N)}, Y\right)"
        r" + \Lambda^{(N)} = 0",
        r"X^{(k)}}": r"\Lambda^{(k+1)}\right) = 0 \;\Longrightarrow\; \Lambda^{(k)} = "
        r"{W^{(k+1)}}^{\top} G^{(k+1)}",
    }
    for var, body in wanted.items():
        assert any(dl + var in out and body in out for out in shown), var
    assert any(r"\Lambda^{(N)} = \frac{1}{B} \left(Y - X^{(N)}\right)" in out for out in shown)
    assert any(r"\ell(y, x) = \sum_{j=1}^{n_{N}} \frac{\left(x_{j} - y_{j}\right)^{2}}{2}" in o
               for o in shown), "ℓ is defined"
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "Math(" not in source and "lagrange_bp.generic" not in source
    assert "latex(" not in source


def test_bptt_notebook_shows_each_condition_over_time_and_the_general_t_equations() -> None:
    """Notebook 05 shows ∂L/∂λ = 0, ∂L/∂h_t = 0 with λ^h2's two terms under braces naming
    o2 and h3, the gradient summed over the uses of the cell, and BPTT for any T read off the
    derivation (W_h's sum from t = 2); every equation comes from the package's displays."""
    nb = nbformat.read(NOTEBOOKS / "05_bptt_from_the_lagrangian.ipynb", as_version=4)
    markdown = [o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code"
                for o in c.outputs if "text/markdown" in o.get("data", {})]  # fmt: skip
    shown = "\n".join(_latex_outputs(nb) + markdown)
    dl = r"\frac{\partial \mathcal{L}}{\partial "
    assert dl + r"\lambda^{(\mathrm{h1})}_{1}} &= x^{(\mathrm{h1})}_{1} - \tanh" in shown
    assert dl + r"x^{(\mathrm{h2})}_{1}} &= " in shown
    assert r"}_{\mathrm{o2}} + \underbrace{- \mathrm{cell.W1}_{1,1}" in shown
    assert r"\text{parameters } \mathrm{cell} \text{ are shared by } \mathrm{h1}" in shown
    assert r"\lambda_{h_t} &= V^\top\left(" in shown and r"-\sum_{t=2}^{T}" in shown
    assert r"\lambda_{h_t} &= W_h^\top\left(" in shown, "the adding network: output at T only"
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "Math(" not in source and "latex(" not in source and "graph_bptt" not in source


def test_a_derivation_part_is_what_render_prints() -> None:
    """``graph_render.part``, the notebook's display of one piece: its text is lines of
    ``str(d)``, its displays those of ``render(d, "markdown")``; "bptt" only for a
    network built by ``recurrent``."""
    from lagrange_bp.graph_render import PARTS, part, render

    d = lbp.derive(lbp.recurrent(inputs=1, hidden=2, outputs=1, steps=2))
    text, markdown = str(d), render(d, "markdown")
    for name in PARTS:
        shown = part(d, name)
        assert all(line in text.splitlines() for line in shown.text.splitlines())
        assert shown._repr_markdown_().strip() in markdown
        assert shown._repr_latex_().startswith("$$\\begin{align*}")
    g = lbp.Graph(inputs=2)
    chain = lbp.derive(g.output(g.layer(g.inputs[0], 1, "tanh", name="h")))
    with pytest.raises(ValueError, match="not built by recurrent"):
        part(chain, "bptt")
    with pytest.raises(ValueError, match="unknown part"):
        part(d, "backward")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_from_a_fresh_kernel(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    assert time.perf_counter() - start < 60
    result = summary(nb)
    if name.startswith("01"):
        assert result == {
            "general_proven": True,
            "small_proven": True,
            "bridge": True,
            "conditions": ["Λ^k", "X^N", "X^k", "W^k", "b^k"],
        }
    elif name.startswith("04"):
        assert result == {"score": 5.0, "max_score": 5.0}
    elif name.startswith("05"):
        assert result["proven"] and result["compiled_proven"]
        assert result["fd_error"] < 1e-8
        assert result["test_loss"] < 0.25 * result["baseline"], "the RNN beats predicting 1"
        assert result["train_loss_last"] < 0.25 * result["train_loss_first"]
    elif name.startswith("02"):
        assert result["proven"] and result["right_rule_ok"] and not result["wrong_rule_ok"]
        assert result["batch_size"] == 2, "the 1/B must show"
        assert result["compiled_gap"] < 1e-12 and result["lambda_gap"] < 1e-12
        assert result["update_gap"] < 1e-12 and result["fd_error"] < 1e-8
    else:
        assert result["test_accuracy"] > 0.95
        assert result["steps"] == 30 * 43  # ceil(1347 / 32) steps per epoch
        # relative residuals: a few rounding units at most
        assert result["forward_residual"] < 1e-14 and result["adjoint_residual"] < 1e-14
        assert result["gradient_last"] < 0.5 * result["gradient_first"]
        assert result["gradient_full"] < result["gradient_last"] < result["gradient_minibatch"]
        assert result["reference_gap"] < 1e-12
        assert result["torch_gap"] is None or result["torch_gap"] < 1e-12


# --- the assignment: the student version, and the solution with seeded mistakes ----------------
def _rule_cells(name: str) -> dict[str, str]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    return {c.metadata["rule"]: c.source for c in nb.cells if "rule" in c.metadata}


def test_the_student_version_leaves_each_rule_blank() -> None:
    student = nbformat.read(NOTEBOOKS / "04_assignment.ipynb", as_version=4)
    nbformat.validate(student)
    solution = nbformat.read(NOTEBOOKS / NAMES[3], as_version=4)
    assert [c.cell_type for c in student.cells] == [c.cell_type for c in solution.cells]
    blanks = _rule_cells("04_assignment.ipynb")
    assert list(blanks) == list(lbp.rules.RULES)
    for rule, source in blanks.items():
        assert source.startswith(f"def {rule}(") and "raise NotImplementedError" in source
    assert not any(c.get("outputs") for c in student.cells if c.cell_type == "code")


SEEDED = {
    "forward": ("x_prev @ W.T + b", "x_prev @ W + b", "transpose"),
    "output_adjoint": ("(y - x_out) / batch_size", "y - x_out", "batch_factor"),
    "adjoint": ("dsigma_next(z_next) * lam_next", "lam_next", "missing_derivative"),
    "weight_gradient": ("return -(", "return (", "sign"),
    "bias_gradient": (".sum(axis=0)", ".mean(axis=0)", "batch_factor"),
}


@pytest.mark.parametrize("rule", list(SEEDED))
def test_the_solution_with_a_seeded_mistake_is_graded_with_its_kind(
    rule: str, tmp_path: Path
) -> None:
    """The solution's five functions as a submission file: full marks; with one mistake
    seeded, exactly that rule loses its point and its slip is named."""
    cells = _rule_cells(NAMES[3])
    spec = lbp.NetworkSpec((4, 5, 3), ("tanh", "sigmoid"), "mse")
    old, new, kind = SEEDED[rule]
    assert old in cells[rule]
    cells[rule] = cells[rule].replace(old, new)
    path = tmp_path / "submission.py"
    path.write_text("\n\n".join(cells.values()) + "\n")
    result = lbp.grade(spec, path)
    assert result.score == 4 and result.first_wrong == rule
    assert result.rules[rule].mistake == kind, str(result)
