"""Benchmark of the curvature backends (layerwise, ggn, fisher) on two search networks.

For every backend and network it prints, in one run:

* time per curvature batch divided by the time of one plain training step (forward, backward of
  the mean cross-entropy with respect to weights and switches, SGD update) at the same batch;
* peak memory of one curvature batch divided by that of one plain training step;
* relative error ``||h - h_ggn|| / ||h_ggn||``, the ratio ``sum h / sum h_ggn`` and the Spearman
  rank correlation against the exact diagonal GGN (the ``ggn`` backend), on the switches of the
  small (digits) network;
* how the time grows with the batch size and with the channels.

Every timing and memory number comes from a fresh subprocess that builds the network, runs the
operation once (warm-up; its peak memory is the one reported) and then times ``--repeats`` runs
(the minimum is reported). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the
memory allocated before the operation; on CPU the process's peak resident set size
(``resource.getrusage(...).ru_maxrss``) minus its resident set size just before the operation,
which also counts allocator slack and is coarser.

Networks: (a) ``digits``: the default search network of the digits data set (``bayesnas8``
space, C=8, 5 cells, 1x8x8 images, 10 classes, batch 64); (b) ``cifar``: C=16, 8 cells,
3x32x32 images, batch 64. Inputs are random (the costs do not depend on the pixel values).

Usage::

    python benchmarks/curvature.py                 # CPU, everything
    python benchmarks/curvature.py --device cuda   # on a GPU
    python benchmarks/curvature.py --quick         # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from pyronas.inference.curvature import BACKENDS
from pyronas.inference.layerwise import layerwise_backend  # noqa: F401  (registers "layerwise")
from pyronas.space import get_space
from pyronas.supernet import SuperNet

CASES = {
    "digits": {"C": 8, "layers": 5, "in_channels": 1, "size": 8, "batch": 64},
    "cifar": {"C": 16, "layers": 8, "in_channels": 3, "size": 32, "batch": 64},
}
BACKEND_NAMES = ("layerwise", "ggn", "fisher")


def build(case: str, device: str, batch: int, C: int | None = None, seed: int = 0):
    """Network (eval mode, running statistics set), switches, forward, batch."""
    cfg = CASES[case]
    torch.manual_seed(seed)
    net = SuperNet(
        get_space("bayesnas8"), C=C or cfg["C"], layers=cfg["layers"], num_classes=10,
        in_channels=cfg["in_channels"],
    ).to(device)
    x = torch.randn(batch, cfg["in_channels"], cfg["size"], cfg["size"], device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    e, o = net.init_switches()
    with torch.no_grad():
        net(x, e, o)  # running statistics of the batch norms
    net.eval()
    sites = {"edge_switch": e, "op_switch": o}

    def forward(s, inputs):
        return net(inputs, s["edge_switch"], s["op_switch"])

    return net, sites, forward, x, y


def make_op(op: str, net, sites, forward, x, y):
    """A no-argument callable running one plain training step or one curvature batch."""
    if op == "train":
        switches = {k: v.clone().requires_grad_(True) for k, v in sites.items()}
        opt = torch.optim.SGD([*net.parameters(), *switches.values()], lr=1e-3)

        def step():
            net.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(forward(switches, x), y).backward()
            opt.step()

        return step
    fn = BACKENDS[op]
    generator = torch.Generator(device=x.device).manual_seed(0)
    options = {"generator": generator} if op == "fisher" else {}
    return lambda: fn(forward, sites, x, y, "categorical", 1.0, net, **options)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(case: str, op: str, device: str, batch: int, C: int, repeats: int) -> dict:
    """One measurement in this (fresh) process: peak memory of the first run, min time."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    net, sites, forward, x, y = build(case, device, batch, C)
    run = make_op(op, net, sites, forward, x, y)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    run()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_bytes": max(peak, 0)}


def measure(case: str, op: str, device: str, batch: int, C: int, repeats: int) -> dict:
    """Run :func:`worker` in a fresh subprocess."""
    cmd = [sys.executable, __file__, "--worker", case, op, str(batch), str(C), str(repeats),
           "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def accuracy(device: str, batch: int) -> dict[str, dict[str, float]]:
    """Relative error, sum ratio and Spearman rho of each backend against the exact GGN."""
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    net, sites, forward, x, y = build("digits", device, batch)
    ref = {k: v.detach() for k, v in BACKENDS["ggn"](
        forward, sites, x, y, "categorical", 1.0, net).items()}
    res = {}
    for name in ("layerwise", "fisher"):
        gen = torch.Generator(device=device).manual_seed(0)
        opts = {"generator": gen} if name == "fisher" else {}
        est = BACKENDS[name](forward, sites, x, y, "categorical", 1.0, net, **opts)
        for site in (*sites, "all"):
            if site == "all":
                a = torch.cat([est[k].detach().flatten() for k in sites]).cpu()
                b = torch.cat([ref[k].flatten() for k in sites]).cpu()
            else:
                a, b = est[site].detach().flatten().cpu(), ref[site].flatten().cpu()
            res[f"{name}/{site}"] = {
                "rel_err": float((a - b).norm() / b.norm()),
                "sum_ratio": float(a.sum() / b.sum()),
                "spearman": float(spearmanr(a.numpy(), b.numpy())[0]),
            }
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--cases", default="digits,cifar")
    parser.add_argument("--backends", default=",".join(BACKEND_NAMES))
    parser.add_argument("--no-growth", action="store_true", help="skip the scaling table")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        case, op, batch, C, repeats = args.worker
        print(json.dumps(worker(case, op, args.device, int(batch), int(C), int(repeats))))
        return

    backends = args.backends.split(",")
    cases = args.cases.split(",")
    print(f"# curvature backends, device={args.device}, torch {torch.__version__}")
    print("\n| network | backend | time / train step | peak memory / train step | seconds |")
    print("|---|---|---|---|---|")
    for case in cases:
        cfg = CASES[case]
        batch = 8 if args.quick else cfg["batch"]
        C = 4 if args.quick else cfg["C"]
        base = measure(case, "train", args.device, batch, C, args.repeats)
        print(f"| {case} (batch {batch}, C={C}) | train step | 1 | 1 | {base['seconds']:.3f} |",
              flush=True)
        for name in backends:
            m = measure(case, name, args.device, batch, C, args.repeats)
            print(f"| {case} | {name} | {m['seconds'] / base['seconds']:.2f} | "
                  f"{m['peak_bytes'] / max(base['peak_bytes'], 1):.2f} | {m['seconds']:.3f} |",
                  flush=True)

    acc_batch = 8 if args.quick else 32
    print(f"\nAgreement with the exact diagonal GGN, digits network, batch {acc_batch}:\n")
    print("| backend / site | relative error | sum ratio | Spearman rho |")
    print("|---|---|---|---|")
    for key, v in accuracy(args.device, acc_batch).items():
        print(f"| {key} | {v['rel_err']:.3f} | {v['sum_ratio']:.3f} | {v['spearman']:.3f} |",
              flush=True)

    if args.no_growth:
        return
    print("\nGrowth (digits network), seconds per batch and ratio to a train step:\n")
    print("| batch | C | " + " | ".join(backends) + " | train step (s) |")
    print("|---|---|" + "---|" * len(backends) + "---|")
    grid = [(8, 4), (16, 4), (32, 4)] if args.quick else [(16, 8), (32, 8), (64, 8), (64, 4),
                                                            (64, 16)]
    for batch, C in grid:
        base = measure("digits", "train", args.device, batch, C, 1)
        cells = []
        for name in backends:
            m = measure("digits", name, args.device, batch, C, 1)
            cells.append(f"{m['seconds']:.2f} ({m['seconds'] / base['seconds']:.1f}x)")
        print(f"| {batch} | {C} | " + " | ".join(cells) + f" | {base['seconds']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
