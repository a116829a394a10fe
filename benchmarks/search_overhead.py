"""Cost of the Bayesian part of a search iteration, as ratios in one run.

On the default digits search configuration (``pyronas.search.SEARCH_DEFAULTS``: bayesnas8
space, C=8, 5 cells, batch 32, HARD prior) it times, per type-II iteration:

* one MAP epoch (SGD on weights and switches through the Pyro model's trace, proximal step),
* the batch-norm re-estimation, the curvature on the held-out batches (each backend), and the
  Laplace fit + evidence + closed-form update + pruning,

and prints the overhead (everything after the MAP epoch) as a fraction of the MAP epoch. It
also prints the peak memory of one MAP step and of one curvature batch as ratios to one plain
supernet training step (cross-entropy only), each measured in a fresh subprocess from the peak
resident set size (``ru_maxrss``) minus the resident size just before the step (on CUDA:
``torch.cuda.max_memory_allocated``).

    python benchmarks/search_overhead.py [--device cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from pyronas.data import load_dataset, make_loader
from pyronas.inference.curvature import diagonal_curvature, eval_mode
from pyronas.inference.diagonal_laplace import fit_diagonal_laplace
from pyronas.inference.evidence import joint_terms, log_evidence
from pyronas.inference.type2 import Type2Config, Type2State, _map_epoch, prune
from pyronas.models import load_prior
from pyronas.runtime import process_memory_kb, reset_peak_memory
from pyronas.search import SEARCH_DEFAULTS, recalibrate_batchnorm
from pyronas.space import get_space
from pyronas.supernet import SuperNet


def setup(device: str):
    cfg = dict(SEARCH_DEFAULTS)
    torch.manual_seed(0)
    space = get_space(cfg["space"])
    splits = load_dataset(cfg["dataset"], seed=0)
    net = SuperNet(space, C=cfg["channels"], layers=cfg["layers"], num_classes=10,
                   in_channels=splits.in_channels).to(device)
    prior = load_prior(cfg["prior"])
    hypers = prior.init_hypers(space, lambda_edge=cfg["lambda_edge"], lambda_op=cfg["lambda_op"])
    edge, op = net.init_switches()
    sites = {"edge_switch": edge.to(device).requires_grad_(),
             "op_switch": op.to(device).requires_grad_()}
    train = make_loader(splits.train, cfg["batch_size"], shuffle=True, seed=0)
    search = make_loader(splits.search, cfg["batch_size"], shuffle=True, seed=1)
    to = lambda loader: [(x.to(device), y.to(device)) for x, y in loader]  # noqa: E731
    return cfg, space, net, prior, hypers, sites, to(train), to(search), len(splits.train)


def forward_fn(net):
    return lambda s, x: net(x, s["edge_switch"], s["op_switch"])


def timing(device: str, backends: list[str]) -> dict[str, float]:
    cfg, space, net, prior, hypers, sites, train, search, n = setup(device)
    tcfg = Type2Config(lr=cfg["lr"], site_lr=cfg["switch_lr"], momentum=cfg["momentum"],
                       weight_decay=cfg["weight_decay"], grad_clip=cfg["grad_clip"],
                       threshold=cfg["threshold"], progress=False)
    state = Type2State(sites=sites, hypers=hypers,
                       masks={k: torch.ones_like(v, dtype=torch.bool) for k, v in sites.items()})
    opt = torch.optim.SGD([{"params": list(net.parameters()), "weight_decay": tcfg.weight_decay},
                           {"params": list(sites.values()), "weight_decay": 0.0,
                            "lr": tcfg.site_lr}], lr=tcfg.lr, momentum=tcfg.momentum)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out: dict[str, float] = {}
    for repeat in range(2):  # the first pass warms up; the second is reported
        sync()
        t0 = time.perf_counter()
        _map_epoch(prior, net, state, train, n, opt, tcfg, train_sites=True, desc="map")
        sync()
        t1 = time.perf_counter()
        recalibrate_batchnorm(net, state.sites, train[: cfg["bn_batches"]], torch.device(device))
        sync()
        t2 = time.perf_counter()
        held = search[: cfg["curvature_batches"]]
        curv_times = {}
        for name in backends:
            s0 = time.perf_counter()
            curv = diagonal_curvature(forward_fn(net), state.sites, held, backend=name,
                                      module=net)
            sync()
            curv_times[name] = time.perf_counter() - s0
        curv = {k: v.detach() for k, v in diagonal_curvature(
            forward_fn(net), state.sites, held, backend="ggn", module=net).items()}
        t3 = time.perf_counter()
        with eval_mode(net):
            terms = joint_terms(prior, net, held, state.sites, state.hypers, n)
        mean = {k: v.detach().clone() for k, v in state.sites.items()}
        state.posterior = fit_diagonal_laplace(mean, curv, n, terms.prior_precision)
        log_evidence(terms.log_lik, terms.log_prior, state.posterior.precision)
        state.hypers = prior.update_hypers(state.posterior, state.hypers)
        prune(prior, state, tcfg)
        sync()
        t4 = time.perf_counter()
        if repeat == 1:
            out = {"map_epoch_s": t1 - t0, "bn_recalibration_s": t2 - t1,
                   "laplace_update_s": t4 - t3, "steps_per_epoch": len(train)}
            out.update({f"curvature_{k}_s": v for k, v in curv_times.items()})
    return out


def worker(kind: str, device: str) -> dict[str, float]:
    cfg, space, net, prior, hypers, sites, train, search, n = setup(device)
    x, y = train[0]
    step_sites = {k: v.detach().requires_grad_() for k, v in sites.items()}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_memory()  # the peak resident set size (VmHWM): set-up does not count
        base = process_memory_kb("VmRSS") * 1024
    if kind == "plain":
        loss = F.cross_entropy(net(x, step_sites["edge_switch"], step_sites["op_switch"]), y)
        loss.backward()
    elif kind == "map":
        from pyronas.inference.type2 import map_objective

        map_objective(prior, net, step_sites, x, y, hypers, n).backward()
    else:
        net.eval()
        diagonal_curvature(forward_fn(net), step_sites, search[:1], backend=kind, module=net)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = process_memory_kb("VmHWM") * 1024 - base
    return {"peak_bytes": max(peak, 1)}


def memory(kind: str, device: str, threads: int) -> float:
    cmd = [sys.executable, __file__, "--worker", kind, "--device", device,
           "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", default="ggn,fisher,layerwise")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.device)))
        return
    backends = args.backends.split(",")
    t = timing(args.device, backends)
    epoch = t["map_epoch_s"]
    print(f"device {args.device}, {args.threads} thread(s); default digits search config, "
          f"{t['steps_per_epoch']} MAP steps per epoch")
    print(f"MAP epoch: {epoch:.2f} s")
    print("| curvature backend | curvature / MAP epoch | BN re-estimation / MAP epoch | "
          "Laplace + update / MAP epoch | total overhead / MAP epoch |")
    print("| --- | --- | --- | --- | --- |")
    for name in backends:
        c = t[f"curvature_{name}_s"]
        total = c + t["bn_recalibration_s"] + t["laplace_update_s"]
        print(f"| {name} | {c / epoch:.3f} | {t['bn_recalibration_s'] / epoch:.3f} | "
              f"{t['laplace_update_s'] / epoch:.3f} | {total / epoch:.3f} |")
    plain = memory("plain", args.device, args.threads)
    print("\n| step | peak memory / plain training step |")
    print("| --- | --- |")
    for kind in ("map", *backends):
        print(f"| {kind} | {memory(kind, args.device, args.threads) / plain:.2f} |")


if __name__ == "__main__":
    main()
