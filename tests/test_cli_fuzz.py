"""The CLI never answers with a traceback (issue 11): random argument vectors, built from the
real commands and options with random values, and random byte strings as data, model and
candidate files, all end in exit 0, 1 or 2 and at most a clear message."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp import checkpoint
from lagrange_bp.cli import main

CASES = 1200
FILES = ("junk.npz", "junk.csv", "junk.py", "empty.npz", "good.npz", "good.csv", "rule.py")
SAFE_NAMES = (*FILES, "out.npz", "curve.png", "curve", "page.md", "x.xyz", ".", "missing.npz")

OPTIONS: dict[str, tuple[str, ...]] = {
    "derive": (
        "--widths",
        "--activations",
        "--loss",
        "--general",
        "--max-weights",
        "--format",
        "--output",
    ),
    "verify": (
        "--widths",
        "--activations",
        "--loss",
        "--general",
        "--max-weights",
        "--compiled",
        "--trials",
        "--seed",
        "--json",
    ),
    "check": (
        "--rule",
        "--candidate",
        "--widths",
        "--activations",
        "--loss",
        "--general",
        "--max-weights",
        "--seed",
    ),
    "train": (
        "--dataset",
        "--data",
        "--target",
        "--split-seed",
        "--widths",
        "--activations",
        "--loss",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--dtype",
        "--save",
        "--plot",
        "--json",
        "--optimizer",
        "--momentum",
        "--patience",
        "--resume",
    ),
    "evaluate": ("--model", "--dataset", "--data", "--target", "--split-seed", "--json"),
    "grade": ("--widths", "--activations", "--loss", "--layout", "--timeout", "--json", "--seed"),
}
FLAGS = {"--general", "--compiled", "--json"}
PATHS = {"--output", "--candidate", "--data", "--model", "--save", "--plot", "--resume"}


def random_text(rng: random.Random) -> str:
    """Random bytes as the OS hands them to Python (undecodable ones as surrogates)."""
    raw = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    return raw.replace(b"\0", b"").decode("utf-8", "surrogateescape")


def value(option: str, rng: random.Random) -> str:
    if rng.random() < 0.15:
        return random_text(rng)
    if option in PATHS:
        name = rng.choice(SAFE_NAMES)
        if option == "--candidate":
            return f"{name}:{rng.choice(['f', '', 'g', '1'])}"
        return name
    choices = {
        "--widths": [
            "2,2",
            "1,1",
            "2,3,1",
            "1",
            "0,2",
            "-1,2",
            "2,,2",
            "4,3",
            "2,1000000000000,2",
            "64,2",
            "2,3,2",
        ],
        "--activations": [
            "tanh",
            "sigmoid,softmax",
            "relu",
            "z",
            "z**z",
            "exp(1000)*z",
            "",
            "tanh(z) # x",
            "softmax",
            "log(z)",
            "1/z",
            "mish",
            "z*tanh(z)",
            "y",
        ],
        "--loss": ["mse", "cross_entropy", "", "x", "log(cosh(x - y))", "x/y", "nope", "(x-y)**2"],
        "--max-weights": ["0", "-3", "10", "25000", "x"],
        "--format": ["text", "latex", "markdown", "json", "html"],
        "--trials": ["1", "0", "-2", "100", "1000000000", "1e9"],
        "--seed": ["0", "-1", "7", "nan", "99999999999999999999"],
        "--split-seed": ["0", "-1", "3", "inf"],
        "--rule": ["forward", "adjoint", "gradient", "update", "x"],
        "--dataset": ["xor", "iris", "moons", "nope", ""],
        "--target": ["y", "target", "c", "", "X"],
        "--epochs": ["1", "2", "0", "-1", "nan"],
        "--batch-size": ["1", "8", "0", "-5", "100000"],
        "--lr": ["0.1", "1e6", "nan", "inf", "-1", "0", "1e308"],
        "--dtype": ["float64", "float32", "int8"],
        "--layout": ["rows", "columns", "diagonal"],
        "--optimizer": ["sgd", "momentum", "nesterov", "adam", "lbfgs"],
        "--momentum": ["0.9", "0", "1", "-0.5", "nan"],
        "--patience": ["1", "3", "0", "-2"],
        "--timeout": ["5", "0", "-1", "nan", "1e9"],
    }[option]
    return rng.choice(choices)


def random_argv(rng: random.Random) -> list[str]:
    roll = rng.random()
    if roll < 0.05:  # pure noise
        return [random_text(rng) for _ in range(rng.randrange(0, 4))]
    command = rng.choice([*OPTIONS, *OPTIONS])
    if command in ("check", "grade") and rng.random() < 0.8:  # they run processes: keep few
        command = "derive"
    argv = [command]
    if command == "grade":  # its submission, a positional argument
        argv.append(rng.choice(["rule.py", "junk.py", "none.py", "good.csv", random_text(rng)]))
    for option in rng.sample(OPTIONS[command], rng.randrange(0, 5)):
        argv.append(option)
        if option not in FLAGS:
            argv.append(value(option, rng))
    if "--general" in argv and rng.random() < 0.8:  # a general proof takes seconds: keep few
        argv.remove("--general")
    if command == "train":
        if "--epochs" not in argv:
            argv += ["--epochs", "1"]
        if "--dataset" not in argv and "--data" not in argv and rng.random() < 0.7:
            argv += ["--dataset", rng.choice(["xor", "iris", "moons"])]
    if rng.random() < 0.05:
        argv.insert(rng.randrange(len(argv) + 1), random_text(rng))
    return argv


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = random.Random(1)
    for name in ("junk.npz", "junk.csv", "junk.py"):
        (tmp_path / name).write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    (tmp_path / "empty.npz").write_bytes(b"")
    spec = lbp.NetworkSpec((2, 3, 2), ("tanh", "softmax"), "cross_entropy")
    checkpoint.save(tmp_path / "good.npz", spec, lbp.compile(spec).init_params(seed=0), {})
    rows = "\n".join(f"{i % 5},{i % 3},{i % 2}" for i in range(40))
    (tmp_path / "good.csv").write_text(f"a,b,y\n{rows}\n")
    (tmp_path / "rule.py").write_text(
        "def f(W, b, x_prev, sigma):\n    return sigma(x_prev @ W.T + b)\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_random_argument_vectors_never_raise(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(0)
    seen: dict[int, int] = {}
    start = time.perf_counter()
    for case in range(CASES):
        argv = random_argv(rng)
        try:
            code = main(argv)
        except SystemExit as exc:  # only --help and --version leave through argparse
            assert exc.code == 0 and ("--help" in argv or "--version" in argv), argv
            code = 0
        out, err = capsys.readouterr()
        seen[code] = seen.get(code, 0) + 1
        assert code in (0, 1, 2), (case, argv, err)
        assert "Traceback" not in err and "Traceback" not in out, (case, argv, err)
        assert "\x1b" not in out + err, (case, argv)
        if code == 2:
            lines = err.strip().splitlines()
            assert lines[-1].startswith("lagrange-bp: error: "), (case, argv, err)
            assert lines[-1].isprintable(), (case, argv, lines[-1])
    assert seen.get(0, 0) > CASES // 10 and seen.get(2, 0) > CASES // 3, seen
    assert time.perf_counter() - start < 300


def test_random_bytes_as_files_are_refused_in_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 random byte strings, each written as a data file and as a model file."""
    rng = np.random.default_rng(0)
    for case in range(1000):
        size = int(rng.integers(0, 400))
        blob = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        if case % 4 == 0:  # a real zip header, so the archive reader gets further
            blob = b"PK\x03\x04" + blob
        suffix = (".npz", ".csv")[case % 2]
        path = workdir / f"blob{suffix}"
        path.write_bytes(blob)
        argv = (
            ["evaluate", "--model", path.name, "--dataset", "xor"]
            if case % 3 == 0
            else ["train", "--data", path.name, "--target", "y", "--epochs", "1"]
        )
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2, (case, blob, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lagrange-bp: error: "), (case, err)
        assert lines[0].isprintable() and "Traceback" not in err, (case, err)
