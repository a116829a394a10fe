"""The closed-form group ARD update (inference/ard_update.py) against hand calculations.

Float64 throughout.
"""

from __future__ import annotations

import math

import pytest
import torch
from mathbed import (
    DT,
    LinearGaussian,
    ard_alpha,
    ard_fixed_point,
    diagonal_design,
    rng,
    simulate,
)

from pyronas.inference.ard_update import ArdUpdate, group_ard_update


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=DT)


def test_one_group_by_hand():
    # s = (1, -2), Ht = (1, 3), gamma = 1/2:
    # Sigma = 1/(2 + 1) = 1/3 and 1/(2 + 3) = 1/5
    # alpha = 2 - Sigma * 4 = 2/3 and 6/5; omega = sqrt(28/15); gamma = sqrt(5) / omega.
    out = group_ard_update(t([1.0, -2.0]), t([1.0, 3.0]), t([0.5, 0.5]), torch.tensor([0, 0]))
    assert isinstance(out, ArdUpdate)
    assert torch.allclose(out.sigma, t([1 / 3, 1 / 5]))
    assert torch.allclose(out.alpha, t([2 / 3, 6 / 5]))
    assert out.omega.shape == (1,)
    assert out.omega.item() == pytest.approx(math.sqrt(28 / 15))
    assert out.gamma.item() == pytest.approx(math.sqrt(5) / math.sqrt(28 / 15))


def test_elementwise_without_groups():
    s, ht, gamma = t([[0.5, -1.0], [2.0, 0.1]]), t([[2.0, 1.0], [0.5, 4.0]]), t([[1.0, 2.0],
                                                                                 [0.5, 1.0]])
    out = group_ard_update(s, ht, gamma)
    sigma = 1 / (1 / gamma + ht)
    alpha = 1 / gamma - sigma / gamma**2
    assert out.gamma.shape == s.shape
    assert torch.allclose(out.sigma, sigma)
    assert torch.allclose(out.alpha, alpha)
    assert torch.allclose(out.omega, alpha.sqrt())
    assert torch.allclose(out.gamma, s.abs() / alpha.sqrt())


def test_groups_match_brute_force():
    gen = rng(1)
    s = torch.randn(4, 5, generator=gen, dtype=DT)
    ht = torch.rand(4, 5, generator=gen, dtype=DT) * 3
    groups = torch.randint(0, 6, (4, 5), generator=gen)
    gamma_group = torch.rand(6, generator=gen, dtype=DT) + 0.1
    out = group_ard_update(s, ht, gamma_group[groups], groups, num_groups=7)
    assert out.gamma.shape == (7,)
    for g in range(7):
        members = groups == g
        if not members.any():
            assert out.gamma[g] == 0 and out.omega[g] == 0
            continue
        omega = ard_alpha(gamma_group[g], ht[members]).sum().sqrt()
        assert out.omega[g].item() == pytest.approx(omega.item())
        assert out.gamma[g].item() == pytest.approx((s[members].norm() / omega).item())


def test_degenerate_cases():
    # element 0 pruned (gamma 0); element 1 has no data precision (omega 0 -> gamma 0);
    # element 2 has a negative curvature (clipped to 0 -> omega 0 -> gamma 0).
    out = group_ard_update(t([0.3, 0.7, 1.0]), t([2.0, 0.0, -1.0]), t([0.0, 1.0, 1.0]))
    assert torch.equal(out.gamma, t([0.0, 0.0, 0.0]))
    assert torch.equal(out.omega, t([0.0, 0.0, 0.0]))
    assert out.sigma[0] == 0 and out.alpha[0] == 0
    assert out.sigma[1].item() == pytest.approx(1.0)  # prior variance, no data
    # A pruned element does not count in its group.
    out = group_ard_update(t([5.0, 3.0]), t([1.0, 1.0]), t([0.0, 1.0]), torch.tensor([0, 0]))
    assert out.gamma.item() == pytest.approx(3.0 / math.sqrt(0.5))


def test_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        group_ard_update(t([1.0]), t([1.0, 2.0]), t([1.0]))
    with pytest.raises(ValueError, match="non-negative"):
        group_ard_update(t([1.0]), t([1.0]), t([-1.0]))
    with pytest.raises(ValueError, match="integer"):
        group_ard_update(t([1.0]), t([1.0]), t([1.0]), t([0.0]))
    with pytest.raises(ValueError, match="num_groups"):
        group_ard_update(t([1.0, 1.0]), t([1.0, 1.0]), t([1.0, 1.0]), torch.tensor([0, 3]), 2)


def test_fixed_point_on_linear_gaussian_toy():
    """Iterating the update with a fixed mean and curvature converges to gamma = |s| / omega.

    Linear-Gaussian toy: y = X w + noise, modelled with unit noise, a diagonal design so the
    data precision of w_c is Ht_c = sum_n X_nc^2, and the mean is held fixed at the
    least-squares solution. For a single element the fixed point solves
    Ht gamma^2 - s^2 Ht gamma - s^2 = 0.
    """
    gen = rng(0)
    dim = 4
    x = diagonal_design(40, dim, gen)
    problem = LinearGaussian(x, simulate(x, [1.5, -0.7, 0.0, 0.2], 0.1, gen), noise_std=1.0)
    s = torch.linalg.lstsq(problem.x, problem.y).solution
    ht = torch.diagonal(problem.data_precision())
    torch.testing.assert_close(problem.data_precision(), torch.diag(ht), rtol=0, atol=0)

    gamma = torch.ones(dim, dtype=DT)
    for _ in range(500):
        out = group_ard_update(s, ht, gamma)
        gamma = out.gamma
    out = group_ard_update(s, ht, gamma)
    assert torch.allclose(out.gamma, gamma, rtol=1e-10)
    assert torch.allclose(gamma, s.abs() / out.alpha.sqrt(), rtol=1e-10)
    assert torch.allclose(out.omega, out.alpha.sqrt())
    assert torch.allclose(gamma, ard_fixed_point(s, ht), rtol=1e-8)

    # Two elements in one group: gamma^2 * sum_c Ht_c / (1 + gamma Ht_c) = ||s||^2.
    groups = torch.tensor([0, 0, 1, 1])
    gamma_g = torch.ones(2, dtype=DT)
    for _ in range(500):
        gamma_g = group_ard_update(s, ht, gamma_g[groups], groups).gamma
    for g in range(2):
        m = groups == g
        lhs = gamma_g[g] ** 2 * ard_alpha(gamma_g[g], ht[m]).sum()
        assert lhs.item() == pytest.approx((s[m] ** 2).sum().item(), rel=1e-8)
