"""train(): the textbook mini-batch algorithm with the generated kernels (issue 4 item 1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lagrange_bp as lbp
from lagrange_bp.datasets import load
from lagrange_bp.optimizers import Optimizer
from lagrange_bp.train import GATHER_ROWS, Batches

SPEC = lbp.NetworkSpec((2, 8, 2), ("tanh", "softmax"), "cross_entropy")


@pytest.fixture(scope="module")
def moons() -> object:
    return load("moons")


def test_training_learns_and_records_history(moons: object) -> None:
    model = lbp.compile(SPEC)
    res = lbp.train(
        model,
        moons.X_train,
        moons.Y_train,
        epochs=20,
        batch_size=16,
        lr=0.5,
        seed=0,
        validation=(moons.X_test, moons.Y_test),
    )
    h = res.history
    assert h["epoch"] == list(range(1, 21))
    assert set(h) == {"epoch", "train_loss", "seconds", "val_loss", "val_accuracy"}
    assert all(len(v) == 20 for v in h.values())
    assert h["train_loss"][-1] < 0.5 * h["train_loss"][0]
    assert h["val_accuracy"][-1] > 0.85
    assert h["seconds"] == sorted(h["seconds"])


def test_same_seed_same_result_and_caller_arrays_untouched(moons: object) -> None:
    model = lbp.compile(SPEC)
    start = model.init_params(seed=4)
    before = [(W.copy(), b.copy()) for W, b in start]
    X, Y = moons.X_train.copy(), moons.Y_train.copy()
    a = lbp.train(model, X, Y, epochs=3, batch_size=10, lr=0.1, seed=1, params=start)
    b = lbp.train(model, X, Y, epochs=3, batch_size=10, lr=0.1, seed=1, params=start)
    for (W1, b1), (W2, b2), (W0, _) in zip(a.params, b.params, before):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
        assert not np.allclose(W1, W0)
    for (W, b), (W0, b0) in zip(start, before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    np.testing.assert_array_equal(X, moons.X_train)
    c = lbp.train(model, X, Y, epochs=3, batch_size=10, lr=0.1, seed=2, params=start)
    assert not np.allclose(c.params[0][0], a.params[0][0])


def test_one_epoch_is_the_sequence_of_batch_updates(moons: object) -> None:
    """Unshuffled, 1 epoch = sgd_step over consecutive batches, the last one partial."""
    model = lbp.compile(SPEC)
    X, Y = moons.X_train[:23], moons.Y_train[:23]
    params = model.init_params(seed=0)
    res = lbp.train(model, X, Y, epochs=1, batch_size=10, lr=0.3, shuffle=False, params=params)
    manual = [(W.copy(), b.copy()) for W, b in params]
    for start in (0, 10, 20):  # 10 + 10 + 3 rows
        _, grads = model.loss_and_grad(manual, X[start : start + 10], Y[start : start + 10])
        manual = [(W - 0.3 * gW, b - 0.3 * gb) for (W, b), (gW, gb) in zip(manual, grads)]
    for (W1, b1), (W2, b2) in zip(res.params, manual):
        np.testing.assert_allclose(W1, W2, rtol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=1e-12)


@pytest.mark.parametrize("name", ["nesterov", "adam"])
def test_an_optimizer_epoch_is_the_list_step_over_the_shuffled_batches(
    moons: object, name: str
) -> None:
    """train steps on one flat array and gathers each shuffled batch into a buffer (issue 14):
    the same bits as Optimizer.step on separate arrays over X[order] batch by batch, with weight
    decay and a smaller last batch (23 = 2·10 + 3 rows)."""
    model = lbp.compile(lbp.NetworkSpec((2, 8, 2), ("tanh", "softmax"), "cross_entropy", 0.01))
    X, Y = moons.X_train[:23], moons.Y_train[:23]
    res = lbp.train(model, X, Y, epochs=3, batch_size=10, lr=0.05, seed=1, optimizer=name)
    params, opt = model.init_params(seed=1), Optimizer(name, 0.05)
    rng = np.random.default_rng(1)
    for _ in range(3):
        order = rng.permutation(len(X))
        for start in (0, 10, 20):
            rows = order[start : start + 10]
            opt.step(params, model.loss_and_grad(params, X[rows], Y[rows])[1])
    for (W1, b1), (W2, b2) in zip(res.params, params):
        np.testing.assert_array_equal(W1, W2)
        np.testing.assert_array_equal(b1, b2)
    assert res.state["optimizer"]["steps"] == opt.steps == 9


def test_batches_are_the_rows_in_order_cut_into_mini_batches() -> None:
    """Batches gathers shuffled rows batch by batch into its own buffers."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(23, 3)), rng.normal(size=(23, 2))
    before = X.copy()
    for batch in (1, 4, 10, 23):
        batches = Batches(X, Y, batch)
        order = rng.permutation(23)
        sizes = []
        for i, (Xb, Yb) in enumerate(batches(order)):  # each valid until the next is made
            rows = order[i * batch : (i + 1) * batch]
            assert Xb.flags.c_contiguous and np.shares_memory(Xb, batches.buffers[0])
            np.testing.assert_array_equal(Xb, X[rows])
            np.testing.assert_array_equal(Yb, Y[rows])
            sizes.append(len(Xb))
        assert len(sizes) == len(batches) == -(-23 // batch)
        assert [len(Xb) for Xb, _ in batches(None)] == sizes
        np.testing.assert_array_equal(np.concatenate([b for b, _ in batches(None)]), X)
    np.testing.assert_array_equal(X, before)


def test_divergence_names_epoch_and_batch() -> None:
    spec = lbp.NetworkSpec((1, 1), "identity", "mse")
    model = lbp.compile(spec)
    X = np.linspace(-100, 100, 40)[:, None]
    with pytest.raises(
        lbp.TrainingDiverged,
        match=r"diverged at epoch \d, batch \d of 4: .*learning rate 1e\+06; "
        r"try a smaller learning rate \(e\.g\. 100000\)",
    ):
        lbp.train(model, X, 3 * X, epochs=5, batch_size=10, lr=1e6, shuffle=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"epochs": 2.5}, "epochs must be a positive integer, got 2.5"),
        ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
        ({"lr": 0.0}, "lr must be a positive number, got 0.0"),
        ({"lr": float("nan")}, "lr must be a positive number, got nan"),
    ],
)
def test_bad_training_arguments(moons: object, kwargs: dict, message: str) -> None:
    model = lbp.compile(SPEC)
    with pytest.raises(ValueError, match=message):
        lbp.train(model, moons.X_train, moons.Y_train, **kwargs)


@pytest.mark.parametrize("kind", ["chain", "graph"])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("X", "X contains NaN or inf"),
        ("Y", "Y contains NaN or inf|must sum to 1"),
        ("Y sum", "must sum to 1"),
    ],
)
def test_bad_values_in_the_last_rows_are_refused_before_a_step_reads_them(
    kind: str, shuffle: bool, where: str, message: str
) -> None:
    """train checks X's and Y's values as the first epoch reads them (no pass over all the
    data up front): a bad value in the last rows, read in a later gather, still raises
    ValueError naming it, and the caller's parameters are untouched."""
    model = lbp.compile(SPEC if kind == "chain" else lbp.chain_graph(SPEC))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((600, 2)), np.eye(2)[rng.integers(0, 2, 600)]
    if where == "X":
        X[-1, 1] = np.inf
    elif where == "Y":
        Y[-1, 0] = np.nan
    else:
        Y[-1] = (0.5, 0.6)
    params = model.init_params(seed=0)
    before = copy.deepcopy(params)
    steps: list[int] = []
    with pytest.raises(ValueError, match=message):
        lbp.train(
            model, X, Y, epochs=2, batch_size=32, params=params, shuffle=shuffle,
            on_batch=lambda epoch, batch, p: steps.append(batch),
        )  # fmt: skip
    # in order, the 18 batches before the last were stepped on; shuffled, those read before
    # the gather that holds the bad row (none when it is in the first)
    assert steps == list(range(1, 19)) if not shuffle else max(steps, default=0) < 19
    for a, b in zip(_arrays(params), _arrays(before), strict=True):
        np.testing.assert_array_equal(a, b)


def _arrays(params: object) -> list[np.ndarray]:
    if isinstance(params, dict):
        return list(params.values())
    return [a for pair in params for a in pair]  # type: ignore[attr-defined]


def test_train_rejects_a_non_model(moons: object) -> None:
    with pytest.raises(TypeError, match=r"model must be a lagrange_bp\.Model"):
        lbp.train(SPEC, moons.X_train, moons.Y_train)  # type: ignore[arg-type]


def test_evaluate_reports_loss_and_accuracy(moons: object) -> None:
    model = lbp.compile(SPEC)
    params = model.init_params()
    out = lbp.evaluate(model, params, moons.X_test, moons.Y_test)
    assert set(out) == {"loss", "accuracy"} and 0 <= out["accuracy"] <= 1
    assert out["loss"] == pytest.approx(model.loss_and_grad(params, moons.X_test, moons.Y_test)[0])


def test_the_train_loss_is_the_mean_of_the_batch_losses_without_a_pass_over_the_data(
    moons: object,
) -> None:
    """history["train_loss"] comes from the steps themselves (issue 14); eval_every adds the
    full-data loss and accuracy on the epochs it names, NaN elsewhere."""
    model = lbp.compile(SPEC)
    X, Y = moons.X_train, moons.Y_train
    res = lbp.train(model, X, Y, epochs=3, batch_size=16, lr=0.5, seed=2, shuffle=False)
    params, losses = model.init_params(seed=2), []
    for _ in range(3):
        total = 0.0
        for i in range(0, len(X), 16):
            total += model.sgd_step(params, X[i : i + 16], Y[i : i + 16], 0.5) * len(X[i : i + 16])
        losses.append(total / len(X))
    assert res.history["train_loss"] == losses
    full = lbp.train(model, X, Y, epochs=5, batch_size=16, lr=0.5, seed=2, eval_every=2)
    h = full.history
    assert [x == x for x in h["train_accuracy"]] == [False, True, False, True, True]
    assert h["train_loss_full"][-1] == pytest.approx(model.loss(full.params, X, Y), rel=1e-12)
    with pytest.raises(ValueError, match="eval_every must be a positive integer"):
        lbp.train(model, X, Y, eval_every=0)


def test_batches_gather_a_few_small_batches_at_a_time() -> None:
    """Shuffled rows are gathered GATHER_ROWS (or one batch) at a time and handed out batch by
    batch, in the order given, the last batch smaller; unshuffled batches are views of X."""
    X = np.arange(300 * 3, dtype=float).reshape(300, 3)
    Y = np.arange(300 * 2, dtype=float).reshape(300, 2)
    order = np.random.default_rng(0).permutation(300)
    small = Batches(X, Y, 32)
    assert len(small) == 10 and len(small.buffers[0]) == 32 * (GATHER_ROWS // 32)
    got = [(x.copy(), y.copy()) for x, y in small(order)]
    assert [len(x) for x, _ in got] == [32] * 9 + [300 - 9 * 32]
    for i, (x, y) in enumerate(got):
        rows = order[32 * i : 32 * (i + 1)]
        np.testing.assert_array_equal(x, X[rows])
        np.testing.assert_array_equal(y, Y[rows])
    assert len(Batches(X, Y, 200).buffers[0]) == 200  # large batches: one take each
    plain = list(small(None))
    assert all(np.shares_memory(x, X) for x, _ in plain) and len(plain[-1][0]) == 12


def test_every_call_shuffles_as_default_rng_of_its_seed() -> None:
    """The shuffling generator reuses the bit generator of a finished call, reseeded: each
    call still draws exactly what ``np.random.default_rng(seed)`` draws."""
    model = lbp.compile(lbp.NetworkSpec((4, 5, 3), ("tanh", "softmax"), "cross_entropy"))
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((50, 4)), np.eye(3)[rng.integers(0, 3, 50)]
    runs = [lbp.train(model, X, Y, epochs=2, batch_size=8, seed=s) for s in (7, 7, 8, 7)]
    expected = np.random.default_rng(7)
    expected.permutation(50), expected.permutation(50)
    for run in (runs[0], runs[1], runs[3]):
        assert run.state["rng"] == expected.bit_generator.state
        for a, b in zip(run.params, runs[0].params):
            np.testing.assert_array_equal(a[0], b[0])
    assert runs[2].state["rng"] != runs[0].state["rng"]
