"""Forward speed (images/s) of the dense LeNet-5 against physically pruned ones, on the CPU.

Builds the 28x28 LeNet-5 (conv 20, conv 50, fc 500, fc 10) and two pruned copies made by
``prune_units``: half the filters / neurons of every hidden layer removed (10-25-250) and about
90 % of them removed (2-5-50). Times batches of random float32 images under
``torch.inference_mode`` (the costs do not depend on the pixel values), the networks taking
turns in every round so that they share the machine's load (and the units a group-HARD
compression of LeNet-5 on Fashion-MNIST kept, 20-26-121); prints the best images/s of each
over the rounds, the ratio to the dense network, and the weights and multiply-adds.
``--runs`` adds the pruned networks of LeNet-5 compression run folders (``architecture.json``
and ``pruned_state.pt``), named after their folders. ``--pool`` picks the max-pool every
network uses: ``fast`` (the networks' own :class:`~pyronas.compress.networks.MaxPool2x2`; older
run folders' ``nn.MaxPool2d`` are swapped for it) or ``torch`` (``nn.MaxPool2d(2)``, torch's
NCHW kernel); both compute the same numbers.

    python benchmarks/compress_speed.py [--batch 256] [--rounds 7] [--seconds 0.5] [--threads 1]
        [--pool fast|torch] [--runs runs/compress/lenet5-fashion-mnist-s0 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from pyronas.compress.networks import (
    MaxPool2x2,
    build_network,
    network_from_description,
    prunable_layers,
)
from pyronas.compress.surgery import count_flops, count_weights, prune_units

KEPT: dict[str, dict[str, int]] = {
    "dense": {"conv1": 20, "conv2": 50, "fc1": 500},
    "half": {"conv1": 10, "conv2": 25, "fc1": 250},
    "90% fewer": {"conv1": 2, "conv2": 5, "fc1": 50},
    "group HARD, Fashion-MNIST seed 0": {"conv1": 20, "conv2": 26, "fc1": 121},
}
"""Units kept per hidden layer of each network timed."""


def networks() -> dict[str, nn.Module]:
    """The dense LeNet-5 and its pruned copies (the first units of every layer kept)."""
    torch.manual_seed(0)
    dense = build_network("lenet5", 1, 28, 10).eval()
    nets = {}
    for label, kept in KEPT.items():
        alive = {layer.name: torch.arange(layer.out_units) < kept[layer.name]
                 for layer in prunable_layers(dense)[:-1]}  # fmt: skip
        nets[label] = prune_units(dense, alive)
    return nets


def run_network(folder: Path) -> nn.Module:
    """The pruned network of a compression run folder, in eval mode."""
    description = folder / "architecture.json"
    if not description.is_file():
        raise SystemExit(f"{folder}: no architecture.json (not a finished compression run)")
    net = network_from_description(json.loads(description.read_text()))
    net.load_state_dict(torch.load(folder / "pruned_state.pt", map_location="cpu"))
    if tuple(net(torch.zeros(1, 1, 28, 28)).shape) != (1, 10):
        raise SystemExit(f"{folder}: not a 28x28, 10-class network")
    return net.eval()


def set_pooling(net: nn.Sequential, kind: str) -> nn.Sequential:
    """Swap the 2x2 max-pools of ``net`` in place for ``kind`` (``fast`` or ``torch``)."""
    for name, child in net.named_children():
        if isinstance(child, MaxPool2x2 | nn.MaxPool2d):
            setattr(net, name, MaxPool2x2() if kind == "fast" else nn.MaxPool2d(2))
    return net


def images_per_second(net: nn.Module, x: torch.Tensor, seconds: float) -> float:
    """Forward passes of ``x`` for about ``seconds``; images per second."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        net(x)
        done += 1
    return done * len(x) / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="per network and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="compression run folders of LeNet-5 (28x28) to time too")
    parser.add_argument("--pool", choices=("fast", "torch"), default="fast",
                        help="max-pool of every network: MaxPool2x2 or nn.MaxPool2d(2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = networks()
    nets |= {folder.name: run_network(folder) for folder in args.runs}
    nets = {label: set_pooling(net, args.pool) for label, net in nets.items()}
    x = torch.randn(args.batch, 1, 28, 28)
    best = dict.fromkeys(nets, 0.0)
    with torch.inference_mode():
        for net in nets.values():  # warm-up
            images_per_second(net, x, 0.1)
        for _ in range(args.rounds):
            for label, net in nets.items():
                best[label] = max(best[label], images_per_second(net, x, args.seconds))
    print(f"LeNet-5 28x28, CPU, batch {args.batch}, {args.threads} thread(s), "
          f"{args.pool} max-pool, best of {args.rounds} rounds")  # fmt: skip
    width = max(len(label) for label in nets)
    print(f"{'network':<{width}} {'units':<12} {'weights':>9} {'MACs':>10} {'images/s':>10} "
          f"{'speed-up':>8}")  # fmt: skip
    for label, net in nets.items():
        units = "-".join(str(layer.out_units) for layer in prunable_layers(net)[:-1])
        print(f"{label:<{width}} {units:<12} {count_weights(net):>9,} "
              f"{count_flops(net, (1, 28, 28)):>10,} {best[label]:>10,.0f} "
              f"{best[label] / best['dense']:>7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
