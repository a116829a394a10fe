"""Proxyless search cost, as ratios in one run: search epoch / plain epoch, curvature / step.

Part 1, per PyramidNet depth (``--depths``, widening ``--alpha``), on the same batches of real
images (Fashion-MNIST when installed, else digits; ``--train-size`` images, batch 32):

* plain epoch: SGD on the supernet weights with the switches fixed at 1, cross-entropy only;
* search epoch: the MAP epoch of the type-II loop (the Pyro model's trace with the HARD prior,
  gradients for weights and switches, proximal group-lasso step);
* peak memory of one step of each (fresh subprocess, peak resident set size above the size just
  before the step; on CUDA ``max_memory_allocated``).

Part 2, curvature with many switches: the supernet of ``--curvature-depths`` (110: 54 blocks,
648 edge + 4,536 op switches) on one real digits batch of 16 (8 x 8 images, so that a CPU can
run PyramidNet-110): the time of each curvature backend over all switches, as a ratio to one
training step on the same batch. A backend that runs out of memory is reported and skipped.

    python benchmarks/proxyless_epoch.py [--depths 8,14,26] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from pyronas.data import DatasetError, load_dataset, make_loader
from pyronas.inference.curvature import diagonal_curvature
from pyronas.inference.type2 import Type2Config, Type2State, _map_epoch, map_objective
from pyronas.models import hard
from pyronas.proxyless.pyramidnet import ProxylessSuperNet
from pyronas.proxyless.space import proxyless_space
from pyronas.runtime import process_memory_kb, reset_peak_memory


def _batches(dataset: str, size: int, batch: int, device: str):
    splits = load_dataset(dataset, seed=0, train_size=size)
    loader = make_loader(splits.train, batch, shuffle=True, seed=0)
    return splits, [(x.to(device), y.to(device)) for x, y in loader]


def _data(train_size: int, device: str):
    try:
        return "fashion-mnist", *_batches("fashion-mnist", train_size, 32, device)
    except DatasetError:
        return "digits", *_batches("digits", train_size, 32, device)


def _setup(depth: int, alpha: float, splits, device: str):
    torch.manual_seed(0)
    net = ProxylessSuperNet(depth, alpha, splits.num_classes, splits.in_channels).to(device)
    space = proxyless_space(net.num_blocks)
    hypers = hard.init_hypers(space)
    edge, op = net.init_switches()
    sites = {"edge_switch": edge.requires_grad_(), "op_switch": op.requires_grad_()}
    return net, hypers, sites


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_epoch(net, sites, batches, device: str) -> float:
    fixed = {k: v.detach() for k, v in sites.items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    net.train()
    _sync(device)
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, fixed["edge_switch"], fixed["op_switch"]), y).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def search_epoch(net, hypers, sites, batches, num_data: int, device: str) -> float:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in sites.items()}
    state = Type2State(sites=leaves, hypers=hypers,
                       masks={k: torch.ones_like(v, dtype=torch.bool) for k, v in leaves.items()})
    cfg = Type2Config(lr=0.05, site_lr=0.1, progress=False)
    optimizer = torch.optim.SGD(
        [{"params": list(net.parameters()), "weight_decay": 3e-4},
         {"params": list(leaves.values()), "weight_decay": 0.0, "lr": 0.1}],
        lr=0.05, momentum=0.9)
    _sync(device)
    start = time.perf_counter()
    _map_epoch(hard, net, state, batches, num_data, optimizer, cfg, train_sites=True, desc="")
    _sync(device)
    return time.perf_counter() - start


def worker(kind: str, depth: int, alpha: float, train_size: int, device: str) -> dict:
    _, splits, batches = _data(train_size, device)
    net, hypers, sites = _setup(depth, alpha, splits, device)
    x, y = batches[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_memory()  # the peak resident set size (VmHWM): set-up does not count
        base = process_memory_kb("VmRSS") * 1024
    if kind == "plain":
        F.cross_entropy(net(x, sites["edge_switch"], sites["op_switch"]), y).backward()
    else:
        map_objective(hard, net, sites, x, y, hypers, len(splits.train)).backward()
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = process_memory_kb("VmHWM") * 1024 - base
    return {"peak_bytes": max(peak, 1)}


def memory(kind: str, depth: int, args) -> float:
    cmd = [sys.executable, __file__, "--worker", kind, "--depths", str(depth), "--alpha",
           str(args.alpha), "--train-size", str(args.train_size), "--device", args.device,
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def curvature_costs(depth: int, alpha: float, backends: list[str], device: str) -> dict:
    splits, batches = _batches("digits", 256, 16, device)
    net, _, sites = _setup(depth, alpha, splits, device)
    x, y = batches[0]
    forward = lambda s, inputs: net(inputs, s["edge_switch"], s["op_switch"])  # noqa: E731
    net.train()
    times = []
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        F.cross_entropy(net(x, sites["edge_switch"], sites["op_switch"]), y).backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    result = {"blocks": net.num_blocks,
              "switches": sum(v.numel() for v in sites.values()),
              "step_s": min(times), "backends": {}}
    for backend in backends:
        try:
            _sync(device)
            start = time.perf_counter()
            diagonal_curvature(forward, sites, [(x, y)], backend=backend, module=net)
            _sync(device)
            result["backends"][backend] = time.perf_counter() - start
        except (RuntimeError, MemoryError) as err:
            if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
                raise
            result["backends"][backend] = None
            print(f"  {backend} at depth {depth}: out of memory, skipped", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="8,14,26")
    parser.add_argument("--alpha", type=float, default=24.0)
    parser.add_argument("--train-size", dest="train_size", type=int, default=512)
    parser.add_argument("--curvature-depths", dest="curvature_depths", default="26,110")
    parser.add_argument("--backends", default="ggn_lean,fisher,layerwise,ggn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",") if d]
    if args.worker:
        print(json.dumps(worker(args.worker, depths[0], args.alpha, args.train_size,
                                args.device)))
        return

    dataset, splits, batches = _data(args.train_size, args.device)
    print(f"device {args.device}, {args.threads} thread(s); {dataset}, {len(batches)} batches "
          f"of 32 per epoch, alpha {args.alpha:g}")
    print("| depth | blocks | switches | plain epoch (s) | search epoch (s) | search / plain | "
          "peak memory search / plain |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for depth in depths:
        net, hypers, sites = _setup(depth, args.alpha, splits, args.device)
        plain_epoch(net, sites, batches[:2], args.device)  # warm-up
        plain = min(plain_epoch(net, sites, batches, args.device) for _ in range(2))
        search = min(search_epoch(net, hypers, sites, batches, len(splits.train), args.device)
                     for _ in range(2))
        mem = memory("search", depth, args) / memory("plain", depth, args)
        switches = sum(v.numel() for v in sites.values())
        print(f"| {depth} | {net.num_blocks} | {switches} | {plain:.2f} | {search:.2f} | "
              f"{search / plain:.2f} | {mem:.2f} |", flush=True)

    backends = args.backends.split(",")
    print()
    print("curvature over all switches, one digits batch of 16 (8 x 8), alpha 84 at depth 110")
    print("| depth | blocks | switches | training step (s) | "
          + " | ".join(f"{b} (s, / step)" for b in backends) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in backends) + " |")
    for depth in [int(d) for d in args.curvature_depths.split(",") if d]:
        alpha = 84.0 if depth == 110 else args.alpha
        r = curvature_costs(depth, alpha, backends, args.device)
        cells = []
        for b in backends:
            t = r["backends"][b]
            cells.append("out of memory" if t is None else f"{t:.1f} ({t / r['step_s']:.1f}x)")
        print(f"| {depth} | {r['blocks']} | {r['switches']} | {r['step_s']:.2f} | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
