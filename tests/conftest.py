"""Shared specs: every activation and both losses, each proven in well under a second."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import lagrange_bp as lbp
from lagrange_bp.cli import main

SMALL_SPECS = [
    lbp.NetworkSpec((2, 3, 1), "sigmoid", "mse"),
    lbp.NetworkSpec((2, 3, 2), "tanh", "mse"),
    lbp.NetworkSpec((3, 2, 2), ("relu", "identity"), "mse"),
    lbp.NetworkSpec((2, 2, 3, 1), ("softplus", "tanh", "sigmoid"), "mse"),
    lbp.NetworkSpec((3, 4, 3), ("tanh", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((2, 3, 3, 2), ("sigmoid", "relu", "softmax"), "cross_entropy"),
    lbp.NetworkSpec((1, 1), "identity", "mse"),
    lbp.NetworkSpec((2, 3, 2), ("softmax", "tanh"), "mse"),
]
SPEC_IDS = [s.describe() for s in SMALL_SPECS]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``lagrange-bp argv…`` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def isolated_records() -> Iterator[None]:
    """For tests that monkeypatch what records are built from (a σ' rule, is_identity): the
    record caches start empty and are emptied again, so no patched record outlives the test."""
    from lagrange_bp.functions import get_activation, get_loss

    get_activation.cache_clear()
    get_loss.cache_clear()
    yield
    get_activation.cache_clear()
    get_loss.cache_clear()


def pdflatex(tmp_path: Path, name: str, tex: str, *, fits: bool = True) -> None:
    """pdflatex turns the complete document ``tex`` into a PDF without errors and, with
    ``fits``, without a line running off the page (skipped without TeX, except in CI)."""
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs TeX Live (.ci/run): pdflatex must be present")
        pytest.skip("pdflatex is not installed")
    (tmp_path / f"{name}.tex").write_text(tex, encoding="ascii")
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    log = (tmp_path / f"{name}.log").read_text(encoding="latin-1")
    if fits:
        assert "Overfull \\hbox" not in log, log[log.find("Overfull") :][:400]
