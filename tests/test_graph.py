"""Graphs (issue 16, first step): construction and its checks, JSON, the exact derivation of
skip connections, shared weights and recurrence, its text, and its concrete proof."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import sympy as sp

import lagrange_bp as lbp


def residual() -> lbp.GraphSpec:
    """The issue's example: a skip around h2 and one from the input to the output."""
    g = lbp.Graph(inputs=4)
    x0 = g.inputs[0]
    h1 = g.layer(x0, 3, "tanh", name="h1")
    h2 = g.layer(h1, 3, "tanh", name="h2")
    s = g.add(h1, h2, name="s")
    out = g.layer([s, x0], 3, "softmax", name="out")
    return g.output(out, loss="cross_entropy")


def shared_chain() -> lbp.GraphSpec:
    """One layer f applied three times, then a readout."""
    g = lbp.Graph(inputs=2)
    h = g.layer(g.inputs[0], 2, "sigmoid", name="f", node="h1")
    h = g.layer(h, 2, "sigmoid", name="f", share=True, node="h2")
    h = g.layer(h, 2, "sigmoid", name="f", share=True, node="h3")
    return g.output(g.layer(h, 1, "identity", name="out"), loss="mse")


# --- construction -------------------------------------------------------------------------


def test_the_issue_example_builds_an_immutable_hashable_spec() -> None:
    spec = residual()
    assert spec.order == ("x0", "h1", "h2", "s", "out")
    assert spec.input_widths == (4,) and spec.output_widths == (3,)
    assert spec.param_shapes() == {
        "h1.W": (3, 4),
        "h1.b": (3,),
        "h2.W": (3, 3),
        "h2.b": (3,),
        "out.W0": (3, 3),
        "out.W1": (3, 4),
        "out.b": (3,),
    }
    assert spec.n_params == 12 + 3 + 9 + 3 + 9 + 12 + 3
    assert spec.consumers("h1") == ("h2", "s") and spec.consumers("x0") == ("h1", "out")
    assert (
        spec.describe() == "graph 4 → 3: h1 tanh 3, h2 tanh 3, out softmax 3; 1 add; cross_entropy"
    )
    assert hash(spec) == hash(residual()) and spec == residual()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.loss = "mse"  # type: ignore[misc]


def test_several_inputs_and_outputs() -> None:
    g = lbp.Graph(inputs=(3, 3, 3))
    a, b, c = g.inputs
    h = g.layer([a, b, c], 2, "tanh", name="h")
    o1, o2 = g.layer(h, 1, "identity", name="o1"), g.layer(h, 2, "identity", name="o2")
    spec = g.output([o1, o2], loss="mse")
    assert spec.input_names == ("x0", "x1", "x2") and spec.output_widths == (1, 2)
    assert list(spec.param_shapes()) == [
        "h.W0",
        "h.W1",
        "h.W2",
        "h.b",
        "o1.W",
        "o1.b",
        "o2.W",
        "o2.b",
    ]


def test_weight_sharing_counts_parameters_once() -> None:
    spec = shared_chain()
    assert spec.uses("f") == ("h1", "h2", "h3")
    assert spec.n_params == 4 + 2 + 2 + 1
    assert "f sigmoid 2 ×3 shared" in spec.describe()


def _graph() -> tuple[lbp.Graph, lbp.graph.Node]:
    g = lbp.Graph(inputs=2)
    return g, g.inputs[0]


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda g, x: g.layer(lbp.Graph(inputs=2).inputs[0], 2, "tanh"),
            ValueError,
            "another Graph",
        ),
        (lambda g, x: g.add(x, g.layer(x, 3, "tanh")), ValueError, "different widths"),
        (lambda g, x: g.add(x), ValueError, "at least two"),
        (
            lambda g, x: g.layer(x, 0, "tanh", name="h"),
            ValueError,
            "layer 'h' width must be a positive",
        ),
        (lambda g, x: g.layer(x, 2.5, "tanh", name="h"), TypeError, "positive integer"),
        (lambda g, x: g.layer(x, True, "tanh", name="h"), TypeError, "positive integer"),
        (
            lambda g, x: g.layer(x, 2, "swish", name="h"),
            ValueError,
            "unknown activation 'swish' for layer 'h'",
        ),
        (
            lambda g, x: g.layer(x, 2, "tanh", name="a.b"),
            ValueError,
            "layer name 'a.b' is not accepted",
        ),
        (lambda g, x: g.layer(x, 2, "tanh", name="y"), ValueError, "not accepted"),
        (lambda g, x: g.layer("x0", 2, "tanh"), TypeError, "expected"),
        (
            lambda g, x: g.layer(x, 2, "tanh", name="f", share=True),
            ValueError,
            "no earlier layer named 'f'",
        ),
        (
            lambda g, x: [g.layer(x, 2, "tanh", name="f"), g.layer(x, 2, "tanh", name="f")],
            ValueError,
            "'f' is already used; pass share=True",
        ),
        (
            lambda g, x: g.layer(
                g.layer(x, 2, "tanh", name="f"), 2, "tanh", name="f", share=True, node="x0"
            ),
            ValueError,
            "node name 'x0' is already used",
        ),
        (
            lambda g, x: g.layer(g.layer(x, 3, "tanh", name="f"), 3, "tanh", name="f", share=True),
            ValueError,
            "shared layer 'f': inputs of widths (3,) to width 3, but its parameters take "
            "inputs of widths (2,)",
        ),
        (
            lambda g, x: g.layer(g.layer(x, 2, "tanh", name="f"), 2, "relu", name="f", share=True),
            ValueError,
            "activation 'relu', but it was made with 'tanh'",
        ),
        (lambda g, x: g.output(x), ValueError, "output 'x0' is an input node"),
        (
            lambda g, x: g.output(g.layer(x, 2, "tanh", name="h"), loss="cross_entropy"),
            ValueError,
            "needs a softmax output layer, but output 'h' is 'tanh'",
        ),
        (
            lambda g, x: g.output(g.layer(x, 2, "tanh", name="h"), loss="hinge"),
            ValueError,
            "unknown loss",
        ),
        (
            lambda g, x: [
                g.layer(x, 2, "tanh", name="dead"),
                g.output(g.layer(x, 1, "tanh", name="o")),
            ],
            ValueError,
            "layer node 'dead' is unused",
        ),
        (lambda g, x: g.output([g.layer(x, 1, "tanh", name="o")] * 2), ValueError, "listed twice"),
    ],
)
def test_construction_errors_name_the_item(build: object, error: type, message: str) -> None:
    g, x = _graph()
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(g, x)  # type: ignore[operator]


def test_an_unused_input_is_refused() -> None:
    g = lbp.Graph(inputs=(2, 2))
    with pytest.raises(ValueError, match="input 'x1' is unused"):
        g.output(g.layer(g.inputs[0], 1, "identity", name="o"))


def test_cycles_cannot_be_written_and_json_cannot_smuggle_one() -> None:
    doc = json.loads(residual().to_json())
    doc["nodes"][0]["inputs"] = ["s"]  # h1 reads s, which reads h1
    with pytest.raises(ValueError, match="node 'h1' reads 's', which is not an earlier node"):
        lbp.graph_from_json(json.dumps(doc))


# --- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [residual(), shared_chain(), lbp.recurrent(2, 3, 1, 4, outputs_at="every")],
    ids=["residual", "shared", "rnn"],
)
def test_json_round_trip(spec: lbp.GraphSpec) -> None:
    text = spec.to_json()
    assert json.loads(text)["format"] == "lagrange_bp.graph"
    assert lbp.graph_from_json(text) == spec


def _edited(change: object) -> str:
    doc = json.loads(residual().to_json())
    change(doc)  # type: ignore[operator]
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("[1, 2", ValueError, "does not parse"),
        ('{"format": 1, "format": 2}', ValueError, "appears twice"),
        (_edited(lambda d: d.update(extra=1)), ValueError, r"unknown keys \['extra'\]"),
        (_edited(lambda d: d.pop("loss")), ValueError, r"lacks keys \['loss'\]"),
        (_edited(lambda d: d.update(version=2)), ValueError, "version 1"),
        (_edited(lambda d: d["inputs"][0].update(width=True)), TypeError, "must be an integer"),
        (_edited(lambda d: d["nodes"][0].update(op="conv")), ValueError, "op layer, add or zeros"),
        (
            _edited(lambda d: d["nodes"][0].update(activation=3)),
            TypeError,
            "activation must be a string",
        ),
        (_edited(lambda d: d["nodes"][2].update(width=3)), ValueError, r"unknown keys \['width'\]"),
        (_edited(lambda d: d.update(outputs=["nope"])), ValueError, "must name nodes"),
        (
            _edited(lambda d: d["nodes"][0].update(activation="__import__('os')")),
            ValueError,
            "function not allowed",
        ),
    ],
)
def test_json_is_validated_strictly(text: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        lbp.graph_from_json(text)


# --- recurrent ------------------------------------------------------------------------------


def test_recurrent_unrolls_an_elman_network() -> None:
    spec = lbp.recurrent(
        inputs=2,
        hidden=8,
        outputs=1,
        steps=5,
        activation="tanh",
        output_activation="identity",
        loss="mse",
        outputs_at="last",
    )
    assert spec.param_shapes() == {
        "cell.W0": (8, 2),
        "cell.W1": (8, 8),
        "cell.b": (8,),
        "out.W": (1, 8),
        "out.b": (1,),
    }
    assert spec.uses("cell") == ("h1", "h2", "h3", "h4", "h5") and spec.outputs == ("o5",)
    assert spec.node("h3").inputs == ("x3", "h2") and spec.node("h1").inputs == ("x1", "h0")
    assert spec.input_widths == (2,) * 5
    every = lbp.recurrent(2, 8, 1, 5, outputs_at="every")
    assert every.outputs == ("o1", "o2", "o3", "o4", "o5") and every.uses("out") == every.outputs
    assert every.output_widths == (1,) * 5


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"outputs_at": "first"}, ValueError, "outputs_at must be 'last' or 'every'"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"hidden": -1}, ValueError, "must be a positive integer"),
        ({"activation": "nope"}, ValueError, "unknown activation 'nope' for layer 'cell'"),
    ],
)
def test_recurrent_checks_its_arguments(kwargs: dict, error: type, message: str) -> None:
    args = {"inputs": 2, "hidden": 3, "outputs": 1, "steps": 2} | kwargs
    with pytest.raises(error, match=message):
        lbp.recurrent(**args)


# --- derivation -----------------------------------------------------------------------------


def test_multi_consumer_adjoint_sums_over_consumers() -> None:
    d = lbp.derive(residual())
    assert isinstance(d, lbp.GraphDerivation)
    lam_h1 = d.symbols.lam["h1"][0]
    terms = d.adjoint_terms[lam_h1]
    assert list(terms) == ["h2", "s"]
    assert terms["s"] == d.symbols.lam["s"][0]  # the add passes λ^s through
    rhs = dict((eq.lhs, eq.rhs) for eq in d.adjoint)[lam_h1]
    assert sp.expand(rhs - sum(terms.values())) == 0
    x0 = d.symbols.lam  # x0 is an input: it has no multiplier
    assert "x0" not in x0


def test_output_adjoint_is_minus_the_loss_gradient() -> None:
    d = lbp.derive(residual())
    out, y, lam = d.symbols.states["out"], d.target, d.symbols.lam["out"]
    assert [(eq.lhs, eq.rhs) for eq in d.adjoint[:3]] == [(lam[i], y[i] / out[i]) for i in range(3)]


def test_shared_gradient_sums_over_uses() -> None:
    d = lbp.derive(shared_chain())
    s = d.symbols
    p = d.params["f.b"][0]
    assert list(d.gradient_terms[p]) == ["h1", "h2", "h3"]
    expected = sum(-s.lam[v][0] * s.states[v][0] * (1 - s.states[v][0]) for v in ("h1", "h2", "h3"))
    assert sp.expand(d.gradients[p] - expected) == 0
    assert len(d.gradients) == shared_chain().n_params
    assert list(d.gradients) == d.param_symbols()


def test_rnn_first_step_has_no_recurrent_term() -> None:
    """h_0 = 0: W_h enters from step 2 on; W_x and b at every step."""
    d = lbp.derive(lbp.recurrent(1, 2, 1, 3))
    assert list(d.gradient_terms[d.params["cell.W1"][0, 0]]) == ["h2", "h3"]
    assert list(d.gradient_terms[d.params["cell.W0"][0, 0]]) == ["h1", "h2", "h3"]
    forward = {eq.lhs: eq.rhs for eq in d.forward}
    assert not forward[d.symbols.states["h1"][0]].has(d.params["cell.W1"][0, 0])


def test_text_makes_the_sums_visible() -> None:
    text = str(lbp.derive(residual()))
    assert text.startswith("Lagrangian of the graph 4 → 3:")
    assert "λ^h1 sums over the 2 places h1 is read: h2, s" in text
    assert "λ^x0" not in text
    assert "⇒   λ^h1[1] = (h2: " in text and " + (s: λ^s[1])" in text
    assert "out = softmax(out.W0 s + out.W1 x0 + out.b), width 3" in text
    rnn = str(lbp.derive(lbp.recurrent(1, 2, 1, 3)))
    assert (
        "parameters cell are shared by 3 layers h1, h2, h3: each ∂L/∂θ sums over these uses" in rnn
    )
    assert "∂L/∂cell.b[1] = (h1: " in rnn and "+ (h3: " in rnn
    assert repr(lbp.derive(residual())).startswith("<GraphDerivation graph 4 → 3:")


def test_derive_refuses_an_oversized_graph() -> None:
    with pytest.raises(ValueError, match="above the exact-derivation limit of 10"):
        lbp.derive(residual(), max_weights=10)


# --- proof ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        residual(),
        shared_chain(),
        lbp.recurrent(2, 2, 1, 3),
        lbp.recurrent(1, 2, 2, 2, "relu", "softmax", "cross_entropy", "every"),
    ],
    ids=["residual", "shared", "rnn-last", "rnn-every-softmax"],
)
def test_every_step_is_proven(spec: lbp.GraphSpec) -> None:
    report = lbp.verify(spec)
    assert report.ok, str(report)
    assert [s.label for s in report.steps] == ["a", "b", "c", "d", "e"]
    assert f"all {spec.n_params} parameters agree exactly at 2 random points" in str(report)
    assert report.to_dict()["spec"] == spec.describe()


def test_a_shared_gradient_with_one_use_fails_step_c() -> None:
    spec = lbp.recurrent(2, 2, 1, 3)
    d = lbp.derive(spec)
    p = d.params["cell.W0"][1, 0]
    d.gradients[p] = d.gradient_terms[p]["h3"]  # keeps the last step's term only
    report = lbp.verify(spec, derivation=d)
    assert [s.ok for s in report.steps] == [True, True, False, True, True]
    assert "∂L/∂cell.W0[2,1] ≠ ∂J/∂cell.W0[2,1] at random point 1" in report.steps[2].detail


def test_an_adjoint_dropping_a_consumer_fails_step_b() -> None:
    spec = residual()
    d = lbp.derive(spec)
    lam = d.symbols.lam["h1"][1]
    i = next(k for k, eq in enumerate(d.adjoint) if eq.lhs == lam)
    d.adjoint[i] = sp.Eq(lam, d.adjoint_terms[lam]["h2"], evaluate=False)  # drops s
    report = lbp.verify(spec, derivation=d)
    assert not report.steps[1].ok and not report.ok
    assert report.steps[1].detail.startswith("with λ^h1[2] = ")


def test_verify_checks_its_arguments() -> None:
    d = lbp.derive(residual())
    with pytest.raises(TypeError, match="graph's derivation"):
        lbp.verify(lbp.NetworkSpec((2, 1)), derivation=d)
    with pytest.raises(ValueError, match="not the concrete derivation"):
        lbp.verify(shared_chain(), derivation=d)


def test_rnn_hidden_4_steps_8_derives_and_proves_within_10_s() -> None:
    start = time.perf_counter()
    report = lbp.verify(lbp.recurrent(inputs=2, hidden=4, outputs=1, steps=8))
    assert report.ok and time.perf_counter() - start < 10


def test_json_nested_too_deeply_is_bad_input_not_a_crash(tmp_path: object) -> None:
    """'[[[…' exhausts json's recursion: graph_from_json, the CLI and checkpoint.load all say
    so in one line instead of a RecursionError traceback."""
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    from lagrange_bp import checkpoint

    deep = "[" * 200_000
    with pytest.raises(ValueError, match="nested too deeply"):
        lbp.graph_from_json(deep[: 900_000])
    path = Path(str(tmp_path)) / "deep.json"
    path.write_text(deep[:900_000], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lagrange_bp", "derive", "--graph", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "nested too deeply" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    model = Path(str(tmp_path)) / "deep.npz"
    np.savez(model, meta=np.array("[" * 500_000))
    with pytest.raises(checkpoint.CheckpointError, match="not a valid lagrange_bp checkpoint"):
        checkpoint.load(model)
    with pytest.raises(ValueError, match="version 1"):
        lbp.graph_from_json(json.dumps({**json.loads(_small().to_json()), "version": 1.0}))


def _small() -> lbp.GraphSpec:
    g = lbp.Graph(inputs=2)
    return g.output(g.layer(g.inputs[0], 1, "identity", name="o"), loss="mse")
