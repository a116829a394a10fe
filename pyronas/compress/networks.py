"""The networks of the compression runs and their prunable layers.

Every network is an ``nn.Sequential`` whose children are named (``conv1``, ``bn1``, ``fc1``, ...)
and listed in forward order, so that :mod:`pyronas.compress.surgery` can rebuild it layer by
layer. The prunable layers are its ``nn.Linear`` and ``nn.Conv2d`` modules; the last one is the
classifier.

* ``lenet300``: LeNet-300-100, ``in_channels * image_size**2 -> 300 -> 100 -> classes`` with
  ReLU (784-300-100-10 for 28x28 digits: 266,200 weights).
* ``lenet5``: the Caffe LeNet-5: conv 20 5x5, max-pool 2, conv 50 5x5, max-pool 2, fc 500,
  fc classes, ReLU after every hidden layer (430,500 weights at 28x28). The convolutions are
  unpadded (Caffe) when ``image_size >= 16``, the smallest size they fit; below that they are
  padded by 2 so that the feature maps keep their size (8x8 digits: 50 x 2 x 2 features into
  ``fc1``). Minimum size 4.
* ``vgg_small``: a VGG-like network for 32x32 CIFAR-shaped input: three blocks of two 3x3
  convolutions (32, 64, 128 filters; each followed by BatchNorm and ReLU) and a max-pool 2,
  then fc 256 and fc classes. ``image_size`` must be at least 8.

:func:`describe_network` writes such a chain (pruned ones included) as JSON-ready data and
:func:`network_from_description` builds it again, for a state dict saved next to it.

The max-pools are :class:`MaxPool2x2`: what ``nn.MaxPool2d(2)`` computes, faster at inference
on the CPU (``nn.MaxPool2d`` entries of older run folders still build).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

NETWORKS: tuple[str, ...] = ("lenet300", "lenet5", "vgg_small")
"""The names :func:`build_network` accepts."""

VGG_BLOCKS: tuple[int, ...] = (32, 64, 128)
"""Filters of the two convolutions of each ``vgg_small`` block."""

VGG_HIDDEN = 256
"""Units of the hidden fully connected layer of ``vgg_small``."""


@dataclass(frozen=True)
class PrunableLayer:
    """A layer whose output units (rows / filters) and input units (columns / channels) can go.

    Attributes
    ----------
    name : str
        The module's qualified name in the network (``net.get_submodule(name)``), e.g. ``"fc1"``.
    kind : str
        ``"linear"`` (weight ``(out_units, in_units)``) or ``"conv"`` (weight
        ``(out_units, in_units, kh, kw)``).
    out_units : int
        Rows of the weight, or output channels (filters).
    in_units : int
        Columns of the weight, or input channels.
    in_block : int
        Input units of this layer per output unit of the previous layer: ``h * w`` for the first
        linear layer after a flatten (its columns ``c * in_block ... (c + 1) * in_block - 1``
        come from channel ``c``), else 1.
    """

    name: str
    kind: str
    out_units: int
    in_units: int
    in_block: int = 1


class SelectInputs(nn.Module):
    """Keep the input units ``index`` along dimension 1 (in front of a pruned first layer).

    Parameters
    ----------
    index : Tensor
        Long ``(kept,)``: the kept features of ``(batch, features)`` or channels of
        ``(batch, channels, h, w)``, in increasing order.
    """

    def __init__(self, index: Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.to(torch.long))

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, n, ...) -> (batch, kept, ...)``."""
        return x.index_select(1, self.index)


class MaxPool2x2(nn.Module):
    """2x2 max-pooling with stride 2 (the values of ``nn.MaxPool2d(2)``: an odd last row or
    column is dropped).

    Without autograd (evaluation, ``torch.inference_mode``) the output is the elementwise
    maximum of the four strided views of the input, several times faster on the CPU than
    torch's NCHW ``max_pool2d`` kernel, which takes about half of LeNet-5's forward time
    (``benchmarks/lenet5_kernels.py``); with autograd it is ``max_pool2d``, whose
    backward is the faster one. The maximum is exact, so both give the same numbers.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, channels, h, w) -> (batch, channels, h // 2, w // 2)``."""
        if torch.is_grad_enabled() and x.requires_grad:
            return nn.functional.max_pool2d(x, 2)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = x[..., :h, :w]
        return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                             torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


def _lenet300(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    features = in_channels * image_size * image_size
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(features, 300)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(300, 100)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(100, num_classes)),
    ]))  # fmt: skip


def _lenet5(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    if image_size < 4:
        raise ValueError(f"lenet5 needs images of at least 4x4 pixels, got {image_size}")
    padding = 0 if image_size >= 16 else 2
    side = image_size
    for _ in range(2):
        side = (side + 2 * padding - 4) // 2
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 20, 5, padding=padding)), ("relu1", nn.ReLU()),
        ("pool1", MaxPool2x2()),
        ("conv2", nn.Conv2d(20, 50, 5, padding=padding)), ("relu2", nn.ReLU()),
        ("pool2", MaxPool2x2()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(50 * side * side, 500)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(500, num_classes)),
    ]))  # fmt: skip


def _vgg_small(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    if image_size < 8:
        raise ValueError(f"vgg_small needs images of at least 8x8 pixels, got {image_size}")
    modules: list[tuple[str, nn.Module]] = []
    channels, side, k = in_channels, image_size, 0
    for block, width in enumerate(VGG_BLOCKS, start=1):
        for _ in range(2):
            k += 1
            modules += [
                (f"conv{k}", nn.Conv2d(channels, width, 3, padding=1, bias=False)),
                (f"bn{k}", nn.BatchNorm2d(width)),
                (f"relu{k}", nn.ReLU()),
            ]
            channels = width
        modules.append((f"pool{block}", MaxPool2x2()))
        side //= 2
    modules += [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(channels * side * side, VGG_HIDDEN)), ("relu_fc1", nn.ReLU()),
        ("fc2", nn.Linear(VGG_HIDDEN, num_classes)),
    ]  # fmt: skip
    return nn.Sequential(OrderedDict(modules))


_BUILDERS = {"lenet300": _lenet300, "lenet5": _lenet5, "vgg_small": _vgg_small}


def build_network(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build one of :data:`NETWORKS` for square images.

    Parameters
    ----------
    name : str
        ``"lenet300"``, ``"lenet5"`` or ``"vgg_small"``.
    in_channels, image_size : int
        Input images are ``(batch, in_channels, image_size, image_size)``.
    num_classes : int
        Outputs of the classifier: logits ``(batch, num_classes)``.

    Returns
    -------
    nn.Sequential
        The network, with PyTorch's default initialisation (seed the global RNG first).

    Raises
    ------
    ValueError
        For an unknown name, or an image too small for the network.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    return _BUILDERS[name](in_channels, image_size, num_classes)


def prunable_layers(net: nn.Module) -> list[PrunableLayer]:
    """The ``nn.Linear`` and ``nn.Conv2d`` layers of ``net`` in forward (registration) order.

    The last one is the classifier. ``in_block`` of a linear layer that follows a convolution is
    its input features divided by the previous layer's filters.

    Parameters
    ----------
    net : nn.Module
        A network of :func:`build_network`, or one rebuilt by the surgery.

    Returns
    -------
    list of PrunableLayer
    """
    layers: list[PrunableLayer] = []
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            block = 1
            if layers and layers[-1].kind == "conv":
                block = module.in_features // layers[-1].out_units
            layers.append(
                PrunableLayer(name, "linear", module.out_features, module.in_features, block)
            )
        elif isinstance(module, nn.Conv2d):
            layers.append(PrunableLayer(name, "conv", module.out_channels, module.in_channels))
    return layers


_ARGS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                "padding_mode"),
    nn.BatchNorm1d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.BatchNorm2d: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.MaxPool2d: ("kernel_size", "stride", "padding"),
    MaxPool2x2: (),
    nn.AvgPool2d: ("kernel_size", "stride", "padding"),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.Dropout: ("p",),
    nn.ReLU: (),
    nn.Identity: (),
}  # fmt: skip
"""Module type -> the constructor arguments :func:`describe_network` records."""

_TYPES = {cls.__name__: cls for cls in (*_ARGS, SelectInputs)}


def describe_network(net: nn.Module) -> list[dict[str, Any]]:
    """The children of a chain network as JSON-ready dicts, in order.

    Parameters
    ----------
    net : nn.Sequential
        A network of :func:`build_network`, pruned or not.

    Returns
    -------
    list of dict
        ``{"name", "type", **constructor arguments}`` per child (``"bias"`` for linear and
        convolution layers, ``"kept"`` for :class:`SelectInputs`), e.g.
        ``{"name": "fc1", "type": "Linear", "in_features": 784, "out_features": 300,
        "bias": true}``.
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"describe_network needs an nn.Sequential, got {type(net).__name__}")
    described = []
    for name, m in net.named_children():
        entry: dict[str, Any] = {"name": name, "type": type(m).__name__}
        if isinstance(m, SelectInputs):
            entry["kept"] = len(m.index)
        elif type(m) in _ARGS:
            entry |= {arg: getattr(m, arg) for arg in _ARGS[type(m)]}
            if isinstance(m, nn.Linear | nn.Conv2d):
                entry["bias"] = m.bias is not None
        else:
            raise TypeError(f"describe_network does not know module {name!r} "
                            f"({type(m).__name__})")  # fmt: skip
        described.append(entry)
    return described


def network_from_description(description: list[dict[str, Any]]) -> nn.Sequential:
    """Build the network :func:`describe_network` described (fresh weights: load a state dict).

    Parameters
    ----------
    description : list of dict
        As returned by :func:`describe_network`, or read back from its JSON.
    """
    children = []
    for entry in description:
        args = {k: v for k, v in entry.items() if k not in ("name", "type")}
        if entry["type"] not in _TYPES:
            raise ValueError(f"unknown module type {entry['type']!r} of {entry['name']!r}")
        if entry["type"] == "SelectInputs":
            module: nn.Module = SelectInputs(torch.zeros(args["kept"], dtype=torch.long))
        else:
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
            module = _TYPES[entry["type"]](**args)
        children.append((entry["name"], module))
    return nn.Sequential(OrderedDict(children))
