"""The training commands: ``lagrange-bp train`` and ``lagrange-bp evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from . import checkpoint
from .datasets import BUILTIN, Dataset, load, load_file
from .functions import get_loss
from .model import DTYPES, Model
from .plots import plot_history
from .spec import NetworkSpec
from .train import TrainingDiverged, evaluate, train


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


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help=f"a built-in dataset: {', '.join(BUILTIN)}")
    p.add_argument("--data", help="your own .csv (with a header row) or .npz file")
    p.add_argument("--target", help="the target column of --data (an array name for .npz)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")


def add_train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train with the generated kernels (mini-batch SGD)")
    add_data_args(p)
    p.add_argument("--widths", help="n_0,...,n_N (default: features,64,outputs)")
    p.add_argument("--activations", help="one or N names (default tanh,softmax or tanh,identity)")
    p.add_argument("--loss", help="mse or cross_entropy (default: by task)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="initial weights and shuffling")
    p.add_argument("--dtype", choices=DTYPES, default="float64")
    p.add_argument("--save", help="write the trained model to this .npz file")
    p.add_argument("--plot", help="write the learning curves to this .png file")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p = sub.add_parser("evaluate", help="evaluate a saved model on a dataset's test split")
    p.add_argument("--model", required=True, help="a .npz file written by train --save")
    add_data_args(p)
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def dataset(args: argparse.Namespace) -> Dataset:
    if bool(args.dataset) == bool(args.data):
        raise BadInput("give either --dataset NAME or --data FILE --target COLUMN")
    try:
        if args.dataset:
            return load(args.dataset, split_seed=args.split_seed)
        if not args.target:
            raise BadInput("--data needs --target COLUMN (the column to predict)")
        return load_file(args.data, args.target, split_seed=args.split_seed)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


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
        if args.activations
        else ["tanh"] * (len(widths) - 2) + ["softmax" if classify else "identity"]
    )
    try:
        spec = NetworkSpec(widths, acts, args.loss or ("cross_entropy" if classify else "mse"))
    except (ValueError, TypeError) as exc:
        raise BadInput(str(exc)) from None
    check_fits(spec, data, "--widths")
    return spec


def check_fits(spec: NetworkSpec, data: Dataset, what: str) -> None:
    if spec.widths[0] != data.n_features or spec.widths[-1] != data.n_outputs:
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


def cmd_train(args: argparse.Namespace) -> int:
    _positive(args)
    data = dataset(args)
    spec = spec_for(args, data)
    model = Model(spec, args.dtype)
    bar = _progress_bar(args.epochs, quiet=args.json)
    try:
        result = train(
            model,
            data.X_train,
            data.Y_train,
            args.epochs,
            args.batch_size,
            args.lr,
            args.seed,
            validation=(data.X_test, data.Y_test),
            on_epoch=lambda e, m: bar(e, m),
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
    if args.save:
        checkpoint.save(
            args.save,
            spec,
            result.params,
            {k: summary[k] for k in ("dataset", "epochs", "batch_size", "lr", "seed")},
        )
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
                print(f"{what} written to {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        spec, params, info = checkpoint.load(args.model)
    except checkpoint.CheckpointError as exc:
        raise BadInput(str(exc)) from None
    data = dataset(args)
    check_fits(spec, data, f"the network in {args.model}")
    model = Model(spec)
    final = {"test": evaluate(model, params, data.X_test, data.Y_test)}
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "spec": spec.describe(), "info": info, "final": final},
                indent=2,
            )
        )
    else:
        print(f"{args.model}: network {spec.describe()}\n{data.describe()}")
        print(results_table(final))
    return 0


def results_table(final: dict[str, dict[str, float]]) -> str:
    has_acc = any("accuracy" in m for m in final.values())
    lines = [f"{'':8}{'loss':>12}" + (f"{'accuracy':>12}" if has_acc else "")]
    for split, m in final.items():
        acc = f"{100 * m['accuracy']:>11.2f}%" if "accuracy" in m else ""
        lines.append(f"{split:8}{m['loss']:>12.5f}{acc}")
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
