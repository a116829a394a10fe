"""Training throughput (images/s) of the DARTS CIFAR-10 evaluation network, per speed option.

Times full training steps (forward with the auxiliary head, loss, backward, SGD step) of the
DARTS_V2 network at the DARTS protocol's size (C=36, 20 cells, batch 96 unless ``--batch``)
on CIFAR-shaped tensors. The tensors are random: throughput does not depend on pixel values,
and no data set is needed. Options compared: plain float32, ``channels_last``,
``torch.compile``, and on CUDA automatic mixed precision (alone and with the others). Prints
images/s and the speed-up over plain float32, measured in one run.

    python benchmarks/retrain_throughput.py [--device cuda] [--steps 5] [--batch 96]
    python benchmarks/retrain_throughput.py --options fp32,compile   # a subset of the options
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pyronas.evalnet import NetworkCIFAR
from pyronas.genotype import load_genotype

OPTIONS: dict[str, tuple[str, bool, bool, bool]] = {
    "fp32": ("float32", False, False, False),
    "cl": ("channels_last", True, False, False),
    "compile": ("torch.compile", False, True, False),
    "cl_compile": ("channels_last + compile", True, True, False),
    "amp": ("amp", False, False, True),
    "amp_cl": ("amp + channels_last", True, False, True),
    "amp_cl_compile": ("amp + channels_last + compile", True, True, True),
}
"""Option key -> (label, channels_last, torch.compile, automatic mixed precision)."""


def step_time(device: str, batch: int, steps: int, channels_last: bool, compile_: bool,
              amp: bool, C: int, layers: int) -> float:
    torch.manual_seed(0)
    net = NetworkCIFAR(load_genotype("DARTS_V2"), C=C, layers=layers, auxiliary=True,
                       drop_path_prob=0.2).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format).train()
    model = torch.compile(net) if compile_ else net
    opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    scaler = torch.amp.GradScaler(enabled=amp)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.float16, enabled=amp):
            logits, aux = model(x)
            loss = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        scaler.step(opt)
        scaler.update()

    for _ in range(2 if compile_ else 1):  # warm-up (and compilation)
        one()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    sync()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--channels", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--options", default=None,
                        help=f"comma-separated subset of {','.join(OPTIONS)} (default: all that "
                        "apply; amp needs CUDA); the first one is the speed-up baseline")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    names = args.options.split(",") if args.options else list(OPTIONS)
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        parser.error(f"unknown option(s) {unknown}; choose from {list(OPTIONS)}")
    options = [OPTIONS[n] for n in names
               if (cuda or not OPTIONS[n][3]) and not (args.no_compile and OPTIONS[n][2])]
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"DARTS_V2 CIFAR network C={args.channels}, {args.layers} cells, batch {args.batch}, "
          f"{name}, torch {torch.__version__}; random CIFAR-shaped tensors")
    print("| option | s / step | images / s | speed-up |")
    print("| --- | --- | --- | --- |")
    base = None
    for label, channels_last, compile_, amp in options:
        t = step_time(args.device, args.batch, args.steps, channels_last, compile_, amp,
                      args.channels, args.layers)
        base = base or t
        print(f"| {label} | {t:.3f} | {args.batch / t:.1f} | {base / t:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
