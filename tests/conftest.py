"""Shared specs: every activation and both losses, each proven in well under a second."""

from __future__ import annotations

from collections.abc import Iterator

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
