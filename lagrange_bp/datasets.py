"""Data for training: built-in datasets and the user's CSV or NPZ files, split and encoded.

Classification targets become one-hot rows; inputs are standardised on the training split
(except digits, whose pixels are divided by 16 as in the usual setup); the train/test split is
seeded and stratified for classification.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .safe_io import open_npz, printable, read_member, shown

BUILTIN = ("digits", "iris", "diabetes", "xor", "moons", "adding", "sine")
MAX_CLASSES = 50
MAX_DATA_BYTES = 2**31  # 2 GiB per array of an NPZ data file


@dataclass
class Dataset:
    """Train and test arrays (rows are samples) and what the target means."""

    name: str
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    task: str  # "classification" (Y one-hot) or "regression"
    classes: list[str]

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.Y_train.shape[1]

    def describe(self) -> str:
        kind = f"{len(self.classes)} classes" if self.task == "classification" else "regression"
        return (
            f"{self.name}: {len(self.X_train)} train / {len(self.X_test)} test samples, "
            f"{self.n_features} features, {kind}"
        )


def load(
    name: str, *, split_seed: int = 0, test_size: float = 0.25, **sequence: Any
) -> Dataset:
    """A built-in dataset: digits, iris, diabetes (scikit-learn), xor, moons (synthetic), and
    the sequences adding, sine (``sequences``: ``steps=``, ``samples=``, ``outputs_at=``)."""
    from sklearn import datasets as sk

    from .sequences import SEQUENCES, sequence_dataset

    if name in SEQUENCES:
        return sequence_dataset(name, split_seed, test_size, **sequence)
    if sequence:
        raise ValueError(
            f"{', '.join(sequence)}: options of the sequence datasets, not of {name!r}"
        )

    if name == "digits":
        d = sk.load_digits()
        return _split(name, d.data / 16.0, d.target, True, split_seed, test_size, standardise=False)
    if name == "iris":
        d = sk.load_iris()
        return _split(
            name,
            d.data,
            d.target,
            True,
            split_seed,
            test_size,
            names=[str(n) for n in d.target_names],
        )
    if name == "diabetes":
        d = sk.load_diabetes()
        return _split(name, d.data, d.target, False, split_seed, test_size)
    if name == "xor":
        rng = np.random.default_rng(split_seed)
        X = rng.uniform(-1.0, 1.0, size=(400, 2))
        return _split(name, X, (X[:, 0] * X[:, 1] > 0).astype(int), True, split_seed, test_size)
    if name == "moons":
        X, y = sk.make_moons(n_samples=500, noise=0.2, random_state=split_seed)
        return _split(name, X, y, True, split_seed, test_size)
    raise ValueError(
        f"unknown dataset {name!r}; known: {', '.join(BUILTIN)} "
        f"(or a file with --data FILE --target COLUMN)"
    )


def load_file(
    path: str | Path, target: str, *, split_seed: int = 0, test_size: float = 0.25
) -> Dataset:
    """A CSV file with a header row, or an NPZ file; ``target`` names the target column/array.

    CSV: every column but the target must be numeric. NPZ: a 2-D array ``X`` of features and
    the array named ``target``. An integer or text target with at most 50 values is a class
    label; anything else is a regression target.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {shown(str(path))} does not exist or is not a file")
    if path.suffix.lower() == ".npz":
        X, raw = _read_npz(path, target)
    else:
        try:
            X, raw = _read_csv(path, target)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{shown(path.name)}: cannot read as CSV: {exc}") from None
    if not np.isfinite(X).all():
        raise ValueError(f"{shown(path.name)}: NaN or inf among the feature values")
    if raw.dtype.kind in "biuf" and not np.isfinite(raw.astype(float)).all():
        raise ValueError(f"{shown(path.name)}: NaN or inf in the target {target!r}")
    labels = np.unique(raw)
    numeric = raw.dtype.kind in "biuf"
    integral = numeric and np.all(np.mod(raw.astype(float), 1) == 0)
    classify = (not numeric or integral) and len(labels) <= MAX_CLASSES
    if classify and len(labels) < 2:
        raise ValueError(f"target {target!r} has a single class ({labels[0]!r}): nothing to learn")
    if classify:
        y = np.searchsorted(labels, raw)
        names = [str(v) for v in labels]
        return _split(printable(path.name), X, y, True, split_seed, test_size, names=names)
    return _split(printable(path.name), X, raw.astype(float), False, split_seed, test_size)


def _read_csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    name = shown(path.name)
    with path.open(newline="", encoding="utf-8") as f:
        lines = [
            (r, row) for r, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)
        ]
    if len(lines) < 2:
        raise ValueError(f"{name}: expected a header row and data rows")
    header = [h.strip() for h in lines[0][1]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ValueError(f"{name}: the header names {', '.join(map(repr, repeated))} twice")
    if target not in header:
        raise ValueError(f"{name}: no column {target!r}; columns: {', '.join(map(repr, header))}")
    t = header.index(target)
    features = [h for i, h in enumerate(header) if i != t]
    if not features:
        raise ValueError(f"{name}: no feature columns besides the target {target!r}")
    X = np.empty((len(lines) - 1, len(features)))
    y: list[str] = []
    for n, (r, row) in enumerate(lines[1:]):
        if len(row) != len(header):
            raise ValueError(f"{name}, line {r}: {len(row)} values, header has {len(header)}")
        y.append(row[t].strip())
        values = [v for i, v in enumerate(row) if i != t]
        for c, (v, column) in enumerate(zip(values, features)):
            try:
                X[n, c] = float(v)
            except ValueError:
                raise ValueError(
                    f"{name}, line {r}: non-numeric value {shown(v)} in column {column!r}"
                ) from None
    if not np.isfinite(X).all():
        raise ValueError(f"{name}: NaN or inf among the feature values")
    try:
        return X, np.array([float(v) for v in y])
    except ValueError:
        return X, np.array(y)


def _read_npz(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    name = shown(path.name)
    with open_npz(path, f"data file {name}") as z:
        if "X" not in z.files or target not in z.files:
            raise ValueError(f"{name}: needs arrays 'X' and {target!r}; has {', '.join(z.files)}")
        X = read_member(z, "X", f"data file {name}", MAX_DATA_BYTES)
        y = read_member(z, target, f"data file {name}", MAX_DATA_BYTES)
    if X.ndim != 2 or X.dtype.kind not in "biuf" or y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"{name}: 'X' must be a numeric 2-D array and {target!r} a 1-D array "
            f"with one entry per row; got shapes {X.shape} and {y.shape}"
        )
    if len(X) < 4 or X.shape[1] == 0:
        raise ValueError(f"{name}: needs at least 4 rows and 1 feature to split; X is {X.shape}")
    return X.astype(float), y


def _split(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    classify: bool,
    seed: int,
    test_size: float,
    *,
    standardise: bool = True,
    names: list[str] | None = None,
) -> Dataset:
    from sklearn.model_selection import train_test_split

    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y if classify else None
    )
    if standardise:
        mu, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
        sd[sd == 0] = 1.0
        X_tr, X_te = (X_tr - mu) / sd, (X_te - mu) / sd
    if classify:
        k = int(max(y.max() + 1, len(names or [])))
        Y_tr, Y_te = np.eye(k)[y_tr], np.eye(k)[y_te]
        classes = names or [str(i) for i in range(k)]
    else:
        mu, sd = y_tr.mean(), y_tr.std() or 1.0
        Y_tr, Y_te = ((y_tr - mu) / sd)[:, None], ((y_te - mu) / sd)[:, None]
        classes = []
    return Dataset(
        name,
        np.ascontiguousarray(X_tr, float),
        Y_tr,
        np.ascontiguousarray(X_te, float),
        Y_te,
        "classification" if classify else "regression",
        classes,
    )
