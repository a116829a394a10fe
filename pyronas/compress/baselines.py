"""Magnitude-pruning baselines, each followed by the same fine-tuning budget.

* :func:`magnitude_prune`: global unstructured pruning, the weights of smallest absolute value
  over all prunable layers set to zero (and kept at zero while fine-tuning) until a target
  fraction of them is gone.
* :func:`structured_prune`: in every hidden layer, the units (rows / filters) of largest L2
  norm are kept, the others physically removed by :func:`~pyronas.compress.surgery.prune_units`;
  optionally also the input columns of largest L2 norm of a linear layer after a flatten
  (:func:`norm_alive_columns`), so that it matches a network pruned to single positions.

Both fine-tune with :func:`fine_tune`, a plain SGD loop on any iterable of ``(x, y)`` batches,
for the epochs of a :class:`FineTune` budget; with ``distill > 0`` it also matches the softened
outputs of a teacher (the dense network), :func:`distillation_loss`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pyronas.compress.networks import prunable_layers
from pyronas.compress.surgery import prune_units


@dataclass(frozen=True)
class FineTune:
    """The fine-tuning budget: SGD with momentum for ``epochs`` passes over the loader, at a
    constant ``lr`` or (``schedule="cosine"``) one annealed from ``lr`` to 0 over the steps.

    ``distill`` in ``[0, 1]`` is the weight of the distillation term against a teacher's
    outputs softened at ``temperature`` (:func:`distillation_loss`; 0: plain cross-entropy).
    ``progress`` draws a progress bar per epoch.
    """

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    distill: float = 0.0
    temperature: float = 4.0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.schedule!r}; choose one of "
                             f"{', '.join(SCHEDULES)}")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1] (the weight of the distillation "
                             f"term), got {self.distill!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")


SCHEDULES = ("constant", "cosine")
"""The learning-rate schedules of :class:`FineTune`."""


def _to(x: Tensor, like: Tensor) -> Tensor:
    return x.to(like.device, like.dtype if x.is_floating_point() else x.dtype)


def distillation_loss(logits: Tensor, teacher_logits: Tensor, labels: Tensor, distill: float,
                      temperature: float) -> Tensor:
    """``(1 - distill) * CE(logits, labels) + distill * T^2 * KL(p_T(teacher) || p_T(logits))``.

    Parameters
    ----------
    logits, teacher_logits : Tensor
        ``(batch, classes)``: the student's and the teacher's outputs.
    labels : Tensor
        ``(batch,)`` integer classes.
    distill : float
        Weight of the distillation term, in ``[0, 1]``.
    temperature : float
        ``T``: both outputs are softened as ``softmax(logits / T)``; the ``T^2`` keeps the
        term's gradients on the scale of the cross-entropy's (Hinton et al., 2015).

    Returns
    -------
    Tensor
        Scalar, the mean over the batch.
    """
    hard = F.cross_entropy(logits, labels)
    if distill == 0.0:
        return hard
    soft = F.kl_div(F.log_softmax(logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)  # fmt: skip
    return (1.0 - distill) * hard + distill * temperature**2 * soft


def fine_tune(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    budget: FineTune,
    weight_masks: dict[str, Tensor] | None = None,
    teacher: nn.Module | None = None,
    phase: str = "fine-tuning",
) -> list[float]:
    """Train ``net`` in place on the mean cross-entropy (or, with ``budget.distill > 0``,
    :func:`distillation_loss` against ``teacher``) with SGD.

    Parameters
    ----------
    net : nn.Module
        Returns logits ``(batch, classes)``; batches are moved to its device and float dtype.
    loader : iterable of (Tensor, Tensor)
        Batches ``x (batch, ...)`` and integer labels ``y (batch,)``; iterated once per epoch.
    budget : FineTune
        Epochs and SGD settings.
    weight_masks : dict of str to Tensor, optional
        ``weight_masks[layer name]``: bool of the layer's weight shape; weights where it is
        False are zeroed before training and after every step.
    teacher : nn.Module, optional
        Required when ``budget.distill > 0``: its eval-mode logits on the same batches are the
        soft targets (it is not trained).
    phase : str
        What this training is, for the error message.

    Returns
    -------
    list of float
        The mean training loss of every epoch.

    Raises
    ------
    FloatingPointError
        The loss of a batch is not finite (the weights diverged: the learning rate is too
        large), naming the phase, the epoch, the step and the learning rate.
    """
    if budget.distill > 0 and teacher is None:
        raise ValueError("fine-tuning with distill > 0 needs a teacher network")
    if teacher is not None:
        teacher.eval()
    parameter = next(net.parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=budget.lr, momentum=budget.momentum,
                                weight_decay=budget.weight_decay)  # fmt: skip
    apply_weight_masks(net, weight_masks or {})
    scheduler = None
    if budget.schedule == "cosine" and budget.epochs > 0:
        steps = budget.epochs * len(loader)  # type: ignore[arg-type]
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    net.train()
    losses = []
    for epoch in range(budget.epochs):
        total, count = 0.0, 0
        batches = tqdm(loader, desc=f"{phase} epoch {epoch + 1}/{budget.epochs}",
                       leave=False, disable=not budget.progress)
        for step, (x, y) in enumerate(batches):
            x, y = _to(x, parameter), y.to(parameter.device)
            logits = net(x)
            if budget.distill > 0:
                with torch.no_grad():
                    target = teacher(x)  # type: ignore[misc]
                loss = distillation_loss(logits, target, y, budget.distill, budget.temperature)
            else:
                loss = F.cross_entropy(logits, y)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"{phase}: the training loss became {value} at epoch {epoch + 1}, step "
                    f"{step + 1} (learning rate {budget.lr:g}); try a smaller learning rate")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            apply_weight_masks(net, weight_masks or {})
            total, count = total + value * len(y), count + len(y)
        losses.append(total / max(count, 1))
    return losses


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """``(mean cross-entropy, accuracy)`` of ``net`` in eval mode over the loader's batches."""
    parameter = next(net.parameters())
    training = net.training
    net.eval()
    loss, correct, count = 0.0, 0, 0
    for x, y in loader:
        x, y = _to(x, parameter), y.to(parameter.device)
        logits = net(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
        count += len(y)
    net.train(training)
    return loss / max(count, 1), correct / max(count, 1)


def apply_weight_masks(net: nn.Module, weight_masks: dict[str, Tensor]) -> None:
    """Zero, in place, the weights of ``net.get_submodule(name)`` where ``weight_masks[name]``
    is False."""
    with torch.no_grad():
        for name, mask in weight_masks.items():
            weight = net.get_submodule(name).weight
            weight.mul_(mask.to(weight.device, weight.dtype))


def magnitude_masks(net: nn.Module, sparsity: float) -> dict[str, Tensor]:
    """Global unstructured magnitude masks: the smallest ``|w|`` over all prunable layers go.

    Parameters
    ----------
    net : nn.Module
        A network of :mod:`pyronas.compress.networks`.
    sparsity : float
        Fraction of the weights (of all ``nn.Linear`` / ``nn.Conv2d`` layers, classifier
        included; biases excluded) to remove, in ``[0, 1)``.

    Returns
    -------
    dict of str to Tensor
        ``masks[layer name]``: bool of the weight's shape, True where the weight stays;
        ``round((1 - sparsity) * total)`` entries are True in all.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    layers = prunable_layers(net)
    weights = [net.get_submodule(layer.name).weight.detach() for layer in layers]
    flat = torch.cat([w.abs().flatten() for w in weights])
    keep = max(1, round((1.0 - sparsity) * flat.numel()))
    alive = torch.zeros_like(flat, dtype=torch.bool)
    alive[torch.topk(flat, keep).indices] = True
    masks, start = {}, 0
    for layer, weight in zip(layers, weights, strict=True):
        masks[layer.name] = alive[start : start + weight.numel()].view_as(weight)
        start += weight.numel()
    return masks


def magnitude_prune(
    net: nn.Module,
    sparsity: float,
    loader: Iterable[tuple[Tensor, Tensor]],
    budget: FineTune,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, dict[str, Tensor]]:
    """Global unstructured magnitude pruning of a copy of ``net``, then fine-tuning (with
    ``teacher``'s soft targets when ``budget.distill > 0``).

    Returns
    -------
    (nn.Module, dict of str to Tensor)
        The fine-tuned copy (same shapes, pruned weights zero) and its weight masks
        (:func:`magnitude_masks`). ``net`` is not changed.
    """
    masks = magnitude_masks(net, sparsity)
    pruned = copy.deepcopy(net)
    fine_tune(pruned, loader, budget, weight_masks=masks, teacher=teacher)
    return pruned, masks


def norm_alive(net: nn.Module, units: dict[str, int]) -> dict[str, Tensor]:
    """Alive masks keeping, per hidden layer, the ``units[name]`` rows / filters of largest
    L2 norm.

    Parameters
    ----------
    net : nn.Module
        A network of :mod:`pyronas.compress.networks`.
    units : dict of str to int
        Units to keep per hidden layer, in ``1 .. out_units``; a hidden layer not named keeps
        all of its units.

    Returns
    -------
    dict of str to Tensor
        ``alive_out`` for :func:`~pyronas.compress.surgery.prune_units`: bool ``(out_units,)``.
    """
    hidden = {layer.name: layer for layer in prunable_layers(net)[:-1]}
    unknown = sorted(set(units) - set(hidden))
    if unknown:
        raise ValueError(f"units names {unknown}, not hidden layers of the network "
                         f"({', '.join(hidden)})")  # fmt: skip
    alive = {}
    for name, layer in hidden.items():
        keep = units.get(name, layer.out_units)
        if not 1 <= keep <= layer.out_units:
            raise ValueError(f"units[{name!r}] = {keep}; layer {name!r} has "
                             f"{layer.out_units} units and keeps at least 1")  # fmt: skip
        weight = net.get_submodule(name).weight.detach()
        norms = weight.flatten(1).norm(dim=1)
        mask = torch.zeros(layer.out_units, dtype=torch.bool, device=weight.device)
        mask[torch.topk(norms, keep).indices] = True
        alive[name] = mask
    return alive


def norm_alive_columns(net: nn.Module, alive_out: dict[str, Tensor], columns: dict[str, int]
                       ) -> dict[str, Tensor]:
    """Alive columns keeping, per linear layer after a flatten, the ``columns[name]`` input
    columns of largest L2 norm among those of the channels ``alive_out`` keeps.

    Parameters
    ----------
    net : nn.Module
        A network of :mod:`pyronas.compress.networks`.
    alive_out : dict of str to Tensor
        The alive units of every hidden layer (:func:`norm_alive`), bool ``(out_units,)``.
    columns : dict of str to int
        Columns to keep per layer, at most ``alive channels * in_block`` (each column is one
        position of one channel's feature map).

    Returns
    -------
    dict of str to Tensor
        ``alive_columns`` for :func:`~pyronas.compress.surgery.prune_units`: bool
        ``(in_features,)``; a layer that keeps every column of its alive channels gets no
        entry (nothing to select).
    """
    layers = prunable_layers(net)
    before = {layer.name: prev for prev, layer in zip(layers[:-1], layers[1:], strict=True)}
    alive = {}
    for name, keep in columns.items():
        layer = next((x for x in layers if x.name == name), None)
        if layer is None or layer.in_block == 1:
            raise ValueError(f"columns names {name!r}, not a linear layer after a flatten")
        weight = net.get_submodule(name).weight.detach()
        live = alive_out[before[name].name].repeat_interleave(layer.in_block)
        available = int(live.sum())
        if not 1 <= keep <= available:
            raise ValueError(f"columns[{name!r}] = {keep}; the alive channels give "
                             f"{available} columns")
        if keep == available:
            continue
        norms = weight.norm(dim=0).masked_fill(~live, -1.0)
        mask = torch.zeros_like(live)
        mask[torch.topk(norms, keep).indices] = True
        alive[name] = mask
    return alive


def structured_prune(
    net: nn.Module,
    units: dict[str, int],
    loader: Iterable[tuple[Tensor, Tensor]],
    budget: FineTune,
    columns: dict[str, int] | None = None,
    teacher: nn.Module | None = None,
) -> nn.Module:
    """Structured pruning by unit norm (:func:`norm_alive`), physically, then fine-tuning
    (with ``teacher``'s soft targets when ``budget.distill > 0``).

    ``columns`` (``{layer: count}``) also keeps only that many input columns of a linear layer
    after a flatten, by norm (:func:`norm_alive_columns`).

    Returns
    -------
    nn.Module
        The smaller, fine-tuned network; ``net`` is not changed.
    """
    alive = norm_alive(net, units)
    pruned = prune_units(net, alive, alive_columns=norm_alive_columns(net, alive, columns or {}))
    fine_tune(pruned, loader, budget, teacher=teacher)
    return pruned
