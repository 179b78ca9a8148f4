"""The scikit-learn estimators: scikit-learn's own estimator checks, pipelines and grid search,
accuracy on digits, and that they train and predict with exactly the package's kernels."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import lagrange_bp as lbp
import lagrange_bp.sklearn as lsk
from lagrange_bp.datasets import load
from lagrange_bp.sklearn import LagrangeMLPClassifier, LagrangeMLPRegressor

# Small, fast settings that still learn scikit-learn's check problems (blobs, a 200-sample
# regression): every check trains a few times, so the whole list runs in a few seconds.
SGD = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.1, max_iter=20)
ADAM = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate_init=0.01, max_iter=50)
ESTIMATORS = [
    LagrangeMLPClassifier(**SGD),
    LagrangeMLPClassifier(**ADAM),
    # some checks fit unscaled targets (hundreds), on which SGD with η ≥ 0.003 diverges
    # (TrainingDiverged, a deliberate error where scikit-learn's MLP would return NaN)
    LagrangeMLPRegressor(**{**SGD, "learning_rate_init": 0.001}),
    LagrangeMLPRegressor(**ADAM),
]


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    if isinstance(estimator, LagrangeMLPRegressor) and estimator.solver == "sgd":
        return {
            "check_regressors_train": (
                "20 epochs of SGD at η = 0.001 (the rate the checks with unscaled targets need) "
                "do not reach R² > 0.5; test_regressor_trains_as_check_regressors_train runs the "
                "check's steps, alpha=0.01 included, at η = 0.1"
            )
        }
    return {}


# max_iter is deliberately too small to converge on the checks' problems, so the estimators
# warn as MLPClassifier does (test_convergence_warning_as_scikit_learn); that warning is not
# what these checks test, and the suite turns warnings into errors.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=expected_failed_checks, xfail_strict=True
)
def test_scikit_learn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)


# --- data ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def regression() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_regression(n_samples=200, n_features=5, n_targets=2, noise=5.0, random_state=0)
    return StandardScaler().fit_transform(X), y / y.std(axis=0)


def quiet(est: Any, X: Any, y: Any) -> Any:
    """fit, where reaching max_iter (a ConvergenceWarning) is expected and not the point."""
    with pytest.warns(ConvergenceWarning):
        return est.fit(X, y)


# --- training is the package's training ------------------------------------------------------
@pytest.mark.parametrize(
    ("solver", "momentum", "nesterov", "optimizer"),
    [
        ("sgd", 0.0, True, "sgd"),
        ("sgd", 0.9, True, "nesterov"),
        ("sgd", 0.5, False, "momentum"),
        ("momentum", 0.8, True, "momentum"),
        ("nesterov", 0.8, False, "nesterov"),
        ("adam", 0.9, True, "adam"),
    ],
)
def test_fit_is_lbp_train_step_for_step(
    iris: tuple[np.ndarray, np.ndarray],
    solver: str,
    momentum: float,
    nesterov: bool,
    optimizer: str,
) -> None:
    """solver/momentum/nesterovs_momentum map to the package's optimizers, and fit with
    random_state=s gives bit for bit the parameters of lbp.train(..., seed=s)."""
    X, y = iris
    est = LagrangeMLPClassifier(
        (5,),
        solver=solver,
        momentum=momentum,
        nesterovs_momentum=nesterov,
        learning_rate_init=0.05,
        batch_size=32,
        max_iter=6,
        n_iter_no_change=np.inf,
        random_state=3,
    )
    quiet(est, X, y)
    model = lbp.compile(est.spec_)
    Y = np.eye(3)[y]
    ref = lbp.train(
        model,
        X,
        Y,
        epochs=6,
        batch_size=32,
        lr=0.05,
        seed=3,
        optimizer=optimizer,
        momentum=momentum,
    )
    for (W, b), (W_ref, b_ref) in zip(est.params_, ref.params):
        np.testing.assert_array_equal(W, W_ref)
        np.testing.assert_array_equal(b, b_ref)
    assert est.n_iter_ == 6
    assert len(est.loss_curve_) == 6
    assert est.loss_curve_[-1] == est.loss_


def test_predictions_are_the_compiled_forward(
    iris: tuple[np.ndarray, np.ndarray], regression: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = iris
    clf = LagrangeMLPClassifier(
        (6, 4),
        activation="tanh",
        solver="sgd",
        max_iter=30,
        learning_rate_init=0.1,
        random_state=0,
        tol=0.5,
    ).fit(X, y)
    params = [(c.T.copy(), b.copy()) for c, b in zip(clf.coefs_, clf.intercepts_)]
    out = lbp.compile(clf.spec_).forward(params, X)
    np.testing.assert_array_equal(clf.predict_proba(X), out)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[out.argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(out))
    assert clf.score(X, y) == np.mean(clf.predict(X) == y)

    X, y = regression
    reg = LagrangeMLPRegressor(
        (6,), solver="sgd", learning_rate_init=0.05, max_iter=50, random_state=0, tol=0.5
    ).fit(X, y)
    np.testing.assert_array_equal(reg.predict(X), lbp.compile(reg.spec_).forward(reg.params_, X))


def test_coefs_layout_is_scikit_learns(iris: tuple[np.ndarray, np.ndarray]) -> None:
    """coefs_[k] is W^{k+1}ᵀ, (n_in, n_out), as MLPClassifier.coefs_; intercepts_[k] is b^{k+1}."""
    X, y = iris
    clf = LagrangeMLPClassifier((7, 5), max_iter=2, random_state=0)
    quiet(clf, X, y)
    assert [c.shape for c in clf.coefs_] == [(4, 7), (7, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(7,), (5,), (3,)]
    for c, b, (W, bb) in zip(clf.coefs_, clf.intercepts_, clf.params_):
        np.testing.assert_array_equal(c, W.T)
        assert bb is b
    assert clf.spec_ == lbp.NetworkSpec((4, 7, 5, 3), ("relu", "relu", "softmax"), "cross_entropy")
    assert (clf.n_features_in_, clf.n_outputs_, clf.n_layers_) == (4, 3, 4)
    assert clf.out_activation_ == "softmax"
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    # the hidden activations by scikit-learn's names and the package's
    logistic = LagrangeMLPClassifier((3,), activation="logistic", max_iter=1)
    quiet(logistic, X, y)
    assert logistic.spec_.activations == ("sigmoid", "softmax")
    softplus = LagrangeMLPRegressor((3,), activation="softplus", max_iter=1)
    quiet(softplus, X, X[:, 0])
    assert softplus.spec_.activations == ("softplus", "identity")
    assert softplus.out_activation_ == "identity"


def test_partial_fit_continues_exactly(iris: tuple[np.ndarray, np.ndarray]) -> None:
    """Three partial_fit calls are three epochs of fit: same shuffling, same optimizer state."""
    X, y = iris
    kw: dict[str, Any] = dict(solver="adam", learning_rate_init=0.01, random_state=5)
    full = LagrangeMLPClassifier((6,), max_iter=3, n_iter_no_change=np.inf, **kw)
    quiet(full, X, y)
    inc = LagrangeMLPClassifier((6,), **kw)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        inc.partial_fit(X, y)
    inc.partial_fit(X, y, classes=[0, 1, 2])
    inc.partial_fit(X, y)
    inc.partial_fit(X, y)
    for (W, b), (W_ref, b_ref) in zip(inc.params_, full.params_):
        np.testing.assert_array_equal(W, W_ref)
        np.testing.assert_array_equal(b, b_ref)
    assert inc.loss_curve_ == full.loss_curve_
    assert inc.t_ == 3 * len(X)
    # a later batch may lack classes, but may not bring new ones
    inc.partial_fit(X[y == 0], y[y == 0])
    with pytest.raises(ValueError, match=re.escape("y has classes not in classes_")):
        inc.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="early_stopping"):
        LagrangeMLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_warm_start_goes_on_from_the_fitted_weights(iris: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = iris
    est = LagrangeMLPClassifier((6,), max_iter=3, random_state=0, warm_start=True)
    quiet(est, X, y)
    first = [c.copy() for c in est.coefs_]
    quiet(est, X, y)
    fresh = quiet(LagrangeMLPClassifier((6,), max_iter=3, random_state=0), X, y)
    assert len(est.loss_curve_) == 6
    assert not np.array_equal(est.coefs_[0], first[0])
    assert not np.array_equal(est.coefs_[0], fresh.coefs_[0])
    est.set_params(hidden_layer_sizes=(7,))
    with pytest.raises(ValueError, match="warm_start=True continues the fitted network 4-6-3"):
        est.fit(X, y)
    est.set_params(hidden_layer_sizes=(6,))
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X[y < 2], y[y < 2])


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_fit_trains_on_its_own_arrays(iris: tuple[np.ndarray, np.ndarray], solver: str) -> None:
    """fit steps on its own flat copy of the parameters with buffers of its own: the shared
    compiled model keeps no buffers, and a warm start leaves the previous coefs_ arrays as
    they were (plain SGD: the fused step; with the smaller last batch of 150 = 4·32 + 22)."""
    X, y = iris
    kw: dict[str, Any] = dict(solver=solver, momentum=0.0, batch_size=32, random_state=0)
    est = quiet(LagrangeMLPClassifier((6,), max_iter=2, warm_start=True, **kw), X, y)
    model = lsk._compiled(est.spec_, "float64")
    before, values = list(est.coefs_), [c.copy() for c in est.coefs_]
    quiet(est, X, y)
    assert not model._idle
    for c, v in zip(before, values):
        np.testing.assert_array_equal(c, v)
    assert not any(np.shares_memory(c, n) for c in before for n in est.coefs_)
    assert not np.array_equal(est.coefs_[0], values[0])


# --- stopping as scikit-learn stops --------------------------------------------------------
def test_convergence_warning_as_scikit_learn(iris: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = iris
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(2\) reached"):
        LagrangeMLPClassifier((4,), max_iter=2).fit(X, y)


def test_tol_and_n_iter_no_change_stop_on_the_training_loss(
    iris: tuple[np.ndarray, np.ndarray],
) -> None:
    """With a tol no epoch can beat, training stops as MLPClassifier does, without a
    ConvergenceWarning (warnings are errors here): the first epoch improves on the initial
    best loss (inf), and the count of epochs without improvement must exceed n_iter_no_change."""
    X, y = iris
    est = LagrangeMLPClassifier((4,), tol=10.0, n_iter_no_change=3, max_iter=100).fit(X, y)
    assert est.n_iter_ == 1 + 3 + 1
    assert est.best_loss_ == min(est.loss_curve_)
    assert est.validation_scores_ is None


def test_early_stopping_keeps_the_best_validation_score(
    iris: tuple[np.ndarray, np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    X, y = iris
    est = LagrangeMLPClassifier(
        (8,),
        solver="sgd",
        learning_rate_init=0.1,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=3,
        max_iter=200,
        random_state=0,
        verbose=True,
    ).fit(X, y)
    assert est.validation_scores_ is not None and len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.best_loss_ is None
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Validation score: " in out
    assert "did not improve more than tol" in out


# --- scikit-learn's tools ------------------------------------------------------------------
def test_in_a_pipeline_with_standard_scaler() -> None:
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    pipe = make_pipeline(
        StandardScaler(),
        LagrangeMLPClassifier((16,), solver="sgd", learning_rate_init=0.1, random_state=0),
    )
    pipe.fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.9
    assert pipe.predict_proba(X_test).shape == (len(X_test), 3)


# short fits of a grid search may reach max_iter; that warning is not what is tested here
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_in_grid_search(regression: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = regression
    pipe = Pipeline(
        [("scale", StandardScaler()), ("mlp", LagrangeMLPRegressor(solver="sgd", random_state=0))]
    )
    grid = GridSearchCV(
        pipe,
        {"mlp__hidden_layer_sizes": [(4,), (16,)], "mlp__learning_rate_init": [0.01, 0.05]},
        cv=3,
    )
    grid.fit(X, y)
    assert grid.best_score_ > 0.9
    assert grid.best_estimator_[-1].n_outputs_ == 2
    assert set(grid.best_params_) == {"mlp__hidden_layer_sizes", "mlp__learning_rate_init"}


def test_digits_accuracy_above_95_percent() -> None:
    d = load("digits")
    clf = LagrangeMLPClassifier((100,), solver="sgd", learning_rate_init=0.1, random_state=0)
    clf.fit(d.X_train, d.Y_train.argmax(axis=1))
    assert clf.score(d.X_test, d.Y_test.argmax(axis=1)) > 0.95


def test_regressor_trains_as_check_regressors_train() -> None:
    """scikit-learn's check_regressors_train (alpha=0.01 as the check sets it) at η = 0.1."""
    X, y = make_regression(
        n_samples=200, n_features=10, n_informative=1, bias=5.0, noise=20, random_state=42
    )
    X, y = StandardScaler().fit_transform(X), (y - y.mean()) / y.std()
    for dtype in (np.float64, np.float32):
        reg = LagrangeMLPRegressor(**SGD, alpha=0.01, random_state=0)
        with pytest.raises(ValueError, match="inconsistent numbers of samples"):
            reg.fit(X.astype(dtype), y[:-1])
        quiet(reg, X.astype(dtype), y)
        quiet(reg, X.astype(dtype).tolist(), y.tolist())
        assert reg.predict(X).shape == y.shape
        assert reg.score(X, y) > 0.5


def test_regressor_outputs(regression: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = regression
    two = LagrangeMLPRegressor((8,), max_iter=2)
    quiet(two, X, y)
    assert two.n_outputs_ == 2 and two.predict(X).shape == (len(X), 2)
    for target in (y[:, 0], y[:, :1]):  # one output, 1-D or a column: 1-D predictions
        one = LagrangeMLPRegressor((8,), max_iter=2)
        quiet(one, X, target)
        assert one.n_outputs_ == 1 and one.predict(X).shape == (len(X),)


def test_binary_is_a_two_unit_softmax(iris: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = iris
    labels = np.where(y == 0, "setosa", "other")
    clf = LagrangeMLPClassifier((4,), solver="sgd", learning_rate_init=0.1, max_iter=20)
    quiet(clf, X, labels)
    assert clf.n_outputs_ == 2 and clf.out_activation_ == "softmax"
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.score(X, labels) > 0.95


def test_float32(iris: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = iris
    clf = LagrangeMLPClassifier((8,), dtype="float32", max_iter=2)
    quiet(clf, X, y)
    assert clf.coefs_[0].dtype == np.float32
    assert clf.predict_proba(X).dtype == np.float32
    assert clf.spec_ == lbp.NetworkSpec((4, 8, 3), ("relu", "softmax"), "cross_entropy")


# --- the derivation of the fitted network ----------------------------------------------------
def test_derivation_is_lazy_and_none_above_the_exact_limit(
    iris: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = iris
    calls: list[lbp.NetworkSpec] = []

    def counting(spec: lbp.NetworkSpec) -> lbp.Derivation:
        calls.append(spec)
        return lbp.derive(spec)

    monkeypatch.setattr(lsk, "derive", counting)
    lsk._derivation.cache_clear()
    clf = LagrangeMLPClassifier((2,), max_iter=1)
    quiet(clf, X, y)
    assert calls == []  # fit never derives
    derivation = clf.derivation_
    assert isinstance(derivation, lbp.Derivation) and derivation.spec == clf.spec_
    assert clf.derivation_ is derivation and len(calls) == 1  # derived once per network
    lsk._derivation.cache_clear()

    rng = np.random.default_rng(0)
    wide = LagrangeMLPRegressor((100,), max_iter=1)
    quiet(wide, rng.normal(size=(10, lbp.MAX_EXACT_WEIGHTS // 100)), rng.normal(size=10))
    assert wide.spec_.n_weights > lbp.MAX_EXACT_WEIGHTS
    assert wide.derivation_ is None and calls == [clf.spec_]


# --- clear errors ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -1.0}, "alpha must be a non-negative"),
        ({"solver": "lbfgs"}, "'lbfgs' .* is not supported"),
        ({"solver": "rmsprop"}, "solver must be one of"),
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes must be"),
        ({"hidden_layer_sizes": "10"}, "hidden_layer_sizes must be"),
        ({"activation": "swish"}, "activation='swish': unknown activation"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"learning_rate_init": 0.0}, "learning_rate_init must be"),
        ({"max_iter": 0}, "max_iter must be"),
        ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\)"),
        ({"solver": "nesterov", "momentum": 0.0}, "needs momentum in"),
        ({"validation_fraction": 0.0}, "validation_fraction must be"),
        ({"n_iter_no_change": 0}, "n_iter_no_change must be"),
        ({"tol": -1.0}, "tol must be"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"random_state": -1}, "random_state must be"),
        ({"shuffle": "yes"}, "shuffle must be True or False"),
    ],
)
def test_bad_parameters_are_named_at_fit(
    iris: tuple[np.ndarray, np.ndarray], params: dict[str, Any], message: str
) -> None:
    X, y = iris
    est = LagrangeMLPClassifier(**params)  # stored as given, as scikit-learn requires
    with pytest.raises(ValueError, match=message):
        est.fit(X, y)


def test_bad_targets(iris: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = iris
    with pytest.raises(ValueError, match="multilabel classification is not supported"):
        LagrangeMLPClassifier().fit(X, np.eye(3)[y])
    with pytest.raises(ValueError, match="needs at least 2 classes, got 1 class"):
        LagrangeMLPClassifier().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="Unknown label type"):
        LagrangeMLPClassifier().fit(X, X[:, 0])
    with pytest.raises(TypeError, match="activation must be a string"):
        LagrangeMLPClassifier(activation=None).fit(X, y)  # type: ignore[arg-type]


def test_divergence_is_reported(regression: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = regression
    with pytest.raises(lbp.TrainingDiverged, match="try a smaller one"):
        LagrangeMLPRegressor((8,), solver="sgd", learning_rate_init=1e3, max_iter=50).fit(
            X, y * 1e6
        )
