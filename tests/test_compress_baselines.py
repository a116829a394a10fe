"""Magnitude-pruning baselines on tiny data: what is kept, and that fine-tuning trains."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pyronas.compress.baselines import (
    FineTune,
    distillation_loss,
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


def test_distillation_loss_matches_its_closed_form() -> None:
    """CE for distill 0; for distill 1 ``T^2 * KL(p_T(teacher) || p_T(student))`` with the
    closed-form gradient ``T * (p_T(student) - p_T(teacher)) / batch`` w.r.t. the logits."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0])
    t = 3.0
    ce = F.cross_entropy(logits, labels)
    assert torch.equal(distillation_loss(logits, teacher, labels, 0.0, t), ce)
    p_s, p_t = torch.softmax(logits / t, 1), torch.softmax(teacher / t, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    soft = distillation_loss(logits, teacher, labels, 1.0, t)
    torch.testing.assert_close(soft, t**2 * kl, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(soft, logits)
    torch.testing.assert_close(grad, t * (p_s - p_t).detach() / 5, rtol=1e-10, atol=1e-12)
    mixed = distillation_loss(logits, teacher, labels, 0.25, t)
    torch.testing.assert_close(mixed, 0.75 * ce + 0.25 * t**2 * kl, rtol=1e-12, atol=1e-12)


def test_full_distillation_from_an_identical_teacher_changes_nothing() -> None:
    """With distill 1 a student equal to its teacher has zero gradient: SGD leaves it as is;
    with a different teacher the student moves towards the teacher's outputs."""
    loader = _loader(4)
    teacher = _net("lenet300", 4)
    student = copy.deepcopy(teacher)
    fine_tune(student, loader, FineTune(epochs=2, lr=0.1, distill=1.0), teacher=teacher)
    for a, b in zip(student.parameters(), teacher.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    torch.manual_seed(1)
    other = build_network("lenet300", 1, 4, num_classes=10).double()
    x = torch.cat([x for x, _ in loader])

    def gap() -> float:
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(other(x), 1), F.log_softmax(teacher(x), 1),
                                  reduction="batchmean", log_target=True))

    before = gap()
    fine_tune(other, loader, FineTune(epochs=3, lr=0.05, distill=1.0, temperature=1.0),
              teacher=teacher)
    assert gap() < 0.5 * before


def test_bad_distillation_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"distill must be in \[0, 1\]"):
        FineTune(distill=1.5)
    with pytest.raises(ValueError, match="temperature must be positive"):
        FineTune(distill=0.5, temperature=0.0)
    with pytest.raises(ValueError, match="needs a teacher"):
        fine_tune(_net("lenet300", 4), _loader(4), FineTune(distill=0.5))
