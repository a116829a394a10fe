"""Physical pruning computes what the masked network computes; counts; bad masks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pyronas.compress.networks import build_network, prunable_layers
from pyronas.compress.surgery import (
    SelectInputs,
    count_flops,
    count_weights,
    masked_copy,
    prune_units,
)

SHAPES = {"lenet300": (1, 28), "lenet5": (1, 28), "vgg_small": (3, 16)}
"""Input (channels, size) per network; vgg_small at 16 pixels to keep the test fast."""


def _net(name: str, seed: int) -> nn.Module:
    """A float64 network with random batch-norm statistics and affine parameters."""
    torch.manual_seed(seed)
    channels, size = SHAPES[name]
    net = build_network(name, channels, size, num_classes=10).double()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    return net


def _masks(net: nn.Module, seed: int, p_alive: float, with_input: bool):
    g = torch.Generator().manual_seed(seed)
    alive = {}
    for layer in prunable_layers(net)[:-1]:
        mask = torch.rand(layer.out_units, generator=g) < p_alive
        mask[torch.randint(layer.out_units, (1,), generator=g)] = True  # at least one unit
        alive[layer.name] = mask
    alive_in = None
    if with_input:
        first = prunable_layers(net)[0]
        alive_in = torch.rand(first.in_units, generator=g) < p_alive
        alive_in[0] = True
    return alive, alive_in


def _all_alive(net: nn.Module) -> dict[str, torch.Tensor]:
    return {l.name: torch.ones(l.out_units, dtype=torch.bool) for l in prunable_layers(net)[:-1]}


@settings(max_examples=4, deadline=None)
@given(
    name=st.sampled_from(sorted(SHAPES)),
    seed=st.integers(0, 2**16),
    p_alive=st.floats(0.05, 0.95),
    with_input=st.booleans(),
    train=st.booleans(),
)
def test_pruned_computes_the_masked_network(
    name: str, seed: int, p_alive: float, with_input: bool, train: bool
) -> None:
    net = _net(name, seed)
    alive, alive_in = _masks(net, seed, p_alive, with_input)
    pruned, masked = prune_units(net, alive, alive_in), masked_copy(net, alive, alive_in)
    pruned.train(train)
    masked.train(train)
    channels, size = SHAPES[name]
    x = torch.randn(6, channels, size, size, dtype=torch.float64)
    torch.testing.assert_close(pruned(x), masked(x), rtol=1e-12, atol=1e-12)
    kept = prunable_layers(pruned)
    assert [l.out_units for l in kept[:-1]] == [int(m.sum()) for m in alive.values()]
    if alive_in is not None:
        assert kept[0].in_units == int(alive_in.sum())


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_network_prunes_exactly(name: str, train: bool) -> None:
    net = _net(name, seed=3).train(train)
    alive, alive_in = _masks(net, seed=3, p_alive=0.4, with_input=True)
    pruned = prune_units(net, alive, alive_in)
    channels, size = SHAPES[name]
    x = torch.randn(4, channels, size, size, dtype=torch.float64)
    expected = masked_copy(net, alive, alive_in)(x)
    torch.testing.assert_close(pruned(x), expected, rtol=1e-12, atol=1e-12)
    assert pruned.training == train and pruned.get_submodule("fc1").weight.dtype == torch.float64
    assert count_weights(pruned) < count_weights(net)
    # the masked network really differs from the dense one, so the check above has teeth
    assert (net(x) - expected).abs().max() > 1e-6


def test_the_original_network_is_unchanged() -> None:
    net = _net("vgg_small", seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    alive, alive_in = _masks(net, seed=1, p_alive=0.3, with_input=True)
    prune_units(net, alive, alive_in)
    masked_copy(net, alive, alive_in)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_keeping_everything_gives_the_same_network() -> None:
    net = _net("lenet5", seed=2).eval()
    pruned = prune_units(net, _all_alive(net))
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    assert torch.equal(pruned(x), net(x))
    assert count_weights(pruned) == count_weights(net)


def test_a_pruned_network_prunes_again() -> None:
    net = _net("lenet300", seed=4).eval()
    alive, alive_in = _masks(net, seed=4, p_alive=0.6, with_input=True)
    once = prune_units(net, alive, alive_in)
    again_out, again_in = _masks(once, seed=5, p_alive=0.6, with_input=True)
    twice = prune_units(once, again_out, again_in)
    assert isinstance(twice.get_submodule("select"), SelectInputs)
    assert sum(isinstance(m, SelectInputs) for m in twice.modules()) == 1
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(
        twice(x), masked_copy(once, again_out, again_in)(x), rtol=1e-12, atol=1e-12
    )


def test_lenet300_weights_and_flops_against_hand_counts() -> None:
    net = build_network("lenet300", 1, 28, 10)
    assert count_weights(net) == 266_200
    assert count_flops(net, (1, 28, 28)) == 266_200  # one multiply-add per weight
    alive = {"fc1": torch.arange(300) < 150, "fc2": torch.arange(100) % 4 == 0}
    alive_in = torch.arange(784) % 2 == 0  # 392 pixels
    pruned = prune_units(net, alive, alive_in)
    hand = 392 * 150 + 150 * 25 + 25 * 10  # 62,800
    assert count_weights(pruned) == hand
    assert count_flops(pruned, (1, 28, 28)) == hand


def test_lenet5_flops_against_hand_counts() -> None:
    net = build_network("lenet5", 1, 28, 10)
    dense = 20 * 24 * 24 * 25 + 50 * 8 * 8 * 20 * 25 + 800 * 500 + 500 * 10
    assert count_flops(net, (1, 28, 28)) == dense
    alive = {"conv1": torch.arange(20) < 10, "conv2": torch.arange(50) < 25,
             "fc1": torch.arange(500) < 250}  # fmt: skip
    half = 10 * 24 * 24 * 25 + 25 * 8 * 8 * 10 * 25 + 400 * 250 + 250 * 10
    assert count_flops(prune_units(net, alive), (1, 28, 28)) == half


def test_bad_masks_name_the_layer() -> None:
    net = build_network("lenet5", 1, 28, 10)
    alive = _all_alive(net)
    with pytest.raises(ValueError, match=r"alive_out\['conv2'\].*shape \(50,\).*layer 'conv2'"):
        prune_units(net, {**alive, "conv2": torch.ones(49, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"alive_out\['fc1'\] must be a bool"):
        prune_units(net, {**alive, "fc1": torch.ones(500)})
    with pytest.raises(ValueError, match="no mask for layer.*'fc1'"):
        prune_units(net, {k: v for k, v in alive.items() if k != "fc1"})
    with pytest.raises(ValueError, match="'fc2', the classifier"):
        prune_units(net, {**alive, "fc2": torch.ones(10, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"\['conv9'\], not hidden layers"):
        masked_copy(net, {**alive, "conv9": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"keeps no unit of layer 'conv1'"):
        prune_units(net, {**alive, "conv1": torch.zeros(20, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"alive_in must be a bool tensor of shape \(1,\)"):
        prune_units(net, alive, torch.ones(784, dtype=torch.bool))


def test_networks_that_are_not_chains_are_refused() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(3, 2)

    with pytest.raises(TypeError, match="nn.Sequential"):
        prune_units(Branchy(), {"fc1": torch.ones(3, dtype=torch.bool)})
    net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(TypeError, match="module '1' \\(Tanh\\)"):
        prune_units(net, {"0": torch.ones(3, dtype=torch.bool)})


def _column_masks(net: nn.Module, seed: int, p_alive: float) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for layer in prunable_layers(net):
        if layer.in_block > 1:
            mask = torch.rand(layer.in_units, generator=g) < p_alive
            mask[: layer.in_block] = True  # the first channel keeps its positions
            masks[layer.name] = mask
    return masks


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), p_alive=st.floats(0.1, 0.9), train=st.booleans())
def test_dropping_single_columns_after_a_flatten_computes_the_masked_network(
    seed: int, p_alive: float, train: bool
) -> None:
    net = _net("lenet5", seed)
    alive, _ = _masks(net, seed, p_alive, with_input=False)
    alive["conv2"][0] = True  # the channel whose positions _column_masks keeps
    columns = _column_masks(net, seed + 1, p_alive)
    assert list(columns) == ["fc1"]
    pruned = prune_units(net, alive, None, columns).train(train)
    masked = masked_copy(net, alive, None, columns).train(train)
    x = torch.randn(5, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(pruned(x), masked(x), rtol=1e-12, atol=1e-12)
    # fc1 reads exactly the live columns of the live channels
    live = columns["fc1"].reshape(50, 16) & alive["conv2"][:, None]
    assert pruned.get_submodule("fc1").in_features == int(live.sum())
    assert isinstance(pruned.get_submodule("select_fc1"), SelectInputs)
    # masked differs from unit-only pruning: the columns really went
    units_only = masked_copy(net, alive)
    assert (units_only(x) - masked(x)).abs().max() > 1e-9


def test_a_network_with_column_selections_rebuilds_but_does_not_prune_again() -> None:
    from pyronas.compress.networks import describe_network, network_from_description

    net = _net("lenet5", seed=7).eval()
    alive = _all_alive(net)
    columns = _column_masks(net, seed=7, p_alive=0.5)
    pruned = prune_units(net, alive, None, columns)
    rebuilt = network_from_description(describe_network(pruned)).double()
    rebuilt.load_state_dict(pruned.state_dict())
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    assert torch.equal(rebuilt.eval()(x), pruned(x))
    assert count_weights(pruned) == count_weights(net) - 500 * int((~columns["fc1"]).sum())
    with pytest.raises(ValueError, match="cannot be pruned again"):
        prune_units(pruned, _all_alive(pruned))
    with pytest.raises(ValueError, match="not a linear layer after a flatten"):
        prune_units(net, alive, None, {"fc2": torch.ones(500, dtype=torch.bool)})
    with pytest.raises(ValueError, match="inputs of 'fc1'"):
        prune_units(net, alive, None, {"fc1": torch.ones(799, dtype=torch.bool)})


def test_speed_benchmark_times_the_network_of_a_run_folder(tmp_path, capsys) -> None:
    import json

    from conftest import load_script

    from pyronas.compress.networks import describe_network

    net = build_network("lenet5", 1, 28, 10).eval()
    alive = {l.name: torch.arange(l.out_units) < 5 for l in prunable_layers(net)[:-1]}
    columns = _column_masks(net, seed=0, p_alive=0.5)
    pruned = prune_units(net, alive, None, columns)
    folder = tmp_path / "lenet5-s0"
    folder.mkdir()
    (folder / "architecture.json").write_text(json.dumps(describe_network(pruned)))
    torch.save(pruned.state_dict(), folder / "pruned_state.pt")
    bench = load_script("benchmarks/compress_speed.py")
    bench.main(["--batch", "4", "--rounds", "1", "--seconds", "0.01", "--runs", str(folder)])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("lenet5-s0"))
    assert f"{count_weights(pruned):,}" in row and row.rstrip().endswith("x")
    with pytest.raises(SystemExit, match="architecture.json"):
        bench.main(["--rounds", "1", "--runs", str(tmp_path)])
    # torch's max-pool in every network, the run folder's too
    bench.main(["--batch", "4", "--rounds", "1", "--seconds", "0.01", "--pool", "torch",
                "--runs", str(folder)])
    assert "torch max-pool" in capsys.readouterr().out
    swapped = bench.set_pooling(bench.run_network(folder), "torch")
    assert sum(isinstance(m, nn.MaxPool2d) for m in swapped.children()) == 2


def test_lenet5_kernels_benchmark_smoke(capsys) -> None:
    from conftest import load_script

    load_script("benchmarks/lenet5_kernels.py").main(["--batch", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "of which the two max-pools" in out
    assert [line.split()[0] for line in out.splitlines()[-8:]] == [str(c) for c in range(13, 21)]
