"""Memory of a long search, per type-II iteration: does it stay flat (no leak)?

Runs one BayesNAS search on the full ``darts`` space (8 cells, 14 edges x 8 ops, 224 switches
per cell type) for ``--minutes`` of wall time (``t_max`` set high; the run stops at the first
iteration past the budget) and records, at the end of every type-II iteration, the process's
resident set size (``VmRSS``) and its high-water mark (``VmHWM``), plus CUDA's allocated and
peak bytes on a GPU. A leak shows as a resident size that grows with the iterations after the
first few (allocator warm-up). Data: Fashion-MNIST when installed (28 x 28, real images), else
digits; ``--image-size 32`` resizes them to CIFAR-10's 32 x 32 (one channel).

    python benchmarks/search_memory.py --minutes 30 [--device cuda] [--image-size 32]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import torch

from pyronas.data import DatasetError, load_dataset


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class IterationMemory(logging.Handler):
    """Records the memory when the type-II loop logs the end of an iteration."""

    def __init__(self, device: str, start: float, budget_s: float) -> None:
        super().__init__(logging.INFO)
        self.rows: list[dict[str, float]] = []
        self.device, self.start, self.budget_s = device, start, budget_s
        self.stop = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("type-II iteration"):
            return
        row = {"iteration": len(self.rows) + 1, "seconds": time.perf_counter() - self.start,
               "rss_mib": _status_kb("VmRSS") / 1024, "hwm_mib": _status_kb("VmHWM") / 1024}
        if self.device.startswith("cuda"):
            row["cuda_alloc_mib"] = torch.cuda.memory_allocated() / 2**20
            row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        self.rows.append(row)
        print(" | ".join(f"{k} {v:.1f}" for k, v in row.items()), flush=True)
        if row["seconds"] > self.budget_s:
            raise KeyboardInterrupt  # past the budget: stop the search here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-size", dest="train_size", type=int, default=1000)
    parser.add_argument("--image-size", dest="image_size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from pyronas.search import run_search

    try:
        load_dataset("fashion-mnist", seed=0, train_size=64)
        dataset = "fashion-mnist"
    except DatasetError:
        dataset = "digits"
    settings = {"dataset": dataset, "space": "darts", "channels": 16, "layers": 8,
                "train_size": args.train_size, "batch_size": 32, "t_max": 10_000,
                "search_epochs": 1, "curvature_batches": 2, "device": args.device,
                "progress": False}
    if args.image_size is not None:
        settings["image_size"] = args.image_size
    start = time.perf_counter()
    handler = IterationMemory(args.device, start, 60 * args.minutes)
    logging.getLogger("pyronas").addHandler(handler)
    logging.getLogger("pyronas").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_search(settings, Path(tmp) / "search")
        except KeyboardInterrupt:
            pass
    rows = handler.rows
    print(f"\n{dataset}, darts space, 8 cells, C 16, batch 32, {args.train_size} images, "
          f"device {args.device}, {args.threads} thread(s)")
    print("| iteration | seconds | RSS (MiB) | RSS high-water (MiB) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['iteration']} | {r['seconds']:.0f} | {r['rss_mib']:.0f} | "
              f"{r['hwm_mib']:.0f} |")
    if len(rows) >= 3:
        later = rows[1:]
        rss = [r["rss_mib"] for r in later]
        print(f"\nafter iteration 1: high-water mark {later[0]['hwm_mib']:.0f} -> "
              f"{later[-1]['hwm_mib']:.0f} MiB; resident size between {min(rss):.0f} and "
              f"{max(rss):.0f} MiB (the allocator returns memory between iterations, so the "
              "high-water mark is the leak test: it grows with a leak)")

if __name__ == "__main__":
    main()
