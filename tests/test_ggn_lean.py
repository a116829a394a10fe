"""The lean exact GGN (per-sample gradients through batch-expanded sites) against the ``ggn``
backend and against brute-force Jacobians (torch.func), in float64."""

import pytest
import torch
from mathbed import (
    DT,
    TIGHT,
    assert_sites_close,
    brute_ggn_matrix,
    flatten_sites,
    gated_conv_case,
    gated_mlp_case,
    supernet_case,
)
from torch import nn

from pyronas.inference.curvature import BACKENDS, diagonal_curvature
from pyronas.inference.ggn_lean import hessian_factor_columns, lean_ggn

# --------------------------------------------------------------------------------------------
# the factor of the output Hessian


def test_factor_columns_reproduce_the_output_hessians():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=DT)
    q = torch.stack(list(hessian_factor_columns(logits, "categorical")), -1)  # (batch, C, C)
    p = torch.softmax(logits, -1)
    lam = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
    torch.testing.assert_close(q @ q.transpose(-1, -2), lam, **TIGHT)

    means = torch.randn(3, 2, 2, dtype=DT)
    cols = list(hessian_factor_columns(means, "gaussian", noise_std=0.5))
    assert len(cols) == 4 and cols[0].shape == means.shape
    q = torch.stack([c.reshape(3, -1) for c in cols], -1)
    torch.testing.assert_close(
        q @ q.transpose(-1, -2), torch.eye(4, dtype=DT).expand(3, 4, 4) * 4, **TIGHT
    )


# --------------------------------------------------------------------------------------------
# the diagonal equals the ggn backend; the matrix equals brute force


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_mlp_with_batch_norm_matches_ggn_and_brute_force(likelihood):
    net, forward, sites, x, _ = gated_mlp_case()
    res = lean_ggn(forward, sites, x, likelihood, noise_std=0.7, module=net, full=True)
    ref = BACKENDS["ggn"](forward, sites, x, None, likelihood, 0.7, net)
    assert_sites_close(res.diagonal, ref, **TIGHT)
    brute = brute_ggn_matrix(forward, sites, x, likelihood, noise_std=0.7)
    torch.testing.assert_close(res.matrix, brute, **TIGHT)
    assert res.num_samples == 7


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_conv_net_matches_ggn_and_brute_force(likelihood):
    net, forward, sites, x, _ = gated_conv_case()
    res = lean_ggn(forward, sites, x, likelihood, noise_std=1.3, module=net, full=True)
    ref = BACKENDS["ggn"](forward, sites, x, None, likelihood, 1.3, net)
    assert_sites_close(res.diagonal, ref, **TIGHT)
    torch.testing.assert_close(
        res.matrix, brute_ggn_matrix(forward, sites, x, likelihood, 1.3), **TIGHT
    )
    torch.testing.assert_close(torch.diagonal(res.matrix), flatten_sites(res.diagonal), **TIGHT)


def test_supernet_matches_ggn_backend():
    net, forward, sites, x, y = supernet_case(seed=4, channels=2, layers=2, classes=3, image=6,
                                              batch=3)
    lean = diagonal_curvature(forward, sites, [(x, y)], backend="ggn_lean", module=net)
    ref = diagonal_curvature(forward, sites, [(x, y)], backend="ggn", module=net)
    assert_sites_close(lean, ref, **TIGHT)
    assert all(v.abs().sum() > 0 for v in lean.values())


def test_forward_declaring_batched_sites_is_called_directly():
    net, forward, sites, x, _ = gated_conv_case()
    calls = []

    def batched(s, xb):  # sites (batch, *site_shape): sample n uses row n
        calls.append({k: tuple(v.shape) for k, v in s.items()})
        h = torch.relu(net.bn(net.stem(xb)))
        e = s["edge"][:, :, None, None, None]  # (batch, 2, 1, 1, 1)
        op = s["op"][:, :, :, None, None, None]  # (batch, 2, 2, 1, 1, 1)
        a = net.conv(e[:, 0] * h)
        b = nn.functional.avg_pool2d(e[:, 1] * h, 3, stride=1, padding=1)
        z = op[:, 0, 0] * a + op[:, 0, 1] * b + op[:, 1, 0] * torch.tanh(a) * op[:, 1, 1]
        return net.head(z.mean((2, 3)))

    batched.batched_sites = True  # type: ignore[attr-defined]
    res = lean_ggn(batched, sites, x, module=net, full=True)
    assert calls == [{"edge": (5, 2), "op": (5, 2, 2)}]
    ref = lean_ggn(forward, sites, x, module=net, full=True)
    assert_sites_close(res.diagonal, ref.diagonal, **TIGHT)
    torch.testing.assert_close(res.matrix, ref.matrix, **TIGHT)


# --------------------------------------------------------------------------------------------
# backend plumbing


def test_backend_is_registered_and_restores_the_module():
    assert "ggn_lean" in BACKENDS
    net, forward, sites, x, _ = gated_mlp_case()
    net.train()
    net.head.weight.requires_grad_(True)
    net.lin.bias.requires_grad_(False)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    lean = diagonal_curvature(forward, sites, batches, backend="ggn_lean", module=net)
    assert net.training and net.bn.training
    assert net.head.weight.requires_grad and not net.lin.bias.requires_grad
    net.lin.bias.requires_grad_(True)
    ref = diagonal_curvature(forward, sites, batches, backend="ggn", module=net)
    assert_sites_close(lean, ref, **TIGHT)
    for v in sites.values():  # the sites are not touched
        assert not v.requires_grad and v.grad is None


def test_sites_the_output_ignores_get_zero_curvature():
    net, forward, sites, x, _ = gated_mlp_case()
    sites = {**sites, "unused": torch.ones(2, 3, dtype=DT)}
    res = lean_ggn(forward, sites, x, module=net, full=True)
    assert torch.equal(res.diagonal["unused"], torch.zeros(2, 3, dtype=DT))
    assert torch.equal(res.matrix[-6:], torch.zeros(6, 11, dtype=DT))

    def constant(s, xb):
        return torch.zeros(xb.shape[0], 3, dtype=DT)

    res = lean_ggn(constant, sites, x, full=True)
    assert all(torch.equal(v, torch.zeros_like(v)) for v in res.diagonal.values())
    assert torch.equal(res.matrix, torch.zeros(11, 11, dtype=DT))


def test_errors():
    net, forward, sites, x, _ = gated_mlp_case()
    with pytest.raises(ValueError, match="likelihood"):
        lean_ggn(forward, sites, x, "poisson")
    with pytest.raises(ValueError, match="no sites"):
        lean_ggn(forward, {}, x)

    def bad(s, xb):
        return forward({k: v[0] for k, v in s.items()}, xb[:1])

    bad.batched_sites = True  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="batch size"):
        lean_ggn(bad, sites, x, module=net)
