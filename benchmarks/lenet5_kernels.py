"""Where a LeNet-5 forward spends its time on the CPU: max-pool kernels and conv channel counts.

Times, under ``torch.inference_mode`` on batches of random float32 maps (the costs do not
depend on the values), best of ``--rounds``:

* the two max-pools of the 28x28 LeNet-5 (256x20x24x24 and 256x50x8x8 at batch 256) with
  torch's ``nn.MaxPool2d(2)`` and with :class:`~pyronas.compress.networks.MaxPool2x2`, and
  their share of the dense network's forward with torch's pool;
* conv2 (5x5, 12x12 input maps, 32 filters) for 13 to 20 input channels (the conv1 filters a
  compression keeps): time against multiply-adds.

    python benchmarks/lenet5_kernels.py [--batch 256] [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from pyronas.compress.networks import MaxPool2x2, build_network


def best_ms(step: Callable[[], object], rounds: int, reps: int = 10) -> float:
    """The best over ``rounds`` of the mean time of ``reps`` calls of ``step``, in ms."""
    for _ in range(2):  # warm-up
        step()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            step()
        best = min(best, (time.perf_counter() - start) / reps)
    return 1e3 * best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, rounds = args.batch, args.rounds
    print(f"CPU, batch {b}, {args.threads} thread(s), best of {rounds} rounds")
    with torch.inference_mode():
        dense = build_network("lenet5", 1, 28, 10).eval()
        for name in ("pool1", "pool2"):
            setattr(dense, name, nn.MaxPool2d(2))
        images = torch.randn(b, 1, 28, 28)
        forward = best_ms(lambda: dense(images), rounds)
        pools, pool = 0.0, MaxPool2x2()
        print(f"{'max-pool input':<20} {'nn.MaxPool2d':>13} {'MaxPool2x2':>11} {'ratio':>6}")
        for shape in ((b, 20, 24, 24), (b, 50, 8, 8)):
            x = torch.relu(torch.randn(shape))
            slow = best_ms(lambda x=x: nn.functional.max_pool2d(x, 2), rounds)
            fast = best_ms(lambda x=x: pool(x), rounds)
            pools += slow
            label = "x".join(map(str, shape))
            print(f"{label:<20} {slow:>10.2f} ms {fast:>8.2f} ms {slow / fast:>5.1f}x")
        print(f"dense LeNet-5 forward with nn.MaxPool2d: {forward:.2f} ms, of which the two "
              f"max-pools {pools:.2f} ms ({100 * pools / forward:.0f} %)")
        print(f"{'conv2 input channels':<21} {'ms':>6} {'MACs (M)':>9} {'GMAC/s':>7}")
        for channels in range(13, 21):
            conv = nn.Conv2d(channels, 32, 5)
            x = torch.randn(b, channels, 12, 12)
            ms = best_ms(lambda conv=conv, x=x: conv(x), rounds)
            macs = b * 32 * channels * 25 * 8 * 8
            print(f"{channels:<21} {ms:>6.2f} {macs / 1e6:>9.1f} {macs / ms / 1e6:>7.1f}")


if __name__ == "__main__":
    main()
