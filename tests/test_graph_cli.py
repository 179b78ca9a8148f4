"""``lagrange-bp derive|verify|train --graph FILE`` and ``--recurrent`` (issue 16, step 2b): every
format, the proof, one spelling for every command, and bad input as one line, exit status 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli as run

import lagrange_bp as lbp
from lagrange_bp import cli_graph
from lagrange_bp.cli_graph import (
    graph_from_args,
    recurrent_activations,
    recurrent_from_args,
    recurrent_kwargs,
    recurrent_steps,
    step_sizes,
)
from lagrange_bp.cli_train import TRAIN_RECURRENT

RNN = ("--recurrent", "--inputs", "2", "--hidden", "2", "--outputs", "1", "--steps", "3")


def residual_file(tmp_path: Path) -> str:
    g = lbp.Graph(inputs=3)
    x0 = g.inputs[0]
    h1 = g.layer(x0, 2, "tanh", name="h1")
    s = g.add(h1, g.layer(h1, 2, "tanh", name="h2"), name="s")
    spec = g.output(g.layer([s, x0], 2, "softmax", name="out"), loss="cross_entropy")
    path = tmp_path / "residual.json"
    path.write_text(spec.to_json(), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown", "json"])
def test_derive_graph_in_every_format(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fmt: str
) -> None:
    code, out, err = run(capsys, "derive", "--graph", residual_file(tmp_path), "--format", fmt)
    assert code == 0 and err == ""
    marks = {
        "text": "(h2: ",
        "latex": r"}_{\mathrm{h2}} + \underbrace{",
        "markdown": "### 2. dL/dx\\_v = 0",
        "json": '"origin": "s"',
    }
    assert marks[fmt] in out
    if fmt == "json":
        assert json.loads(out)["describe"].startswith("graph 3 → 2")


@pytest.mark.parametrize("fmt", ["text", "latex", "markdown", "json"])
def test_derive_recurrent_prints_bptt(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, _ = run(capsys, "derive", *RNN, "--outputs-at", "every", "--format", fmt)
    assert code == 0
    if fmt == "json":
        doc = json.loads(out)
        assert doc["shared"]["cell"] == ["h1", "h2", "h3"] and "bptt" in doc
    else:
        assert "Backpropagation through time" in out
    if fmt == "text":
        assert "λ_{h_t} = Vᵀ(σ_o'(z^o_t) ⊙ λ_{o_t}) + W_hᵀ(σ'(z_{t+1}) ⊙ λ_{h_{t+1}})" in out
        assert "(h1: " in next(x for x in out.splitlines() if "∂L/∂cell.b[1] =" in x)


def test_derive_graph_to_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "rnn.md"
    code, out, _ = run(capsys, "derive", *RNN, "--format", "markdown", "--output", str(target))
    assert code == 0 and "written to" in out
    page = target.read_text(encoding="utf-8")  # the printable document, with the proof
    assert page.startswith("# Backpropagation from the KKT conditions of the Lagrangian: graph")
    assert "Proof summary" in page and "NOT proven" not in page


def test_verify_graph_and_recurrent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "verify", "--graph", residual_file(tmp_path), "--json")
    assert code == 0 and "verify: (e) ok" in err
    doc = json.loads(out)
    assert doc["ok"] and [s["step"] for s in doc["steps"]] == ["a", "b", "c", "d", "e"]
    sizes = ("--inputs", "2", "--hidden", "2", "--outputs", "2", "--steps", "3")
    options = ("--activations", "sigmoid", "--loss", "cross_entropy")
    code, out, _ = run(capsys, "verify", "--recurrent", *sizes, *options)
    assert code == 0 and "graph 3×2 → 2: cell sigmoid 2 ×3 shared, out softmax 2" in out


def test_recurrent_options_for_other_commands() -> None:
    """The parsing ``train`` shares: sizes from the data, activations given as text."""
    p = argparse.ArgumentParser()
    p.add_argument("--activations")
    p.add_argument("--loss")
    cli_graph.add_graph_args(p, sizes=False)
    args = p.parse_args(["--recurrent", "--hidden", "8", "--steps", "4", "--outputs-at", "every"])
    kw = recurrent_kwargs(args, inputs=3, outputs=2)
    assert kw == {
        "inputs": 3,
        "outputs": 2,
        "hidden": 8,
        "steps": 4,
        "activation": "tanh",
        "output_activation": "identity",
        "loss": "mse",
        "outputs_at": "every",
    }
    assert recurrent_activations("z*tanh(z), sigmoid", "mse") == ("z*tanh(z)", "sigmoid")
    assert recurrent_activations(None, "cross_entropy") == ("tanh", "softmax")
    spec = graph_from_args(args, inputs=3, outputs=2)
    assert spec == lbp.recurrent(**kw)
    assert graph_from_args(p.parse_args([])) is None


def test_sizes_and_defaults_from_the_data() -> None:
    """train's extension: T and the sizes per step from a row of the data, its own defaults."""
    p = argparse.ArgumentParser()
    p.add_argument("--loss")
    cli_graph.add_graph_args(p, sizes=False, defaults=TRAIN_RECURRENT)
    plain = p.parse_args(["--recurrent"])
    assert recurrent_steps(plain) == (3, "last")
    assert recurrent_steps(plain, TRAIN_RECURRENT) == (10, "last")
    assert step_sizes(plain, 20, 1, TRAIN_RECURRENT) == (2, 1)
    every = p.parse_args(["--recurrent", "--steps", "5", "--outputs-at", "every"])
    assert step_sizes(every, 10, 5) == (2, 1)
    with pytest.raises(ValueError, match="--steps 5 does not divide digits's 64 features"):
        step_sizes(every, 64, 10, data="digits")
    with pytest.raises(ValueError, match="64 features and 7 targets"):
        step_sizes(every, 64, 7)
    spec = recurrent_from_args(plain, 2, 10, defaults=TRAIN_RECURRENT, loss="cross_entropy")
    assert spec == lbp.recurrent(2, 16, 10, 10, "tanh", "softmax", "cross_entropy", "last")
    assert "--hidden N            with --recurrent: width of h_t (default 16)" in p.format_help()


def test_one_spelling_for_derive_verify_and_train(capsys: pytest.CaptureFixture[str]) -> None:
    """``--recurrent --hidden 3 --steps 4`` means the same network shape in all three commands."""
    same = ("--recurrent", "--hidden", "3", "--steps", "4", "--activations", "tanh,identity")
    code, out, _ = run(capsys, "derive", *same)
    assert code == 0 and "graph 4×1 → 1: cell tanh 3 ×4 shared, out identity 1; mse" in out
    code, out, _ = run(capsys, "verify", *same)
    assert code == 0 and "cell tanh 3 ×4 shared, out identity 1; mse: PROVEN" in out
    train = ("train", "--dataset", "adding", "--epochs", "1", "--json")
    code, out, _ = run(capsys, *train, *same)
    assert code == 0
    assert json.loads(out)["spec"] == "graph 4×2 → 1: cell tanh 3 ×4 shared, out identity 1; mse"


BAD = [
    (("derive", "--graph", "missing.json"), "--graph 'missing.json': no such file"),
    (("derive", "--graph", "{dir}"), "not a regular file"),
    (("derive", "--graph", "{bad}"), "graph JSON does not parse"),
    (("verify", "--graph", "{unknown}"), "unknown keys ['colour']"),
    (("derive", "--graph", "{big}"), "is 101 bytes, more than the 100 a graph takes"),
    (("derive", "--graph", "{latin}"), "is not UTF-8 text"),
    (("derive", "--graph", "{cycle}"), "which is not an earlier node"),
    (("derive", "--graph", "{ok}", "--recurrent"), "give --graph FILE or --recurrent, not both"),
    (("derive", "--graph", "{ok}", "--loss", "mse"), "drop --activations/--loss"),
    (("derive", "--graph", "{ok}", "--widths", "2,3"), "--widths does not apply"),
    (("derive", "--recurrent", "--general"), "--general does not apply"),
    (("verify", "--recurrent", "--compiled"), "--compiled does not apply"),
    (("derive", "--recurrent", "--weight-decay", "-0.1"), "--weight-decay: weight_decay must"),
    (("train", "--dataset", "sine", "--recurrent", "--weight-decay", "inf"), "--weight-decay:"),
    (("derive", "--hidden", "4"), "--hidden needs --recurrent"),
    (("verify", "--outputs-at", "every"), "--outputs-at needs --recurrent"),
    (("derive", "--recurrent", "--steps", "0"), "--steps must be a positive integer, got 0"),
    (("derive", "--recurrent", "--activations", "a,b,c"), "one or two names"),
    (("derive", "--recurrent", "--activations", "z**"), "is not a valid expression"),
    (("derive", "--recurrent", "--loss", "cross_entropy", "--activations", "tanh,tanh"), "softmax"),
    (("derive", "--recurrent", "--hidden", "400", "--steps", "9"), "exact-derivation limit"),
    (("derive", "--recurrent", "--outputs-at", "first"), "invalid choice: 'first'"),
    (("derive", "--graph", "bad\x1bname.json"), r"--graph 'bad\x1bname.json': no such file"),
    (("train", "--dataset", "digits", "--graph", "missing.json"), "'missing.json': no such file"),
    (("train", "--dataset", "digits", "--graph", "{dir}"), "not a regular file"),
    (("train", "--dataset", "digits", "--graph", "{big}"), "is 101 bytes, more than the 100"),
    (("train", "--dataset", "digits", "--graph", "{latin}"), "is not UTF-8 text"),
    (("train", "--dataset", "digits", "--graph", "{unknown}"), "unknown keys ['colour']"),
    (("train", "--dataset", "adding", "--graph", "{ok}", "--recurrent"), "not both"),
    (("train", "--dataset", "adding", "--graph", "{ok}", "--loss", "mse"), "drop --activations"),
    (("train", "--dataset", "adding", "--graph", "{ok}", "--widths", "2,3"), "--widths does not"),
    (("train", "--dataset", "adding", "--hidden", "4"), "--hidden needs --recurrent"),
    (("train", "--dataset", "adding", "--recurrent", "--steps", "0"), "--steps must be a positive"),
    (("train", "--dataset", "adding", "--recurrent", "--outputs-at", "first"), "invalid choice"),
    (("train", "--dataset", "adding", "--recurrent", "--inputs", "2"), "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    message: str,
) -> None:
    files = {
        "dir": str(tmp_path),
        "bad": '{"format": "lagrange_bp.graph", ',
        "unknown": json.loads(Path(residual_file(tmp_path)).read_text()) | {"colour": "red"},
        "big": " " * 101,
        "latin": b"{\xe9}",
        "cycle": {
            "format": "lagrange_bp.graph",
            "version": 1,
            "inputs": [{"name": "x0", "width": 1}],
            "nodes": [{"name": "s", "op": "add", "inputs": ["x0", "s"]}],
            "outputs": ["s"],
            "loss": "mse",
        },
        "ok": Path(residual_file(tmp_path)).read_text(),
    }
    monkeypatch.setattr(cli_graph, "MAX_GRAPH_BYTES", 100 if "{big}" in argv else 10**6)
    resolved = []
    for a in argv:
        key = a.strip("{}")
        if a.startswith("{") and key in files and key != "dir":
            path = tmp_path / f"{key}.json"
            content = files[key]
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                text = content if isinstance(content, str) else json.dumps(content)
                path.write_text(text, encoding="utf-8")
            a = str(path)
        elif a == "{dir}":
            a = files["dir"]
        resolved.append(a)
    code, out, err = run(capsys, *resolved)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lagrange-bp: error: "), err
    assert message in err and "\x1b" not in err


def test_bad_graph_file_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text('{"format": "lagrange_bp.graph", "version": true}')
    proc = subprocess.run(
        [sys.executable, "-m", "lagrange_bp", "verify", "--graph", "g.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lagrange-bp: error: --graph 'g.json': graph JSON")
