"""Build the three homework notebooks from their cells and execute them, storing the outputs.

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

**Problem.** Training an $N$-layer perceptron on a batch of $B$ samples is the constrained problem

$$\min_{W, b}\ J = \frac{1}{B}\sum_{i=1}^{B} \ell\big(y^{(i)}, x^{(N,i)}\big)
\quad\text{subject to}\quad x^{(k)} = \sigma_k\big(W^{(k)} x^{(k-1)} + b^{(k)}\big),\ k = 1,\dots,N.$$

Write its Lagrangian, and show that its stationarity (KKT) conditions give (1) the forward
pass, (2) the backward pass and (3) the gradient and update rule of backpropagation.

Every formula below is derived live by `lagrange_bp` (SymPy's matrix calculus on the
Lagrangian, samples as the columns of $X^{(k)}$) and proven at the end for every depth and width.
"""),
    setup("Markdown, Math, display"),
    code("""
from lagrange_bp.functions import get_activation, get_loss
from lagrange_bp.generic import derive_generic, output_adjoint_for, output_vjp_for, vjp_for
from lagrange_bp.render_generic import latex, matrix_form

g = derive_generic()  # the generic layer k: symbolic widths n_{k-1}, n_k, n_{k+1} and batch B
print("derived the generic layer k, with σ and the loss ℓ left abstract")
"""),
    md(r"""
## (1) The Lagrangian

One multiplier $\Lambda^{(k)}$ (a matrix, one column per sample) per constraint. The terms that
contain layer $k$'s states are those of constraints $k$ and $k+1$:
"""),
    code(r"""
display(Math(r"\mathcal{L} = J + \sum_k \operatorname{tr}\big(\Lambda^{(k)\top}(X^{(k)} - \sigma_k(Z^{(k)}))\big),"
             r"\qquad Z^{(k)} = W^{(k)} X^{(k-1)} + b^{(k)} \mathbf{1}^\top"))
display(Math(r"\mathcal{L} \ni " + latex(g.interior_lagrangian)))
"""),
    md(r"""
## (2) $\partial\mathcal{L}/\partial\Lambda^{(k)} = 0$ gives the forward pass

Differentiating with respect to the multiplier gives back the constraint:
"""),
    code(r"""
display(Math(r"\frac{\partial \mathcal{L}}{\partial \Lambda^{(k)}} = 0 \;\Rightarrow\; X^{(k)} = "
             + latex(g.forward.rhs)))
"""),
    md(r"""
## (3) $\partial\mathcal{L}/\partial X^{(k)} = 0$ gives the backward pass

$X^{(k)}$ appears in constraint $k$ (as itself) and in constraint $k+1$ (inside $Z^{(k+1)}$).
Setting the derivative to zero and solving for $\Lambda^{(k)}$ gives a recursion that runs
*backwards*, from the output layer, whose multiplier comes from the loss:
"""),
    code(r"""
display(Math(r"\Lambda^{(k)} = " + latex(g.adjoint.rhs) + r",\qquad G^{(k+1)} = "
             + latex(g.vjp.rhs, layer="k+1")))
for loss in ("mse", "cross_entropy"):
    display(Math(r"\text{" + loss.replace("_", " ") + r":}\quad \Lambda^{(N)} = "
                 + latex(matrix_form(output_adjoint_for(get_loss(loss))), layer="N")))
"""),
    md(r"""
## (4) $\partial\mathcal{L}/\partial W^{(k)}$ and $\partial\mathcal{L}/\partial b^{(k)}$ give the update rule
"""),
    code(r"""
display(Math(r"\frac{\partial \mathcal{L}}{\partial W^{(k)}} = " + latex(g.weight_gradient.rhs)
             + r",\qquad \frac{\partial \mathcal{L}}{\partial b^{(k)}} = " + latex(g.bias_gradient.rhs)))
display(Math(r"W^{(k)} \leftarrow W^{(k)} - \eta \frac{\partial \mathcal{L}}{\partial W^{(k)}},\qquad "
             r"b^{(k)} \leftarrow b^{(k)} - \eta \frac{\partial \mathcal{L}}{\partial b^{(k)}}"))
"""),
    md(r"""
For each activation, $G^{(k)} = J_{\sigma}(Z^{(k)})^\top \Lambda^{(k)}$ is (SymPy's derivative of
$\sigma$ applied entrywise):
"""),
    code(r"""
for name in ("sigmoid", "tanh", "relu", "softmax"):
    display(Math(r"\text{" + name + r":}\quad G^{(k)} = " + latex(vjp_for(get_activation(name)))))
fused = output_vjp_for(get_activation("softmax"), get_loss("cross_entropy"))
display(Math(r"\text{softmax + cross-entropy, } \textstyle\sum_j y_j = 1:\quad G^{(N)} = "
             + latex(matrix_form(fused), layer="N")))
"""),
    md(r"""
## The link to the chain rule's $\delta$

The notes define $\delta^{(k)} = \partial J/\partial z^{(k)}$. The derivation gives
$\Lambda^{(k)} = -\partial J/\partial X^{(k)}$, so $\delta^{(k)} = -G^{(k)} =
-\sigma_k'(Z^{(k)}) \odot \Lambda^{(k)}$, and the backward recursion above is exactly
$\delta^{(k)} = \sigma_k'(Z^{(k)}) \odot W^{(k+1)\top}\delta^{(k+1)}$, with
$\partial J/\partial W^{(k)} = \delta^{(k)} X^{(k-1)\top}$.

## The backpropagation algorithm that results
"""),
    code(r"""
from lagrange_bp.render_generic import ALGORITHM

display(Markdown("\n".join(f"{i}. `{line}`" for i, line in enumerate(ALGORITHM, 1))))
"""),
    md(r"""
## The proof, for every $N$ and every width

By induction on $k = N, \dots, 1$: $\Lambda^{(N)} = -\partial J/\partial X^{(N)}$; if
$\Lambda^{(k+1)} = -\partial J/\partial X^{(k+1)}$ then $\Lambda^{(k)} = -\partial J/\partial X^{(k)}$;
hence $\partial\mathcal{L}/\partial\theta = \partial J/\partial\theta$. Each step is an exact
symbolic identity with $\sigma$ an undefined function; the generic equations are then checked
against exact derivations at concrete sizes.
"""),
    code(r"""
from lagrange_bp.verify_general import verify_general

report = verify_general()
print(report)
"""),
    md(r"""
And a concrete network, entry by entry (2-2-1, tanh then sigmoid), proven the same way:
"""),
    code(r"""
spec = lbp.NetworkSpec((2, 2, 1), ("tanh", "sigmoid"), "mse")
small = lbp.verify(spec)
print(small)
print(json.dumps({"general_proven": report.ok, "small_proven": small.ok}))
"""),
]

NB2 = [
    md(r"""
# A 2-3-1 network by hand, entry by entry

Every weight, state and multiplier is its own symbol. We write the Lagrangian of one sample,
derive every equation, prove it, run one forward and backward pass with numbers, check it
against finite differences, and finally check a derivation *you* might hand in.
"""),
    setup("Markdown, display"),
    code(r"""
from lagrange_bp.render import render

spec = lbp.NetworkSpec((2, 3, 1), "sigmoid", "mse")
d = lbp.derive(spec)
display(Markdown(render(d, "markdown")))
"""),
    md("## The exact proof"),
    code(r"""
report = lbp.verify(spec)
print(report)
"""),
    md(r"""
## One forward and backward pass with numbers

We pick small numbers, evaluate the *derived* forward equations, then the *derived* adjoint
equations from the output layer down, then the gradient — exactly the symbols above.
"""),
    code(r"""
(W1, b1), (W2, b2) = d.params
values = {
    **dict(zip(W1, [0.5, -0.3, 0.8, 0.2, -0.6, 0.4])), **dict(zip(b1, [0.1, -0.2, 0.05])),
    **dict(zip(W2, [0.7, -0.5, 0.3])), **dict(zip(b2, [0.2])),
    **dict(zip(d.input, [1.0, 2.0])), **dict(zip(d.target, [1.0])),
}
for eq in d.forward + d.adjoint:  # forward k = 1..N, then adjoint k = N..1
    values[eq.lhs] = float(eq.rhs.subs(values))
    print(f"{eq.lhs!s:8} = {values[eq.lhs]: .6f}")
grads = {p: float(g.subs(values)) for p, g in d.gradients.items()}
for p, v in grads.items():
    print(f"dL/d{p!s:8} = {v: .6f}")
"""),
    md(r"""
The compiled NumPy model — kernels generated from the generic equations — gives the same numbers:
"""),
    code(r"""
model = lbp.compile(spec)
params = [(np.array([[0.5, -0.3], [0.8, 0.2], [-0.6, 0.4]]), np.array([0.1, -0.2, 0.05])),
          (np.array([[0.7, -0.5, 0.3]]), np.array([0.2]))]
X, Y = np.array([[1.0, 2.0]]), np.array([[1.0]])
loss, model_grads = model.loss_and_grad(params, X, Y)
flat = np.concatenate([np.concatenate([gW.ravel(), gb]) for gW, gb in model_grads])
gap = float(np.max(np.abs(flat - np.array(list(grads.values())))))
print("loss J =", loss)
print("largest |symbolic − compiled| gradient entry:", gap)
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
print(json.dumps({"proven": report.ok, "compiled_gap": gap, "fd_error": fd_error,
                  "right_rule_ok": right.ok, "wrong_rule_ok": wrong.ok}))
"""),
]

NB3 = [
    md(r"""
# Training on digits with the generated trainer

The network 64-128-10 (tanh, softmax, cross-entropy) is compiled into NumPy kernels printed
from the derived equations, and trained with mini-batch SGD. Along the way we watch the KKT
conditions: the forward and adjoint residuals stay at rounding level at every step, while the
gradient $\|\partial\mathcal{L}/\partial\theta\|$ falls.
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
steps, residuals = [], {"forward residual": [], "adjoint residual": [], "‖∂L/∂θ‖": []}
probe_X, probe_Y = data.X_train[:256], data.Y_train[:256]

def watch(epoch, batch, params):
    step = (epoch - 1) * 43 + batch
    if step % 20 == 1:
        r = kkt_residuals(model, params, probe_X, probe_Y)
        steps.append(step)
        for key, value in zip(residuals, r.values()):
            residuals[key].append(value)

result = lbp.train(model, data.X_train, data.Y_train, epochs=30, batch_size=32, lr=0.1, seed=0,
                   validation=(data.X_test, data.Y_test), on_batch=watch)
test = lbp.evaluate(model, result.params, data.X_test, data.Y_test)
print(f"{result.seconds:.2f} s; test accuracy {100 * test['accuracy']:.2f}%, test loss {test['loss']:.4f}")
"""),
    code(r"""
_ = plot_history(result.history, title="digits 64-128-10, tanh/softmax")
"""),
    code(r"""
_ = plot_residuals(steps, residuals)
print("largest forward residual:", max(residuals["forward residual"]))
print("largest adjoint residual:", max(residuals["adjoint residual"]))
print("gradient norm, first → last:", residuals["‖∂L/∂θ‖"][0], "→", residuals["‖∂L/∂θ‖"][-1])
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
print(json.dumps({"test_accuracy": test["accuracy"], "forward_residual": max(residuals["forward residual"]),
                  "adjoint_residual": max(residuals["adjoint residual"]),
                  "gradient_first": residuals["‖∂L/∂θ‖"][0], "gradient_last": residuals["‖∂L/∂θ‖"][-1],
                  "reference_gap": reference_gap, "torch_gap": torch_gap}))
"""),
]

NOTEBOOKS = {
    "01_homework_kkt_backprop.ipynb": NB1,
    "02_small_network_by_hand.ipynb": NB2,
    "03_training.ipynb": NB3,
}


def build(name: str, cells: list[nbformat.NotebookNode]) -> None:
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
