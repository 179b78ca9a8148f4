"""Matrix nodes the derivations and kernels need beyond SymPy's, and the symbols they share.

``BATCH`` is the batch size B. ``ARG_U``, ``ARG_V``, ``ARG_W`` are the variables of entrywise
Lambdas. ``Entrywise(f, A, C, …)`` applies an m-argument f entry by entry to m matrices of one
shape (the output adjoint −(1/B) ∂ℓ/∂x (X^N, Y) is one). ``Softmax`` and ``LogSoftmax``
normalise each sample: the entries along ``axis`` 0 when samples are columns (the generic
layer), along axis 1 when samples are rows (the kernels).
"""

from __future__ import annotations

import sympy as sp
from sympy import Lambda, OneMatrix
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

BATCH = sp.Symbol("B", integer=True, positive=True)
ARG_U, ARG_V, ARG_W = sp.symbols("u v w", real=True)


def elementwise(fn: object, arg: sp.MatrixExpr) -> ElementwiseApplyFunction:
    """fn applied entry by entry: a SymPy function class, a callable, or an expression in u."""
    body = fn if isinstance(fn, sp.Basic) else fn(ARG_U)  # type: ignore[operator]
    return ElementwiseApplyFunction(Lambda(ARG_U, sp.sympify(body)), arg)


class Entrywise(sp.MatrixExpr):
    """f(A_ij, C_ij, …) entry by entry, for matrices of one shape (an m-argument Lambda)."""

    def __new__(cls, function: Lambda, *matrices: sp.MatrixExpr) -> Entrywise:
        return super().__new__(cls, function, *matrices)

    @property
    def function(self) -> Lambda:
        return self.args[0]

    @property
    def matrices(self) -> tuple[sp.MatrixExpr, ...]:
        return self.args[1:]

    @property
    def shape(self) -> tuple[sp.Expr, sp.Expr]:
        return self.args[1].shape

    def _entry(self, i: int, j: int, **kwargs: object) -> sp.Expr:
        return self.function(*[m[i, j] for m in self.matrices])

    def _eval_transpose(self) -> Entrywise:
        return Entrywise(self.function, *[m.T for m in self.matrices])

    def doit(self, **hints: object) -> sp.MatrixExpr:
        return Entrywise(self.function, *[m.doit(**hints) for m in self.matrices])


def entrywise(body: sp.Expr, *matrices: sp.MatrixExpr) -> Entrywise:
    """Entrywise(Lambda((u, v, …), body), matrices): u is the first matrix's entry, v the next."""
    return Entrywise(Lambda((ARG_U, ARG_V, ARG_W)[: len(matrices)], body), *matrices)


class _PerSample(sp.MatrixExpr):
    """A function of each sample's vector: the entries of M along ``axis``."""

    def __new__(cls, M: sp.MatrixExpr, axis: int) -> _PerSample:
        return super().__new__(cls, M, sp.Integer(axis))

    @property
    def arg(self) -> sp.MatrixExpr:
        return self.args[0]

    @property
    def axis(self) -> int:
        return int(self.args[1])

    @property
    def shape(self) -> tuple[sp.Expr, sp.Expr]:
        return self.arg.shape

    def _eval_transpose(self) -> _PerSample:
        return type(self)(self.arg.T, 1 - self.axis)

    def doit(self, **hints: object) -> sp.MatrixExpr:
        return type(self)(self.arg.doit(**hints), self.axis)

    def _entry(self, i: int, j: int, **kwargs: object) -> sp.Expr:
        n = self.shape[self.axis]
        entries = [self.arg[m, j] if self.axis == 0 else self.arg[i, m] for m in range(n)]
        return self._of(entries, i if self.axis == 0 else j)

    def _of(self, entries: list[sp.Expr], index: int) -> sp.Expr:
        raise NotImplementedError


class Softmax(_PerSample):
    """softmax of each sample: e^{z_i} / Σ_j e^{z_j}."""

    def _of(self, entries: list[sp.Expr], index: int) -> sp.Expr:
        return sp.exp(entries[index]) / sp.Add(*[sp.exp(e) for e in entries])


class LogSoftmax(_PerSample):
    """log softmax of each sample: z_i − log Σ_j e^{z_j}, finite for every finite z."""

    def _of(self, entries: list[sp.Expr], index: int) -> sp.Expr:
        return entries[index] - sp.log(sp.Add(*[sp.exp(e) for e in entries]))


def sample_sums(M: sp.MatrixExpr, axis: int) -> sp.MatrixExpr:
    """Each sample's sum of M, repeated over the sample: 1 1ᵀ M (axis 0) or M 1 1ᵀ (axis 1)."""
    n = M.shape[axis]
    return OneMatrix(n, n) * M if axis == 0 else M * OneMatrix(n, n)
