"""NetworkSpec validation: every bad input names the item and what is accepted (issue 2)."""

from __future__ import annotations

import pytest

import lagrange_bp as lbp


def test_one_activation_name_is_used_for_every_layer() -> None:
    spec = lbp.NetworkSpec([4, 3, 2], "tanh", "mse")
    assert spec.widths == (4, 3, 2)
    assert spec.activations == ("tanh", "tanh")
    assert spec.depth == 2
    assert spec.n_weights == 4 * 3 + 3 * 2
    assert spec.n_params == 18 + 5
    assert spec.describe() == "4-3-2, tanh/tanh, mse"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"widths": (3,)}, ValueError, "at least two entries"),
        ({"widths": ()}, ValueError, "at least two entries"),
        ({"widths": (2, 0, 1)}, ValueError, r"widths\[1\] must be a positive integer, got 0"),
        ({"widths": (2, -3, 1)}, ValueError, r"widths\[1\] must be a positive integer, got -3"),
        ({"widths": (2, 2.5, 1)}, TypeError, r"widths\[1\] must be a positive integer, got 2.5"),
        ({"widths": (2, True)}, TypeError, r"widths\[1\] must be a positive integer, got True"),
        ({"widths": "2,3"}, TypeError, "sequence of positive integers"),
        (
            {"widths": (2, 3), "activations": "swish"},
            ValueError,
            "unknown activation 'swish' for layer 1; known: identity, sigmoid, tanh, relu, "
            "softplus, softmax",
        ),
        (
            {"widths": (2, 3, 1), "activations": ("tanh", "tanh", "tanh")},
            ValueError,
            r"expected 1 or 2 names \(one per layer 1..2\), got 3",
        ),
        ({"widths": (2, 3), "activations": 3}, TypeError, "activations must be a name"),
        (
            {"widths": (2, 3), "loss": "hinge"},
            ValueError,
            "unknown loss 'hinge'; known: mse, cross_entropy",
        ),
        ({"widths": (2, 3), "loss": None}, TypeError, "loss must be a string"),
        (
            {"widths": (2, 3), "activations": "tanh", "loss": "cross_entropy"},
            ValueError,
            "'cross_entropy' needs a softmax output layer, but layer 1 is 'tanh'",
        ),
    ],
)
def test_bad_input_names_the_item(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        lbp.NetworkSpec(**kwargs)


def test_exact_size_limit_has_an_override() -> None:
    spec = lbp.NetworkSpec((784, 32, 10), "softmax", "cross_entropy")
    with pytest.raises(
        ValueError,
        match=r"784-32-10 has 25408 weights, above the exact-derivation limit of 25000 .*"
        r"verify --general.*verify --compiled.*max_weights=",
    ):
        lbp.derive(spec)
    with pytest.raises(ValueError, match="above the exact-derivation limit of 25000"):
        lbp.verify(spec)
    small = lbp.NetworkSpec((2, 3, 1))
    with pytest.raises(ValueError, match="has 9 weights, above the exact-derivation limit of 8"):
        lbp.derive(small, max_weights=8)
    assert len(lbp.derive(small, max_weights=None).gradients) == small.n_params


def test_derive_and_verify_reject_a_non_spec() -> None:
    message = r"spec must be a lagrange_bp\.NetworkSpec or GraphSpec, got tuple"
    with pytest.raises(TypeError, match=message):
        lbp.derive((2, 3, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got dict"):
        lbp.verify({"widths": (2, 1)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trials must be a positive integer, got 0"):
        lbp.verify(lbp.NetworkSpec((2, 1)), trials=0)
