"""The training commands: ``lagrange-bp train`` and ``lagrange-bp evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .checkpoint import CheckpointError
from .cli_graph import (
    RECURRENT_DEFAULTS,
    add_graph_args,
    check_graph_options,
    read_graph,
    recurrent_from_args,
    recurrent_steps,
    step_sizes,
    with_weight_decay,
)
from .datasets import BUILTIN, Dataset, load, load_file
from .functions import ACTIVATIONS, LOSSES, get_loss
from .graph import GraphSpec
from .graph_model import check_graph_memory
from .model import DTYPES, Model, Params, check_memory
from .model import compile as compile_model
from .optimizers import OPTIMIZERS
from .plots import plot_history
from .safe_io import printable, shown, writable
from .sequences import SEQUENCES
from .spec import NetworkSpec
from .train import TrainingDiverged, evaluate, train

TRAIN_RECURRENT = {**RECURRENT_DEFAULTS, "hidden": 16, "steps": 10}  # --recurrent's defaults


class BadInput(Exception):
    """A user error: reported on one line, exit status 2."""


def split_names(text: str) -> list[str]:
    """Split on commas outside brackets, so expressions such as 'z*tanh(z)' stay whole."""
    names, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += ch
    return [*names, current.strip()]


def add_data_args(p: argparse.ArgumentParser, defaults: str = "") -> None:
    p.add_argument("--dataset", help=f"a built-in dataset: {', '.join(BUILTIN)}{defaults}")
    p.add_argument("--data", help=f"your own .csv (with a header row) or .npz file{defaults}")
    p.add_argument("--target", help="the target column of --data (an array name for .npz)")
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the train/test split, ≥ 0 (default 0"
        + (", or the one the model was trained with)" if defaults else ")"),
    )


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train with the generated kernels (mini-batch SGD)")
    add_data_args(p)
    p.add_argument("--widths", help="n_0,...,n_N (default: features,64,outputs)")
    p.add_argument(
        "--activations",
        help=f"one or N activations, comma-separated: {', '.join(ACTIVATIONS)} or an expression "
        "in z such as 'z*tanh(softplus(z))' (default tanh,softmax or tanh,identity); with "
        "--recurrent CELL[,OUTPUT]",
    )
    p.add_argument(
        "--loss",
        help=f"{' or '.join(LOSSES)}, or an expression in x (output) and y (target) such as "
        "'log(cosh(x - y))' (default: cross_entropy for classes, mse otherwise)",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        metavar="ALPHA",
        help="α ≥ 0: train on J + (α/2) Σ_k ‖W^k‖², derived and proven with it (default 0; "
        "with --graph FILE, the file's own α)",
    )
    p.add_argument("--epochs", type=int, default=30, help="passes over the data (default 30)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per SGD step (default 32)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate η (default 0.1)")
    p.add_argument(
        "--seed", type=int, default=0, help="initial weights and shuffling, ≥ 0 (default 0)"
    )
    p.add_argument("--dtype", choices=DTYPES, default="float64", help="(default float64)")
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default="sgd",
        help="update rule on the derived gradient, as torch.optim defines it (default sgd)",
    )
    p.add_argument(
        "--momentum", type=float, default=0.9, help="μ of momentum and nesterov (default 0.9)"
    )
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop when the test-split loss has not improved for this many epochs, keeping "
        "the best epoch's parameters",
    )
    p.add_argument(
        "--resume",
        help="continue the run saved in this .npz file (train --save): its parameters, "
        "shuffling and optimizer state; --epochs more epochs",
    )
    p.add_argument("--save", help="write the trained model to this .npz file")
    p.add_argument("--plot", help="write the learning curves to this .png file")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--backend",
        choices=("numpy", "torch"),
        default="numpy",
        help="numpy: the generated NumPy kernels; torch: the module lbp.to_torch exports, its "
        "backward the derived adjoint, with torch.optim (needs PyTorch) (default numpy)",
    )
    p.add_argument("--device", help="with --backend torch: cpu (default) or cuda")
    add_graph_args(p, sizes=False, defaults=TRAIN_RECURRENT)
    p = sub.add_parser("evaluate", help="evaluate a saved model on a dataset's test split")
    p.add_argument("--model", required=True, help="a .npz file written by train --save")
    add_data_args(p, " (default: the one the model was trained on)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _seed(value: int | None, option: str) -> int:
    if value is None:
        return 0
    if value < 0:
        raise BadInput(f"{option} must be a non-negative integer, got {value}")
    return value


def dataset(args: argparse.Namespace, graph: GraphSpec | None = None) -> Dataset:
    if bool(args.dataset) == bool(args.data):
        raise BadInput("give either --dataset NAME or --data FILE --target COLUMN")
    split_seed = _seed(args.split_seed, "--split-seed")
    try:
        if args.dataset in SEQUENCES:  # T and the targets' steps from the graph
            options = sequence_options(args, graph)
            return load(args.dataset, split_seed=split_seed, **options)
        if args.dataset:
            return load(args.dataset, split_seed=split_seed)
        if not args.target:
            raise BadInput("--data needs --target COLUMN (the column to predict)")
        return load_file(args.data, args.target, split_seed=split_seed)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _outputs(args: argparse.Namespace) -> None:
    """Check before training that --save and --plot can be written (a folder, a device, a
    read-only place or a path under a file would fail only after the work)."""
    if args.save:
        try:
            writable(Path(args.save), "--save")
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    if args.plot:
        path = Path(args.plot)
        if path.is_dir() or path.name in ("", ".."):
            raise BadInput(f"cannot write --plot {shown(args.plot)}: it is a folder")
        if path.suffix == "":
            path = path.with_suffix(".png")
        elif path.suffix.lower() != ".png":
            raise BadInput(
                f"--plot writes a PNG image: give a name ending in .png, got {shown(args.plot)}"
            )
        try:
            writable(path, "--plot")
        except ValueError as exc:
            raise BadInput(str(exc)) from None
        args.plot = str(path)


def spec_for(args: argparse.Namespace, data: Dataset) -> NetworkSpec:
    classify = data.task == "classification"
    try:
        widths = (
            [int(w) for w in args.widths.split(",")]
            if args.widths
            else [data.n_features, 64, data.n_outputs]
        )
    except ValueError:
        raise BadInput(f"widths must be comma-separated integers, got {args.widths!r}") from None
    acts = (
        split_names(args.activations)
        if args.activations is not None
        else ["tanh"] * (len(widths) - 2) + ["softmax" if classify else "identity"]
    )
    try:
        loss = args.loss if args.loss is not None else ("cross_entropy" if classify else "mse")
        spec = NetworkSpec(widths, acts, loss, args.weight_decay or 0.0)
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    check_fits(spec, data, "--widths")
    return spec


def check_fits(spec: NetworkSpec | GraphSpec, data: Dataset, what: str) -> None:
    if isinstance(spec, GraphSpec):
        ins, outs = sum(spec.input_widths), sum(spec.output_widths)
        if (ins, outs) != (data.n_features, data.n_outputs):
            raise BadInput(
                f"{what} takes {ins} inputs and gives {outs} outputs, which does not fit "
                f"{data.name}: it has {data.n_features} features and {data.n_outputs} outputs"
            )
    elif spec.widths[0] != data.n_features or spec.widths[-1] != data.n_outputs:
        raise BadInput(
            f"{what} is {'-'.join(map(str, spec.widths))}, which does not fit {data.name}: it has "
            f"{data.n_features} features (n_0) and {data.n_outputs} outputs (n_N)"
        )
    loss = get_loss(spec.loss)
    if loss.classification and data.task != "classification":
        raise BadInput(f"{loss.text} needs class labels, but {data.name} is a regression target")


def _positive(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "lr"):
        value = getattr(args, name)
        if not (value > 0 and np.isfinite(value)):
            raise BadInput(f"--{name.replace('_', '-')} must be a finite number > 0, got {value}")


def _resumed(args: argparse.Namespace, spec: NetworkSpec | GraphSpec) -> tuple[Any, dict[str, Any]]:
    """The parameters and training state saved by ``train --save``, for this same network."""
    try:
        saved, params, info = checkpoint.load(args.resume)
    except CheckpointError as exc:
        raise BadInput(f"--resume: {exc}") from None
    if saved != spec:
        raise BadInput(
            f"--resume: {printable(args.resume)} holds {saved.describe()}, not {spec.describe()}"
        )
    state = info.get("training_state")
    if not state:
        raise BadInput(f"--resume: {printable(args.resume)} holds no training state to continue")
    if state["optimizer"]["name"] != args.optimizer:
        raise BadInput(
            f"--resume: the run used --optimizer {state['optimizer']['name']}, not {args.optimizer}"
        )
    return params, state


def graph_arg(args: argparse.Namespace) -> GraphSpec | None:
    """The graph of --graph FILE (read as derive and verify read it), or None; refuses clashes."""
    try:
        check_graph_options(args)
        graph = with_weight_decay(read_graph(args.graph), args) if args.graph else None
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if (args.graph or args.recurrent) and args.widths:
        raise BadInput("--widths does not apply to --graph/--recurrent; drop it")
    return graph


def sequence_options(args: argparse.Namespace, graph: GraphSpec | None) -> dict[str, Any]:
    """Steps T and targets for the sequence datasets, from --recurrent or the graph's inputs."""
    if getattr(args, "recurrent", False):
        steps, at = recurrent_steps(args, TRAIN_RECURRENT)
        return {"steps": steps, "outputs_at": at}
    if graph is None:
        return {}
    steps = len(graph.input_widths)
    every = len(graph.outputs) == steps and steps > 1
    return {"steps": steps, "outputs_at": "every" if every else "last"}


def graph_for(args: argparse.Namespace, graph: GraphSpec | None, data: Dataset) -> GraphSpec:
    """--graph's spec checked against the data, or --recurrent's Elman network for it."""
    if graph is None:
        graph = _recurrent_spec(args, data)
    check_fits(graph, data, "--graph" if args.graph else "--recurrent")
    return graph


def _recurrent_spec(args: argparse.Namespace, data: Dataset) -> GraphSpec:
    """--recurrent's network, its sizes per step from the data, its loss train's default."""
    loss = "cross_entropy" if data.task == "classification" else "mse"
    try:
        ins, outs = step_sizes(args, data.n_features, data.n_outputs, TRAIN_RECURRENT, data.name)
        return recurrent_from_args(args, ins, outs, defaults=TRAIN_RECURRENT, loss=loss)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def cmd_train(args: argparse.Namespace) -> int:
    _positive(args)
    args.seed = _seed(args.seed, "--seed")
    graph = graph_arg(args)
    data = dataset(args, graph)
    spec = graph_for(args, graph, data) if graph or args.recurrent else spec_for(args, data)
    _outputs(args)
    try:
        model = compile_model(spec, args.dtype)
        if isinstance(spec, NetworkSpec):
            check_memory(spec, args.batch_size, np.dtype(args.dtype).itemsize)
        else:
            check_graph_memory(spec, args.batch_size, np.dtype(args.dtype).itemsize)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    params, state = None, None
    if args.resume:
        params, state = _resumed(args, spec)
    start: Any = params if params is not None else model.init_params(args.seed)
    start_loss = model.loss(start, data.X_train, data.Y_train)
    bar = _progress_bar(args.epochs, quiet=args.json)
    try:
        trainer = train if args.backend == "numpy" and not args.device else _torch_trainer(args)
        result = trainer(
            model,
            data.X_train,
            data.Y_train,
            args.epochs,
            args.batch_size,
            args.lr,
            args.seed,
            params,
            validation=(data.X_test, data.Y_test),
            on_epoch=lambda e, m: bar(e, m),
            optimizer=args.optimizer,
            momentum=args.momentum,
            patience=args.patience,
            resume=state,
        )
    except TrainingDiverged as exc:
        bar(None, None)
        print(f"lagrange-bp: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # data the model's checks refuse
        bar(None, None)
        raise BadInput(str(exc)) from None
    bar(None, None)
    final = {
        "train": evaluate(model, result.params, data.X_train, data.Y_train),
        "test": evaluate(model, result.params, data.X_test, data.Y_test),
    }
    summary = {
        "dataset": data.describe(),
        "spec": spec.describe(),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "seconds": round(result.seconds, 3),
        "final": final,
        "history": result.history,
    }
    end_loss = final["train"]["loss"]
    if end_loss > start_loss:
        print(
            f"lagrange-bp: warning: the training loss grew from {start_loss:.4g} to "
            f"{end_loss:.4g}; the learning rate ({args.lr:g}) may be too large",
            file=sys.stderr,
        )
    if args.save:
        info = {k: summary[k] for k in ("dataset", "epochs", "batch_size", "lr", "seed")}
        info["source"] = (
            {"dataset": args.dataset}
            if args.dataset
            else {"data": str(Path(args.data).resolve()), "target": args.target}
        )
        info["split_seed"] = _seed(args.split_seed, "--split-seed")
        try:
            checkpoint.save(args.save, spec, result.params, info, result.state)
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot write --save {printable(args.save)}: {exc}") from None
    if args.plot:
        plot_history(result.history, args.plot, f"{data.name}: {spec.describe()}")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{data.describe()}\nnetwork {spec.describe()}; {args.epochs} epochs, batch "
            f"{args.batch_size}, lr {args.lr:g}, seed {args.seed}"
        )
        print(results_table(final))
        print(f"time {result.seconds:.2f} s ({result.seconds / args.epochs:.3f} s per epoch)")
        for what, path in (("model", args.save), ("learning curves", args.plot)):
            if path:
                print(f"{what} written to {printable(path)}")
    return 0


def _torch_trainer(args: argparse.Namespace) -> Any:
    """``train``'s call on the exported torch module (``torch_export.fit``), same batches."""
    if args.backend != "torch":
        raise BadInput("--device needs --backend torch")
    if args.graph or args.recurrent:
        raise BadInput("--backend torch trains --widths networks; --graph, --recurrent: numpy")
    if args.patience is not None or args.resume:
        raise BadInput("--patience and --resume are not offered with --backend torch")
    try:
        from . import torch_export
    except ImportError as exc:
        raise BadInput(f"--backend torch: {exc}") from None

    def run(
        model: Model,
        X: Any,
        Y: Any,
        epochs: int,
        batch: int,
        lr: float,
        seed: int,
        params: Params | None,
        **options: Any,
    ) -> Any:
        for unused in ("patience", "resume"):  # None: refused above
            options.pop(unused)
        module = torch_export.to_torch(model.spec, args.dtype, args.device, seed=seed)
        return torch_export.fit(module, X, Y, epochs, batch, lr, seed, **options)

    return run


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        spec, params, info = checkpoint.load(args.model)
    except checkpoint.CheckpointError as exc:
        raise BadInput(str(exc)) from None
    _trained_on(args, info)
    data = dataset(args, spec if isinstance(spec, GraphSpec) else None)
    shown_model = printable(args.model)
    check_fits(spec, data, f"the network in {shown_model}")
    model = compile_model(spec)
    final = {"test": evaluate(model, params, data.X_test, data.Y_test)}
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "spec": spec.describe(), "info": info, "final": final},
                indent=2,
            )
        )
    else:
        print(f"{shown_model}: network {spec.describe()}\n{data.describe()}")
        print(results_table(final))
    return 0


def _trained_on(args: argparse.Namespace, info: dict[str, Any]) -> None:
    """Evaluate on the test split the model was not trained on: by default the dataset and
    split seed stored in the model file; another split seed of the same data is refused (its
    test rows were training rows), another dataset gets a warning."""
    source = info.get("source") if isinstance(info.get("source"), dict) else None
    stored_seed = info.get("split_seed")
    if not args.dataset and not args.data and source:
        args.dataset = source.get("dataset") if isinstance(source.get("dataset"), str) else None
        args.data = source.get("data") if isinstance(source.get("data"), str) else None
        args.target = args.target or source.get("target")
    same_data = source is not None and (
        (args.dataset and source.get("dataset") == args.dataset)
        or (args.data and source.get("data") == str(Path(args.data).resolve()))
    )
    if isinstance(stored_seed, int):
        if args.split_seed is None:
            args.split_seed = stored_seed
        elif same_data and args.split_seed != stored_seed:
            raise BadInput(
                f"the model was trained on the split with --split-seed {stored_seed}; the test "
                f"rows of split {args.split_seed} include rows it was trained on, so its figures "
                f"would not be held-out ones. Use --split-seed {stored_seed}"
            )
    if source is not None and not same_data and (args.dataset or args.data):
        print(
            "lagrange-bp: warning: the model was trained on "
            f"{printable(str(source.get('dataset') or source.get('data')))}, not on this data",
            file=sys.stderr,
        )


def results_table(final: dict[str, dict[str, float]]) -> str:
    has_acc = any("accuracy" in m for m in final.values())
    lines = [f"{'':8}{'loss':>12}" + (f"{'accuracy':>12}" if has_acc else "")]
    for split, m in final.items():
        acc = f"{100 * m['accuracy']:>11.2f}%" if "accuracy" in m else ""
        loss = m["loss"]
        shown = f"{loss:>12.5f}" if abs(loss) < 1e6 else f"{loss:>12.4g}"
        lines.append(f"{split:8}{shown}{acc}")
    return "\n".join(lines)


def _progress_bar(epochs: int, quiet: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, disable=quiet or None)

    def update(epoch: int | None, metrics: dict[str, float] | None) -> None:
        if epoch is None or metrics is None:
            bar.close()
            return
        shown = {"loss": f"{metrics['train_loss']:.4f}"}
        if "val_accuracy" in metrics:
            shown["test acc"] = f"{100 * metrics['val_accuracy']:.1f}%"
        bar.set_postfix(shown)
        bar.update(1)

    return update
