"""lagrange-bp train / evaluate (issue 4 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli as run


def test_train_save_plot_evaluate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model, plot = tmp_path / "model.npz", tmp_path / "curve.png"
    code, out, _ = run(
        capsys,
        "train",
        "--dataset",
        "digits",
        "--widths",
        "64,32,10",
        "--activations",
        "tanh,softmax",
        "--loss",
        "cross_entropy",
        "--epochs",
        "8",
        "--batch-size",
        "32",
        "--lr",
        "0.1",
        "--seed",
        "0",
        "--save",
        str(model),
        "--plot",
        str(plot),
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["spec"] == "64-32-10, tanh/softmax, cross_entropy" and doc["epochs"] == 8
    assert len(doc["history"]["val_accuracy"]) == 8
    test_acc = doc["final"]["test"]["accuracy"]
    assert test_acc > 0.9
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    code, out, _ = run(capsys, "evaluate", "--model", str(model), "--dataset", "digits", "--json")
    assert code == 0 and json.loads(out)["final"]["test"]["accuracy"] == pytest.approx(test_acc)
    code, out, _ = run(capsys, "evaluate", "--model", str(model), "--dataset", "digits")
    assert "test" in out and f"{100 * test_acc:.2f}%" in out


def test_train_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train", "--dataset", "iris", "--epochs", "5")
    assert code == 0
    assert "network 4-64-3, tanh/softmax, cross_entropy; 5 epochs, batch 32, lr 0.1, seed 0" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "accuracy" in line)
    assert lines[header + 1].startswith("train") and lines[header + 2].startswith("test")
    assert "s per epoch" in out


def test_train_regression_and_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "train", "--dataset", "diabetes", "--epochs", "3")
    assert code == 0 and "10-64-1, tanh/identity, mse" in out and "accuracy" not in out
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,label\n" + "\n".join(f"{i},{-i},{i % 2}" for i in range(30)) + "\n")
    code, out, _ = run(capsys, "train", "--data", str(csv), "--target", "label", "--epochs", "2")
    assert code == 0 and "d.csv: 22 train / 8 test samples, 2 features, 2 classes" in out


def test_divergence_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "diabetes",
        "--activations",
        "identity",
        "--lr",
        "1e6",
        "--epochs",
        "50",
    )
    assert code == 1 and "diverged at epoch" in err and "smaller learning rate" in err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,2,0\n3,x,1\n")
    single = tmp_path / "single.csv"
    single.write_text("a,y\n" + "\n".join(f"{i},1" for i in range(10)) + "\n")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(b"PK\x03\x04 not really")
    return {"bad": bad, "single": single, "trunc": trunc}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "mnist"], "unknown dataset 'mnist'; known: digits, iris"),
        (["train", "--data", "{dir}/none.csv", "--target", "y"], "does not exist"),
        (["train", "--data", "{bad}", "--target", "z"], "no column 'z'; columns: 'a', 'b', 'y'"),
        (["train", "--data", "{bad}", "--target", "y"], "non-numeric value 'x' in column 'b'"),
        (["train", "--data", "{single}", "--target", "y"], "single class"),
        (["train", "--data", "{bad}"], "--data needs --target COLUMN"),
        (["train", "--dataset", "iris", "--data", "{bad}"], "either --dataset NAME or --data"),
        (
            ["train", "--dataset", "iris", "--epochs", "0"],
            "--epochs must be a finite number > 0, got 0",
        ),
        (
            ["train", "--dataset", "iris", "--batch-size", "-2"],
            "--batch-size must be a finite number > 0",
        ),
        (["train", "--dataset", "iris", "--lr", "0"], "--lr must be a finite number > 0"),
        (
            ["train", "--dataset", "iris", "--widths", "5,3"],
            "--widths is 5-3, which does not fit iris: it has 4 features (n_0) and 3 outputs",
        ),
        (
            [
                "train",
                "--dataset",
                "diabetes",
                "--loss",
                "cross_entropy",
                "--activations",
                "tanh,softmax",
            ],
            "cross_entropy needs class labels, but diabetes is a regression target",
        ),
        (
            ["evaluate", "--model", "{trunc}", "--dataset", "iris"],
            "truncated or not an NPZ archive",
        ),
        (["evaluate", "--model", "{dir}/none.npz", "--dataset", "iris"], "does not exist"),
    ],
)
def test_bad_input_exit_2(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    files: dict[str, Path],
    argv: list[str],
    message: str,
) -> None:
    argv = [a.format(dir=tmp_path, **files) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("lagrange-bp: error: ") and message in err


def test_model_for_another_architecture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "iris.npz"
    assert run(capsys, "train", "--dataset", "iris", "--epochs", "1", "--save", str(path))[0] == 0
    code, _, err = run(capsys, "evaluate", "--model", str(path), "--dataset", "digits")
    assert code == 2
    assert f"the network in {path} is 4-64-3, which does not fit digits" in err
