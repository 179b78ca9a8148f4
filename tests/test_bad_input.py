"""Every bad input gets one clear line (issue 11): each numbered case runs the real console
script in a subprocess and checks the exit status and a one-line stderr without a traceback."""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp import checkpoint

SCRIPT = Path(sys.executable).parent / "lagrange-bp"
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "lagrange_bp"]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | (env or {}),
        check=False,
    )


def one_line(done: subprocess.CompletedProcess, contains: str, code: int = 2) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and lines[0].startswith("lagrange-bp: error: "), done.stderr
    assert contains in lines[0], lines[0]
    assert "\x1b" not in done.stderr and "\x1b" not in done.stdout


def saved_model(path: Path) -> Path:
    spec = lbp.NetworkSpec((2, 3, 2), ("tanh", "softmax"), "cross_entropy")
    params = lbp.compile(spec).init_params(seed=1)
    return checkpoint.save(path, spec, params, {"note": "test"})


# --- 1. data and model files that are not what they claim -----------------------------------
def test_npz_data_with_no_rows(tmp_path: Path) -> None:
    np.savez(tmp_path / "empty.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    done = cli("train", "--data", "empty.npz", "--target", "y", cwd=tmp_path)
    one_line(done, "needs at least 4 rows and 1 feature to split")


def test_zero_byte_npz(tmp_path: Path) -> None:
    (tmp_path / "zero.npz").write_bytes(b"")
    one_line(
        cli("train", "--data", "zero.npz", "--target", "y", cwd=tmp_path), "is empty (0 bytes)"
    )
    one_line(cli("evaluate", "--model", "zero.npz", cwd=tmp_path), "is empty (0 bytes)")


def test_npy_named_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "arr.npy", np.zeros((5, 2)))
    (tmp_path / "arr.npy").rename(tmp_path / "arr.npz")
    for args in (
        ("train", "--data", "arr.npz", "--target", "y"),
        ("evaluate", "--model", "arr.npz"),
    ):
        one_line(cli(*args, cwd=tmp_path), "is a single .npy array, not an NPZ archive")


# --- 2. checkpoints whose members lie about their size -------------------------------------
def _replace_member(path: Path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist() if n != name}
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)
        z.writestr(name, data)


def test_checkpoint_member_claiming_a_huge_shape(tmp_path: Path) -> None:
    path = saved_model(tmp_path / "m.npz")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    _replace_member(path, "W1.npy", header.getvalue() + b"\0" * 64)
    done = cli("evaluate", "--model", "m.npz", "--dataset", "xor", cwd=tmp_path)
    one_line(done, "array 'W1' claims shape (1000000000000,)")


def test_checkpoint_claiming_a_network_too_big_for_memory(tmp_path: Path) -> None:
    """Its members may then not take what such a network would need."""
    path = saved_model(tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["widths"] = [2, 10**12, 2]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    done = cli("evaluate", "--model", "m.npz", "--dataset", "xor", cwd=tmp_path)
    one_line(done, "is not a valid lagrange_bp checkpoint: network 2-1000000000000-2 needs about")


def test_checkpoint_with_an_inflating_extra_member_is_read_without_it(tmp_path: Path) -> None:
    """Only the members the format defines are read: 200 MB of zeros packed into a few hundred
    kB are never inflated."""
    path = saved_model(tmp_path / "m.npz")
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("junk.npy", b"\0" * (200 << 20))
    assert path.stat().st_size < 2 << 20
    start = time.perf_counter()
    spec, _, _ = checkpoint.load(path)
    assert time.perf_counter() - start < 2.0 and spec.widths == (2, 3, 2)


# --- 3. a custom activation the kernels cannot serve -------------------------------------
def test_train_with_an_activation_beyond_float64(tmp_path: Path) -> None:
    done = cli("train", "--dataset", "iris", "--activations", "exp(1000)*z,softmax", cwd=tmp_path)
    one_line(done, "layer 1: activation 'z*exp(1000)' cannot be printed as NumPy code")


# --- 4, 5. outputs that cannot be written are refused before training ----------------------
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--save", "{dir}", "it is a folder"),
        ("--save", "/proc/model.npz", "cannot write --save '/proc/model.npz'"),
        ("--save", "{file}/model.npz", "is not a folder"),
        ("--save", "/dev/null", "it is not a regular file"),
        ("--plot", "p.xyz", "--plot writes a PNG image: give a name ending in .png"),
        ("--plot", "/proc/curve.png", "cannot write --plot '/proc/curve.png'"),
        ("--plot", ".", "cannot write --plot '.': it is a folder"),
    ],
)
def test_outputs_are_checked_before_training(
    option: str, value: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("x")
    value = value.format(dir=tmp_path, file=tmp_path / "notes.txt")
    start = time.perf_counter()
    done = cli("train", "--dataset", "xor", "--epochs", "100000", option, value, cwd=tmp_path)
    one_line(done, message)
    assert time.perf_counter() - start < 60  # 100,000 epochs would take far longer
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # the device is still a device


def test_plot_without_a_suffix_is_written_as_png_and_says_so(tmp_path: Path) -> None:
    done = cli("train", "--dataset", "xor", "--epochs", "2", "--plot", "curve", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "learning curves written to curve.png" in done.stdout
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")


# --- 6. Ctrl-C ------------------------------------------------------------------------------
def test_ctrl_c_during_train_leaves_no_file(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "train", "--dataset", "digits", "--epochs", "100000", "--save", "m.npz"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "lagrange-bp: interrupted", err
    assert list(tmp_path.iterdir()) == []


# --- 7. sizes that cannot fit in memory -----------------------------------------------------
@pytest.mark.parametrize("widths", ["2,1000000000000,2", "2,100000000,2"])
def test_sizes_that_cannot_fit_are_refused_up_front(widths: str, tmp_path: Path) -> None:
    done = cli("train", "--dataset", "xor", "--widths", widths, cwd=tmp_path)
    one_line(done, "GiB for its parameters and buffers")
    with pytest.raises(ValueError, match="GiB for its parameters and buffers"):
        lbp.compile(lbp.NetworkSpec([int(w) for w in widths.split(",")], "tanh")).init_params()


def test_the_exact_check_refuses_sizes_that_cannot_fit(tmp_path: Path) -> None:
    done = cli("verify", "--compiled", "--widths", "2,1000000000000,2", cwd=tmp_path)
    one_line(done, "the exact check of network 2-1000000000000-2 needs about")


@pytest.mark.parametrize("command", ["derive", "verify"])
def test_a_lifted_limit_still_refuses_derivations_that_cannot_fit(
    command: str, tmp_path: Path
) -> None:
    """--max-weights 0 lifts the size limit, not the machine's memory: a 4·10¹² weight
    derivation is refused up front, with the numbers, instead of filling the memory."""
    done = cli(command, "--max-weights", "0", "--widths", "2,1000000000000,2", cwd=tmp_path)
    one_line(done, "weights: an exact derivation needs about 61,035,156.2 GiB")
    graph = lbp.chain_graph(lbp.NetworkSpec((2, 10**12, 2), "tanh", "mse"))
    with pytest.raises(ValueError, match="an exact derivation needs about"):
        lbp.derive(graph, max_weights=None)


# --- 8. a terminal without Unicode -----------------------------------------------------------
def test_ascii_terminal_gets_ascii_notation(tmp_path: Path) -> None:
    done = cli("derive", "--widths", "1,1", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (
        done.stdout.isascii() and "lambda^1[1]" in done.stdout and "dL/dlambda^1[1]" in done.stdout
    )


# --- 9. text from users never reaches LaTeX, Markdown or the terminal unescaped -------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tanh(z) # x\n#\\immediate\\openout9=pwned.txt", "comments are not allowed"),
        ("<img src=x onerror=alert(1)>", "is not a valid expression"),
        ("tanh(z)\x1b[31m", "the character '\\x1b' is not allowed"),
    ],
)
def test_hostile_expressions_are_refused_in_one_line(
    text: str, message: str, tmp_path: Path
) -> None:
    for fmt in ("latex", "markdown", "text"):
        done = cli(
            "derive", "--widths", "1,1", "--activations", text, "--format", fmt, cwd=tmp_path
        )
        one_line(done, message)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_carrying_escape_sequences_prints_none(tmp_path: Path) -> None:
    path = saved_model(tmp_path / "m.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["activations"] = ["\x1b[2J\x1b[31mtanh", "softmax"]
    arrays["meta"] = np.array(json.dumps(meta))
    params = [(arrays["W1"], arrays["b1"]), (arrays["W2"], arrays["b2"])]
    arrays["sha256"] = np.array(checkpoint.digest(str(arrays["meta"]), params))
    np.savez(path, **arrays)
    one_line(cli("evaluate", "--model", "m.npz", "--dataset", "xor", cwd=tmp_path), "\\x1b")


def test_latex_and_markdown_show_the_parsed_expression_escaped(tmp_path: Path) -> None:
    done = cli(
        "derive",
        "--widths",
        "1,1",
        "--activations",
        "z*tanh(z)*z",
        "--format",
        "markdown",
        cwd=tmp_path,
    )
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == (
        "## lagrange_bp derivation: network 1-1 (N = 1 layer), activations z\\*\\*2\\*tanh(z), "
        "loss mse; one sample"
    )


# --- 10. a candidate cannot fake a verdict ----------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        "import sys\nsys.exit(0)\n",
        "import sys\ndef f(**kw):\n    sys.exit(0)\n",
        "import os\ndef f(**kw):\n    os._exit(0)\n",
        "def f(**kw):\n    raise KeyboardInterrupt\n",
    ],
    ids=["exit at import", "exit in the rule", "os._exit", "KeyboardInterrupt"],
)
def test_a_candidate_that_ends_the_process_is_wrong_not_right(body: str, tmp_path: Path) -> None:
    (tmp_path / "cand.py").write_text(body)
    done = cli(
        "check", "--rule", "forward", "--candidate", "cand.py:f", "--widths", "2,2", cwd=tmp_path
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert (
        "WRONG (no verdict: it ended the checking process" in done.stdout
        or "mistake: raised: your function raised " in done.stdout  # caught in the worker
    )


# --- 12. evaluation on the held-out split ----------------------------------------------------
def test_evaluate_uses_the_split_the_model_was_trained_on(tmp_path: Path) -> None:
    train = cli(
        "train",
        "--dataset",
        "moons",
        "--split-seed",
        "7",
        "--epochs",
        "3",
        "--save",
        "m.npz",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr
    held_out = train.stdout.split("test ")[1].split()[1]
    again = cli("evaluate", "--model", "m.npz", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.split("test ")[1].split()[1] == held_out
    one_line(
        cli("evaluate", "--model", "m.npz", "--split-seed", "0", cwd=tmp_path),
        "the model was trained on the split with --split-seed 7",
    )
    other = cli("evaluate", "--model", "m.npz", "--dataset", "xor", cwd=tmp_path)
    assert other.returncode == 0
    assert (
        other.stderr == "lagrange-bp: warning: the model was trained on moons, not on this data\n"
    )


# --- 13. the small ones -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("derive", "--loss", ""), "loss is empty: give a name or an expression"),
        (("train", "--dataset", "xor", "--activations", ""), "activation is empty"),
        (
            ("check", "--general", "--rule", "forward", "--candidate", "x.py:f"),
            "--general does not apply",
        ),
        (
            ("train", "--dataset", "xor", "--seed", "-1"),
            "--seed must be a non-negative integer, got -1",
        ),
        (
            ("train", "--dataset", "xor", "--split-seed", "-1"),
            "--split-seed must be a non-negative",
        ),
        (("verify", "--trials", "1000000000"), "--trials must be at most 100"),
    ],
)
def test_small_cases_name_the_option(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    one_line(cli(*args, cwd=tmp_path), message)


def test_expressions_named_like_variables_are_accepted(tmp_path: Path) -> None:
    done = cli("derive", "--widths", "1,1", "--activations", "z", "--loss", "x", cwd=tmp_path)
    assert done.returncode == 0 and "activations z, loss x" in done.stdout


def test_csv_blank_lines_skipped_and_duplicate_columns_refused(tmp_path: Path) -> None:
    rows = ["a,b,y"] + [f"{i},{i % 3},{i % 2}" for i in range(20)]
    (tmp_path / "ok.csv").write_text("\n".join(rows) + "\n\n\n")
    assert (
        cli("train", "--data", "ok.csv", "--target", "y", "--epochs", "1", cwd=tmp_path).returncode
        == 0
    )
    (tmp_path / "dup.csv").write_text(
        "a,y,y\n" + "\n".join(f"{i},{i % 2},{i % 2}" for i in range(20))
    )
    one_line(
        cli("train", "--data", "dup.csv", "--target", "y", cwd=tmp_path),
        "the header names 'y' twice",
    )


def test_version_and_a_growing_loss_warning(tmp_path: Path) -> None:
    done = cli("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"lagrange-bp {lbp.__version__}\n"
    done = cli("train", "--dataset", "xor", "--lr", "1e6", "--epochs", "2", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == (
        "lagrange-bp: warning: the training loss grew from 0.6893 to 4.611e+06; "
        "the learning rate (1e+06) may be too large\n"
    )
    assert "train      4.611e+06" in done.stdout


def test_check_has_no_exact_derivation_limit(tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text(
        "def f(W, b, x_prev, sigma):\n    return sigma(x_prev @ W.T + b)\n"
    )
    done = cli(
        "check", "--rule", "forward", "--candidate", "r.py:f", "--widths", "784,32,10", cwd=tmp_path
    )
    assert done.returncode == 0 and ": RIGHT" in done.stdout, done.stderr


# --- 16–18. commands, help, and what they leave behind --------------------------------------
def test_the_test_extra_does_not_pull_torch() -> None:
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    extra = text.split("test = [", 1)[1].split("]", 1)[0]
    assert "torch" not in extra


def test_help_names_expressions_and_defaults(tmp_path: Path) -> None:
    train = cli("train", "--help", cwd=tmp_path).stdout
    assert "expression in z" in train and "(default 0.1)" in train and "(default 30)" in train
    assert "(default 32)" in train and "non-negative" not in train
    verify = cli("verify", "--help", cwd=tmp_path).stdout
    assert "--compiled" in verify and "at most 100" in verify
