"""Step 2a: the scalar functions activations and losses are built from, and how each evaluates.

The functions SymPy lacks (sigmoid, softplus, relu, its derivative step, and the vector
softmax) are SymPy ``Function`` classes whose ``fdiff`` states the derivative. ``NUMPY_FORMS``
is the one table of NumPy (or SciPy) ufuncs for every scalar function that can reach a kernel:
the kernel printer writes them with ``out=``, and stock ``sympy.lambdify(args, expr, "numpy")``
prints the package's own classes through the same table; ``TORCH_FORMS`` beside it holds the
PyTorch form of each, for the torch kernels (``torch_export``). ``explicit`` writes an
expression in exp, log and Piecewise only (for derivative checks and evalf); ``stable`` rewrites
patterns that overflow or cancel in floating point into equal, stable forms.
"""

from __future__ import annotations

from typing import Any

import mpmath
import sympy as sp
from sympy.core.function import ArgumentIndexError

#: scalar function → (qualified ufunc, arguments before, arguments after the function's own)
NUMPY_FORMS: dict[Any, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    sp.exp: ("numpy.exp", (), ()),
    sp.log: ("numpy.log", (), ()),
    sp.Abs: ("numpy.abs", (), ()),
    sp.sign: ("numpy.sign", (), ()),
    sp.sin: ("numpy.sin", (), ()),
    sp.cos: ("numpy.cos", (), ()),
    sp.tan: ("numpy.tan", (), ()),
    sp.atan: ("numpy.arctan", (), ()),
    sp.sinh: ("numpy.sinh", (), ()),
    sp.cosh: ("numpy.cosh", (), ()),
    sp.tanh: ("numpy.tanh", (), ()),
}


class _Elementwise(sp.Function):
    """A scalar function of one real argument, with its explicit form and its NumPy form."""

    @classmethod
    def explicit(cls, u: sp.Expr) -> sp.Expr:
        raise NotImplementedError

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return type(self).explicit(self.args[0])._eval_evalf(prec)

    def _eval_rewrite_as_exp(self, u: sp.Expr, **kwargs: Any) -> sp.Expr:
        return type(self).explicit(u)

    def _numpycode(self, printer: Any) -> str:
        name, before, after = NUMPY_FORMS[type(self)]
        args = [*before, printer._print(self.args[0]), *after]
        call = f"{printer._module_format(name)}({', '.join(args)})"
        if name == "numpy.greater":  # a comparison: 1.0 and 0.0, as the kernels write them
            return f"{printer._module_format('numpy.multiply')}({call}, 1.0)"
        return call

    _scipycode = _cupycode = _numpycode

    def _pythoncode(self, printer: Any) -> str:
        """For stock lambdify with "math", "mpmath", "cmath" or plain Python: the explicit
        form (softplus as log1p(e^{−|u|}) + max(u, 0), which does not overflow)."""
        return printer._print(type(self).scalar_form(self.args[0]))

    _lambdacode = _mpmathcode = _cmathcode = _pythoncode

    @classmethod
    def scalar_form(cls, u: sp.Expr) -> sp.Expr:
        return cls.explicit(u)

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        tex = rf"\operatorname{{{type(self).__name__}}}\left({printer._print(self.args[0])}\right)"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


class sigmoid(_Elementwise):
    """σ(z) = 1 / (1 + e^{−z}); σ'(z) = σ(z)(1 − σ(z))."""

    @classmethod
    def explicit(cls, u: sp.Expr) -> sp.Expr:
        return 1 / (1 + sp.exp(-u))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        s = sigmoid(self.args[0])
        return s * (1 - s)


class softplus(_Elementwise):
    """softplus(z) = log(1 + e^z); softplus'(z) = sigmoid(z)."""

    @classmethod
    def explicit(cls, u: sp.Expr) -> sp.Expr:
        return sp.log(1 + sp.exp(u))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sigmoid(self.args[0])

    @classmethod
    def scalar_form(cls, u: sp.Expr) -> sp.Expr:
        return sp.log(1 + sp.exp(-sp.Abs(u))) + sp.Max(u, 0)


class relu(_Elementwise):
    """relu(z) = max(0, z); relu'(z) = step(z), with the convention relu'(0) := 0."""

    @classmethod
    def explicit(cls, u: sp.Expr) -> sp.Expr:
        return sp.Piecewise((u, u > 0), (0, True))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return step(self.args[0])


class step(_Elementwise):
    """Heaviside step with step(0) := 0 (so relu'(0) = 0); its derivative is 0 for z ≠ 0."""

    @classmethod
    def eval(cls, z: sp.Expr) -> sp.Expr | None:
        if z.is_extended_positive:
            return sp.S.One
        if z.is_zero or z.is_extended_negative:
            return sp.S.Zero
        return None

    @classmethod
    def explicit(cls, u: sp.Expr) -> sp.Expr:
        return sp.Piecewise((1, u > 0), (0, True))

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sp.S.Zero

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        tex = r"\mathbb{I}\left[" + printer._print(self.args[0]) + r" > 0\right]"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


NUMPY_FORMS |= {
    sigmoid: ("scipy.special.expit", (), ()),
    softplus: ("numpy.logaddexp", ("0.0",), ()),
    relu: ("numpy.maximum", (), ("0.0",)),
    step: ("numpy.greater", (), ("0.0",)),  # 1.0 where u > 0: written as float by out=
}

#: scalar function → its PyTorch form, an expression in the argument {0} (``codegen.TorchPrinter``
#: prints it): every function of ``NUMPY_FORMS``, with the same values (step(0) = 0, softplus
#: as log(e^0 + e^u) without overflow); ``tests/test_torch_export.py`` checks that none is missing
TORCH_FORMS: dict[Any, str] = {
    sp.exp: "torch.exp({0})",
    sp.log: "torch.log({0})",
    sp.Abs: "torch.abs({0})",
    sp.sign: "torch.sign({0})",
    sp.sin: "torch.sin({0})",
    sp.cos: "torch.cos({0})",
    sp.tan: "torch.tan({0})",
    sp.atan: "torch.atan({0})",
    sp.sinh: "torch.sinh({0})",
    sp.cosh: "torch.cosh({0})",
    sp.tanh: "torch.tanh({0})",
    sigmoid: "torch.sigmoid({0})",
    softplus: "torch.logaddexp({0}, {0}.new_zeros(()))",
    relu: "torch.relu({0})",
    step: "torch.gt({0}, 0.0).to({0}.dtype)",  # 1.0 where u > 0, in the argument's dtype
}


class softmax(sp.Function):
    """softmax(i, z_1..z_n) = e^{z_i} / Σ_j e^{z_j}; ∂/∂z_j = S_i (δ_ij − S_j). i is 1-based."""

    def fdiff(self, argindex: int = 1) -> sp.Expr:
        if argindex == 1:
            raise ArgumentIndexError(self, argindex)
        i, zs = self.args[0], self.args[1:]
        j = argindex - 1
        s_j = softmax(sp.Integer(j), *zs)
        return self * (1 - self) if int(i) == j else -self * s_j

    def _eval_evalf(self, prec: int) -> sp.Expr:
        return self.explicit()._eval_evalf(prec)

    def explicit(self, shift: sp.Expr = sp.S.Zero) -> sp.Expr:
        """e^{z_i − m} / Σ_j e^{z_j − m}: equal for every m; code takes m = max_j z_j."""
        i, zs = int(self.args[0]), self.args[1:]
        return sp.exp(zs[i - 1] - shift) / sp.Add(*[sp.exp(z - shift) for z in zs])

    def _eval_rewrite_as_exp(self, i: sp.Expr, *zs: sp.Expr, **kwargs: Any) -> sp.Expr:
        return self.explicit()

    def _code(self, printer: Any) -> str:
        """For stock lambdify (every module): the form shifted by the largest z_j."""
        zs = self.args[1:]
        return printer._print(self.explicit(sp.Max(*zs) if len(zs) > 1 else zs[0]))

    _numpycode = _scipycode = _cupycode = _code
    _pythoncode = _lambdacode = _mpmathcode = _cmathcode = _code

    def _latex(self, printer: Any, exp: str | None = None) -> str:
        zs = ", ".join(printer._print(z) for z in self.args[1:])
        return rf"\operatorname{{softmax}}_{{{printer._print(self.args[0])}}}\left({zs}\right)"


#: probe points for custom expressions; |z| ≤ 5 must be exactly representable and accurate
MODERATE = tuple(sp.Float(v, 30) for v in ("-5", "-1", "-0.5", "0", "0.5", "1", "5"))
EXTREME = tuple(sp.Float(v, 30) for v in ("-800", "-100", "-30", "30", "100", "800"))
FLOAT_MAX = 1.7976931348623157e308
HUGE = mpmath.mpf("1e1000")  # beyond float64 by far: evaluation stops, the value is "too large"

#: the exact (mpmath) value of every scalar function, for ``exact_value``
MPMATH_FORMS: dict[Any, Any] = {
    sp.exp: mpmath.exp,
    sp.log: mpmath.log,
    sp.Abs: abs,
    sp.sign: mpmath.sign,
    sp.sin: mpmath.sin,
    sp.cos: mpmath.cos,
    sp.tan: mpmath.tan,
    sp.atan: mpmath.atan,
    sp.sinh: mpmath.sinh,
    sp.cosh: mpmath.cosh,
    sp.tanh: mpmath.tanh,
    sigmoid: lambda u: 1 / (1 + mpmath.exp(-u)),
    softplus: lambda u: mpmath.log1p(mpmath.exp(u)),
    relu: lambda u: max(u, mpmath.mpf(0)),
    step: lambda u: mpmath.mpf(1 if u > 0 else 0),
}


class _NotReal(ArithmeticError):
    pass


class _TooLarge(ArithmeticError):
    pass


def _mp(e: sp.Expr, at: dict[sp.Symbol, Any]) -> Any:
    """e in mpmath at the working precision, stopping at values no float64 can approach."""
    if e.is_Symbol:
        v = at[e]
    elif e.is_number and not e.atoms(sp.Function):
        n = sp.N(e, mpmath.mp.dps + 5)
        if not (n.is_real and n.is_finite):
            raise _NotReal
        v = mpmath.mpf(n)
    elif e.is_Add or e.is_Mul:
        parts = [_mp(a, at) for a in e.args]
        v = mpmath.fsum(parts) if e.is_Add else mpmath.fprod(parts)
    elif e.is_Pow:
        v = mpmath.power(_mp(e.base, at), _mp(e.exp, at))
    elif type(e) in MPMATH_FORMS and len(e.args) == 1:
        v = MPMATH_FORMS[type(e)](_mp(e.args[0], at))
    else:
        raise TypeError(f"no exact value for {type(e).__name__}")
    if isinstance(v, mpmath.mpc):
        if v.imag != 0:
            raise _NotReal
        v = v.real
    if not mpmath.isfinite(v):
        raise _NotReal
    if abs(v) > HUGE:
        raise _TooLarge
    return v


def exact_value(expr: sp.Expr, at: dict[sp.Symbol, sp.Expr]) -> sp.Expr | None:
    """expr at a point to 30 digits, evaluated in mpmath bottom-up; ``sp.oo`` where the value
    (or a step on the way) is far beyond float64, None where it is not a real, finite number."""
    with mpmath.workdps(30):
        try:
            return sp.Float(_mp(expr, {s: mpmath.mpf(v) for s, v in at.items()}), 30)
        except _TooLarge:
            return sp.oo
        except (_NotReal, ZeroDivisionError, ValueError):
            return None


def explicit(expr: sp.Expr) -> sp.Expr:
    """``expr`` with the package's functions written out in exp, log and Piecewise."""
    return expr.replace(
        lambda e: isinstance(e, _Elementwise), lambda e: type(e).explicit(e.args[0])
    )


def _stable_log(arg: sp.Expr) -> sp.Expr | None:
    """A stable form of log(arg), or None: log(1 + e^a), log σ(a), log(1 − σ(a)), log cosh a."""
    if arg.is_Add and len(arg.args) == 2 and sp.S.One in arg.args:
        rest = arg - 1
        if isinstance(rest, sp.exp):
            return softplus(rest.args[0])  # log(1 + e^a) = softplus(a)
        if rest.is_Mul and rest.args[0] == -1 and isinstance(rest.args[1], sigmoid):
            return -softplus(rest.args[1].args[0])  # log(1 − σ(a)) = −softplus(a)
    if isinstance(arg, sigmoid):
        return -softplus(-arg.args[0])  # log σ(a) = −softplus(−a)
    if isinstance(arg, sp.cosh):
        a = arg.args[0]
        return softplus(2 * a) - a - sp.log(2)  # log cosh a = softplus(2a) − a − log 2
    return None


def _stable_mul(e: sp.Mul) -> sp.Expr | None:
    """e^a σ(−a)^m = σ(a) σ(−a)^(m−1) (e^a / (1 + e^a) = σ(a)), and sinh a / cosh a = tanh a,
    inside a product."""
    factors = list(e.args)
    for f in factors:
        if isinstance(f, sp.sinh) and sp.cosh(f.args[0]) ** -1 in factors:
            factors.remove(f)
            factors.remove(sp.cosh(f.args[0]) ** -1)
            return sp.Mul(*factors) * sp.tanh(f.args[0])
        base, power = f.as_base_exp()
        if isinstance(base, sigmoid) and power.is_Integer and power > 0:
            a = -base.args[0]
            if sp.exp(a) in factors:
                factors.remove(f)
                factors.remove(sp.exp(a))
                return sp.Mul(*factors) * sigmoid(a) * base ** (power - 1)
    return None


def stable(expr: sp.Expr) -> sp.Expr:
    """An equal expression without the known overflow and cancellation patterns.

    log(1 + e^a) → softplus(a), (1 + e^{−a})^{−m} → σ(a)^m, e^a σ(−a) → σ(a),
    sinh a / cosh a → tanh a, log σ(a) → −softplus(−a), log(1 − σ(a)) → −softplus(a),
    log cosh a → softplus(2a) − a − log 2. Each rule is an identity (``tests/test_functions.py``
    checks both sides).
    """

    def rewrite(e: sp.Expr) -> sp.Expr:
        if isinstance(e, sp.log):
            return _stable_log(e.args[0]) or e
        if e.is_Pow and e.exp.is_Integer and e.exp < 0 and e.base.is_Add:
            rest = e.base - 1
            if isinstance(rest, sp.exp):  # (1 + e^{−a})^{−m} = σ(a)^m
                return sigmoid(-rest.args[0]) ** (-e.exp)
        if e.is_Mul:
            return _stable_mul(e) or e
        return e

    previous = None
    while expr != previous:  # a rewrite can expose another (log σ(a) after 1/(1 + e^{−a}))
        previous, expr = expr, expr.replace(lambda e: True, rewrite)
    return expr
