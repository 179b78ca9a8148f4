"""Grade a student's derived rules: a verdict per rule, the kind of slip, a hint, partial credit.

The numeric checking engine behind ``check_rule`` (the candidate is called in this process:
notebooks, scripts) and behind ``grade``, ``lagrange-bp check`` and ``lagrange-bp grade`` (the
student's file runs in another process, ``grade_worker``, which only returns the arrays the
rules produced). Every verdict is decided here, in three stages:

1. **plan**: one independent random state per call (its own parameters, inputs and targets), so
   that no call's input is another call's expected output; the inputs are computed from the
   states by hand-written chain-rule backprop (``reference``), never the expected outputs.
2. **run** the candidate on the inputs (in process, or in the worker with a time and a memory
   limit). No expected value exists anywhere while it runs.
3. **judge**: the expected outputs come from the generated kernels at the same states; a wrong
   rule is classified by testing hypotheses against what it returned — got = −expected,
   got = expected·B^{±1} at every batch size, got = the rule without σ' or with σ' of x, the
   transpose, another layer's value, a constant factor — never by reading its source.

Layouts: ``rows`` (samples are rows, as the NumPy model; the default) or ``columns`` (samples
are columns, as the matrix form Z = W X + b 1ᵀ of notebook 01: then b is passed as a column
(n_k, 1), and the bias gradient may be (n_k,) or (n_k, 1)).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache, partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import sympy as sp

from . import reference
from .codegen import compile_source, numpy_source
from .functions import X_VAR, get_activation, get_loss
from .matrices import ARG_U, BATCH, elementwise
from .model import Model
from .rules import ARGUMENTS, RULES, RuleReport
from .safe_io import one_line, shown
from .spec import NetworkSpec

BATCHES = (3, 5, 4)
RTOL, ATOL = 1e-9, 1e-12
LAYOUTS = ("rows", "columns")
MISTAKES = (
    "sign",
    "batch_factor",
    "transpose",
    "missing_derivative",
    "derivative_argument",
    "wrong_layer",
    "scale",
    "shape",
    "raised",
    "other",
)
#: arguments that hold one row per sample (in the rows layout)
SAMPLE_ARGS = {"x_prev", "z", "lam", "z_next", "lam_next", "x_out", "y"}
#: rules whose result holds one row per sample
SAMPLE_RESULTS = {"forward", "output_adjoint", "adjoint"}
WORKER = Path(__file__).with_name("grade_worker.py")


# --- the functions a candidate receives: σ and σ' of a layer ------------------------------------
@dataclass(frozen=True)
class Fn:
    """σ or σ' of an activation as NumPy source (what the kernels print), passed by name to
    the worker and compiled there; ``call`` compiles it here."""

    name: str
    source: str

    def call(self) -> Callable[..., np.ndarray]:
        return _compiled(self.source)


@cache
def _compiled(source: str) -> Callable[..., np.ndarray]:
    return compile_source("numpy_function", source)


@cache
def layer_functions(activation: str) -> tuple[Fn, Fn | None]:
    """The activation's σ and (elementwise activations only) σ', on 2-D arrays."""
    act = get_activation(activation)
    Z = sp.MatrixSymbol("Z", BATCH, sp.Symbol("n", integer=True, positive=True))
    sigma = Fn(f"sigma:{activation}", numpy_source(act.kernel_forward(Z, 1), (Z,)))
    if not act.elementwise:
        return sigma, None
    d = act.derivative_form.xreplace({_Z: ARG_U})  # type: ignore[attr-defined]
    return sigma, Fn(f"dsigma:{activation}", numpy_source(elementwise(d, Z), (Z,)))


_Z = sp.Symbol("z", real=True)


# --- plan -----------------------------------------------------------------------------------
@dataclass
class Call:
    """One call of the candidate: its inputs, and what is needed to judge it afterwards."""

    purpose: str  # "main", "shrink", "swap" (the other layout) or "square" (equal widths)
    spec: NetworkSpec
    seed: int
    batch: int
    rows: int  # the first ``rows`` samples of the state's batch
    layer: int
    layout: str
    args: dict[str, Any]  # arrays (in ``layout``), ints and Fn
    rows_args: dict[str, Any]  # the same inputs with samples as rows, for the hypotheses


def _draw(spec: NetworkSpec, seed: int, batch: int) -> tuple[list, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = [
        (rng.normal(scale=0.7, size=(m, n)), rng.normal(scale=0.5, size=m))
        for n, m in zip(spec.widths[:-1], spec.widths[1:])
    ]
    X = rng.normal(size=(batch, spec.widths[0]))
    if get_loss(spec.loss).classification:
        Y = np.eye(spec.widths[-1])[rng.integers(0, spec.widths[-1], batch)]
    else:
        Y = rng.normal(size=(batch, spec.widths[-1]))
    return params, X, Y


def _inputs(spec: NetworkSpec, rule: str, layer: int, seed: int, batch: int, rows: int) -> dict:
    """The rule's inputs at layer ``layer`` of a random KKT-consistent state, by the
    hand-written reference: λ only down to the layer the inputs need (never the output)."""
    params, X, Y = _draw(spec, seed, batch)
    X, Y = X[:rows], Y[:rows]
    acts, n = spec.activations, spec.depth
    zs, xs = reference.forward(params, acts, X)
    if rule == "forward":
        W, b = params[layer - 1]
        return {
            "W": W,
            "b": b,
            "x_prev": xs[layer - 1],
            "sigma": layer_functions(acts[layer - 1])[0],
        }
    if rule == "output_adjoint":
        return {"x_out": xs[n], "y": Y, "batch_size": len(X)}
    _, df = reference.loss_terms(spec.loss, xs[n], Y)
    lam = -df / len(X)  # λ^N, then down to the layer needed
    stop = layer + 1 if rule == "adjoint" else layer
    for j in range(n, stop, -1):
        lam = reference.vjp(acts[j - 1], zs[j], xs[j], lam) @ params[j - 1][0]
    if rule == "adjoint":
        return {
            "W_next": params[layer][0],
            "z_next": zs[layer + 1],
            "lam_next": lam,
            "dsigma_next": layer_functions(acts[layer])[1],
        }
    args = {"z": zs[layer], "lam": lam, "dsigma": layer_functions(acts[layer - 1])[1]}
    return args | {"x_prev": xs[layer - 1]} if rule == "weight_gradient" else args


def layers(spec: NetworkSpec, rule: str) -> tuple[list[int], list[str]]:
    """The layers ``rule`` applies to, and why others are skipped."""
    n, acts = spec.depth, spec.activations
    if rule == "output_adjoint":
        return [n], []
    if rule == "forward":
        return list(range(1, n + 1)), []
    out, skipped = [], []
    for k in range(1, n + 1):
        if rule == "adjoint":
            if k == n:
                continue
            if not get_activation(acts[k]).elementwise:
                skipped.append(
                    f"layer {k}: layer {k + 1} is softmax, whose σ' is a Jacobian, "
                    "not an elementwise dsigma_next"
                )
                continue
        elif not get_activation(acts[k - 1]).elementwise:
            skipped.append(f"layer {k}: softmax's σ' is a Jacobian, not an elementwise dsigma")
            continue
        out.append(k)
    return out, skipped


def to_layout(args: dict[str, Any], layout: str) -> dict[str, Any]:
    if layout == "rows":
        return dict(args)
    out = {}
    for name, v in args.items():
        if name in SAMPLE_ARGS:
            out[name] = np.ascontiguousarray(v.T)
        elif name == "b":
            out[name] = v[:, None].copy()
        else:
            out[name] = v
    return out


def plan(spec: NetworkSpec, rule: str, seed: int, layout: str) -> tuple[list[Call], list[str]]:
    """Every call of one check: the main trials, then the smaller batches (the smallest input
    that still fails), the other layout and, for transposes, a network of equal widths."""
    ks, skipped = layers(spec, rule)
    if not ks:
        why = "; ".join(skipped) + " (use a network with an elementwise activation there)"
        if rule == "adjoint" and spec.depth == 1:
            why = "the adjoint rule (λ^k for k < N) needs at least two layers"
        raise ValueError(f"rule {rule!r} cannot be checked on {spec.describe()}: {why}")
    calls = []
    other = LAYOUTS[1 - LAYOUTS.index(layout)]
    square = NetworkSpec((3,) * len(spec.widths), spec.activations, spec.loss)

    def add(
        purpose: str, s: NetworkSpec, trial: int, batch: int, rows: int, k: int, lay: str
    ) -> None:
        state_seed = seed * 7919 + 101 * trial + k  # one state per (trial, layer)
        base = _inputs(s, rule, k, state_seed, batch, rows)
        calls.append(Call(purpose, s, state_seed, batch, rows, k, lay, to_layout(base, lay), base))

    for trial, batch in enumerate(BATCHES):
        for k in ks:
            add("main", spec, trial, batch, batch, k, layout)
    for rows in range(1, BATCHES[0]):
        for k in ks:
            add("shrink", spec, 0, BATCHES[0], rows, k, layout)
    for k in ks:
        add("swap", spec, 0, BATCHES[0], BATCHES[0], k, other)
    if square.widths != spec.widths:
        for k in layers(square, rule)[0]:
            add("square", square, 0, BATCHES[0], BATCHES[0], k, layout)
    return calls, skipped


# --- run ------------------------------------------------------------------------------------
Outcome = np.ndarray | str  # what the candidate returned, or why it did not


def run_here(candidate: Callable[..., Any], calls: Sequence[Call]) -> list[Outcome]:
    """Call the candidate in this process (``check_rule``): for notebooks and scripts."""
    out: list[Outcome] = []
    for c in calls:
        kwargs = {
            k: (v.call() if isinstance(v, Fn) else v.copy() if isinstance(v, np.ndarray) else v)
            for k, v in c.args.items()
        }
        try:
            got = np.asarray(candidate(**kwargs))
            if got.dtype.kind not in "biuf":
                raise TypeError(f"it returned values of dtype {got.dtype}, not real numbers")
            out.append(got.astype(float))
        except Exception as exc:  # the user's code: any failure is a failed check
            out.append(one_line(f"{type(exc).__name__}: {exc}")[:500])
    return out


class NoVerdict(Exception):
    """The candidate's process ended without results: it exited, was killed, or timed out."""


class SubmissionError(ValueError):
    """The submission file cannot be imported at all (a syntax error, a failing import)."""


@dataclass
class Job:
    """A worker process running one function of a submission on its calls."""

    folder: Path
    process: subprocess.Popen[bytes]
    started: float


def start(path: Path, function: str, calls: Sequence[Call], memory_mb: int) -> Job:
    """Write the request and start the worker in its own session, with a memory limit."""
    folder = Path(tempfile.mkdtemp(prefix="lagrange-bp-grade-"))
    arrays: dict[str, np.ndarray] = {}
    functions: dict[str, str] = {}
    listed = []
    for i, c in enumerate(calls):
        refs: dict[str, tuple[str, Any]] = {}
        for name, v in c.args.items():
            if isinstance(v, np.ndarray):
                arrays[f"a{i}_{name}"] = v
                refs[name] = ("array", f"a{i}_{name}")
            elif isinstance(v, Fn):
                functions[v.name] = v.source
                refs[name] = ("function", v.name)
            else:
                refs[name] = ("int", int(v))
        listed.append(refs)
    np.savez(folder / "arrays.npz", **arrays)  # type: ignore[arg-type]
    request = {
        "submission": str(path.resolve()),
        "function": function,
        "calls": listed,
        "functions": functions,
    }
    (folder / "request.json").write_text(json.dumps(request), encoding="utf-8")
    limit = memory_mb * 2**20

    def limits() -> None:  # in the child, before the worker starts
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {
        "PATH": os.environ.get("PATH", ""),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-I", str(WORKER), str(folder)],
        cwd=folder,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=limits,
    )
    return Job(folder, process, time.perf_counter())


def finish(job: Job, timeout: float, n_calls: int) -> list[Outcome]:
    """Wait for the worker, then read its arrays (and only arrays); kill what is left of it."""
    try:
        code = job.process.wait(timeout=max(0.0, timeout - (time.perf_counter() - job.started)))
    except subprocess.TimeoutExpired:
        code = None
    try:
        os.killpg(job.process.pid, signal.SIGKILL)  # and anything it started
    except (ProcessLookupError, PermissionError):
        pass
    job.process.wait()
    try:
        if code is None:
            raise NoVerdict(f"it did not finish within {timeout:g} s")
        load_error = job.folder / "load_error.txt"
        if load_error.exists():
            message = one_line(load_error.read_text(encoding="utf-8", errors="replace"))[:500]
            raise SubmissionError(message)
        if not (job.folder / "done").exists():
            raise NoVerdict(f"it ended the checking process (exit status {code})")
        try:
            errors = json.loads((job.folder / "errors.json").read_text(encoding="utf-8"))
            with np.load(job.folder / "results.npz", allow_pickle=False) as stored:
                results = {key: np.array(stored[key], dtype=float) for key in stored.files}
        except (OSError, ValueError, TypeError) as exc:
            raise NoVerdict(f"its process left unreadable results ({type(exc).__name__})") from None
        out: list[Outcome] = []
        for i in range(n_calls):
            if f"r{i}" in results:
                out.append(results[f"r{i}"])
            else:
                why = errors.get(str(i)) if isinstance(errors, dict) else None
                out.append(one_line(str(why or "it returned nothing"))[:500])
        return out
    finally:
        shutil.rmtree(job.folder, ignore_errors=True)  # never follows a link it finds there


# --- judge ----------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _model(spec: NetworkSpec) -> Model:
    return Model(spec)


def expected_value(c: Call, rule: str) -> np.ndarray:
    """The derived rule's value for the call, from the generated kernels (rows layout)."""
    params, X, Y = _draw(c.spec, c.seed, c.batch)
    X, Y = X[: c.rows], Y[: c.rows]
    model = _model(c.spec)
    if rule == "forward":
        W, b = params[c.layer - 1]
        return layer_functions(c.spec.activations[c.layer - 1])[0].call()(
            c.rows_args["x_prev"] @ W.T + b
        )
    if rule in ("output_adjoint", "adjoint"):
        return model.adjoint(params, X, Y)[c.layer - 1]
    _, grads = model.loss_and_grad(params, X, Y)
    return grads[c.layer - 1][0 if rule == "weight_gradient" else 1]


def _rows(got: np.ndarray, rule: str, layout: str, expected: np.ndarray) -> np.ndarray:
    """The candidate's result with samples as rows (bias gradients as (n_k,))."""
    if layout == "columns" and rule in SAMPLE_RESULTS and got.ndim == 2:
        return got.T
    if layout == "columns" and rule == "bias_gradient" and got.shape == (expected.size, 1):
        return got.ravel()
    return got


def _close(got: np.ndarray | None, want: np.ndarray) -> bool:
    """``got`` equals ``want`` to the checking tolerance (``None``, no result, never does)."""
    if got is None or got.shape != want.shape or not np.all(np.isfinite(want)):
        return False
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    return bool(np.allclose(got, want, rtol=RTOL, atol=ATOL * scale))


def _alternatives(rule: str, c: Call) -> dict[str, list[np.ndarray]]:
    """What the usual slips would return on the call's inputs (rows layout), by kind."""
    a = c.rows_args
    out: dict[str, list[np.ndarray]] = {}

    def also(kind: str, f: Callable[[], np.ndarray]) -> None:
        try:
            with np.errstate(all="ignore"):
                out.setdefault(kind, []).append(np.asarray(f(), dtype=float))
        except ValueError:  # shapes that do not fit: that slip cannot have happened here
            pass

    if rule == "forward":
        sigma = a["sigma"].call()
        also("transpose", lambda: sigma(a["x_prev"] @ a["W"] + a["b"]))
        also("missing_activation", lambda: a["x_prev"] @ a["W"].T + a["b"])
        return out
    if rule == "output_adjoint":
        return out
    act = c.spec.activations[c.layer if rule == "adjoint" else c.layer - 1]
    sigma, dsigma_fn = layer_functions(act)
    assert dsigma_fn is not None
    ds, sg = dsigma_fn.call(), sigma.call()
    form = getattr(get_activation(act), "output_form", None)  # σ' in x = σ(z), if it exists
    z = a["z_next"] if rule == "adjoint" else a["z"]
    lam = a["lam_next"] if rule == "adjoint" else a["lam"]
    variants = {
        "right": ds(z),
        "missing_derivative": np.ones_like(z),
        "derivative_argument": ds(sg(z)),  # σ'(x) instead of σ'(z)
    }
    if form is not None and not form.is_number:
        in_x = sp.lambdify(X_VAR, form, "numpy")
        variants["derivative_argument_form"] = np.broadcast_to(in_x(z), z.shape)  # p(z), p(x) = σ'
    for name, d in variants.items():
        kind, G = name.replace("_form", ""), d * lam
        if kind == "right":  # the right G with a transposed product
            also("transpose", partial(_transposed_rule, rule, G, a))
        else:
            also(kind, partial(_rule_with, rule, G, a))
    return out


def _rule_with(rule: str, G: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """The rule with its G = σ'(z) ⊙ λ replaced by ``G`` (rows layout)."""
    if rule == "adjoint":
        return np.asarray(G @ a["W_next"])
    if rule == "weight_gradient":
        return np.asarray(-(G.T @ a["x_prev"]))
    return np.asarray(-G.sum(axis=0))


def _transposed_rule(rule: str, G: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """The rule with its matrix product transposed (rows layout); bias gradients have none."""
    if rule == "adjoint":
        return np.asarray(G @ a["W_next"].T)
    if rule == "weight_gradient":
        return np.asarray(-(a["x_prev"].T @ G))
    raise ValueError("no product to transpose")


HINTS = {
    "sign": "your result is −1 times the derived one: recheck the sign (λ = −∂J/∂x, so "
    "λ^N = −(1/B)∇ℓ and ∂L/∂W^k = −(σ'(z)⊙λ)ᵀx_prev carry a minus)",
    "batch_factor_more": "your result is 1/B of the derived one at every batch size: the 1/B of "
    "the mean already sits in λ^N, so sum over the samples (.sum(axis=0), not .mean(axis=0))",
    "batch_factor_less": "your result is B times the derived one at every batch size: J is the "
    "mean over the batch, so λ^N = −(1/B)∇ℓ carries a 1/B (use batch_size)",
    "transpose": "your result is the derived one with a matrix transposed: with samples as "
    "rows, λ^k = (σ'(z_next)⊙λ_next) @ W_next and ∂L/∂W^k = −(σ'(z)⊙λ)ᵀ @ x_prev",
    "missing_derivative": "your result equals the rule without the σ' factor: the chain rule "
    "through x = σ(z) multiplies by σ'(z) entry by entry",
    "derivative_argument": "your result applies σ' to the wrong thing: dsigma takes the "
    "pre-activation z, not the layer's output x = σ(z) (and a form written in x, like x(1 − x), "
    "must be given x)",
    "wrong_layer": "your result is the derived value of layer {other}, not layer {layer}: check "
    "which layer's W, z or λ you used",
    "scale": "your result is {factor:.6g} times the derived one: look for a stray constant "
    "(mse is ℓ = ½‖x − y‖², whose gradient is x − y)",
    "missing_activation": "your forward pass leaves out σ: x^k = σ(W^k x^{k-1} + b^k)",
    "layout": "your rule is written with samples as {other} (it passes in that layout): check it "
    "with layout={other!r} (--layout {other})",
    "shape": "your result has shape {got}, the derived one {expected}",
    "raised": "your function raised {error}",
    "other": "no single slip explains the difference: compare your rule with the derivation "
    "step by step, starting at layer {layer}",
}


@dataclass
class Verdict:
    ok: bool
    mistake: str | None = None
    hint: str = ""
    layer: int | None = None
    counterexample: str = ""


def judge(rule: str, calls: Sequence[Call], outcomes: Sequence[Outcome]) -> Verdict:
    """The verdict on a rule from what the candidate returned: right, or which slip."""
    expected = [expected_value(c, rule) for c in calls]
    got_rows: list[np.ndarray | None] = []
    errors: list[str] = []
    for c, o, e in zip(calls, outcomes, expected):
        if isinstance(o, str):
            got_rows.append(None)
            errors.append(o)
        else:
            got_rows.append(_rows(o, rule, c.layout, e))
            errors.append("")
    main = [i for i, c in enumerate(calls) if c.purpose == "main"]
    failing = [i for i in main if got_rows[i] is None or not _close(got_rows[i], expected[i])]
    if not failing:
        return Verdict(True)
    first = failing[0]
    c0 = calls[first]
    text = _counterexample(rule, calls, expected, got_rows, errors, first)
    kind, hint = _classify(rule, calls, expected, got_rows, errors, main, failing)
    return Verdict(False, kind, hint, c0.layer, text)


def _classify(
    rule: str,
    calls: Sequence[Call],
    expected: list[np.ndarray],
    got: list[np.ndarray | None],
    errors: list[str],
    main: list[int],
    failing: list[int],
) -> tuple[str, str]:
    layer = calls[failing[0]].layer
    broken = [i for i in failing if _shape(got[i]) != expected[i].shape]
    if broken:
        swap = [i for i, c in enumerate(calls) if c.purpose == "swap"]
        if swap and all(got[i] is not None and _close(got[i], expected[i]) for i in swap):
            other = calls[swap[0]].layout
            return "shape", HINTS["layout"].format(other=other)
        if all(_close(_transposed(got[i]), expected[i]) for i in broken):
            return "transpose", HINTS["transpose"]
        square = [i for i, c in enumerate(calls) if c.purpose == "square"]
        if square and all(
            got[i] is not None
            and any(
                _close(got[i], alt) for alt in _alternatives(rule, calls[i]).get("transpose", [])
            )
            for i in square
        ):
            return "transpose", HINTS["transpose"]
        i = broken[0]
        if got[i] is None:
            return "raised", HINTS["raised"].format(error=errors[i])
        return "shape", HINTS["shape"].format(got=_shape(got[i]), expected=expected[i].shape)
    g = {i: got[i] for i in main}
    e = {i: expected[i] for i in main}

    def every(test: Callable[[int], bool]) -> bool:
        return all(test(i) for i in main)

    if every(lambda i: _close(g[i], -e[i])):
        return "sign", HINTS["sign"]
    if every(lambda i: _close(g[i], e[i] / calls[i].rows)):
        return "batch_factor", HINTS["batch_factor_more"]
    if every(lambda i: _close(g[i], e[i] * calls[i].rows)):
        return "batch_factor", HINTS["batch_factor_less"]
    alts = {i: _alternatives(rule, calls[i]) for i in main}
    for kind in ("missing_derivative", "derivative_argument", "missing_activation", "transpose"):
        if all(any(_close(g[i], alt) for alt in alts[i].get(kind, [])) for i in main):
            if kind == "missing_activation":
                return "other", HINTS["missing_activation"]
            return kind, HINTS[kind]
    others = _other_layers(rule, calls, expected, got, main)
    if others is not None:
        return "wrong_layer", HINTS["wrong_layer"].format(other=others, layer=layer)
    want, have = e[main[0]].ravel(), np.asarray(g[main[0]]).ravel()
    factor = float(np.dot(have, want) / np.dot(want, want)) if np.dot(want, want) else 0.0
    if factor and every(lambda i: _close(g[i], factor * e[i])):
        return "scale", HINTS["scale"].format(factor=factor)
    return "other", HINTS["other"].format(layer=layer)


def _shape(a: np.ndarray | None) -> tuple[int, ...] | None:
    return None if a is None else a.shape


def _transposed(a: np.ndarray | None) -> np.ndarray | None:
    return None if a is None else a.T


def _other_layers(
    rule: str,
    calls: Sequence[Call],
    expected: list[np.ndarray],
    got: list[np.ndarray | None],
    main: list[int],
) -> int | None:
    """The layer j ≠ k whose derived value (at the call's own state) the candidate returned."""
    seen: set[int] = set()
    for i in main:
        c = calls[i]
        found = None
        for j in layers(c.spec, rule)[0] if rule != "output_adjoint" else []:
            if j == c.layer:
                continue
            alt = Call(c.purpose, c.spec, c.seed, c.batch, c.rows, j, c.layout, {}, {})
            try:
                other = expected_value(alt, rule) if rule != "forward" else None
            except (KeyError, IndexError):
                other = None
            if other is not None and _close(got[i], other):
                found = j
                break
        if found is None:
            return None
        seen.add(found)
    return min(seen) if seen else None


def _counterexample(
    rule: str,
    calls: Sequence[Call],
    expected: list[np.ndarray],
    got: list[np.ndarray | None],
    errors: list[str],
    first: int,
) -> str:
    c = calls[first]
    lines = [
        f"layer {c.layer}, batch size {c.rows}: "
        + _entry(rule, got[first], expected[first], errors[first])
    ]
    # the smaller batches of the same state (the shrink calls share its seed), smallest first
    smaller = [i for i, s in enumerate(calls) if s.purpose == "shrink" and s.seed == c.seed]
    i = next((i for i in smaller if not _close(got[i], expected[i])), None)
    if i is not None:
        lines.append(
            f"smallest failing input: batch size {calls[i].rows}: "
            + _entry(rule, got[i], expected[i], errors[i])
        )
        lines += [
            f"  {name} = {_fmt(v)}"
            for name, v in calls[i].args.items()
            if isinstance(v, np.ndarray)
        ]
    return "\n".join(lines)


def _entry(rule: str, got: np.ndarray | None, expected: np.ndarray, error: str) -> str:
    if got is None:
        return f"the candidate raised {error}"
    if got.shape != expected.shape:
        return f"the candidate returned shape {got.shape}, expected {expected.shape}"
    where = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(got - expected)), got.shape))
    one = tuple(i + 1 for i in where)
    names = {"weight_gradient": "(i, j)", "bias_gradient": "(i,)"}.get(rule, "(sample, unit)")
    shown_at = one if len(one) > 1 else f"({one[0]},)"
    return (
        f"entry {names} = {shown_at}: expected {expected[where]:.10g}, got {got[where]:.10g}"
        f" (the derived rule gives {RULE_TEXT[rule]})"
    )


RULE_TEXT = {
    "forward": "x^k = sigma(x_prev @ W.T + b)",
    "output_adjoint": "λ^N = −(1/B) ∇_x ℓ(y, x_out)",
    "adjoint": "λ^k = (dsigma_next(z_next) * lam_next) @ W_next",
    "weight_gradient": "∂L/∂W^k = −(dsigma(z) * lam).T @ x_prev",
    "bias_gradient": "∂L/∂b^k = −(dsigma(z) * lam).sum(axis=0)",
}


def _fmt(a: np.ndarray) -> str:
    if a.size > 40:
        return f"array of shape {a.shape}"
    return np.array2string(a, precision=4, suppress_small=True).replace("\n", " ")


def report(spec: NetworkSpec, rule: str, layout: str, v: Verdict, skipped: list[str]) -> RuleReport:
    """The verdict as a ``RuleReport`` (what ``check_rule`` returns and ``check`` prints)."""
    rep = RuleReport(
        rule,
        spec,
        v.ok,
        f"numeric, {len(BATCHES)} random KKT points, rtol {RTOL:g}"
        + (", samples as columns" if layout == "columns" else ""),
    )
    rep.skipped = skipped
    rep.mistake, rep.hint, rep.layer = v.mistake, v.hint, v.layer
    rep.counterexample = v.counterexample
    if v.ok:
        ks = layers(spec, rule)[0]
        rep.checked = [
            f"layers {', '.join(map(str, ks))}",
            f"batch sizes {', '.join(map(str, BATCHES))}",
        ]
    return rep


def check_here(
    spec: NetworkSpec, rule: str, candidate: Callable[..., Any], seed: int, layout: str
) -> RuleReport:
    """``check_rule`` for a callable: plan, call it here, judge."""
    calls, skipped = plan(spec, rule, seed, layout)
    outcomes = run_here(candidate, calls)
    return report(spec, rule, layout, judge(rule, calls, outcomes), skipped)


# --- grade ------------------------------------------------------------------------------------
@dataclass
class RuleGrade:
    """One rule of a submission: its verdict, the slip, a hint, and the points it earns."""

    rule: str
    ok: bool | None  # None: the rule does not apply to this network (skipped)
    mistake: str | None
    hint: str
    points: float
    max_points: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mistake": self.mistake,
            "hint": self.hint,
            "points": self.points,
            "max_points": self.max_points,
            "detail": self.detail,
        }


@dataclass
class Grade:
    """A graded submission: a verdict per rule, the first wrong step, the score."""

    spec: NetworkSpec
    submission: str
    rules: dict[str, RuleGrade] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(r.points for r in self.rules.values())

    @property
    def max_score(self) -> float:
        return sum(r.max_points for r in self.rules.values())

    @property
    def first_wrong(self) -> str | None:
        """The first rule, in derivation order, that is wrong."""
        return next((name for name, r in self.rules.items() if r.ok is False), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.spec.describe(),
            "submission": self.submission,
            "score": self.score,
            "max_score": self.max_score,
            "first_wrong": self.first_wrong,
            "rules": {name: r.to_dict() for name, r in self.rules.items()},
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def __str__(self) -> str:
        lines = [
            f"grade of {shown(self.submission)} on {self.spec.describe()}: "
            f"{self.score:g} / {self.max_score:g} points"
        ]
        for name, r in self.rules.items():
            mark = {True: "RIGHT", False: "WRONG", None: "skipped"}[r.ok]
            head = f"  {name:16} {mark:7} {r.points:g}/{r.max_points:g}"
            if r.ok is False:
                head += f"  [{r.mistake}] {r.hint}"
            elif r.ok is None:
                head += f"  ({r.detail})"
            lines.append(head)
        if self.first_wrong:
            lines.append(f"first wrong step: {self.first_wrong}")
        return "\n".join(lines)


def grade(
    spec: NetworkSpec,
    submission: str | os.PathLike[str] | ModuleType,
    timeout: float = 10.0,
    points: dict[str, float] | None = None,
    layout: str = "rows",
    seed: int = 0,
    memory_mb: int = 2048,
) -> Grade:
    """Grade the five rules of a submission (a ``.py`` file, or an imported module's file,
    defining functions named after the rules, with the arguments of ``ARGUMENTS``) in
    separate processes, ``timeout`` seconds and ``memory_mb`` MiB each; the verdicts are
    decided here from the arrays they return."""
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"spec must be a lagrange_bp.NetworkSpec, got {type(spec).__name__}")
    if spec.weight_decay:
        raise ValueError(
            f"the rules are those of the objective without weight decay (the weight_gradient "
            f"candidate gets no W); give a spec with weight_decay=0, not {spec.weight_decay!r}"
        )
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not (isinstance(timeout, (int, float)) and 0 < timeout <= 3600):
        raise ValueError(f"timeout must be a number of seconds in (0, 3600], got {timeout!r}")
    if isinstance(submission, ModuleType):  # an imported module: grade its file, afresh
        if not getattr(submission, "__file__", None):
            raise ValueError(f"module {submission.__name__!r} has no file to grade")
        submission = str(submission.__file__)
    path = Path(submission)
    if path.suffix != ".py" or not path.is_file():
        raise ValueError(f"submission must be an existing .py file, got {shown(str(submission))}")
    weights = {rule: 1.0 for rule in RULES} | dict(points or {})
    unknown = set(weights) - set(RULES)
    if unknown:
        raise ValueError(f"points for unknown rules {sorted(unknown)}; rules: {', '.join(RULES)}")
    start_time = time.perf_counter()
    out = Grade(spec, str(submission))
    plans: dict[str, tuple[list[Call], list[str]]] = {}
    for i, rule in enumerate(RULES):
        try:
            plans[rule] = plan(spec, rule, seed + 1000 * i, layout)
        except ValueError as exc:
            out.rules[rule] = RuleGrade(rule, None, None, "", 0.0, 0.0, str(exc))
    jobs = {rule: start(path, rule, calls, memory_mb) for rule, (calls, _) in plans.items()}
    outcomes: dict[str, list[Outcome] | str] = {}
    for rule, job in jobs.items():
        try:
            outcomes[rule] = finish(job, timeout, len(plans[rule][0]))
        except NoVerdict as exc:
            outcomes[rule] = f"no verdict: {exc}"
        except SubmissionError as exc:
            outcomes[rule] = str(exc)
    for rule in RULES:
        if rule not in plans:
            continue
        calls = plans[rule][0]
        o = outcomes[rule]
        w = weights[rule]
        if isinstance(o, str):
            hint = (
                f"the submission defines no function {rule!r} ({ARGUMENTS[rule]})"
                if o == "missing"
                else f"importing the submission failed: {o}"
                if not o.startswith("no verdict")
                else o
            )
            out.rules[rule] = RuleGrade(rule, False, "raised", hint, 0.0, w, hint)
            continue
        v = judge(rule, calls, o)
        out.rules[rule] = RuleGrade(
            rule, v.ok, v.mistake, v.hint, w if v.ok else 0.0, w, v.counterexample
        )
    out.rules = {rule: out.rules[rule] for rule in RULES}
    out.seconds = time.perf_counter() - start_time
    return out


def assert_rule(
    spec: NetworkSpec,
    rule: str,
    candidate: Callable[..., Any],
    points: float = 1.0,
    layout: str = "rows",
) -> float:
    """For an autograded notebook cell (nbgrader, Otter-Grader): check ``candidate``, print the
    verdict with its hint, and return the points earned (``points`` or 0). Raises
    ``AssertionError`` on a wrong rule, so that a test cell that expects it fails."""
    from .rules import check_rule

    rep = check_rule(spec, rule, candidate, layout=layout)
    print(f"{rule}: {'RIGHT' if rep.ok else 'WRONG'} ({points if rep.ok else 0:g}/{points:g})")
    if not rep.ok:
        print(f"  {rep.mistake}: {rep.hint}")
        raise AssertionError(f"{rule} is wrong ({rep.mistake}): {rep.hint}")
    return points


__all__ = ["LAYOUTS", "MISTAKES", "Grade", "RuleGrade", "assert_rule", "grade"]
