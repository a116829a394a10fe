"""The compression networks: shapes, prunable layers, weight counts against hand counts."""

from __future__ import annotations

import json

import pytest
import torch

from pyronas.compress.networks import (
    NETWORKS,
    MaxPool2x2,
    PrunableLayer,
    build_network,
    describe_network,
    network_from_description,
    prunable_layers,
)
from pyronas.compress.surgery import count_weights, prune_units


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [("lenet300", 1, 28), ("lenet300", 1, 8), ("lenet5", 1, 28), ("lenet5", 1, 8),
     ("lenet5", 1, 4), ("lenet5", 3, 16), ("vgg_small", 3, 32), ("vgg_small", 1, 8)],
)  # fmt: skip
def test_logits_have_the_classes(name: str, channels: int, size: int) -> None:
    net = build_network(name, channels, size, num_classes=7)
    assert net(torch.randn(3, channels, size, size)).shape == (3, 7)


def test_lenet300_layers_and_weights() -> None:
    layers = prunable_layers(build_network("lenet300", 1, 28, 10))
    assert layers == [
        PrunableLayer("fc1", "linear", 300, 784),
        PrunableLayer("fc2", "linear", 100, 300),
        PrunableLayer("fc3", "linear", 10, 100),
    ]
    assert count_weights(build_network("lenet300", 1, 28, 10)) == 784 * 300 + 300 * 100 + 1000


def test_lenet5_is_the_caffe_net_at_28_pixels() -> None:
    net = build_network("lenet5", 1, 28, 10)
    layers = prunable_layers(net)
    assert [(l.name, l.kind, l.out_units, l.in_units, l.in_block) for l in layers] == [
        ("conv1", "conv", 20, 1, 1),
        ("conv2", "conv", 50, 20, 1),
        ("fc1", "linear", 500, 800, 16),
        ("fc2", "linear", 10, 500, 1),
    ]
    assert count_weights(net) == 20 * 25 + 50 * 20 * 25 + 800 * 500 + 500 * 10  # 430,500
    assert net.get_submodule("conv2").weight.shape == (50, 20, 5, 5)


def test_lenet5_pads_small_digits() -> None:
    layers = prunable_layers(build_network("lenet5", 1, 8, 10))
    assert layers[2] == PrunableLayer("fc1", "linear", 500, 50 * 2 * 2, 4)


def test_vgg_small_layers_are_in_forward_order_with_batch_norm() -> None:
    net = build_network("vgg_small", 3, 32, 10)
    layers = prunable_layers(net)
    assert [l.name for l in layers] == [f"conv{k}" for k in range(1, 7)] + ["fc1", "fc2"]
    assert [l.out_units for l in layers[:6]] == [32, 32, 64, 64, 128, 128]
    assert layers[6].in_units == 128 * 4 * 4 and layers[6].in_block == 16
    assert all(net.get_submodule(f"bn{k}").num_features == layers[k - 1].out_units
               for k in range(1, 7))  # fmt: skip
    assert layers[-1].out_units == 10


def test_bad_names_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown network 'lenet6'.*lenet300"):
        build_network("lenet6", 1, 28, 10)
    with pytest.raises(ValueError, match="at least 8x8"):
        build_network("vgg_small", 3, 4, 10)
    with pytest.raises(ValueError, match="at least 4x4"):
        build_network("lenet5", 1, 3, 10)
    assert set(NETWORKS) == {"lenet300", "lenet5", "vgg_small"}


@pytest.mark.parametrize(("name", "channels", "size"),
                         [("lenet300", 1, 28), ("lenet5", 1, 8), ("vgg_small", 3, 16)])
def test_a_pruned_network_is_rebuilt_from_its_json_description(
    name: str, channels: int, size: int
) -> None:
    torch.manual_seed(0)
    net = build_network(name, channels, size, 10).double().eval()
    g = torch.Generator().manual_seed(0)
    alive = {l.name: torch.rand(l.out_units, generator=g) < 0.5 for l in prunable_layers(net)[:-1]}
    alive_in = torch.ones(prunable_layers(net)[0].in_units, dtype=torch.bool)
    alive_in[-1] = channels == 1 and name == "lenet5"  # drop the last input unless the only one
    pruned = prune_units(net, alive, alive_in)
    description = json.loads(json.dumps(describe_network(pruned)))
    rebuilt = network_from_description(description).double().eval()
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, channels, size, size, dtype=torch.float64)
    assert torch.equal(rebuilt(x), pruned(x))
    assert description[0]["type"] in ("Flatten", "SelectInputs")
    fc1 = next(entry for entry in description if entry["name"] == "fc1")
    assert fc1["type"] == "Linear" and fc1["out_features"] == int(alive["fc1"].sum())


def test_unknown_modules_are_not_described() -> None:
    with pytest.raises(TypeError, match="module '1' \\(Tanh\\)"):
        describe_network(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh()))
    with pytest.raises(ValueError, match="unknown module type 'Tanh' of 'act'"):
        network_from_description([{"name": "act", "type": "Tanh"}])


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (24, 25), (3, 2)])
def test_the_fast_max_pool_computes_what_torch_max_pool_does(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(3, 4, *size, generator=g, dtype=torch.float64))
    pool, reference = MaxPool2x2(), torch.nn.MaxPool2d(2)
    with torch.inference_mode():  # the strided-maximum path
        assert torch.equal(pool(x), reference(x))
    # with autograd: torch's kernel, the same values and gradients
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = pool(a), reference(b)
    assert torch.equal(ya, yb)
    weights = torch.randn(ya.shape, generator=g, dtype=torch.float64)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_older_run_folders_with_torch_max_pools_still_build() -> None:
    net = build_network("lenet5", 1, 28, 10).eval()
    description = describe_network(net)
    assert [e["type"] for e in description if "pool" in e["name"]] == ["MaxPool2x2"] * 2
    old = [{"name": e["name"], "type": "MaxPool2d", "kernel_size": 2, "stride": 2, "padding": 0}
           if e["type"] == "MaxPool2x2" else e for e in description]
    rebuilt = network_from_description(old).eval()
    assert isinstance(rebuilt.pool1, torch.nn.MaxPool2d)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), net(x))
