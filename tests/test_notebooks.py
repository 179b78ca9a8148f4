"""The homework notebooks run from a fresh kernel and reach their results (issue 5 item 4)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_homework_kkt_backprop.ipynb", "02_small_network_by_hand.ipynb", "03_training.ipynb"]


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
    assert all(c.outputs for c in code[1:]), "every cell after the imports shows its output"
    assert not any(o.output_type == "error" for c in code for o in c.outputs)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


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
        assert result == {"general_proven": True, "small_proven": True}
    elif name.startswith("02"):
        assert result["proven"] and result["right_rule_ok"] and not result["wrong_rule_ok"]
        assert result["compiled_gap"] < 1e-12 and result["fd_error"] < 1e-8
    else:
        assert result["test_accuracy"] > 0.95
        assert result["forward_residual"] < 1e-12 and result["adjoint_residual"] < 1e-12
        assert result["gradient_last"] < 0.5 * result["gradient_first"]
        assert result["reference_gap"] < 1e-12
        assert result["torch_gap"] is None or result["torch_gap"] < 1e-12
