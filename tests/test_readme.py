"""Project gates: the Quickstart has two commands, CI runs the second, ruff and mypy are clean."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lagrange_bp as lbp
from lagrange_bp.cli import main

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S)
    assert block, "README's Quickstart has no code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_has_demo_and_test_commands() -> None:
    demo, tests = quickstart_commands()
    assert demo.endswith("lagrange-bp demo")
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert quickstart_commands()[1] in ci.splitlines()


def test_mypy_is_clean() -> None:
    """The package type-checks under the configuration in pyproject.toml (public API typed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "lagrange_bp", "tests", "benchmarks", "notebooks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def block_after(marker: str) -> str:
    """The first fenced code block after the line containing ``marker``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rest = text[text.index(marker) :]
    block = re.search(r"```[a-z]*\n(.*?)```", rest, re.S)
    assert block, f"no code block after {marker!r}"
    return block.group(1)


def _masked(text: str) -> str:
    """Timings vary from run to run: replace every 'N.NN s' figure."""
    return re.sub(r"\d+\.\d+ s\b", "T s", text)


@pytest.mark.parametrize(
    ("marker", "argv"),
    [
        (
            "`lagrange-bp derive --widths 2,2,1 --activations tanh,sigmoid --loss mse` prints",
            ["derive", "--widths", "2,2,1", "--activations", "tanh,sigmoid", "--loss", "mse"],
        ),
        ("`lagrange-bp derive --general` differentiates", ["derive", "--general"]),
        (
            "`lagrange-bp verify --compiled --widths 64,128,10 --activations tanh,softmax --loss",
            [
                "verify",
                "--compiled",
                "--widths",
                "64,128,10",
                "--activations",
                "tanh,softmax",
                "--loss",
                "cross_entropy",
            ],
        ),
        (
            "`lagrange-bp verify --widths 8,8,8,8,3 --activations tanh,tanh,tanh,softmax --loss",
            [
                "verify",
                "--widths",
                "8,8,8,8,3",
                "--activations",
                "tanh,tanh,tanh,softmax",
                "--loss",
                "cross_entropy",
            ],
        ),
    ],
)
def test_readme_real_output_is_what_the_command_prints(
    marker: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    assert _masked(block_after(marker)) == _masked(capsys.readouterr().out)


def test_readme_kernel_listing_is_the_generated_source() -> None:
    spec = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
    listing = block_after("`print(model.source())` for the digits")
    assert listing == lbp.compile(spec).source("sgd_step")
