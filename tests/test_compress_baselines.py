"""Magnitude-pruning baselines on tiny data: what is kept, and that fine-tuning trains."""

from __future__ import annotations

import pytest
import torch

from pyronas.compress.baselines import (
    FineTune,
    evaluate,
    fine_tune,
    magnitude_masks,
    magnitude_prune,
    norm_alive,
    norm_alive_columns,
    structured_prune,
)
from pyronas.compress.networks import build_network, prunable_layers
from pyronas.compress.surgery import count_weights, prune_units

BUDGET = FineTune(epochs=3, lr=0.05)


def _loader(size: int, seed: int = 0, n: int = 128, batch: int = 32):
    """Two Gaussian classes of ``1 x size x size`` float64 images, in batches."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    centre = torch.randn(2, 1, size, size, generator=g, dtype=torch.float64)
    x = centre[y] + 0.5 * torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _net(name: str, size: int):
    torch.manual_seed(0)
    return build_network(name, 1, size, num_classes=10).double()


def test_magnitude_masks_keep_the_largest_weights_globally() -> None:
    net = _net("lenet300", 4)
    masks = magnitude_masks(net, sparsity=0.9)
    total = count_weights(net)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.1 * total)
    kept, gone = [], []
    for name, mask in masks.items():
        weight = net.get_submodule(name).weight.detach().abs()
        assert mask.shape == weight.shape
        kept.append(weight[mask])
        gone.append(weight[~mask])
    assert torch.cat(kept).min() >= torch.cat(gone).max()
    # global, not per layer: the layers keep different fractions
    fractions = {name: m.float().mean().item() for name, m in masks.items()}
    assert max(fractions.values()) - min(fractions.values()) > 0.01


def test_magnitude_prune_fine_tunes_and_keeps_the_zeros() -> None:
    net = _net("lenet300", 4)
    loader = _loader(4)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    masks = magnitude_masks(net, 0.8)
    untuned = _net("lenet300", 4)
    for name, mask in masks.items():
        untuned.get_submodule(name).weight.data.mul_(mask)
    pruned, masks = magnitude_prune(net, 0.8, loader, BUDGET)
    for name, mask in masks.items():
        weight = pruned.get_submodule(name).weight
        assert torch.all(weight[~mask] == 0) and torch.all(weight[mask] != 0)
    assert evaluate(pruned, loader)[0] < evaluate(untuned, loader)[0]
    assert evaluate(pruned, loader)[1] > 0.9
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_norm_alive_keeps_the_units_of_largest_norm() -> None:
    net = _net("lenet5", 8)
    with torch.no_grad():
        net.get_submodule("conv1").weight[[3, 7, 11]] *= 100.0
    alive = norm_alive(net, {"conv1": 3, "fc1": 40})
    assert torch.nonzero(alive["conv1"]).flatten().tolist() == [3, 7, 11]
    assert int(alive["fc1"].sum()) == 40 and bool(alive["conv2"].all())


def test_structured_prune_is_physically_smaller_and_trains() -> None:
    net = _net("lenet5", 8)
    loader = _loader(8)
    units = {"conv1": 10, "conv2": 25, "fc1": 50}
    untuned = prune_units(net, norm_alive(net, units))
    pruned = structured_prune(net, units, loader, FineTune(epochs=3, lr=0.01))
    assert [l.out_units for l in prunable_layers(pruned)] == [10, 25, 50, 10]
    assert count_weights(pruned) == count_weights(untuned) < count_weights(net)
    assert evaluate(pruned, loader)[0] < evaluate(untuned, loader)[0] - 0.1


def test_structured_columns_keep_the_largest_columns_of_alive_channels() -> None:
    net = _net("lenet5", 28)  # fc1 reads 50 channels x 16 positions
    alive = norm_alive(net, {"conv2": 5})
    columns = norm_alive_columns(net, alive, {"fc1": 30})["fc1"]
    assert columns.shape == (800,) and int(columns.sum()) == 30
    live = alive["conv2"].repeat_interleave(16)
    assert not bool(columns[~live].any())  # only columns of alive channels
    norms = net.get_submodule("fc1").weight.detach().norm(dim=0)
    assert norms[columns].min() >= norms[live & ~columns].max()
    pruned = structured_prune(net, {"conv2": 5}, _loader(28, n=32), FineTune(epochs=0),
                              columns={"fc1": 30})
    assert pruned.get_submodule("fc1").weight.shape == (500, 30)
    assert norm_alive_columns(net, alive, {"fc1": 80}) == {}  # every column: nothing to select
    with pytest.raises(ValueError, match="the alive channels give 80 columns"):
        norm_alive_columns(net, alive, {"fc1": 81})
    with pytest.raises(ValueError, match="not a linear layer after a flatten"):
        norm_alive_columns(net, alive, {"fc2": 3})


def test_fine_tune_lowers_the_training_loss() -> None:
    net = _net("lenet300", 4)
    losses = fine_tune(net, _loader(4), FineTune(epochs=4, lr=0.05))
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_bad_targets_are_refused() -> None:
    net = _net("lenet300", 4)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        magnitude_masks(net, 1.0)
    with pytest.raises(ValueError, match="units\\['fc2'\\] = 101; layer 'fc2' has 100"):
        norm_alive(net, {"fc2": 101})
    with pytest.raises(ValueError, match="'fc3'\\], not hidden layers"):
        norm_alive(net, {"fc3": 5})


def test_cosine_schedule_anneals_the_learning_rate_to_zero(monkeypatch):
    """The cosine budget takes its first step at ``lr``, then ever smaller ones, the last
    near 0."""
    loader = _loader(8)
    net = build_network("lenet300", 1, 8, 2).double()
    seen = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    fine_tune(net, loader, FineTune(epochs=2, lr=0.1, schedule="cosine"))
    assert len(seen) == 2 * len(loader)
    assert seen[0] == pytest.approx(0.1)
    assert seen[-1] < 0.1 * 0.05 and all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        FineTune(schedule="step")
