"""Train the digits network on several processes: the exported module (``lbp.to_torch``), whose
backward is the derived adjoint, under ``DistributedDataParallel``.

    torchrun --nproc_per_node=2 examples/ddp_digits.py --epochs 2

Every process takes its part of each global mini-batch (the same seeded shuffles as
``lbp.train``), DDP averages the gradients, and the parameters are those of one process
training on the whole batches. CPU processes talk through gloo; with ``--device cuda`` each
process takes the GPU of its local rank and NCCL.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

import lagrange_bp as lbp
from lagrange_bp.datasets import load
from lagrange_bp.torch_export import fit

SPEC = lbp.NetworkSpec((64, 128, 10), ("tanh", "softmax"), "cross_entropy")


def run(
    epochs: int = 2, batch_size: int = 32, lr: float = 0.1, seed: int = 0, device: str = "cpu"
) -> lbp.TrainResult:
    """Train SPEC on digits: under DDP when a process group is up, else in this process."""
    data = load("digits")
    module = lbp.to_torch(SPEC, device=device, seed=seed)
    net = torch.nn.parallel.DistributedDataParallel(module) if dist.is_initialized() else module
    return fit(
        net,
        data.X_train,
        data.Y_train,
        epochs,
        batch_size,
        lr,
        seed,
        validation=(data.X_test, data.Y_test),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch (all ranks)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    device = args.device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")  # env:// from torchrun
    try:
        result = run(args.epochs, args.batch_size, args.lr, device=device)
        if dist.get_rank() == 0:
            h = result.history
            print(
                f"{dist.get_world_size()} processes, {SPEC.describe()}, global batch "
                f"{args.batch_size}"
            )
            for epoch, loss, acc in zip(h["epoch"], h["train_loss"], h["val_accuracy"]):
                print(f"epoch {int(epoch)}: train loss {loss:.5f}, test accuracy {100 * acc:.2f}%")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
