"""Memory of a long search, per type-II iteration: does it stay flat (no leak)?

Runs one BayesNAS search on the full ``darts`` space (8 cells, 14 edges x 8 ops, 224 switches
per cell type) for ``--minutes`` of wall time (``t_max`` set high; the run stops at the first
iteration past the budget) and records, at the end of every type-II iteration, the process's
resident set size (``VmRSS``) and its high-water mark (``VmHWM``), plus CUDA's allocated and
peak bytes on a GPU. A leak shows as a resident size that grows with the iterations after the
first few (allocator warm-up). Data: Fashion-MNIST when installed (28 x 28, real images), else
digits; ``--image-size 32`` resizes them to CIFAR-10's 32 x 32 (one channel), and ``--rgb``
writes them as 32 x 32 RGB PNG files (the grey value on all three channels) read through the
``imagefolder`` data set: the CIFAR-10 shape, 3 x 32 x 32, with real images.
``--memory-cap-gib`` limits the process's address space (``RLIMIT_AS``): a leak then ends the
run with an out-of-memory error instead of slowing the machine.

    python benchmarks/search_memory.py --minutes 30 [--device cuda] [--image-size 32]
    python benchmarks/search_memory.py --minutes 30 --rgb --memory-cap-gib 16
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import threading
import time
from pathlib import Path

import torch

from pyronas.data import DatasetError, load_dataset
from pyronas.runtime import process_memory_kb


def write_rgb_tree(dataset: str, root: Path, count: int) -> None:
    """Write ``count`` training images of ``dataset`` as 32 x 32 RGB PNG files into an
    ImageFolder tree ``root/<label>/<index>.png`` (grey value repeated on three channels)."""
    import numpy as np
    from PIL import Image

    splits = load_dataset(dataset, seed=0, image_size=32)
    count = min(count, len(splits.train))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(splits.train, range(count)),
                                         batch_size=256)
    written = 0
    for x, y in loader:
        for image, label in zip(x, y, strict=True):
            grey = image[0].numpy()
            scaled = (255 * (grey - grey.min()) / max(float(grey.max() - grey.min()), 1e-8))
            rgb = np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=-1)
            folder = root / f"class{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(folder / f"{written}.png")
            written += 1


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
               "rss_mib": process_memory_kb("VmRSS") / 1024,
               "hwm_mib": process_memory_kb("VmHWM") / 1024}
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
    parser.add_argument("--rgb", action="store_true",
                        help="3 x 32 x 32 RGB images (the CIFAR-10 shape) via imagefolder")
    parser.add_argument("--memory-cap-gib", dest="memory_cap_gib", type=float, default=None,
                        help="address-space limit of this process (RLIMIT_AS), GiB")
    args = parser.parse_args()
    if args.memory_cap_gib is not None:
        cap = int(args.memory_cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
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
    folder = tempfile.TemporaryDirectory()
    if args.rgb:
        # the imagefolder set holds 20 % out for testing, then subsamples --train-size
        write_rgb_tree(dataset, Path(folder.name), 2 * args.train_size)
        settings.update(dataset="imagefolder", data_dir=folder.name)
        settings.pop("image_size", None)
    start = time.perf_counter()
    handler = IterationMemory(args.device, start, 60 * args.minutes)
    logging.getLogger("pyronas").addHandler(handler)
    logging.getLogger("pyronas").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_search(settings, Path(tmp) / "search")
        except KeyboardInterrupt:
            pass
    folder.cleanup()
    rows = handler.rows
    shape = "3 x 32 x 32 RGB" if args.rgb else f"image size {args.image_size or 'native'}"
    cap = "" if args.memory_cap_gib is None else f", address space capped at " \
        f"{args.memory_cap_gib:g} GiB"
    print(f"\n{dataset} ({shape}), darts space, 8 cells, C 16, batch 32, {args.train_size} "
          f"images, device {args.device}, {args.threads} thread(s){cap}")
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
