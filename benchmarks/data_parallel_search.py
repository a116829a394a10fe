"""Data-parallel BayesNAS search: the same search on 1 and on N processes under ``torchrun``.

For each process count it runs ``torchrun --nproc_per_node N -m pyronas search`` with one
configuration (the global batch stays the same) and prints, in one run:

* the wall time of the whole command (process start, data, search, writing the run folder)
  and its ratio to the single process's;
* whether ``genotype.json`` is byte-identical to the single process's;
* the largest difference of the per-iteration log evidence from the single process's.

On a CPU the processes share the machine's cores (``--threads`` torch threads each), so the
ratio says what the synchronisation costs there (an all-reduce per batch for the gradients,
two per batch norm per training step for the cross-rank statistics) rather than what several
GPUs gain.

Usage::

    python benchmarks/data_parallel_search.py                 # digits, 1 and 2 processes
    python benchmarks/data_parallel_search.py --smoke         # tiny, a few seconds per run
    python benchmarks/data_parallel_search.py --nproc 1,2,4 --device cuda   # one GPU per rank
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_search(config: dict[str, Any], out: Path, nproc: int, threads: int) -> float:
    """Run one search under ``torchrun``; return its wall time in seconds."""
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "pyronas",
           "search", "--config", str(path), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYRONAS_NO_PROGRESS": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the {nproc}-process search failed:\n{done.stderr[-3000:]}")
    return seconds


def evidences(out: Path) -> list[float]:
    with (out / "metrics.csv").open(newline="") as handle:
        return [float(row["log_evidence"]) for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", default="1,2", help="process counts, the first is the "
                        "reference (default 1,2)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--train-size", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--t-max", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    args = parser.parse_args(argv)
    config: dict[str, Any] = {
        "dataset": args.dataset, "train_size": args.train_size, "batch_size": args.batch_size,
        "channels": args.channels, "layers": args.layers, "t_max": args.t_max,
        "device": args.device, "num_threads": args.threads, "progress": False,
    }  # fmt: skip
    if args.smoke:
        config.update(train_size=200, batch_size=50, channels=4, layers=3, t_max=1,
                      curvature_batches=1, bn_batches=1, posterior_draws=2)
    counts = [int(n) for n in args.nproc.split(",")]
    print(f"# data-parallel search: {args.dataset}, global batch {config['batch_size']}, "
          f"C={config['channels']}, {config['layers']} cells, t_max {config['t_max']}, "
          f"{args.threads} thread(s) per process, device {args.device}")
    print("\n| processes | wall s | time / first | genotype.json same | max abs d log evidence |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        ref: Path | None = None
        base = 0.0
        for n in counts:
            out = Path(tmp) / f"n{n}"
            seconds = run_search(config, out, n, args.threads)
            if ref is None:
                ref, base = out, seconds
            same = (out / "genotype.json").read_bytes() == (ref / "genotype.json").read_bytes()
            diff = max(abs(a - b) for a, b in zip(evidences(out), evidences(ref), strict=True))
            print(f"| {n} | {seconds:.1f} | {seconds / base:.2f} | {'yes' if same else 'no'} | "
                  f"{diff:.3g} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
