"""Step 2: activations σ and losses ℓ as SymPy functions, each with its derivative.

Elementwise activations are SymPy ``Function`` classes whose ``fdiff`` is σ'; SymPy's
differentiation of the Lagrangian uses it. ``softmax`` is a vector activation: the
application ``softmax(i, z_1, ..., z_n)`` is its i-th output and its ``fdiff`` gives the
Jacobian entry ∂S_i/∂z_j = S_i (δ_ij − S_j). Every σ' is checked against SymPy's derivative of
σ's explicit definition in ``verify`` (step e); ``definition_in_exp`` gives that definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import sympy as sp
from sympy.core.function import ArgumentIndexError


class sigmoid(sp.Function):
    """σ(z) = 1 / (1 + e^{−z}); σ'(z) = σ(z)(1 − σ(z))."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\operatorname{sigmoid}\left(" + printer._print(self.args[0]) + r"\right)"


class relu(sp.Function):
    """relu(z) = max(0, z); relu'(z) = step(z), with the convention relu'(0) := 0."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return step(self.args[0])

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\operatorname{relu}\left(" + printer._print(self.args[0]) + r"\right)"


class step(sp.Function):
    """Heaviside step with step(0) := 0 (so relu'(0) = 0); its derivative is 0 for z ≠ 0."""

    @classmethod
    def eval(cls, z: sp.Expr) -> sp.Expr | None:
        if z.is_extended_positive:
            return sp.S.One
        if z.is_zero or z.is_extended_negative:
            return sp.S.Zero
        return None

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sp.S.Zero

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\mathbb{1}\left[" + printer._print(self.args[0]) + r" > 0\right]"


class softplus(sp.Function):
    """softplus(z) = log(1 + e^z); softplus'(z) = sigmoid(z)."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sigmoid(self.args[0])

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        return r"\operatorname{softplus}\left(" + printer._print(self.args[0]) + r"\right)"


class softmax(sp.Function):
    """softmax(i, z_1..z_n) = e^{z_i} / Σ_j e^{z_j}; ∂/∂z_j = S_i (δ_ij − S_j). i is 1-based."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex == 1:
            raise ArgumentIndexError(self, argindex)
        i, zs = self.args[0], self.args[1:]
        j = argindex - 1
        s_i = self
        s_j = softmax(sp.Integer(j), *zs)
        return s_i * (1 - s_i) if int(i) == j else -s_i * s_j

    def _latex(self, printer: sp.printing.latex.LatexPrinter) -> str:
        zs = ", ".join(printer._print(z) for z in self.args[1:])
        return (
            r"\operatorname{softmax}_{"
            + printer._print(self.args[0])
            + r"}\left("
            + zs
            + r"\right)"
        )


@dataclass(frozen=True)
class Activation:
    """A layer's σ: ``apply`` maps the pre-activations z (a list) to the outputs x."""

    name: str
    apply: Callable[[Sequence[sp.Expr]], list[sp.Expr]]
    #: σ as a function of e = exp(z) for the σ' check (elementwise, smooth ones only)
    definition_in_exp: Callable[[sp.Expr], sp.Expr] | None = None
    function: type[sp.Function] | None = None
    expression: sp.Expr | None = None  # a user's σ, written in Z_VAR

    @property
    def custom(self) -> bool:
        return self.expression is not None

    def of(self, u: sp.Expr) -> sp.Expr:
        """σ(u) for an elementwise σ."""
        if self.expression is not None:
            return self.expression.xreplace({Z_VAR: u})
        return self.function(u) if self.function is not None else u


Z_VAR = sp.Symbol("z", real=True)
X_VAR, Y_VAR = sp.Symbol("x", real=True), sp.Symbol("y", real=True)


def _elementwise(fn: type[sp.Function]) -> Callable[[Sequence[sp.Expr]], list[sp.Expr]]:
    return lambda z: [fn(zi) for zi in z]


def _softmax(z: Sequence[sp.Expr]) -> list[sp.Expr]:
    return [softmax(sp.Integer(i), *z) for i in range(1, len(z) + 1)]


ACTIVATION_FUNCTIONS: dict[str, Activation] = {
    "identity": Activation("identity", lambda z: list(z), None, None),
    "sigmoid": Activation("sigmoid", _elementwise(sigmoid), lambda e: e / (1 + e), sigmoid),
    "tanh": Activation("tanh", _elementwise(sp.tanh), lambda e: (e**2 - 1) / (e**2 + 1), sp.tanh),
    "relu": Activation("relu", _elementwise(relu), None, relu),
    "softplus": Activation("softplus", _elementwise(softplus), lambda e: sp.log(1 + e), softplus),
    "softmax": Activation("softmax", _softmax, None, softmax),
}


def abstract_activation(k: int) -> Activation:
    """An undefined elementwise σ_k whose derivative is the undefined function σ'_k.

    Proofs with it hold for every differentiable activation.
    """
    dsigma = sp.Function(f"σ'_{k}")

    def fdiff(self: sp.Function, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return dsigma(self.args[0])

    fn = type(f"σ_{k}", (sp.Function,), {"fdiff": fdiff})
    return Activation(f"σ_{k}", _elementwise(fn), None, fn)


def mse(x: Sequence[sp.Expr], y: Sequence[sp.Expr]) -> sp.Expr:
    """ℓ = ½ ‖y − x‖²."""
    return sp.Rational(1, 2) * sp.Add(*[(yj - xj) ** 2 for xj, yj in zip(x, y)])


def cross_entropy(x: Sequence[sp.Expr], y: Sequence[sp.Expr]) -> sp.Expr:
    """ℓ = −Σ_j y_j log x_j (x a softmax output, y one-hot)."""
    return -sp.Add(*[yj * sp.log(xj) for xj, yj in zip(x, y)])


LossFunction = Callable[[Sequence[sp.Expr], Sequence[sp.Expr]], sp.Expr]
LOSS_FUNCTIONS: dict[str, LossFunction] = {
    "mse": mse,
    "cross_entropy": cross_entropy,
}


@lru_cache(maxsize=256)
def get_activation(name: str) -> Activation:
    """A built-in activation by name, or a user's expression in z (parsed safely)."""
    if name in ACTIVATION_FUNCTIONS:
        return ACTIVATION_FUNCTIONS[name]
    from .expressions import parse

    expr = parse(name, ("z",), "activation")
    return Activation(name, lambda zs: [expr.xreplace({Z_VAR: zi}) for zi in zs], None, None, expr)


@lru_cache(maxsize=256)
def loss_expression(name: str) -> sp.Expr | None:
    """A user's loss term f(x, y) (summed over output components), or None for a built-in."""
    if name in LOSS_FUNCTIONS:
        return None
    from .expressions import parse

    return parse(name, ("x", "y"), "loss")


def get_loss(name: str) -> LossFunction:
    """ℓ(x, y) as a function of the output and target entries: built-in or Σ_j f(x_j, y_j)."""
    if name in LOSS_FUNCTIONS:
        return LOSS_FUNCTIONS[name]
    f = loss_expression(name)
    assert f is not None
    return lambda x, y: sp.Add(*[f.xreplace({X_VAR: xj, Y_VAR: yj}) for xj, yj in zip(x, y)])
