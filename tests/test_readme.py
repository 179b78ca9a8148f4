"""Project gates: the Quickstart has two commands, CI runs the second, ruff and mypy are clean."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import lagrange_bp as lbp

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


FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str, str]]:
    """(language, code, the prose before it) for every fenced block of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks, end = [], 0
    for m in FENCE.finditer(text):
        blocks.append((m.group(1), m.group(2), text[end : m.start()]))
        end = m.end()
    return blocks


def _commands(bash: str) -> list[str]:
    """The command lines of a bash block: continuations joined, comments dropped."""
    joined = bash.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def real_outputs() -> list[tuple[str, list[str], str, dict[str, str]]]:
    """(how it is produced, commands or code, the output shown, files it needs) for every
    block the README calls real output."""
    out, files, previous = [], {}, ("", "", "")
    for lang, code, prose in readme_blocks():
        named = re.search(r"in `([\w.]+\.py)`:\s*$", prose)
        if lang == "python" and named:
            files[named.group(1)] = code
        if "(real output" in prose and lang == "text":
            inline = re.findall(r"`(lagrange-bp [^`]+)`", prose)
            if inline:
                out.append(("cli", [inline[-1]], code, dict(files)))
            elif previous[0] == "bash":
                out.append(("cli", _commands(previous[1]), code, dict(files)))
            elif previous[0] == "python":
                out.append(("python", [previous[1]], code, dict(files)))
        previous = (lang, code, prose)
    return out


OUTPUTS = real_outputs()


@pytest.mark.parametrize(
    ("how", "commands", "shown", "files"),
    OUTPUTS,
    ids=[f"{how}: {cmds[0][:60]}" for how, cmds, _, _ in OUTPUTS],
)
def test_readme_real_output_is_what_the_command_prints(
    how: str, commands: list[str], shown: str, files: dict[str, str], tmp_path: Path
) -> None:
    """Every block the README calls real output is what its command prints (timings aside),
    run in an empty folder with the files the README tells the reader to write."""
    for name, code in files.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    printed = []
    for command in commands:
        argv = (
            [sys.executable, "-m", "lagrange_bp", *shlex.split(command)[1:]]
            if how == "cli"
            else [sys.executable, "-c", command]
        )
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert "Traceback" not in done.stderr, done.stderr
        assert how == "cli" or done.returncode == 0, done.stderr  # check, grade: exit 1 shown
        printed.append(done.stdout)
    assert _masked(shown) == _masked("".join(printed))


def test_every_readme_python_block_runs(tmp_path: Path) -> None:
    """Each Python block runs on its own, in a fresh interpreter and an empty folder of its own,
    two at a time; a block whose real output the README shows runs in the test above."""
    shown = {commands[0] for how, commands, _, _ in OUTPUTS if how == "python"}
    codes = [code for lang, code, _ in readme_blocks() if lang == "python" and code not in shown]

    def run(i: int) -> tuple[str, subprocess.CompletedProcess[str]]:
        folder = tmp_path / f"block{i}"
        folder.mkdir()
        argv = [sys.executable, "-c", codes[i]]
        return codes[i], subprocess.run(
            argv, cwd=folder, capture_output=True, text=True, check=False
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        for code, done in pool.map(run, range(len(codes))):
            assert done.returncode == 0, f"{code}\n{done.stderr}"


def test_readme_kernel_listing_is_the_generated_source() -> None:
    spec = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
    listing = block_after("`print(model.source())` for the digits")
    assert listing == lbp.compile(spec).source("sgd_step")
