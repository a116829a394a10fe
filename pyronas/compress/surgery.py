"""Physical pruning: rebuild a network with only its alive units, and count what is left.

:func:`prune_units` returns a new, smaller ``nn.Sequential``: every ``nn.Linear`` /
``nn.Conv2d`` keeps the rows (filters) of its alive output units and the columns (channels) of
the alive units of the layer before; a ``BatchNorm`` after a layer keeps the same channels; the
first linear layer after a flatten keeps the ``h * w`` columns of every alive channel. Input
units outside ``alive_in`` are dropped by a :class:`SelectInputs` module in front of the first
layer, and the dead columns of a linear layer after a flatten (``alive_columns``: single
positions of a channel's feature map that the layer no longer reads) by one in front of that
layer (``select_<layer>``). The result computes what :func:`masked_copy` (the same network
with the dead units' weights, biases and batch-norm affine parameters set to zero) computes, up
to the rounding of shorter sums.

The layer surgery is written here rather than with Torch-Pruning. Torch-Pruning 1.6 does fit
these networks (its dependency graph, traced on an example input, prunes the batch norms and the
flatten into the first linear layer, and gives the masked outputs on LeNet-5 and ``vgg_small``),
but they are chains (``nn.Sequential``) whose only couplings are "the next layer's inputs" and
"the batch norm that follows", so one pass over the children in order is as short as the calls
to the library, needs no dependency and no trace, leaves the network unchanged (Torch-Pruning
prunes in place) and adds the input selection. Networks other than such chains are refused
with a clear error.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor, nn

from pyronas.compress.networks import MaxPool2x2, PrunableLayer, SelectInputs, prunable_layers

PASSIVE = (nn.ReLU, nn.MaxPool2d, MaxPool2x2, nn.AvgPool2d, nn.Flatten, nn.Dropout,
           nn.Identity)
"""Children copied as they are: they act on each unit (channel) separately or reshape."""


def _check(
    net: nn.Module, alive_out: dict[str, Tensor], alive_in: Tensor | None,
    alive_columns: dict[str, Tensor] | None = None,
) -> list[PrunableLayer]:
    """Validate the network and the masks; return the prunable layers."""
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"the surgery needs an nn.Sequential network, got {type(net).__name__}")
    for name, module in net.named_children():
        known = PASSIVE + (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, SelectInputs)
        if not isinstance(module, known):
            raise TypeError(f"the surgery does not know module {name!r} ({type(module).__name__})")
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise TypeError(f"the surgery does not know grouped convolutions ({name!r})")
    layers = prunable_layers(net)
    if not layers:
        raise ValueError("the network has no Linear or Conv2d layer")
    names = [name for name, _ in net.named_children()]
    for position, (name, module) in enumerate(net.named_children()):
        following = names[position + 1] if position + 1 < len(names) else None
        if isinstance(module, SelectInputs) and following != layers[0].name:
            raise ValueError(f"{name!r} selects the columns of a hidden layer ({following!r}): "
                             "a network pruned with alive_columns cannot be pruned again")
    hidden = {layer.name: layer for layer in layers[:-1]}
    extra = sorted(set(alive_out) - set(hidden))
    if layers[-1].name in extra:
        raise ValueError(f"alive_out names {layers[-1].name!r}, the classifier, whose outputs "
                         "are the classes and always stay")  # fmt: skip
    if extra:
        raise ValueError(f"alive_out names {extra}, not hidden layers of the network "
                         f"({', '.join(hidden)})")  # fmt: skip
    missing = [name for name in hidden if name not in alive_out]
    if missing:
        raise ValueError(f"alive_out has no mask for layer(s) {missing}")
    masks = [(f"alive_out[{name!r}]", alive_out[name], layer.out_units, f"layer {name!r}")
             for name, layer in hidden.items()]  # fmt: skip
    if alive_in is not None:
        masks.append(("alive_in", alive_in, layers[0].in_units, f"input of {layers[0].name!r}"))
    flattened = {layer.name: layer for layer in layers if layer.in_block > 1}
    for name, mask in (alive_columns or {}).items():
        if name not in flattened:
            raise ValueError(f"alive_columns names {name!r}, not a linear layer after a flatten "
                             f"({', '.join(flattened) or 'the network has none'})")
        masks.append((f"alive_columns[{name!r}]", mask, flattened[name].in_units,
                      f"the inputs of {name!r}"))
    for label, mask, units, where in masks:
        if mask.dtype != torch.bool or mask.shape != (units,):
            raise ValueError(f"{label} must be a bool tensor of shape ({units},) for {where}, "
                             f"got {mask.dtype} of shape {tuple(mask.shape)}")  # fmt: skip
        if not bool(mask.any()):
            raise ValueError(f"{label} keeps no unit of {where}")
    return layers


def _index(mask: Tensor, device: torch.device) -> Tensor:
    return torch.nonzero(mask.to(device)).flatten()


def _columns(keep: Tensor | None, total: int | None, in_units: int, name: str) -> Tensor | None:
    """The kept input columns of a layer with ``in_units`` inputs fed by ``total`` units."""
    if keep is None or total is None or total == in_units:
        return keep
    if in_units % total:
        raise ValueError(f"layer {name!r} has {in_units} inputs, not a multiple of the "
                         f"{total} units before it")  # fmt: skip
    block = in_units // total
    offsets = torch.arange(block, device=keep.device)
    return (keep[:, None] * block + offsets).flatten()


def _take(weight: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    if rows is not None:
        weight = weight.index_select(0, rows)
    if cols is not None:
        weight = weight.index_select(1, cols)
    return weight.detach().clone()


def _linear(m: nn.Linear, rows: Tensor | None, cols: Tensor | None) -> nn.Linear:
    weight = _take(m.weight, rows, cols)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=m.bias is not None,
                    device=weight.device, dtype=weight.dtype)  # fmt: skip
    _fill(new, m, weight, rows)
    return new


def _conv(m: nn.Conv2d, rows: Tensor | None, cols: Tensor | None) -> nn.Conv2d:
    weight = _take(m.weight, rows, cols)
    new = nn.Conv2d(weight.shape[1], weight.shape[0], m.kernel_size, stride=m.stride,
                    padding=m.padding, dilation=m.dilation, bias=m.bias is not None,
                    padding_mode=m.padding_mode, device=weight.device,
                    dtype=weight.dtype)  # fmt: skip
    _fill(new, m, weight, rows)
    return new


def _fill(new: nn.Linear | nn.Conv2d, old: nn.Module, weight: Tensor, rows: Tensor | None) -> None:
    with torch.no_grad():
        new.weight.copy_(weight)
        if old.bias is not None:
            new.bias.copy_(_take(old.bias, rows, None))


def _batchnorm(m: nn.BatchNorm1d | nn.BatchNorm2d, keep: Tensor | None) -> nn.Module:
    if keep is None:
        return copy.deepcopy(m)
    new = type(m)(len(keep), eps=m.eps, momentum=m.momentum, affine=m.affine,
                  track_running_stats=m.track_running_stats, device=keep.device,
                  dtype=m.running_mean.dtype if m.running_mean is not None else None)  # fmt: skip
    with torch.no_grad():
        if m.affine:
            new.weight.copy_(m.weight.index_select(0, keep))
            new.bias.copy_(m.bias.index_select(0, keep))
        if m.track_running_stats:
            new.running_mean.copy_(m.running_mean.index_select(0, keep))
            new.running_var.copy_(m.running_var.index_select(0, keep))
            new.num_batches_tracked.copy_(m.num_batches_tracked)
    return new


def prune_units(
    net: nn.Module, alive_out: dict[str, Tensor], alive_in: Tensor | None = None,
    alive_columns: dict[str, Tensor] | None = None,
) -> nn.Module:
    """A new, physically smaller network with only the alive units.

    Parameters
    ----------
    net : nn.Sequential
        A network of :func:`~pyronas.compress.networks.build_network` (or one rebuilt here).
        It is not changed.
    alive_out : dict of str to Tensor
        ``alive_out[layer.name]``: bool ``(out_units,)`` for every prunable layer but the
        classifier; False removes the row / filter, its bias and batch-norm entries, and the
        matching inputs of the next layer.
    alive_in : Tensor, optional
        Bool ``(in_units,)`` of the first layer (input features of a linear first layer, input
        channels of a convolution); the dead ones are dropped by a :class:`SelectInputs` module
        in front of that layer. None keeps every input.
    alive_columns : dict of str to Tensor, optional
        ``alive_columns[layer.name]``: bool ``(in_features,)`` of a linear layer after a
        flatten (``in_block > 1``): False drops that input column (one position of one channel's
        feature map) by a :class:`SelectInputs` named ``select_<layer>`` in front of the layer.
        Columns of dead channels go with the channel either way. The result cannot be pruned
        again.

    Returns
    -------
    nn.Sequential
        The same children names (plus ``select`` in front of the first layer when
        ``alive_in`` is given, ``select_<layer>`` for ``alive_columns``), same dtype, device
        and train/eval mode as ``net``.

    Raises
    ------
    ValueError
        When a mask is missing, names an unknown layer or the classifier, has the wrong shape
        or dtype (the message names the layer), or keeps no unit.
    TypeError
        For a network that is not a chain of known modules.
    """
    layers = _check(net, alive_out, alive_in, alive_columns)
    columns = alive_columns or {}
    first, classifier = layers[0].name, layers[-1].name
    device = next(net.parameters()).device
    keep_in = None if alive_in is None else _index(alive_in, device)
    children: list[tuple[str, nn.Module]] = []
    keep: Tensor | None = None  # alive units of the current activation (None: all of them)
    total: int | None = None  # how many units that activation had before pruning
    for name, m in net.named_children():
        if isinstance(m, SelectInputs):  # a network pruned before: select from its selection
            index = m.index if keep_in is None else m.index.index_select(0, keep_in)
            children.append((name, SelectInputs(index)))
            keep, keep_in = keep_in, None
            continue
        if name == first and keep_in is not None:
            children.append(("select", SelectInputs(keep_in)))
            keep = keep_in  # the first layer keeps the columns of the selected inputs
        if isinstance(m, nn.Linear | nn.Conv2d):
            in_units = m.in_features if isinstance(m, nn.Linear) else m.in_channels
            cols = _columns(keep, total, in_units, name)
            if name in columns:  # drop the dead columns of the (pruned) flattened activation
                cols = torch.arange(in_units, device=device) if cols is None else cols
                live = _index(columns[name].to(device)[cols], device)
                children.append((f"select_{name}", SelectInputs(live)))
                cols = cols.index_select(0, live)
            rows = None if name == classifier else _index(alive_out[name], device)
            new = _linear(m, rows, cols) if isinstance(m, nn.Linear) else _conv(m, rows, cols)
            children.append((name, new))
            keep = rows
            total = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            children.append((name, _batchnorm(m, keep)))
        else:
            children.append((name, copy.deepcopy(m)))
    pruned = nn.Sequential(OrderedDict(children))
    pruned.train(net.training)
    return pruned


def masked_copy(
    net: nn.Module, alive_out: dict[str, Tensor], alive_in: Tensor | None = None,
    alive_columns: dict[str, Tensor] | None = None,
) -> nn.Module:
    """A copy of ``net`` of the same shapes whose dead units are zeroed.

    Zeroes the rows (filters) and biases of dead output units, the weight and bias of the
    batch norm that follows their layer (so the unit outputs 0 in train and eval mode), the
    columns (channels) of the next layer that read them, the columns of the first layer for
    inputs outside ``alive_in`` and the dead ``alive_columns``. Arguments as
    :func:`prune_units`.

    Returns
    -------
    nn.Module
        The masked network, what :func:`prune_units` must compute.
    """
    layers = _check(net, alive_out, alive_in, alive_columns)
    columns = alive_columns or {}
    masked = copy.deepcopy(net)
    device = next(net.parameters()).device
    dead_cols: Tensor | None = None if alive_in is None else ~alive_in.to(device)
    previous: PrunableLayer | None = None
    last = None
    with torch.no_grad():
        for name, m in masked.named_children():
            if isinstance(m, nn.Linear | nn.Conv2d):
                layer = next(layer for layer in layers if layer.name == name)
                if dead_cols is not None:
                    if previous is not None and layer.in_units != previous.out_units:
                        block = layer.in_units // previous.out_units
                        dead_cols = dead_cols.repeat_interleave(block)
                    m.weight[:, dead_cols] = 0.0
                if name in columns:
                    m.weight[:, ~columns[name].to(device)] = 0.0
                dead_cols = None
                if name in alive_out:
                    dead = ~alive_out[name].to(device)
                    m.weight[dead] = 0.0
                    if m.bias is not None:
                        m.bias[dead] = 0.0
                    dead_cols = dead
                previous, last = layer, name
            elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and last in alive_out and m.affine:
                dead = ~alive_out[last].to(device)
                m.weight[dead] = 0.0
                m.bias[dead] = 0.0
    return masked


def count_weights(net: nn.Module) -> int:
    """Entries of the weight tensors of the ``nn.Linear`` and ``nn.Conv2d`` layers.

    Biases and batch-norm parameters are not counted (the convention of the compression
    literature: LeNet-300-100 at 28x28 has 266,200 weights).
    """
    return sum(
        m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d)
    )


def count_flops(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulate operations of one forward pass of one input.

    Counts the ``nn.Linear`` (``in * out``) and ``nn.Conv2d`` (``out_channels * h_out * w_out *
    in_channels / groups * kh * kw``) layers; biases, activations, pooling and batch norm are
    not counted. Multiply by 2 for floating-point operations in the other convention.

    Parameters
    ----------
    net : nn.Module
        The network; it is run once in eval mode on zeros and put back in its mode.
    input_shape : tuple of int
        The shape of one input without the batch, e.g. ``(1, 28, 28)``.
    """
    counts: list[int] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        per_output = module.weight[0].numel()  # in (or in/groups * kh * kw)
        counts.append(output[0].numel() * per_output)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Linear | nn.Conv2d)]  # fmt: skip
    parameter = next(net.parameters())
    training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device))
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    return sum(counts)
