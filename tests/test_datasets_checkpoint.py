"""Datasets and checkpoints (issue 4 items 2 and 4)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp import checkpoint
from lagrange_bp.datasets import load, load_file


@pytest.mark.parametrize(
    ("name", "features", "outputs", "task"),
    [
        ("digits", 64, 10, "classification"),
        ("iris", 4, 3, "classification"),
        ("diabetes", 10, 1, "regression"),
        ("xor", 2, 2, "classification"),
        ("moons", 2, 2, "classification"),
    ],
)
def test_builtin_datasets(name: str, features: int, outputs: int, task: str) -> None:
    d = load(name)
    assert (d.n_features, d.n_outputs, d.task) == (features, outputs, task)
    n = len(d.X_train) + len(d.X_test)
    assert len(d.X_test) == pytest.approx(0.25 * n, abs=1)
    if task == "classification":
        assert np.all(d.Y_train.sum(axis=1) == 1) and set(np.unique(d.Y_train)) == {0.0, 1.0}
    if name == "digits":
        assert d.X_train.max() <= 1.0 and d.X_train.min() >= 0.0  # pixels / 16
    elif name != "diabetes":
        np.testing.assert_allclose(d.X_train.mean(axis=0), 0, atol=1e-12)  # standardised
    again = load(name)
    np.testing.assert_array_equal(d.X_test, again.X_test)


def test_digits_split_is_stratified() -> None:
    d = load("digits")
    share = d.Y_test.sum(axis=0) / d.Y_train.sum(axis=0)
    assert np.all(np.abs(share - 1 / 3) < 0.03)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_csv_classification_and_regression(tmp_path: Path) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 3},{'cat' if i % 2 else 'dog'}" for i in range(40)]
    d = load_file(write_csv(tmp_path / "d.csv", rows), "label")
    assert d.task == "classification" and d.classes == ["cat", "dog"] and d.n_features == 2
    rows = ["a,b,y"] + [f"{i},{i % 3},{i * 0.37}" for i in range(40)]
    r = load_file(write_csv(tmp_path / "r.csv", rows), "y")
    assert r.task == "regression" and r.n_outputs == 1 and r.n_features == 2


def test_npz_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(30, 3)), cls=np.arange(30) % 2)
    d = load_file(tmp_path / "d.npz", "cls")
    assert d.n_features == 3 and d.n_outputs == 2
    with pytest.raises(ValueError, match="needs arrays 'X' and 'nope'; has X, cls"):
        load_file(tmp_path / "d.npz", "nope")


@pytest.mark.parametrize(
    ("rows", "target", "message"),
    [
        (["a,b", "1,x", "2,y"], "c", "no column 'c'; columns: 'a', 'b'"),
        (["a,b,c", "1,oops,0", "2,3,1"], "c", "line 2: non-numeric value 'oops' in column 'b'"),
        (["a,c", "1,0", "2,0", "3,0"], "c", "single class"),
        (["a,c", "1,0,5"], "c", "line 2: 3 values, header has 2"),
    ],
)
def test_bad_csv(tmp_path: Path, rows: list[str], target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_file(write_csv(tmp_path / "bad.csv", rows), target)


def test_missing_file_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_file(tmp_path / "none.csv", "y")
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: digits, iris"):
        load("mnist")


SPEC = lbp.NetworkSpec((4, 5, 3), ("tanh", "softmax"), "cross_entropy")


def saved(tmp_path: Path) -> tuple[Path, list]:
    params = lbp.compile(SPEC).init_params(seed=2)
    return checkpoint.save(tmp_path / "m.npz", SPEC, params, {"note": "x"}), params


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path, params = saved(tmp_path)
    spec, loaded, info = checkpoint.load(path)
    assert spec == SPEC and info == {"note": "x"}
    for (W, b), (W2, b2) in zip(params, loaded):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(lbp.CheckpointError, match=r"m\.npz' is truncated or not an NPZ archive"):
        checkpoint.load(path)


def test_altered_checkpoint(tmp_path: Path) -> None:
    path, params = saved(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["W1"] = arrays["W1"] + 1e-3
    np.savez(path, **arrays)
    with pytest.raises(lbp.CheckpointError, match="altered or corrupted"):
        checkpoint.load(path)
    meta = json.loads(str(arrays["meta"]))
    meta["widths"] = [4, 6, 3]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(lbp.CheckpointError, match="altered or corrupted"):
        checkpoint.load(path)
    # a consistent checksum over arrays that do not fit the stored network
    params = [(arrays["W1"], arrays["b1"]), (arrays["W2"], arrays["b2"])]
    arrays["sha256"] = np.array(checkpoint.digest(str(arrays["meta"]), params))
    np.savez(path, **arrays)
    with pytest.raises(lbp.CheckpointError, match=r"does not match its own network 4-6-3"):
        checkpoint.load(path)


def test_foreign_npz_and_pickles_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    with pytest.raises(lbp.CheckpointError, match="not a valid lagrange_bp checkpoint"):
        checkpoint.load(tmp_path / "other.npz")
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "pickle.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "meta.npy")
    with pytest.raises(lbp.CheckpointError, match="array 'meta' holds Python objects"):
        checkpoint.load(tmp_path / "pickle.npz")


def test_nan_parameters_are_never_saved(tmp_path: Path) -> None:
    params = lbp.compile(SPEC).init_params()
    params[1][1][0] = np.nan
    with pytest.raises(lbp.CheckpointError, match="refusing to save: W\\^2 or b\\^2"):
        checkpoint.save(tmp_path / "m.npz", SPEC, params)
    assert not (tmp_path / "m.npz").exists()
