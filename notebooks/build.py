"""Build the homework notebooks from their cells and execute them, storing the outputs.

Run ``python notebooks/build.py`` after changing a notebook's cells or the package; the tests
execute the stored notebooks again from a fresh kernel and check their results.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip())


def setup(display_names: str) -> nbformat.NotebookNode:
    """The first code cell: imports and the seed."""
    shows = f"from IPython.display import {display_names}\n" if display_names else ""
    return code(
        "import json\n\nimport numpy as np\n" + shows + "\nimport lagrange_bp as lbp\n\n"
        "np.random.seed(0)  # every random draw below also takes an explicit seed"
    )


NB1 = [
    md(r"""
# Homework: derive backpropagation from the KKT conditions of the Lagrangian

**Problem.** An $N$-layer perceptron computes $x^{(k)} = \sigma_k(W^{(k)} x^{(k-1)} + b^{(k)})$,
$k = 1, \dots, N$, from an input $x^{(0)}$. Training it on a batch of $B$ samples
$(x_i^{(0)}, y_i)$ minimises the mean loss $J$ subject to these equations. Write the problem's
Lagrangian, and show that its stationarity (KKT) conditions give (1) the forward pass, (2) the
backward pass and (3) the gradient and update rule of backpropagation.

**How to read this answer.** Every formula in an *output* cell below is produced by
`lagrange_bp`: SymPy differentiates the batch Lagrangian with its matrix calculus, with the
activation $\sigma$ and the loss $\ell$ left as undefined functions (any $N$, any widths, any
$B$), and the last section proves the result. The markdown cells give the argument in words.
"""),
    code(r"""
import json

import lagrange_bp as lbp
from lagrange_bp.conditions import batch_bridge

g = lbp.derive_general()  # the generic layer k: symbolic widths n_{k-1}, n_k, n_{k+1}, batch B
g.problem("mse")
"""),
    md(r"""
The per-sample loss $\ell$ is **summed** over the $n_N$ outputs: `mse` is
$\tfrac12\lVert x - y\rVert^2$, so $J$ is its mean over the batch only (PyTorch's
`MSELoss()` also averages over the outputs and drops the $\tfrac12$; its gradient is
$2/n_N$ times ours). For classification, `cross_entropy` with a softmax output layer:
"""),
    code(r"""
g.problem("cross_entropy")
"""),
    md(r"""
## 1. The Lagrangian

Each sample $i$ has its own states $x_i^{(k)}$ and one multiplier vector $\lambda_i^{(k)}$ per
constraint. Stacking the samples as **columns**, $X^{(k)} = [x_1^{(k)} \cdots x_B^{(k)}]$ and
$\Lambda^{(k)} = [\lambda_1^{(k)} \cdots \lambda_B^{(k)}]$, turns the double sum into traces:
"""),
    code(r"""
g.lagrangian()
"""),
    md(r"""
The bridge is $\operatorname{tr}(\Lambda^\top M) = \sum_i \lambda_i^\top m_i$ for matrices with
columns $\lambda_i$ and $m_i$: the trace adds up the products of matching columns. SymPy
expands both sides for a $2 \times 3$ case:
"""),
    code(r"""
bridge, holds = batch_bridge(n=2, batch=3)
print("tr(ΛᵀM) = Σ_i λ_iᵀ m_i holds identically:", holds)
bridge
"""),
    md(r"""
So the batch Lagrangian *is* the homework's per-sample sum, and the factor $1/B$ sits in $J$
only. Every constraint is an equality, so the KKT conditions are Lagrange's conditions: $\mathcal{L}$
is stationary in every variable (there are no inequality multipliers and no complementary
slackness). Below, each condition is written as the derivative SymPy computes, set to $0$, then
solved.

## 2. The stationarity conditions

**(a) $\partial\mathcal{L}/\partial\Lambda^{(k)} = 0$.** $\Lambda^{(k)}$ appears only in its
own constraint, so the condition gives back the constraint: the forward pass.
"""),
    code(r"""
conditions = g.conditions()  # ∂L/∂Λ^k, ∂L/∂X^N, ∂L/∂X^k (k < N), ∂L/∂W^k, ∂L/∂b^k
conditions[0]
"""),
    md(r"""
**(b) $\partial\mathcal{L}/\partial X^{(N)} = 0$, the output layer.** $X^{(N)}$ appears in $J$
and in constraint $N$ only (it feeds no later layer). $J$ brings the factor $1/B$, which is
why $\Lambda^{(N)}$, and through it every multiplier, carries the $1/B$ of the mean:
"""),
    code(r"""
conditions[1]
"""),
    md("For the two built-in losses, $\\ell$ is replaced by its definition and SymPy differentiates it:"),
    code(r"""
display(g.conditions("mse")[1], g.conditions("cross_entropy")[1])
"""),
    md(r"""
**(c) $\partial\mathcal{L}/\partial X^{(k)} = 0$ for $k < N$.** $X^{(k)}$ appears in constraint
$k$ (as itself) and in constraint $k+1$, inside $Z^{(k+1)} = W^{(k+1)} X^{(k)} + b^{(k+1)}
\mathbf{1}^\top$. Solving for $\Lambda^{(k)}$ gives a recursion that runs *backwards*, from
$\Lambda^{(N)}$ of (b). It names the layer's vector–Jacobian product
$G^{(k)} = D\sigma_k(Z^{(k)})^\top \Lambda^{(k)}$, which for an elementwise $\sigma_k$ is
$\sigma_k'(Z^{(k)}) \odot \Lambda^{(k)}$:
"""),
    code(r"""
conditions[2]
"""),
    md(r"""
For each built-in activation SymPy derives $G^{(k)}$; where $\sigma'$ can be written in the
layer's own output $X^{(k)} = \sigma(Z^{(k)})$, that form is derived and checked too (it is what
the generated code computes):
"""),
    code(r"""
g.activations()
"""),
    md(r"""
**(d) $\partial\mathcal{L}/\partial W^{(k)}$ and $\partial\mathcal{L}/\partial b^{(k)}$.**
Both parameters appear only in $Z^{(k)}$:
"""),
    code(r"""
display(conditions[3], conditions[4])
"""),
    md(r"""
## 3. Why $\partial\mathcal{L}/\partial\theta$ is the gradient of $J$

Fix the parameters $\theta = (W, b)$ and let $X(\theta)$ solve (a) and $\Lambda(\theta)$ solve
(b), (c). The constraints hold, so every constraint term of $\mathcal{L}$ is $0$ whatever
$\Lambda$ is, and
$$J(\theta) = \mathcal{L}\big(X(\theta), \Lambda(\theta), \theta\big).$$
Differentiating this (the total derivative, by the chain rule),
$$\frac{dJ}{d\theta} = \frac{\partial\mathcal{L}}{\partial\theta}
+ \sum_k \frac{\partial\mathcal{L}}{\partial X^{(k)}} \frac{dX^{(k)}}{d\theta}
+ \sum_k \frac{\partial\mathcal{L}}{\partial \Lambda^{(k)}} \frac{d\Lambda^{(k)}}{d\theta}
= \frac{\partial\mathcal{L}}{\partial\theta},$$
because $\partial\mathcal{L}/\partial X^{(k)} = 0$ by (b), (c) and
$\partial\mathcal{L}/\partial\Lambda^{(k)} = 0$ by (a). So (d) *is* the gradient:
$\partial J/\partial W^{(k)} = -G^{(k)} X^{(k-1)\top}$ and
$\partial J/\partial b^{(k)} = -G^{(k)}\mathbf{1}$, and the update rule is gradient descent
with step $\eta$:
$$W^{(k)} \leftarrow W^{(k)} - \eta \frac{\partial\mathcal{L}}{\partial W^{(k)}}, \qquad
b^{(k)} \leftarrow b^{(k)} - \eta \frac{\partial\mathcal{L}}{\partial b^{(k)}}.$$
The remaining KKT condition, $\partial\mathcal{L}/\partial\theta = 0$, is $\nabla J = 0$: a
stationary point of the training objective. Backpropagation solves (a)–(c) exactly at every
step; gradient descent approaches (d) $= 0$ over many steps.

## 4. The multipliers are the negative sensitivities: $\Lambda^{(k)} = -\partial J/\partial X^{(k)}$

By induction from the output layer down, treating $X^{(k)}$ as an input of the layers above it:

* **Base** ($k = N$): $J$ depends on $X^{(N)}$ directly, $\dfrac{\partial J}{\partial X^{(N)}}
  = \dfrac{1}{B}\dfrac{\partial \ell}{\partial x}\big(X^{(N)}, Y\big) = -\Lambda^{(N)}$ by (b).
* **Step**: if $\Lambda^{(k+1)} = -\partial J/\partial X^{(k+1)}$, then since
  $X^{(k+1)} = \sigma_{k+1}(W^{(k+1)} X^{(k)} + b^{(k+1)}\mathbf{1}^\top)$, the chain rule gives
  $$\frac{\partial J}{\partial X^{(k)}} = W^{(k+1)\top}\Big(\sigma_{k+1}'\big(Z^{(k+1)}\big)
  \odot \frac{\partial J}{\partial X^{(k+1)}}\Big) = -W^{(k+1)\top} G^{(k+1)} = -\Lambda^{(k)}$$
  by (c).

Hence $\Lambda^{(k)} = -\partial J/\partial X^{(k)}$ for every $k$, and the chain rule's
$\delta^{(k)} = \partial J/\partial Z^{(k)} = \sigma_k'(Z^{(k)}) \odot \partial J/\partial X^{(k)}
= -G^{(k)}$: the recursion in (c) is $\delta^{(k)} = \sigma_k'(Z^{(k)}) \odot W^{(k+1)\top}
\delta^{(k+1)}$ and (d) is $\partial J/\partial W^{(k)} = \delta^{(k)} X^{(k-1)\top}$, the
textbook's backpropagation. The proof below checks each of these steps symbolically.

## 5. The backpropagation algorithm that results
"""),
    code(r"""
g.algorithm()
"""),
    md(r"""
## 6. The proof, for every $N$, every width and every batch size

Steps (g1)–(g3) are the base, the induction step and section 3, as exact SymPy identities with
$\sigma$ and $\ell$ undefined functions; (g4) checks each activation's $G^{(k)}$; (g5) evaluates
the generic equations against exact derivations at concrete sizes. In two lines:
"""),
    code(r"""
report = lbp.verify_general()
print(report.summary())
"""),
    md("Each step's claim and method, with the details folded away (click to open):"),
    code(r"""
report
"""),
    md(r"""
And a concrete network, $2$-$2$-$1$ with tanh then sigmoid, derived entry by entry from its own
Lagrangian and proven against the chain rule in exact arithmetic:
"""),
    code(r"""
spec = lbp.NetworkSpec((2, 2, 1), ("tanh", "sigmoid"), "mse")
small = lbp.verify(spec)
print(small.summary())
print(json.dumps({"general_proven": report.ok, "small_proven": small.ok, "bridge": holds,
                  "conditions": [c.variable for c in conditions]}, ensure_ascii=False))
"""),
]

NB2 = [
    md(r"""
# A 2-2-1 network by hand: two samples, one update step

Every weight, state and multiplier is its own symbol. We derive the equations of a 2-2-1
network (tanh, then sigmoid, mse loss) from its Lagrangian, prove them, and then do what a
student does on paper: a batch of $B = 2$ samples through the forward pass, the multipliers
from the output layer down (with the $1/B$ of the mean), the gradient, and one update step
with learning rate $\eta$, every number with the arithmetic that produced it. The compiled
NumPy model, finite differences and a student's own rule are checked against it at the end.
"""),
    setup(""),
    code(r"""
import sympy as sp

spec = lbp.NetworkSpec((2, 2, 1), ("tanh", "sigmoid"), "mse")
d = lbp.derive(spec)  # one sample's Lagrangian, its KKT conditions, solved
d
"""),
    md(r"""
$\sigma'$ appears written in the layer's output, as SymPy derived it: $x(1 - x)$ for the sigmoid
of layer 2 and $1 - x^2$ for the tanh of layer 1.

These are one sample's equations with objective $\ell$. With a batch, $J = \frac{1}{B}\sum_i
\ell_i$ and each sample $i$ has its own states and multipliers; sample $i$'s part of
$\mathcal{L}$ is $\frac{1}{B}\ell_i + \sum_k \lambda_i^{(k)\top}(\dots)$. So the output condition
gets the factor $1/B$ (notebook 01, condition (b)):
"""),
    code(r"""
lbp.derive_general().conditions("mse")[1]
"""),
    md(r"""
and since every other equation is linear in the multipliers, each sample's $\lambda_i^{(k)}$ is
$1/B$ times the per-sample value, and the batch gradient is the sum over samples of the
per-sample formula. The proof of these equations, in two lines:
"""),
    code(r"""
report = lbp.verify(spec)
print(report.summary())
"""),
    md(r"""
## The numbers

Parameters, a batch of two samples (rows) and the learning rate:
"""),
    code(r"""
W1, b1 = np.array([[0.5, -0.3], [0.8, 0.2]]), np.array([0.1, -0.2])
W2, b2 = np.array([[0.7, -0.5]]), np.array([0.2])
params = [(W1, b1), (W2, b2)]
X = np.array([[1.0, 0.5], [-0.5, 1.5]])  # x_1^(0), x_2^(0)
Y = np.array([[1.0], [0.0]])  # y_1, y_2
B, eta = len(X), 0.5

(sW1, sb1), (sW2, sb2) = d.params
theta = {**dict(zip(sW1, W1.ravel())), **dict(zip(sb1, b1)), **dict(zip(sW2, W2.ravel())),
         **dict(zip(sb2, b2))}
output_multipliers = set(d.symbols.lam[spec.depth])


def numbers(expr, values):
    # expr with every symbol written as its value: the arithmetic, not yet done (each value a
    # Dummy, so that two equal numbers stay two factors; str writes a Dummy as _name)
    shown = {s: sp.Dummy(f"({values[s]:.6g})" if values[s] < 0 else f"{values[s]:.6g}")
             for s in expr.free_symbols}
    return str(expr.xreplace(shown)).replace("_", "")


def sample(i):
    # forward k = 1..N, then the multipliers k = N..1, from the derived equations
    values = {**theta, **dict(zip(d.input, X[i])), **dict(zip(d.target, Y[i]))}
    print(f"sample {i + 1}:")
    for eq in d.forward + d.adjoint:
        rhs = eq.rhs / B if eq.lhs in output_multipliers else eq.rhs  # the 1/B of J
        values[eq.lhs] = float(rhs.xreplace({s: sp.Float(v) for s, v in values.items()}))
        print(f"  {eq.lhs} = {numbers(rhs, values)} = {values[eq.lhs]:.6f}")
    return values


samples = [sample(i) for i in range(B)]
"""),
    md(r"""
## The gradient: the per-sample formulas, summed over the batch
"""),
    code(r"""
gradient = {}
for p, formula in d.gradients.items():
    parts = [float(formula.xreplace({s: sp.Float(v) for s, v in values.items()}))
             for values in samples]
    gradient[p] = sum(parts)
    print(f"∂L/∂{p} = Σ_i {formula}")
    for i, (values, part) in enumerate(zip(samples, parts), 1):
        print(f"    sample {i}: {numbers(formula, values)} = {part:.6f}")
    print(f"    sum: {' + '.join(f'({v:.6f})' for v in parts)} = {gradient[p]:.6f}")
"""),
    md(r"""
## One update step, $\theta \leftarrow \theta - \eta\, \partial\mathcal{L}/\partial\theta$
"""),
    code(r"""
updated = {}
for p, g in gradient.items():
    updated[p] = theta[p] - eta * g
    print(f"{p!s:8} ← {theta[p]:.6g} − {eta} × ({g:.6f}) = {updated[p]:.6f}")
"""),
    md(r"""
## The compiled model agrees

The NumPy kernels, printed from the generic-layer equations, on the same batch: loss,
multipliers, gradient, and `sgd_step` (which updates the parameters in place):
"""),
    code(r"""
model = lbp.compile(spec)
loss, grads = model.loss_and_grad(params, X, Y)
lams = model.adjoint(params, X, Y)  # λ^k, samples as rows
flat = np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in grads])
compiled_gap = float(np.max(np.abs(flat - np.array(list(gradient.values())))))
lambda_gap = max(abs(float(lams[k - 1][i, j]) - samples[i][lam])
                 for k in d.symbols.lam for j, lam in enumerate(d.symbols.lam[k]) for i in range(B))
stepped = [(W.copy(), b.copy()) for W, b in params]
model.sgd_step(stepped, X, Y, lr=eta)
flat_new = np.concatenate([np.concatenate([W.ravel(), b]) for W, b in stepped])
update_gap = float(np.max(np.abs(flat_new - np.array(list(updated.values())))))
ell = [0.5 * float(np.sum((model.forward(params, X)[i] - Y[i]) ** 2)) for i in range(B)]
print(f"J = (ℓ_1 + ℓ_2)/2 = ({ell[0]:.6f} + {ell[1]:.6f})/2 = {sum(ell) / B:.6f}; compiled: {loss:.6f}")
print(f"largest |by hand − compiled|: λ {lambda_gap:.1e}, gradient {compiled_gap:.1e}, "
      f"updated parameters {update_gap:.1e}")
"""),
    md("## Finite-difference check (central differences, h = 1e-6)"),
    code(r"""
from lagrange_bp.diagnostics import finite_difference_gradient

fd = finite_difference_gradient(model, params, X, Y, h=1e-6)
flat_fd = np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in fd])
fd_error = float(np.max(np.abs(flat_fd - flat)))
print(f"largest |finite difference − derived gradient| = {fd_error:.2e}")
"""),
    md(r"""
## Check your own derivation

Suppose a student hands in this adjoint rule (samples as rows), and a second student forgets
the $\sigma'$ factor:
"""),
    code(r"""
def adjoint(W_next, z_next, lam_next, dsigma_next):
    return (dsigma_next(z_next) * lam_next) @ W_next


def adjoint_without_dsigma(W_next, z_next, lam_next, dsigma_next):
    return lam_next @ W_next


right = lbp.check_rule(spec, "adjoint", adjoint)
wrong = lbp.check_rule(spec, "adjoint", adjoint_without_dsigma)
print(right, wrong, sep="\n\n")
"""),
    code(r"""
print(json.dumps({"proven": report.ok, "compiled_gap": compiled_gap, "lambda_gap": lambda_gap,
                  "update_gap": update_gap, "fd_error": fd_error, "batch_size": B,
                  "right_rule_ok": right.ok, "wrong_rule_ok": wrong.ok}))
"""),
]

NB3 = [
    md(r"""
# Training on digits with the generated trainer

The network 64-128-10 (tanh, softmax, cross-entropy) is compiled into NumPy kernels printed
from the derived equations, and trained with mini-batch SGD. Along the way we evaluate the KKT
conditions of notebook 01 on a fixed probe of 256 training samples:

* $\partial\mathcal{L}/\partial\Lambda = 0$ (forward) and $\partial\mathcal{L}/\partial X = 0$
  (adjoint) hold **by construction** at every step: the trainer computes $X$ and $\Lambda$ by
  solving exactly these equations. Their residuals, recomputed by the package's independent
  hand-written reference, therefore measure only floating-point rounding (and would expose a
  kernel that solved the wrong equations); they say nothing about training progress.
* $\partial\mathcal{L}/\partial\theta = \nabla J = 0$ is the one condition training moves
  towards. Its norm is what falls.
"""),
    setup(""),
    code(r"""
from lagrange_bp.datasets import load
from lagrange_bp.diagnostics import kkt_residuals
from lagrange_bp.plots import plot_confusion, plot_history, plot_residuals

data = load("digits")
print(data.describe())
spec = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")
model = lbp.compile(spec)
"""),
    code(r"""
probe_X, probe_Y = data.X_train[:256], data.Y_train[:256]
steps, residuals = [], {"forward residual": [], "adjoint residual": [], "‖∂L/∂θ‖ (probe)": []}
done = 0  # SGD steps taken so far


def watch(epoch, batch, params):
    global done
    done += 1
    if done % 20 == 1:
        r = kkt_residuals(model, params, probe_X, probe_Y)
        steps.append(done)
        residuals["forward residual"].append(r["forward_relative"])
        residuals["adjoint residual"].append(r["adjoint_relative"])
        residuals["‖∂L/∂θ‖ (probe)"].append(r["gradient"])


result = lbp.train(model, data.X_train, data.Y_train, epochs=30, batch_size=32, lr=0.1, seed=0,
                   validation=(data.X_test, data.Y_test), on_batch=watch, eval_every=1)
test = lbp.evaluate(model, result.params, data.X_test, data.Y_test)
print(f"{done} SGD steps ({done // 30} per epoch); "
      f"test accuracy {100 * test['accuracy']:.2f}%, test loss {test['loss']:.4f}")
"""),
    code(r"""
_ = plot_history(result.history, title="digits 64-128-10, tanh/softmax")
"""),
    md(r"""
Left: each residual divided by the size of the terms it compares (so that float64's rounding
unit $\varepsilon \approx 2.2 \cdot 10^{-16}$ is the right yardstick); a step where the residual
is *exactly* zero cannot be drawn on a log axis and appears as a triangle on the bottom edge.
Right: the gradient norm on the probe.
"""),
    code(r"""
_ = plot_residuals(steps, residuals)
forward, adjoint = residuals["forward residual"], residuals["adjoint residual"]
print(f"largest relative forward residual: {max(forward):.1e} "
      f"(exactly 0 at {forward.count(0.0)} of {len(steps)} probes)")
print(f"largest relative adjoint residual: {max(adjoint):.1e} "
      f"(exactly 0 at {adjoint.count(0.0)} of {len(steps)} probes)")
"""),
    md(r"""
## Why $\|\partial\mathcal{L}/\partial\theta\|$ levels off instead of reaching 0

Plain SGD with a constant step $\eta$ does not converge to a stationary point: each step follows
the gradient of one mini-batch of 32, and once the full-data gradient is small these mini-batch
gradients mostly disagree with each other, so the parameters wander in a small region around a
minimum instead of settling. And the norm on the right is that of a fixed probe of 256 samples,
not of all training data: on a subset the per-sample gradients cancel less, so its norm stays
larger than the full-data $\|\nabla J\|$, and a mini-batch's larger still. All three, at the
trained parameters:
"""),
    code(r"""
def gradient_norm(X, Y):
    _, g = model.loss_and_grad(result.params, X, Y)
    return float(np.sqrt(sum(np.sum(gW**2) + np.sum(gb**2) for gW, gb in g)))


full = gradient_norm(data.X_train, data.Y_train)
rng = np.random.default_rng(0)
batches = [rng.choice(len(data.X_train), 32, replace=False) for _ in range(200)]
minibatch = np.median([gradient_norm(data.X_train[i], data.Y_train[i]) for i in batches])
print(f"‖∇J‖ on all {len(data.X_train)} training samples: {full:.3f}")
print(f"‖∇J‖ on the probe of 256:                 {residuals['‖∂L/∂θ‖ (probe)'][-1]:.3f}")
print(f"‖∇J‖ on a mini-batch of 32 (median):     {minibatch:.3f}")
"""),
    code(r"""
predicted = model.forward(result.params, data.X_test).argmax(axis=1)
true = data.Y_test.argmax(axis=1)
matrix = np.zeros((10, 10), dtype=int)
np.add.at(matrix, (true, predicted), 1)
_ = plot_confusion(matrix, data.classes)
"""),
    md(r"""
## Agreement with reference backprop and PyTorch

At the trained weights, the generated gradient is compared with hand-written chain-rule
backprop (no SymPy) and, when it is installed, PyTorch's autograd.
"""),
    code(r"""
from lagrange_bp.diagnostics import reference_gradient_gap

reference_gap = reference_gradient_gap(model, result.params, data.X_test, data.Y_test)
_, grads = model.loss_and_grad(result.params, data.X_test, data.Y_test)
print(f"largest |generated − reference| gradient entry: {reference_gap:.1e}")
try:
    import torch
except ImportError:
    torch_gap = None
    print("PyTorch is not installed: skipped")
else:
    tp = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
          for W, b in result.params]
    z1 = torch.tensor(data.X_test) @ tp[0][0].T + tp[0][1]
    z2 = torch.tanh(z1) @ tp[1][0].T + tp[1][1]
    J = -(torch.tensor(data.Y_test) * torch.log_softmax(z2, dim=1)).sum() / len(data.X_test)
    J.backward()
    torch_gap = max(float(np.max(np.abs(g - t.grad.numpy())))
                    for (gW, gb), (W, b) in zip(grads, tp) for g, t in ((gW, W), (gb, b)))
    print(f"largest |generated − PyTorch autograd| gradient entry: {torch_gap:.1e}")
"""),
    code(r"""
gradient = residuals["‖∂L/∂θ‖ (probe)"]
print(json.dumps({"test_accuracy": test["accuracy"], "steps": done,
                  "forward_residual": max(forward), "adjoint_residual": max(adjoint),
                  "gradient_first": gradient[0], "gradient_last": gradient[-1],
                  "gradient_full": full, "gradient_minibatch": float(minibatch),
                  "reference_gap": reference_gap, "torch_gap": torch_gap}))
"""),
]

#: the five rules of the assignment: (rule, what it returns, the solution's body)
ASSIGNMENT = [
    (
        "forward",
        "x^(k) = σ_k(W^(k) x^(k-1) + b^(k)) for a batch, samples as rows: (B, n_k)",
        "def forward(W, b, x_prev, sigma):\n    return sigma(x_prev @ W.T + b)",
    ),
    (
        "output_adjoint",
        "λ^(N) from ∂L/∂x^(N) = 0, for J = (1/B) Σ_i ℓ with mse ℓ = ½‖x − y‖²: (B, n_N)",
        "def output_adjoint(x_out, y, batch_size):\n    return (y - x_out) / batch_size",
    ),
    (
        "adjoint",
        "λ^(k) from ∂L/∂x^(k) = 0 for k < N, given layer k+1's W, z, λ and σ': (B, n_k)",
        "def adjoint(W_next, z_next, lam_next, dsigma_next):\n"
        "    return (dsigma_next(z_next) * lam_next) @ W_next",
    ),
    (
        "weight_gradient",
        "∂L/∂W^(k), summed over the batch: (n_k, n_(k-1))",
        "def weight_gradient(z, lam, x_prev, dsigma):\n    return -(dsigma(z) * lam).T @ x_prev",
    ),
    (
        "bias_gradient",
        "∂L/∂b^(k), summed over the batch: (n_k,)",
        "def bias_gradient(z, lam, dsigma):\n    return -(dsigma(z) * lam).sum(axis=0)",
    ),
]


def assignment(solution: bool) -> list[nbformat.NotebookNode]:
    """Notebook 04: the student version (bodies left blank) or the solution."""
    cells = [
        md(r"""
# Assignment: derive backpropagation from the Lagrangian, and have it graded

For the network $x^{(k)} = \sigma_k(W^{(k)} x^{(k-1)} + b^{(k)})$, $k = 1, \dots, N$, trained on
a batch of $B$ samples with $J = \frac{1}{B}\sum_i \ell(y_i, x_i^{(N)})$ and
$\ell(y, x) = \frac12\lVert x - y\rVert^2$, the Lagrangian is
$$\mathcal{L} = J + \sum_i \sum_k \lambda_i^{(k)\top}\big(x_i^{(k)} - \sigma_k(W^{(k)} x_i^{(k-1)}
+ b^{(k)})\big).$$
Write, as NumPy functions, the five rules its KKT conditions give. Arrays hold one **row per
sample**: `x_prev` is $(B, n_{k-1})$, `W` is $(n_k, n_{k-1})$, `b` is $(n_k,)$; `sigma` and
`dsigma` are the layer's $\sigma$ and $\sigma'$ as NumPy functions (applied entry by entry).

Each rule is followed by an autograder cell: it checks your function against the derived
equations at random KKT-consistent states (batch sizes 3, 5, 4, every layer), prints the
points, and when the rule is wrong names the kind of slip with a hint. The last cell grades
all five rules again in a separate process, as a course's grader would.
"""),
        code("""
import json
from pathlib import Path

import lagrange_bp as lbp
from lagrange_bp.grading import assert_rule

spec = lbp.NetworkSpec((4, 5, 3), ("tanh", "sigmoid"), "mse")
print(spec.describe())
"""),
    ]
    for i, (rule, returns, body) in enumerate(ASSIGNMENT, 1):
        head, _ = body.split("\n", 1)
        blank = f"{head}\n    # YOUR ANSWER: {returns}\n    raise NotImplementedError"
        cells += [
            md(f"## {i}. `{rule}`\n\nReturn {returns}."),
            code(body if solution else blank),
            code(f'points_{rule} = assert_rule(spec, "{rule}", {rule})'),
        ]
        cells[-2].metadata["rule"] = rule
    cells += [
        md(r"""
## The grade, from a separate process

The five functions are written to a file and graded by `lbp.grade`, which runs them in a
separate process with a time and a memory limit and decides every verdict outside it.
"""),
        code("""
import inspect

rules = [forward, output_adjoint, adjoint, weight_gradient, bias_gradient]
Path("submission.py").write_text("\\n\\n".join(inspect.getsource(f) for f in rules))
result = lbp.grade(spec, "submission.py")
Path("submission.py").unlink()
print(result)
print(json.dumps({"score": result.score, "max_score": result.max_score}))
"""),
    ]
    return cells


NB5 = [
    md(r"""
# Homework, extended: backpropagation through time from the Lagrangian

**Problem.** An Elman recurrent network reads a sequence $x_1, \dots, x_T$ with one cell whose
parameters are shared by every step:
$$h_t = \sigma(W_x x_t + W_h h_{t-1} + b), \quad h_0 = 0, \qquad
o_t = \sigma_o(V h_t + c), \qquad t = 1, \dots, T,$$
and is trained to minimise $J = \sum_t \ell(y_t, o_t)$ (outputs at every step; the adding
problem at the end has one output, at $t = T$). Write the Lagrangian of this problem over time,
and show that its stationarity conditions give the forward pass, *backpropagation through
time* (BPTT), and the gradient of the shared parameters.

**How to read this answer.** As in notebook 01, every formula in an *output* cell is produced
by `lagrange_bp`: the network is unrolled over $T = 3$ steps, its Lagrangian is built with one
multiplier per step's constraint, SymPy differentiates it entry by entry and the conditions
are solved. The equations for every $T$ are then read off that derivation, the result is
proven, and a network compiled from it is trained on a sequence task. One sequence is one
sample; with a batch, $J$ is the mean over samples, every sample has its own states and
multipliers, and the multipliers carry the $1/B$ (notebook 01, condition (b)).
"""),
    setup("Markdown"),
    code(r"""
from lagrange_bp.graph_render import bptt, part

rnn = lbp.recurrent(inputs=1, hidden=2, outputs=1, steps=3, outputs_at="every")
print(rnn.describe())
d = lbp.derive(rnn)  # one multiplier per step's constraint; the cell's parameters are one set
print(f"{len(d.forward)} forward, {len(d.adjoint)} adjoint and {len(d.gradients)} gradient "
      f"equations, derived in {d.seconds:.2f} s")
"""),
    md(r"""
`d` on a line of its own shows the whole derivation at once (`str(d)` as text,
`graph_render.render(d, "latex")` for a document). Here `part(d, ...)` shows it one piece at a
time, each after the words that explain it. The package's names for the textbook's: the state $h_t$ is the
node $\mathrm{h}t$, printed $x^{(\mathrm{h}t)}$; $W_x = \mathrm{cell.W0}$,
$W_h = \mathrm{cell.W1}$, $b = \mathrm{cell.b}$, $V = \mathrm{out.W}$, $c = \mathrm{out.b}$;
$\lambda_{h_t} = \lambda^{(\mathrm{h}t)}$, and $z^{(\mathrm{h}t)}$ is the pre-activation
$z_t = W_x x_t + W_h h_{t-1} + b$.

## 1. The Lagrangian over time

Unrolled, the recurrence is a chain of $T$ layers that all use the same parameters. Every
step's constraint gets its own multiplier, $\lambda_{h_t}$ for $h_t$ and $\lambda_{o_t}$ for
$o_t$; the parameters appear once each, in every step's constraint:
$$\mathcal{L} = \sum_{t=1}^{T} \ell(y_t, o_t)
+ \sum_{t=1}^{T} \lambda_{h_t}^\top\big(h_t - \sigma(W_x x_t + W_h h_{t-1} + b)\big)
+ \sum_{t=1}^{T} \lambda_{o_t}^\top\big(o_t - \sigma_o(V h_t + c)\big).$$
$h_0 = 0$ is a constant, not a variable: it has no constraint and no multiplier. For $T = 3$,
one hidden width of 2 and tanh, written out entry by entry:
"""),
    code(r"""
part(d, "lagrangian")
"""),
    md(r"""
## 2. The stationarity conditions

**(a) $\partial\mathcal{L}/\partial\lambda_{h_t} = 0$ and $\partial\mathcal{L}/\partial
\lambda_{o_t} = 0$.** Each multiplier appears in its own constraint only, so the condition gives
the constraint back: $h_t = \sigma(z_t)$ and $o_t = \sigma_o(z^o_t)$. Since $z_t$ reads
$h_{t-1}$, they are solved in the order $t = 1, 2, \dots, T$: the forward pass runs forward in
time.
"""),
    code(r"""
part(d, "forward")
"""),
    md(r"""
**(b) $\partial\mathcal{L}/\partial h_t = 0$, solved backwards in $t$.** The state $h_t$ appears
in three places: its own constraint ($+\lambda_{h_t}$), the output constraint of step $t$
(through $V h_t$), and the constraint of step $t+1$ (through $W_h h_t$ inside $z_{t+1}$), for
$t < T$. So
$$\frac{\partial\mathcal{L}}{\partial h_t} = \lambda_{h_t}
- V^\top\big(\sigma_o'(z^o_t) \odot \lambda_{o_t}\big)
- W_h^\top\big(\sigma'(z_{t+1}) \odot \lambda_{h_{t+1}}\big) = 0
\;\Longrightarrow\;
\lambda_{h_t} = \underbrace{V^\top\big(\sigma_o'(z^o_t) \odot \lambda_{o_t}\big)}_{\text{output at } t}
+ \underbrace{W_h^\top\big(\sigma'(z_{t+1}) \odot \lambda_{h_{t+1}}\big)}_{\text{step } t+1}.$$
$\lambda_{h_t}$ needs $\lambda_{h_{t+1}}$: the system is triangular the other way round, and is
solved from $t = T$ (where $h_T$ feeds no later step) down to $t = 1$. That is the "through
time" of BPTT. And $\partial\mathcal{L}/\partial o_t = 0$ gives $\lambda_{o_t} =
-\partial\ell/\partial o_t = y_t - o_t$ for the mse loss. Below, SymPy's derivative of
$\mathcal{L}$ for each entry, set to 0 and solved; each sum is shown term by term, under a
brace naming the node whose constraint the term comes from ($\mathrm{o}t$ or $\mathrm{h}(t{+}1)$).
$\sigma' = 1 - h^2$ for tanh appears as the factor $\big((x^{(\mathrm{h}t)})^2 - 1\big)$ with the
sign moved out, and $\lambda^{(\mathrm{h2})}_1$ reads $\mathrm{cell.W1}_{2,1}$: the transpose
$W_h^\top$.
"""),
    code(r"""
part(d, "adjoint")
"""),
    md(r"""
**(c) $\partial\mathcal{L}/\partial\theta$: a sum over the uses of the shared cell.** The cell's
parameters appear in the constraint of every step, so SymPy's derivative of $\mathcal{L}$ is a
sum with one term per use, each the layer's local derivative with the states held fixed:
$$\frac{\partial\mathcal{L}}{\partial W_h} = -\sum_{t} \big(\sigma'(z_t) \odot \lambda_{h_t}\big)
h_{t-1}^\top, \qquad \frac{\partial\mathcal{L}}{\partial W_x} = -\sum_{t}
\big(\sigma'(z_t) \odot \lambda_{h_t}\big) x_t^\top, \qquad \frac{\partial\mathcal{L}}{\partial b}
= -\sum_{t} \sigma'(z_t) \odot \lambda_{h_t}.$$
The $W_h$ sum has no $t = 1$ term, because $h_0 = 0$: the derivation simply has none.
"""),
    code(r"""
part(d, "gradients")
"""),
    md(r"""
**The textbook trap, and why the sum over uses avoids it.** A frequent wrong derivation of
$\partial J/\partial W_h$ writes $\partial h_t/\partial W_h$ as "$\sigma'(z_t)\,h_{t-1}^\top$",
the way one writes $\partial z/\partial W = x^\top$ for a feed-forward layer, treating $h_{t-1}$
as if it were data. But $h_{t-1}$ is itself computed with $W_h$ (and so is $h_{t-2}$, …): the
total derivative $dh_t/dW_h$ has a path through $h_{t-1}$, $h_{t-2}$, …, and dropping it
keeps only the last link of each chain. The Lagrangian never forms $dh_t/dW_h$ at all. In
$\mathcal{L}$ every $h_t$ is a variable of its own, so the partial derivative in (c) really is
$\sigma'(z_t) h_{t-1}^\top$ per use, with $h_{t-1}$ held fixed. The paths the trap drops come
back in two places. The **sum over uses** gives the path through $h_{t-1}$ its own term, the
use at step $t-1$. The **multiplier** weighting each use, $\lambda_{h_t}$, carries the whole
future through the $W_h^\top$ recursion of (b): $\lambda_{h_t} = -\,dJ/dh_t$, the total
derivative through $h_{t+1}, \dots, h_T$. Drop either the sum or the recursion and the result
is not the gradient.

## 3. Why $\partial\mathcal{L}/\partial\theta$ is the gradient of $J$

The argument of notebook 01 §3, unchanged. Let $h(\theta)$, $o(\theta)$ solve (a) and
$\lambda(\theta)$ solve (b). Every constraint then holds, so $J(\theta) =
\mathcal{L}(h(\theta), o(\theta), \lambda(\theta), \theta)$, and by the chain rule
$$\frac{dJ}{d\theta} = \frac{\partial\mathcal{L}}{\partial\theta}
+ \sum_t \frac{\partial\mathcal{L}}{\partial h_t}\frac{dh_t}{d\theta}
+ \sum_t \frac{\partial\mathcal{L}}{\partial o_t}\frac{do_t}{d\theta}
+ \sum_t \frac{\partial\mathcal{L}}{\partial\lambda_t}\frac{d\lambda_t}{d\theta}
= \frac{\partial\mathcal{L}}{\partial\theta},$$
since every $\partial\mathcal{L}/\partial h_t$, $\partial\mathcal{L}/\partial o_t$ and
$\partial\mathcal{L}/\partial\lambda_t$ is $0$. The total derivatives $dh_t/d\theta$ that the
trap gets wrong are multiplied by zero: they never have to be computed. By induction from
$t = T$ down, as in notebook 01 §4, $\lambda_{h_t} = -\partial J/\partial h_t$, and the chain
rule's $\delta_t = \partial J/\partial z_t = -\sigma'(z_t) \odot \lambda_{h_t}$. The update is
gradient descent on the shared parameters, $\theta \leftarrow \theta - \eta\,
\partial\mathcal{L}/\partial\theta$, once per sequence (or batch), not once per step.

## 4. The BPTT algorithm, for any number of steps $T$

The derivation above is for $T = 3$. The equations for every $T$ are **read off** exact
derivations, not typed: the network is derived at $T = 3$ and $T = 4$; the labels of each
$\lambda_{h_t}$'s terms and of each gradient's terms say which occur at which step ($\mathrm{o}t$
and $\mathrm{h}(t{+}1)$ in $\lambda_{h_t}$; the uses $\mathrm{h}t$, $\mathrm{o}t$ in a gradient),
they are written as ranges of $t$, and every term is checked, entry by entry, to be the
textbook term at its step:
"""),
    code(r"""
part(d, "bptt")
"""),
    md(r"""
Read as an algorithm, for one sequence (or a batch, samples side by side):

1. **forward**, $t = 1, \dots, T$: $z_t$, $h_t = \sigma(z_t)$, $o_t$, keeping every $h_t$;
2. **backward**, $t = T, \dots, 1$: $\lambda_{o_t}$, then $\lambda_{h_t}$ from $\lambda_{h_{t+1}}$,
   one product with $W_h^\top$ per step;
3. **gradient**: add each step's term $-(\sigma'(z_t) \odot \lambda_{h_t})\,x_t^\top$,
   $-(\sigma'(z_t) \odot \lambda_{h_t})\,h_{t-1}^\top$, … into the shared parameters' sums;
4. **update** $\theta \leftarrow \theta - \eta\,\partial\mathcal{L}/\partial\theta$.

Both passes cost $O(T)$ products, and the backward pass needs the stored $h_t$. The adding
problem below has a single output, at the last step: its derivation (read again, for that
network) has the output term in $\lambda_{h_t}$ at $t = T$ only:
"""),
    code(r"""
adding = lbp.recurrent(inputs=2, hidden=16, outputs=1, steps=10)  # the network trained below
Markdown(bptt(adding, "markdown"))
"""),
    md(r"""
## 5. The proof

`lbp.verify` proves the derivation of the network above in five steps: (a) the forward
conditions are the forward pass; (b) the solved multipliers make every
$\partial\mathcal{L}/\partial h_t$ vanish, $\partial\mathcal{L}/\partial h_t$ taken afresh from
$\mathcal{L}$; (c) at the KKT point $\partial\mathcal{L}/\partial\theta = \partial J/\partial
\theta$, against forward-mode dual numbers through the unrolled network, where a shared
parameter is *one* variable, so its sum over uses is what is tested; (d) the same with $\sigma$
an undefined function; (e) each $\sigma'$ is SymPy's derivative of $\sigma$. In two lines:
"""),
    code(r"""
report = lbp.verify(rnn)
print(report.summary())
"""),
    md("Each step's claim and method, with the details folded away (click to open):"),
    code(r"""
report
"""),
    md(r"""
## 6. Training an RNN on the adding problem

The adding problem (Hochreiter and Schmidhuber): each step is a pair (value, marker), values
uniform in $[0, 1]$; two markers are 1, one in each half of the sequence; the target is the sum
of the two marked values. Predicting the mean, 1, gives $J = \tfrac12 \operatorname{Var} =
1/12$; beating it needs the network to carry a value over up to $T - 1$ steps. The network is
`adding` above ($T = 10$, hidden width 16, tanh, identity output at $t = T$), compiled into
NumPy kernels printed from the derived equations and trained with Adam:
"""),
    code(r"""
from lagrange_bp.datasets import load
from lagrange_bp.plots import plot_history

data = load("adding", steps=10)
print(data.describe())
model = lbp.compile(adding)
result = lbp.train(model, data.X_train, data.Y_train, epochs=30, batch_size=32, lr=0.01,
                   optimizer="adam", seed=0, validation=(data.X_test, data.Y_test))
test = lbp.evaluate(model, result.params, data.X_test, data.Y_test)
print(f"test loss J = {test['loss']:.4f} (always predicting 1: {1 / 12:.4f})")
"""),
    code(r"""
fig = plot_history(result.history, title="adding problem, T = 10: RNN hidden 16, tanh")
fig.axes[0].axhline(1 / 12, color="gray", linestyle="--", label="always predicting 1 (1/12)")
_ = fig.axes[0].legend(loc="lower left")
"""),
    md(r"""
## 7. The compiled gradients are the derived ones

Two checks of the kernels that trained the network, at the trained parameters. First, central
finite differences of the compiled $J$, entry by entry, against the compiled
$\partial\mathcal{L}/\partial\theta$ (the BPTT of section 4) on 16 test sequences:
"""),
    code(r"""
from lagrange_bp.diagnostics import finite_difference_gradient

X, Y = data.X_test[:16], data.Y_test[:16]
_, grads = model.loss_and_grad(result.params, X, Y)
fd = finite_difference_gradient(model, result.params, X, Y, h=1e-6)
fd_error = max(float(np.max(np.abs(grads[name] - fd[name]))) for name in grads)
print(f"{sum(g.size for g in grads.values())} gradient entries; "
      f"largest |finite difference − compiled| = {fd_error:.1e}")
"""),
    md(r"""
Second, exactly: `lbp.verify(model)` runs each generated kernel's own source over the integers
modulo $2^{61} - 1$ (a random oracle standing for $\tanh$) and compares it with dual numbers
pushed through the unrolled graph. No rounding is involved: a wrong kernel would agree at the
random point with a probability the report bounds (below $10^{-13}$ here; print `compiled` for
the details):
"""),
    code(r"""
compiled = lbp.verify(model)
print(compiled.summary())
"""),
    code(r"""
print(json.dumps({"proven": report.ok, "compiled_proven": compiled.ok, "fd_error": fd_error,
                  "test_loss": test["loss"], "baseline": 1 / 12,
                  "train_loss_first": result.history["train_loss"][0],
                  "train_loss_last": result.history["train_loss"][-1]}))
"""),
]

NOTEBOOKS = {
    "01_homework_kkt_backprop.ipynb": NB1,
    "02_small_network_by_hand.ipynb": NB2,
    "03_training.ipynb": NB3,
    "04_assignment_solution.ipynb": assignment(solution=True),
    "05_bptt_from_the_lagrangian.ipynb": NB5,
}


def build(name: str, cells: list[nbformat.NotebookNode], execute: bool = True) -> None:
    """Execute the cells and write the notebook. Cell ids follow the cell's place and no
    timestamps are stored, so rebuilding unchanged cells changes only what they print."""
    nb = nbformat.v4.new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name.split('_')[0]}-cell-{i:02d}"
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if execute:
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(HERE)}},
        ).execute()
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, HERE / name)
    print(f"wrote {name}")


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        if len(sys.argv) == 1 or name in sys.argv[1:]:
            build(name, cells)
    if len(sys.argv) == 1 or "04_assignment.ipynb" in sys.argv[1:]:
        build("04_assignment.ipynb", assignment(solution=False), execute=False)  # for students
