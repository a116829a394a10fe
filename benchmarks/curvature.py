"""Benchmark of the curvature backends (layerwise, ggn, ggn_lean, fisher) on search networks.

Two parts, both on by default:

**Cost** (``--no-timing`` skips it). For every backend and network:

* time per curvature batch divided by the time of one plain training step (forward, backward of
  the mean cross-entropy with respect to weights and switches, SGD update) at the same batch;
* peak memory of one curvature batch divided by that of one plain training step;
* how the time grows with the batch size and with the channels (``--no-growth`` skips it).

Every timing and memory number comes from a fresh subprocess that builds the network, runs the
operation once (warm-up; its peak memory is the one reported) and then times ``--repeats`` runs
(the minimum is reported). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` minus the
memory allocated before the operation; on CPU the process's peak resident set size
(``resource.getrusage(...).ru_maxrss``) minus its resident set size just before the operation,
which also counts allocator slack and is coarser. Inputs of the cost part are random (the
costs do not depend on the pixel values).

The ``ggn`` backend holds per-sample Jacobians of ``chunk_size`` samples at once; its memory
grows linearly with the chunk. Unless ``--ggn-chunk`` is given, the chunk is chosen per
network from two probes in fresh processes (two samples, then four): their peak memories
give the fixed and the per-sample cost, and the chunk is the largest that fits in
``--memory-fraction`` of the memory available (``MemAvailable`` of ``/proc/meminfo`` on CPU,
the free CUDA memory on a GPU). If not even one sample fits, the measurement is skipped with a
message. ``ggn_lean_full`` (timing only) is ``lean_ggn(..., full=True)``: the diagonal and the
(D, D) GGN matrix from the same pass.

**Agreement** (``--no-agreement`` skips it). Relative error ``||h - h_ggn|| / ||h_ggn||``, the
ratio ``sum h / sum h_ggn`` and the Spearman rank correlation of each backend against the exact
diagonal GGN (the ``ggn`` backend) on the switches of the digits search network, per site
(``edge_switch``, ``op_switch``, all switches together), for every seed of ``--seeds`` and three
conditions:

* ``init/noise``: untrained network, random-normal inputs (batch-norm running statistics from
  one forward over the first batch);
* ``init/real``: the same untrained network, real held-out digits batches (statistics likewise);
* ``trained/real``: the network trained ``--trained-epochs`` epochs on the ``train`` split of
  scikit-learn's digits (:func:`pyronas.data.load_dataset`; plain SGD with momentum over weights
  and switches, mean cross-entropy, train-mode batch norm), evaluated on batches of the held-out
  ``search`` split, the split the search computes its curvature on.

Each backend's curvature is averaged over ``--agreement-batches`` batches of
``--agreement-batch`` images (as :func:`pyronas.inference.curvature.diagonal_curvature` does)
before it is compared. The table gives the mean over seeds and the range.

Networks: (a) ``digits``: the default search network of the digits data set (``bayesnas8``
space, C=8, 5 cells, 1x8x8 images, 10 classes, batch 64); (b) ``cifar``: C=16, 8 cells,
3x32x32 images, batch 64.

Usage::

    python benchmarks/curvature.py                 # CPU, everything
    python benchmarks/curvature.py --device cuda   # on a GPU
    python benchmarks/curvature.py --quick         # small sizes, a smoke run
    python benchmarks/curvature.py --no-timing --seeds 0,1,2 --trained-epochs 3
    python benchmarks/curvature.py --no-agreement --cases cifar --backends ggn_lean --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor

from pyronas.data import load_dataset
from pyronas.inference.curvature import BACKENDS
from pyronas.inference.ggn_lean import lean_ggn  # (registers "ggn_lean")
from pyronas.inference.layerwise import layerwise_backend  # noqa: F401  (registers "layerwise")
from pyronas.runtime import process_memory_kb, reset_peak_memory
from pyronas.space import get_space
from pyronas.supernet import SuperNet

CASES = {
    "digits": {"C": 8, "layers": 5, "in_channels": 1, "size": 8, "batch": 64},
    "cifar": {"C": 16, "layers": 8, "in_channels": 3, "size": 32, "batch": 64},
}
BACKEND_NAMES = ("layerwise", "ggn", "ggn_lean", "fisher")
"""Backends timed by default (``ggn_lean_full`` can be named with ``--backends``)."""
AGREEMENT_BACKENDS = ("layerwise", "fisher", "ggn_lean")
"""Backends compared with ``ggn`` in the agreement part."""
CONDITIONS = ("init/noise", "init/real", "trained/real")
SITES = ("edge_switch", "op_switch", "all")
METRICS = ("rel_err", "sum_ratio", "spearman")
NUM_CLASSES = 10

Forward = Callable[[dict[str, Tensor], Tensor], Tensor]


def _threads() -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def make_net(case: str, device: str, C: int | None = None, seed: int = 0) -> SuperNet:
    """The search network of ``case`` (``bayesnas8`` space), seeded."""
    cfg = CASES[case]
    torch.manual_seed(seed)
    return SuperNet(
        get_space("bayesnas8"), C=C or cfg["C"], layers=cfg["layers"], num_classes=NUM_CLASSES,
        in_channels=cfg["in_channels"],
    ).to(device)


def supernet_forward(net: SuperNet) -> Forward:
    """``forward(sites, x)`` of the supernet with sites ``edge_switch`` and ``op_switch``."""

    def forward(s: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return net(inputs, s["edge_switch"], s["op_switch"])

    return forward


def build(case: str, device: str, batch: int, C: int | None = None, seed: int = 0):
    """Network (eval mode, running statistics set), switches, forward, random batch."""
    cfg = CASES[case]
    net = make_net(case, device, C, seed)
    x = torch.randn(batch, cfg["in_channels"], cfg["size"], cfg["size"], device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    e, o = net.init_switches()
    with torch.no_grad():
        net(x, e, o)  # running statistics of the batch norms
    net.eval()
    sites = {"edge_switch": e, "op_switch": o}
    return net, sites, supernet_forward(net), x, y


# --------------------------------------------------------------------------------------------
# cost


def make_op(op: str, net, sites, forward, x, y, chunk_size: int | None = None):
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
    if op == "ggn_lean_full":
        return lambda: lean_ggn(forward, sites, x, "categorical", 1.0, net, full=True)
    fn = BACKENDS[op]
    options: dict[str, object] = {}
    if op == "fisher":
        options["generator"] = torch.Generator(device=x.device).manual_seed(0)
    if op == "ggn" and chunk_size is not None:
        options["chunk_size"] = chunk_size
    return lambda: fn(forward, sites, x, y, "categorical", 1.0, net, **options)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); False if not."""
    try:
        reset_peak_memory()
    except OSError:
        return False
    return True


def _peak_rss_bytes(reset: bool) -> int:
    """Peak RSS since the reset (``VmHWM``), else since the process started (``ru_maxrss``)."""
    if reset:
        return process_memory_kb("VmHWM") * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def available_bytes(device: str) -> int:
    """Memory available to a new computation: free CUDA memory, or ``MemAvailable`` on CPU."""
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def worker(case: str, op: str, device: str, batch: int, C: int, repeats: int,
           chunk_size: int | None = None) -> dict:
    """One measurement in this (fresh) process: peak memory of the first run, min time."""
    _threads()
    net, sites, forward, x, y = build(case, device, batch, C)
    run = make_op(op, net, sites, forward, x, y, chunk_size)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        reset = _reset_peak_rss()
    start = time.perf_counter()
    run()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss_bytes(reset) - base
    times = [time.perf_counter() - start] if repeats == 0 else []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_bytes": max(peak, 0)}


def measure(case: str, op: str, device: str, batch: int, C: int, repeats: int,
            chunk_size: int | None = None) -> dict:
    """Run :func:`worker` in a fresh subprocess (``repeats=0``: time the warm-up run)."""
    cmd = [sys.executable, __file__, "--worker", case, op, str(batch), str(C), str(repeats),
           str(chunk_size or 0), "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ggn_chunk(case: str, device: str, batch: int, C: int, fraction: float) -> tuple[int, str]:
    """Largest ``chunk_size`` of the ``ggn`` backend that fits, from two probes.

    Returns
    -------
    chunk : int
        0 when not even one sample fits.
    note : str
        The probe's numbers, for the printed table.
    """
    small = measure(case, "ggn", device, 2, C, 0, chunk_size=2)["peak_bytes"]
    large = measure(case, "ggn", device, 4, C, 0, chunk_size=4)["peak_bytes"]
    # peak memories are coarse: never trust a per-sample cost below an eighth of the 2-sample peak
    per_sample = max((large - small) / 2, small / 8, 1)
    fixed = max(small - 2 * per_sample, 0)
    budget = fraction * available_bytes(device)
    chunk = int(min(batch, max((budget - fixed) // per_sample, 0)))
    note = (f"probe: {per_sample / 2**20:.0f} MiB per sample + {fixed / 2**20:.0f} MiB, "
            f"budget {budget / 2**30:.1f} GiB")
    return chunk, note


def timing(args: argparse.Namespace) -> None:
    """The cost tables (module docstring)."""
    backends = args.backends.split(",")
    cases = args.cases.split(",")
    print("\n| network | backend | time / train step | peak memory / train step | seconds |")
    print("|---|---|---|---|---|")
    chunks: dict[tuple[str, int, int], int] = {}

    def chunk_for(case: str, batch: int, C: int) -> int | None:
        if args.ggn_chunk:
            return args.ggn_chunk
        key = (case, batch, C)
        if key not in chunks:
            chunks[key], note = ggn_chunk(case, args.device, batch, C, args.memory_fraction)
            print(f"<!-- ggn chunk for {case}, batch {batch}, C={C}: {chunks[key]} ({note}) -->",
                  flush=True)
        return chunks[key]

    for case in cases:
        cfg = CASES[case]
        batch = 8 if args.quick else cfg["batch"]
        C = 4 if args.quick else cfg["C"]
        base = measure(case, "train", args.device, batch, C, args.repeats)
        print(f"| {case} (batch {batch}, C={C}) | train step | 1 | 1 | {base['seconds']:.3f} |",
              flush=True)
        for name in backends:
            chunk = chunk_for(case, batch, C) if name == "ggn" else None
            if chunk == 0:
                print(f"| {case} | ggn | skipped: one sample's Jacobians do not fit in "
                      f"{args.memory_fraction:.0%} of the available memory | - | - |", flush=True)
                continue
            m = measure(case, name, args.device, batch, C, args.repeats, chunk)
            label = f"ggn (chunk {chunk})" if name == "ggn" else name
            print(f"| {case} | {label} | {m['seconds'] / base['seconds']:.2f} | "
                  f"{m['peak_bytes'] / max(base['peak_bytes'], 1):.2f} | {m['seconds']:.3f} |",
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
            chunk = chunk_for("digits", batch, C) if name == "ggn" else None
            if chunk == 0:
                cells.append("skipped (memory)")
                continue
            m = measure("digits", name, args.device, batch, C, 1, chunk)
            cells.append(f"{m['seconds']:.2f} ({m['seconds'] / base['seconds']:.1f}x)")
        print(f"| {batch} | {C} | " + " | ".join(cells) + f" | {base['seconds']:.2f} |",
              flush=True)


# --------------------------------------------------------------------------------------------
# agreement


def compare(est: dict[str, Tensor], ref: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """Relative error, sum ratio and Spearman rho of ``est`` against ``ref``, per site and all.

    Parameters
    ----------
    est, ref : dict[str, Tensor]
        Curvature per site (``edge_switch``, ``op_switch``), the same shapes.

    Returns
    -------
    dict[str, dict[str, float]]
        ``{site: {"rel_err", "sum_ratio", "spearman"}}`` for every site and ``"all"``.
    """
    res = {}
    names = list(ref)
    for site in (*names, "all"):
        keys = names if site == "all" else [site]
        a = torch.cat([est[k].detach().flatten() for k in keys]).double().cpu()
        b = torch.cat([ref[k].detach().flatten() for k in keys]).double().cpu()
        res[site] = {
            "rel_err": float((a - b).norm() / b.norm()),
            "sum_ratio": float(a.sum() / b.sum()),
            "spearman": float(spearmanr(a.numpy(), b.numpy())[0]),
        }
    return res


def _split_tensors(dataset) -> tuple[Tensor, Tensor]:
    """All ``(image, label)`` pairs of a map-style dataset as two tensors."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def train_supernet(net: SuperNet, x: Tensor, y: Tensor, epochs: int, batch: int, seed: int,
                   lr: float = 0.05, max_steps: int | None = None) -> dict[str, Tensor]:
    """Train weights and switches with SGD (momentum 0.9) on the mean cross-entropy.

    Parameters
    ----------
    net : SuperNet
        Trained in place (train-mode batch norm, running statistics updated).
    x, y : Tensor
        Training images and labels.
    epochs, batch : int
        Passes over the data and batch size (batches reshuffled every epoch with ``seed``).
    seed : int
        Seed of the shuffling.
    lr : float
        Learning rate of weights and switches.
    max_steps : int, optional
        Stop after this many steps (smoke runs).

    Returns
    -------
    dict[str, Tensor]
        The trained switches, detached.
    """
    e, o = net.init_switches()
    switches = {"edge_switch": e.requires_grad_(True), "op_switch": o.requires_grad_(True)}
    opt = torch.optim.SGD([*net.parameters(), *switches.values()], lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    steps = 0
    net.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch):
            idx = order[start : start + batch]
            opt.zero_grad(set_to_none=True)
            out = net(x[idx], switches["edge_switch"], switches["op_switch"])
            F.cross_entropy(out, y[idx]).backward()
            opt.step()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
    net.eval()
    return {k: v.detach() for k, v in switches.items()}


def _mean_curvature(name: str, forward: Forward, sites: dict[str, Tensor],
                    batches: Sequence[tuple[Tensor, Tensor]], net: SuperNet,
                    seed: int) -> dict[str, Tensor]:
    """One backend's curvature averaged over the batches."""
    fn = BACKENDS[name]
    total = {k: torch.zeros_like(v) for k, v in sites.items()}
    for i, (xb, yb) in enumerate(batches):
        opts: dict[str, object] = {}
        if name == "fisher":
            opts["generator"] = torch.Generator(device=xb.device).manual_seed(1000 * seed + i)
        est = fn(forward, sites, xb, yb, "categorical", 1.0, net, **opts)
        total = {k: total[k] + est[k].detach() for k in total}
    return {k: v / len(batches) for k, v in total.items()}


def _confidence(net: SuperNet, forward: Forward, sites: dict[str, Tensor],
                batches: Sequence[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """Accuracy and mean largest softmax probability on the batches (eval mode)."""
    net.eval()
    with torch.no_grad():
        out = torch.cat([forward(sites, xb) for xb, _ in batches])
        labels = torch.cat([yb for _, yb in batches])
    p = torch.softmax(out, -1)
    return {"accuracy": float((out.argmax(-1) == labels).float().mean()),
            "max_prob": float(p.max(-1).values.mean())}


def agreement(device: str = "cpu", seeds: Sequence[int] = (0, 1, 2), epochs: int = 3,
              batch: int = 32, num_batches: int = 4, C: int | None = None,
              train_batch: int = 64, max_steps: int | None = None,
              backends: Sequence[str] = AGREEMENT_BACKENDS,
              conditions: Sequence[str] = CONDITIONS, log: Callable[[str], None] | None = None,
              ) -> dict:
    """Agreement of the backends with ``ggn`` under every condition and seed (module docstring).

    Parameters
    ----------
    device : str
        Torch device.
    seeds : sequence of int
        Seeds of the network initialisation, the data split and the training order.
    epochs, train_batch : int
        Training of the ``trained/real`` networks.
    batch, num_batches : int
        Curvature batches: size and number (the curvature is averaged over them).
    C : int, optional
        Channels of the digits network (default: its search setting, 8).
    max_steps : int, optional
        Cap on the training steps (smoke runs).
    backends : sequence of str
        Backends compared with ``ggn``.
    conditions : sequence of str
        A subset of :data:`CONDITIONS`.
    log : callable, optional
        Called with a progress line per seed and condition.

    Returns
    -------
    dict
        ``{"runs": [{"seed", "condition", "accuracy", "max_prob", "train_seconds",
        "metrics": {backend: {site: {metric: value}}}}, ...]}``.
    """
    _threads()
    cfg = CASES["digits"]
    runs = []
    for seed in seeds:
        splits = load_dataset("digits", seed=seed)
        x_train, y_train = (t.to(device) for t in _split_tensors(splits.train))
        x_held, y_held = (t.to(device) for t in _split_tensors(splits.search))
        if x_held.shape[0] < batch * num_batches:
            raise ValueError(f"the search split has {x_held.shape[0]} images, fewer than "
                             f"{num_batches} batches of {batch}")
        real = [(x_held[i * batch:(i + 1) * batch], y_held[i * batch:(i + 1) * batch])
                for i in range(num_batches)]
        gen = torch.Generator().manual_seed(seed)
        shape = (batch, cfg["in_channels"], cfg["size"], cfg["size"])
        noise = [(torch.randn(shape, generator=gen).to(device),
                  torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device))
                 for _ in range(num_batches)]
        for condition in conditions:
            net = make_net("digits", device, C, seed)
            forward = supernet_forward(net)
            seconds = 0.0
            if condition == "trained/real":
                start = time.perf_counter()
                sites = train_supernet(net, x_train, y_train, epochs, train_batch, seed,
                                       max_steps=max_steps)
                seconds = time.perf_counter() - start
                batches = real
            else:
                e, o = net.init_switches()
                sites = {"edge_switch": e, "op_switch": o}
                batches = noise if condition == "init/noise" else real
                with torch.no_grad():
                    net(batches[0][0], e, o)  # running statistics, as in the cost part
            net.eval()
            ref = _mean_curvature("ggn", forward, sites, batches, net, seed)
            metrics = {name: compare(_mean_curvature(name, forward, sites, batches, net, seed),
                                     ref) for name in backends}
            run = {"seed": seed, "condition": condition, "train_seconds": seconds,
                   **_confidence(net, forward, sites, batches), "metrics": metrics}
            runs.append(run)
            if log is not None:
                lw = metrics.get("layerwise", {}).get("all", {})
                log(f"<!-- seed {seed} {condition}: accuracy {run['accuracy']:.3f}, max prob "
                    f"{run['max_prob']:.3f}, train {seconds:.0f} s"
                    + (f", layerwise rho(all) {lw['spearman']:.3f}" if lw else "") + " -->")
    return {"runs": runs}


def agreement_table(result: dict) -> list[str]:
    """Markdown rows: condition, backend, site, then mean [min, max] over seeds per metric."""
    runs = result["runs"]
    lines = ["| condition | backend / site | relative error | sum ratio (est / GGN) | "
             "Spearman rho |", "|---|---|---|---|---|"]
    conditions = [c for c in CONDITIONS if any(r["condition"] == c for r in runs)]
    for condition in conditions:
        group = [r for r in runs if r["condition"] == condition]
        for name in group[0]["metrics"]:
            for site in SITES:
                cells = []
                for metric in METRICS:
                    vals = [r["metrics"][name][site][metric] for r in group]
                    mean = sum(vals) / len(vals)
                    fmt = ".1e" if name == "ggn_lean" and metric == "rel_err" else ".3f"
                    cell = format(mean, fmt)
                    if len(vals) > 1:
                        cell += f" [{format(min(vals), fmt)}, {format(max(vals), fmt)}]"
                    cells.append(cell)
                lines.append(f"| {condition} | {name} / {site} | " + " | ".join(cells) + " |")
    return lines


def confidence_table(result: dict) -> list[str]:
    """Markdown rows: accuracy and mean max probability on the curvature batches, per seed."""
    lines = ["| condition | seed | accuracy on the curvature batches | mean max softmax prob | "
             "training s |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['condition']} | {r['seed']} | {r['accuracy']:.3f} | "
                     f"{r['max_prob']:.3f} | {r['train_seconds']:.0f} |")
    return lines


# --------------------------------------------------------------------------------------------


def _check_spearman(result: dict) -> None:
    for r in result["runs"]:
        for sites in r["metrics"].values():
            for m in sites.values():
                rho = m["spearman"]
                if not (math.isnan(rho) or -1.0 - 1e-9 <= rho <= 1.0 + 1e-9):
                    raise AssertionError(f"Spearman rho {rho} outside [-1, 1]")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--cases", default="digits,cifar")
    parser.add_argument("--backends", default=",".join(BACKEND_NAMES),
                        help="timed backends (also: ggn_lean_full)")
    parser.add_argument("--no-growth", action="store_true", help="skip the scaling table")
    parser.add_argument("--no-timing", action="store_true", help="skip the cost tables")
    parser.add_argument("--no-agreement", action="store_true", help="skip the agreement table")
    parser.add_argument("--ggn-chunk", type=int, default=0,
                        help="chunk_size of the ggn backend (default: from a memory probe)")
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="share of the available memory the ggn chunk may use")
    parser.add_argument("--seeds", default="0,1,2", help="agreement seeds")
    parser.add_argument("--trained-epochs", type=int, default=3,
                        help="training epochs of the trained agreement networks")
    parser.add_argument("--agreement-batches", type=int, default=4,
                        help="held-out batches the agreement curvature is averaged over")
    parser.add_argument("--agreement-batch", type=int, default=32, help="their batch size")
    parser.add_argument("--json", default=None, help="also write the agreement runs here")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        case, op, batch, C, repeats, chunk = args.worker
        print(json.dumps(worker(case, op, args.device, int(batch), int(C), int(repeats),
                                int(chunk) or None)))
        return

    print(f"# curvature backends, device={args.device}, torch {torch.__version__}, "
          f"{os.environ.get('BENCH_THREADS', '2')} thread(s)")
    if not args.no_timing:
        timing(args)
    if args.no_agreement:
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        options = {"seeds": seeds[:1], "epochs": 1, "batch": 16, "num_batches": 1, "C": 4,
                   "max_steps": 12}
    else:
        options = {"seeds": seeds, "epochs": args.trained_epochs, "batch": args.agreement_batch,
                   "num_batches": args.agreement_batches}
    result = agreement(args.device, log=lambda s: print(s, flush=True), **options)
    _check_spearman(result)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"options": options, **result}, fh, indent=1)
    size = "C=4" if args.quick else "C=8"
    print(f"\nAgreement with the exact diagonal GGN, digits network ({size}), "
          f"{options['num_batches']} batch(es) of {options['batch']}, "
          f"trained {options['epochs']} epoch(s), seeds {options['seeds']}:\n")
    print("\n".join(agreement_table(result)))
    print("\nThe networks on the curvature batches:\n")
    print("\n".join(confidence_table(result)), flush=True)


if __name__ == "__main__":
    main()
