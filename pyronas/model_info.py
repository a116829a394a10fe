"""``pyronas model-info``: size and cost of a genotype's published evaluation network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyronas.evalnet import NetworkCIFAR, NetworkImageNet, count_mult_adds, count_parameters
from pyronas.genotype import Genotype, describe, from_nb201_string, load_genotype

NETWORKS = {
    # dataset: (builder, input size of one image, description)
    "cifar10": (
        lambda g: NetworkCIFAR(g, C=36, num_classes=10, layers=20, auxiliary=True),
        (3, 32, 32),
        "DARTS CIFAR network, C=36, 20 cells, auxiliary head",
    ),
    "imagenet": (
        lambda g: NetworkImageNet(g, C=48, num_classes=1000, layers=14, auxiliary=True),
        (3, 224, 224),
        "DARTS ImageNet mobile network, C=48, 14 cells, auxiliary head",
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """Size and cost of one evaluation network."""

    params: int
    params_total: int
    mult_adds: int
    network: str
    cells: str


def _load(name: str) -> Genotype:
    """A bundled name, a genotype JSON file or a NAS-Bench-201 string (``|op~0|+|...|``)."""
    if str(name).startswith("|") and not Path(name).is_file():
        return from_nb201_string(str(name))
    return load_genotype(name)


def model_info(genotype_name_or_path: str, dataset: str) -> ModelInfo:
    """Build the published network of ``dataset`` for a genotype and measure it."""
    if dataset not in NETWORKS:
        raise ValueError(
            f"unknown dataset {dataset!r} for model-info; choose from {list(NETWORKS)}"
        )
    genotype = _load(genotype_name_or_path)
    build, input_size, network = NETWORKS[dataset]
    model = build(genotype)
    return ModelInfo(
        params=count_parameters(model, exclude_auxiliary=True),
        params_total=count_parameters(model, exclude_auxiliary=False),
        mult_adds=count_mult_adds(model, input_size),
        network=network,
        cells=describe(genotype),
    )


def model_info_text(genotype_name_or_path: str, dataset: str) -> str:
    """The report printed by ``pyronas model-info``."""
    info = model_info(genotype_name_or_path, dataset)
    return "\n".join(
        [
            f"genotype:   {genotype_name_or_path}",
            f"network:    {info.network}",
            f"parameters: {info.params / 1e6:.3f} M (auxiliary head excluded), "
            f"{info.params_total / 1e6:.3f} M in total",
            f"mult-adds:  {info.mult_adds / 1e6:.1f} M per image",
            "cells:",
            info.cells,
        ]
    )
