"""Transfer a genotype to ImageNet, mobile setting (14 cells, 48 channels; BayesNAS Table 2).

    python experiments/imagenet_transfer.py --genotype BAYESNAS_0.01 --data-dir /data/imagenet
    python experiments/imagenet_transfer.py --smoke --data-dir tiny_imagefolder --out runs/smoke

``--data-dir`` holds the ImageFolder trees ``train/<class>/*`` and ``val/<class>/*``. Same
options as ``retrain_cifar10.py``; metrics.json reports top-1 and top-5 test error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from retrain_cifar10 import run  # noqa: E402  (the shared argument handling)

DEFAULT_CONFIG = "retrain_imagenet"

SMOKE = {
    "C": 8,
    "layers": 3,
    "epochs": 1,
    "batch_size": 4,
    "max_steps_per_epoch": 2,
    "max_eval_batches": 1,
    "device": "cpu",
    "num_workers": 0,
    "channels_last": False,
}
"""Sizes that run on a CPU in seconds; images stay 224 x 224 (the network's 7x7 final pool)."""


def main(argv: Sequence[str] | None = None) -> dict:
    return run(argv, __doc__.splitlines()[0], DEFAULT_CONFIG, SMOKE, "imagenet_transfer")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(sys.argv[1:])
