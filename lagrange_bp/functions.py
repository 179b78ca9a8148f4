"""Step 2: one record per activation and per loss (CONVENTIONS §3, "One record per function").

A record holds everything the package knows about one function, built-in or parsed from a
string: its SymPy definition; the derivative SymPy derives from it (and, where σ' is a
polynomial in σ, that polynomial, derived and checked); the numerically stable forms the kernels
print; and its names for text and LaTeX, made from the parsed expression, never from the raw
string. Derivations, proofs, kernels, the reference, rules, renderers, diagnostics and the CLI
read records; nothing else branches on a function's name, and a case a record cannot serve
raises ``ValueError``.

**Adding a built-in** is one entry in ``_BUILTIN_ACTIVATIONS`` or ``_BUILTIN_LOSSES`` below (and,
for a new scalar function, its SymPy class and NumPy form in ``primitives``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sympy as sp
from sympy import HadamardProduct
from sympy.printing.str import StrPrinter

from .matrices import (
    ARG_U,
    ARG_V,
    ARG_W,
    BATCH,
    LogSoftmax,
    Softmax,
    elementwise,
    entrywise,
    sample_sums,
)
from .primitives import MODERATE, exact_value, explicit, relu, sigmoid, softmax, softplus, stable

Z_VAR = sp.Symbol("z", real=True)
X_VAR, Y_VAR = sp.Symbol("x", real=True), sp.Symbol("y", real=True)


class _Canonical(StrPrinter):
    """Prints a parsed expression in the parser's own grammar (e, abs), so it parses back."""

    def _print_Exp1(self, e: sp.Basic) -> str:
        return "e"

    def _print_Abs(self, e: sp.Abs) -> str:
        return f"abs({self._print(e.args[0])})"


def canonical(expr: sp.Expr) -> str:
    """The text of a parsed expression: shown to users and stored as the spec's name."""
    return _Canonical().doprint(expr)


SIMPLIFY_LIMIT = 120  # operations: beyond this, simplify may take minutes; answer "not shown"


def is_identity(expr: sp.Expr) -> bool:
    """Whether expr is 0 for every real z, shown symbolically for z > 0 and for z < 0.

    Cheap first (expand), then hyperbolic functions in exp and ``simplify`` (with logs
    combined) for expressions of modest size; False means "not shown", never a guess.
    """
    e = explicit(expr)
    if e == 0 or sp.expand(e) == 0:
        return True
    for sym in (sp.Symbol("p", positive=True), sp.Symbol("q", negative=True)):
        es = sp.expand(e.xreplace({Z_VAR: sym}).rewrite([sp.tanh, sp.sinh, sp.cosh], sp.exp))
        if es == 0:
            continue
        if sp.count_ops(es) > SIMPLIFY_LIMIT:
            return False
        if sp.simplify(es) != 0 and sp.simplify(sp.logcombine(es, force=True)) != 0:
            return False
    return True


CHECK_POINTS = tuple(sp.Float(v, 30) for v in ("-2.3", "-1.1", "-0.4", "0.3", "0.9", "1.7", "2.9"))


def numerically_zero(expr: sp.Expr) -> bool:
    """Whether expr(z) is below 1e-25 at every point of ``CHECK_POINTS`` (30-digit mpmath)."""
    for z in CHECK_POINTS:
        v = exact_value(expr, {Z_VAR: z})
        if v is None or v == sp.oo or abs(v) > sp.Float("1e-25"):
            return False
    return True


class Activation:
    """A layer's σ. ``key`` is its name in a spec: a built-in's name or a parsed expression's
    canonical text; ``text`` and ``latex`` are its display names."""

    key: str
    text: str
    latex: str
    builtin: bool
    he_init: bool  # initialise W^k with He's limit √(6/n_{k-1}) (the relu family)
    elementwise: bool

    def apply(self, zs: Sequence[sp.Expr]) -> list[sp.Expr]:
        """x^k = σ(z^k) entry by entry, for the concrete derivation."""
        raise NotImplementedError

    def vjp(self, Z: sp.MatrixExpr, X: sp.MatrixExpr, Lam: sp.MatrixExpr, axis: int) -> Any:
        """G = Dσ(Z)ᵀ Λ, exactly as derived (σ' of Z)."""
        raise NotImplementedError

    def kernel_forward(self, Z: sp.MatrixExpr, axis: int) -> Any:
        """X = σ(Z) in the stable form the kernels print."""
        raise NotImplementedError

    def kernel_vjp(self, Z: sp.MatrixExpr, X: sp.MatrixExpr, Lam: sp.MatrixExpr, axis: int) -> Any:
        """G = Dσ(Z)ᵀ Λ as the kernels print it (σ' in X = σ(Z) where the record allows)."""
        raise NotImplementedError

    def kernel_output_vjp(
        self, loss: Loss, Z: sp.MatrixExpr, X: sp.MatrixExpr, Y: sp.MatrixExpr, axis: int
    ) -> Any:
        """G^N = Dσ(Z^N)ᵀ Λ^N with Λ^N = −(1/B) ∂ℓ/∂x substituted and simplified."""
        raise NotImplementedError

    def log_of_output(self, arg: sp.Expr) -> sp.Expr | None:
        """A stable form of log(arg(x)), x = σ(z), in w (the entry of ``log_matrix``), or None."""
        return None

    def log_matrix(self, Z: sp.MatrixExpr, axis: int) -> sp.MatrixExpr:
        return Z

    def check_derivative(self, width: int) -> tuple[bool, str]:
        """Step (e) of ``verify``: the σ' the derivation uses is the derivative of σ."""
        raise NotImplementedError

    def output_samples(self) -> list[sp.Float]:
        """Outputs σ(z) at moderate z: where a loss must be real and finite."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Elementwise(Activation):
    """An elementwise σ(z) with σ' = dσ/dz, and the forms the kernels print."""

    key: str
    text: str
    latex: str
    definition: sp.Expr  # σ(z), in Z_VAR
    derivative: sp.Expr  # σ'(z) = d definition / dz, SymPy's
    forward_form: sp.Expr  # σ(z) without overflow patterns
    derivative_form: sp.Expr  # σ'(z), SymPy's derivative of forward_form
    output_form: sp.Expr | None  # p(x) with σ'(z) = p(σ(z)), derived and checked; or None
    builtin: bool = False
    he_init: bool = False
    elementwise = True

    def of(self, u: sp.Expr) -> sp.Expr:
        """σ(u)."""
        return self.definition.xreplace({Z_VAR: u})

    def apply(self, zs: Sequence[sp.Expr]) -> list[sp.Expr]:
        return [self.of(z) for z in zs]

    def vjp(self, Z: sp.MatrixExpr, X: sp.MatrixExpr, Lam: sp.MatrixExpr, axis: int) -> Any:
        return HadamardProduct(elementwise(self.derivative.xreplace({Z_VAR: ARG_U}), Z), Lam)

    def kernel_forward(self, Z: sp.MatrixExpr, axis: int) -> Any:
        return elementwise(self.forward_form.xreplace({Z_VAR: ARG_U}), Z)

    def _kernel_derivative(self, Z: sp.MatrixExpr, X: sp.MatrixExpr) -> tuple[sp.Expr, Any]:
        if self.output_form is not None:
            return self.output_form.xreplace({X_VAR: ARG_U}), X
        return self.derivative_form.xreplace({Z_VAR: ARG_U}), Z

    def kernel_vjp(self, Z: sp.MatrixExpr, X: sp.MatrixExpr, Lam: sp.MatrixExpr, axis: int) -> Any:
        body, of = self._kernel_derivative(Z, X)
        return HadamardProduct(elementwise(body, of), Lam)

    def kernel_output_vjp(
        self, loss: Loss, Z: sp.MatrixExpr, X: sp.MatrixExpr, Y: sp.MatrixExpr, axis: int
    ) -> Any:
        body, of = self._kernel_derivative(Z, X)
        lam = loss.kernel_adjoint_body()
        if of is X:  # one entrywise function of (X^N, Y): σ'(z) λ with σ' = p(x), simplified
            return entrywise(_simplest(body * lam), X, Y)
        return HadamardProduct(elementwise(body, Z), entrywise(lam, X, Y))

    def log_of_output(self, arg: sp.Expr) -> sp.Expr | None:
        naive = sp.log(arg.xreplace({X_VAR: self.forward_form.xreplace({Z_VAR: ARG_W})}))
        better = stable(naive)
        return better if better != naive else None

    def check_derivative(self, width: int) -> tuple[bool, str]:
        lines, ok = [], True
        shown = explicit(self.definition)
        used = sp.diff(self.definition, Z_VAR)  # what a derivation differentiating σ gets now
        difference = sp.diff(shown, Z_VAR) - used
        if is_identity(difference):
            lines.append(f"{self.text}: σ' = {used}, equal to d/dz of {_written_out(shown)}")
        elif numerically_zero(difference):
            lines.append(
                f"{self.text}: σ' = {used}, equal to d/dz of {shown} to 25 digits at "
                f"{len(CHECK_POINTS)} points (SymPy could not simplify the difference)"
            )
        else:
            ok = False
            lines.append(f"{self.text}: σ' = {used} is NOT d/dz of {_written_out(shown)}")
        if self.output_form is not None and not self.output_form.is_number:
            if is_identity(self.output_form.xreplace({X_VAR: self.definition}) - self.derivative):
                lines.append(f"  and σ' = {self.output_form} with x = σ(z) (the kernels' form)")
            else:
                ok = False
                lines.append(f"  but σ' ≠ {self.output_form} with x = σ(z)")
        zero = self.derivative.xreplace({Z_VAR: sp.S.Zero})
        if _kinked(self.definition):
            lines.append(f"  σ'(0) := {zero} by convention (σ has a kink at 0)")
        return ok, "\n".join(lines)

    def output_samples(self) -> list[sp.Float]:
        values = [exact_value(self.definition, {Z_VAR: z}) for z in MODERATE]
        return [v for v in values if v is not None and v != sp.oo]


@dataclass(frozen=True, eq=False)
class SoftmaxActivation(Activation):
    """softmax over each sample's n entries: a vector σ with Jacobian S_i (δ_ij − S_j)."""

    key: str = "softmax"
    text: str = "softmax"
    latex: str = r"\operatorname{softmax}"
    builtin: bool = True
    he_init: bool = False
    elementwise = False
    function = softmax  # the SymPy function of its entries

    def apply(self, zs: Sequence[sp.Expr]) -> list[sp.Expr]:
        return [softmax(sp.Integer(i), *zs) for i in range(1, len(zs) + 1)]

    def vjp(self, Z: sp.MatrixExpr, X: sp.MatrixExpr, Lam: sp.MatrixExpr, axis: int) -> Any:
        """S ⊙ (Λ − Σ_sample (S ⊙ Λ)): the lift of G_j = S_j (λ_j − Σ_i S_i λ_i)."""
        return HadamardProduct(X, Lam - sample_sums(HadamardProduct(X, Lam), axis))

    def kernel_forward(self, Z: sp.MatrixExpr, axis: int) -> Any:
        return Softmax(Z, axis)

    def kernel_vjp(self, Z: sp.MatrixExpr, X: sp.MatrixExpr, Lam: sp.MatrixExpr, axis: int) -> Any:
        return self.vjp(Z, X, Lam, axis)

    def kernel_output_vjp(
        self, loss: Loss, Z: sp.MatrixExpr, X: sp.MatrixExpr, Y: sp.MatrixExpr, axis: int
    ) -> Any:
        """H − S ⊙ Σ_sample H with H = S ⊙ Λ^N simplified: for −Σ y log x, H = Y/B, so no 1/x
        remains; with rows of Y summing to 1 (a classification loss) Σ_sample H = 1/B."""
        h = _simplest(ARG_U * loss.kernel_adjoint_body())
        c = sp.cancel(h / ARG_V)
        if loss.classification and not c.free_symbols & {ARG_U, ARG_V}:  # H = c Y
            return entrywise(c * (ARG_V - ARG_U), X, Y)
        H = entrywise(h, X, Y)
        return H - HadamardProduct(X, sample_sums(H, axis))

    def log_of_output(self, arg: sp.Expr) -> sp.Expr | None:
        return ARG_W if arg == X_VAR else None  # log softmax(z)_j, computed stably

    def log_matrix(self, Z: sp.MatrixExpr, axis: int) -> sp.MatrixExpr:
        return LogSoftmax(Z, axis)

    def check_derivative(self, width: int) -> tuple[bool, str]:
        n = min(width, 4)
        zs = sp.symbols(f"z1:{n + 1}", real=True)
        es = sp.symbols(f"e1:{n + 1}", positive=True)
        S = {softmax(sp.Integer(i), *zs): es[i - 1] / sum(es) for i in range(1, n + 1)}
        ok = all(
            sp.cancel(sp.diff(si, zs[j]).xreplace(S) - es[j] * sp.diff(S[si], es[j])) == 0
            for si in S
            for j in range(n)
        )
        return ok, f"softmax: Jacobian ∂S_i/∂z_j = S_i(δ_ij − S_j), all i, j at n = {n}"

    def output_samples(self) -> list[sp.Float]:
        return [sp.Float(v, 30) for v in ("1e-6", "0.1", "0.5", "0.9", "0.999999")]


@dataclass(frozen=True, eq=False)
class Loss:
    """A per-sample loss ℓ(y, x) = Σ_j f(x_j, y_j) with ∂ℓ/∂x_j = ∂f/∂x (x_j, y_j)."""

    key: str
    text: str
    latex: str
    term: sp.Expr  # f(x, y), in X_VAR and Y_VAR
    gradient: sp.Expr  # ∂f/∂x, SymPy's
    term_form: sp.Expr  # f without overflow patterns
    gradient_form: sp.Expr  # ∂f/∂x of term_form, stable
    builtin: bool = False
    classification: bool = False  # targets are class probabilities: rows of Y sum to 1
    requires_output: str | None = None  # the output activation it needs, if any

    def apply(self, x: Sequence[sp.Expr], y: Sequence[sp.Expr]) -> sp.Expr:
        """ℓ = Σ_j f(x_j, y_j)."""
        return sp.Add(*[self.term.xreplace({X_VAR: xj, Y_VAR: yj}) for xj, yj in zip(x, y)])

    def output_adjoint(self, X: sp.MatrixExpr, Y: sp.MatrixExpr) -> Any:
        """Λ^N = −(1/B) ∂ℓ/∂X^N entry by entry, as derived."""
        body = -self.gradient.xreplace({X_VAR: ARG_U, Y_VAR: ARG_V}) / BATCH
        return entrywise(body, X, Y)

    def kernel_adjoint_body(self) -> sp.Expr:
        """−(1/B) ∂f/∂x in u = x and v = y, stable."""
        return sp.factor_terms(-self.gradient_form.xreplace({X_VAR: ARG_U, Y_VAR: ARG_V}) / BATCH)

    def kernel_terms(
        self, act: Activation, Z: sp.MatrixExpr, X: sp.MatrixExpr, Y: sp.MatrixExpr, axis: int
    ) -> Any:
        """The matrix of f(x_ij, y_ij), whose sum over entries is B·J, printed stably: each
        log(g(x)) the output activation can write stably (log softmax, log σ) is rewritten."""
        f = self.term_form
        swaps = {}
        for lg in sorted(f.atoms(sp.log), key=sp.default_sort_key):
            if lg.args[0].free_symbols == {X_VAR}:
                better = act.log_of_output(lg.args[0])
                if better is not None:
                    swaps[lg] = better
        body = f.xreplace(swaps).xreplace({X_VAR: ARG_U, Y_VAR: ARG_V})
        if body.has(ARG_W):
            return entrywise(body, X, Y, act.log_matrix(Z, axis))
        return entrywise(body, X, Y)


def _simplest(e: sp.Expr) -> sp.Expr:
    """``e`` or its cancelled form, whichever has fewer operations (p(x) λ(x, y) fused)."""
    c, e = sp.factor_terms(sp.cancel(e)), sp.factor_terms(e)
    return c if sp.count_ops(c) <= sp.count_ops(e) else e


def _kinked(e: sp.Expr) -> bool:
    return e.has(relu, sp.Abs)


def _written_out(e: sp.Expr) -> sp.Expr:
    """σ for a reader of the derivative check: one function of z is written in exp."""
    if isinstance(e, sp.Function) and e.args == (Z_VAR,):
        return sp.cancel(e.rewrite(sp.exp))
    return e


def output_form(forward: sp.Expr, derivative: sp.Expr) -> sp.Expr | None:
    """p with σ'(z) = p(σ(z)), when σ = a·g(z) + c for one function application g and
    σ' with g written as (x − c)/a is a polynomial in x; checked by ``is_identity``."""
    if not derivative.has(Z_VAR):
        return derivative  # affine σ: constant σ'
    g_sym = sp.Dummy("g")
    for g in sorted(forward.atoms(sp.Function), key=sp.default_sort_key):
        linear = forward.xreplace({g: g_sym})
        if linear.has(Z_VAR) or not linear.is_polynomial(g_sym):
            continue
        poly = sp.Poly(linear, g_sym)
        if poly.degree() != 1:
            continue
        a, c = poly.all_coeffs()
        p = derivative.xreplace({g: (X_VAR - c) / a})
        if p.has(Z_VAR) or not p.is_polynomial(X_VAR):
            continue
        if is_identity(p.xreplace({X_VAR: forward}) - derivative):
            return min((p, sp.expand(p), sp.factor(p)), key=sp.count_ops)
    return None


def make_elementwise(
    key: str,
    definition: sp.Expr,
    *,
    text: str | None = None,
    latex: str | None = None,
    builtin: bool = False,
    he_init: bool = False,
) -> Elementwise:
    """The record of σ(z) = definition: derivative, stable forms and output form derived."""
    forward_form = stable(definition)
    derivative_form = sp.diff(forward_form, Z_VAR)  # stable forms differentiate to stable forms
    return Elementwise(
        key=key,
        text=text or key,
        latex=latex or rf"\left[z \mapsto {sp.latex(definition)}\right]",
        definition=definition,
        derivative=sp.diff(definition, Z_VAR),
        forward_form=forward_form,
        derivative_form=derivative_form,
        output_form=output_form(forward_form, derivative_form),
        builtin=builtin,
        he_init=he_init,
    )


def make_loss(
    key: str,
    term: sp.Expr,
    *,
    text: str | None = None,
    latex: str | None = None,
    builtin: bool = False,
    classification: bool = False,
    requires_output: str | None = None,
) -> Loss:
    """The record of ℓ = Σ_j term(x_j, y_j): gradient and stable forms derived."""
    term_form = stable(term)
    return Loss(
        key=key,
        text=text or key,
        latex=latex or rf"\left[(x, y) \mapsto {sp.latex(term)}\right]",
        term=term,
        gradient=sp.diff(term, X_VAR),
        term_form=term_form,
        gradient_form=sp.diff(term_form, X_VAR),
        builtin=builtin,
        classification=classification,
        requires_output=requires_output,
    )


_z = Z_VAR
_BUILTIN_ACTIVATIONS: dict[str, Any] = {
    "identity": lambda: make_elementwise("identity", _z, latex=r"\mathrm{id}", builtin=True),
    "sigmoid": lambda: make_elementwise(
        "sigmoid", sigmoid(_z), latex=r"\operatorname{sigmoid}", builtin=True
    ),
    "tanh": lambda: make_elementwise("tanh", sp.tanh(_z), latex=r"\tanh", builtin=True),
    "relu": lambda: make_elementwise(
        "relu", relu(_z), latex=r"\operatorname{relu}", builtin=True, he_init=True
    ),
    "softplus": lambda: make_elementwise(
        "softplus", softplus(_z), latex=r"\operatorname{softplus}", builtin=True
    ),
    "softmax": SoftmaxActivation,
}
_BUILTIN_LOSSES: dict[str, Any] = {
    "mse": lambda: make_loss(
        "mse", (X_VAR - Y_VAR) ** 2 / 2, latex=r"\tfrac12\lVert y - x\rVert^2", builtin=True
    ),
    "cross_entropy": lambda: make_loss(
        "cross_entropy",
        -Y_VAR * sp.log(X_VAR),
        latex=r"-\textstyle\sum_j y_j \log x_j",
        builtin=True,
        classification=True,
        requires_output="softmax",
    ),
}
ACTIVATIONS: tuple[str, ...] = tuple(_BUILTIN_ACTIVATIONS)
LOSSES: tuple[str, ...] = tuple(_BUILTIN_LOSSES)


@lru_cache(maxsize=256)
def get_activation(key: str) -> Activation:
    """The record of a built-in activation, or of a user's expression in z (parsed safely and
    checked: ``ValueError`` names what cannot be served)."""
    if key in _BUILTIN_ACTIVATIONS:
        return _BUILTIN_ACTIVATIONS[key]()
    from .expressions import parse
    from .numerics import check_activation

    definition = parse(key, ("z",), "activation")
    text = canonical(definition)
    if text != key:
        return get_activation(text)
    record = make_elementwise(text, definition)
    check_activation(record)
    return record


@lru_cache(maxsize=256)
def get_loss(key: str) -> Loss:
    """The record of a built-in loss, or of a user's Σ_j f(x_j, y_j) in x and y."""
    if key in _BUILTIN_LOSSES:
        return _BUILTIN_LOSSES[key]()
    from .expressions import parse

    term = parse(key, ("x", "y"), "loss")
    text = canonical(term)
    if text != key:
        return get_loss(text)
    if not term.has(X_VAR):
        raise ValueError(f"loss {text!r} does not depend on the output x")
    return make_loss(text, term)


def abstract_activation(k: int) -> Elementwise:
    """An undefined elementwise σ_k whose derivative is the undefined function σ'_k.

    Proofs with it hold for every differentiable activation.
    """
    dsigma = sp.Function(f"σ'_{k}")

    def fdiff(self: sp.Function, argindex: int = 1) -> sp.Expr:
        return dsigma(self.args[0])

    fn = type(f"σ_{k}", (sp.Function,), {"fdiff": fdiff})
    d = fn(Z_VAR)
    return Elementwise(
        key=f"σ_{k}",
        text=f"σ_{k}",
        latex=rf"\sigma_{{{k}}}",
        definition=d,
        derivative=dsigma(Z_VAR),
        forward_form=d,
        derivative_form=dsigma(Z_VAR),
        output_form=None,
    )
