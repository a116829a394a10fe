"""Compression runs end to end (tiny: digits, a few batches), their report and bad inputs.

The group-HARD prior gives its precision in closed form (``prior_precision``), so a smoke run
of each network takes seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest
import torch
from conftest import load_script

from pyronas.compress.cli import add_compress_parser, compress_overrides, parse_group_prices
from pyronas.compress.networks import (
    NETWORKS,
    build_network,
    network_from_description,
    prunable_layers,
)
from pyronas.compress.run import POSTERIOR_FORMAT, CompressSettings, run_compress, weight_spec
from pyronas.runs import MetricsCSV

SMOKE = {"dataset": "digits", "device": "cpu", "batch_size": 32, "max_batches": 3,
         "pretrain_epochs": 1, "t_max": 1, "finetune_epochs": 1, "curvature_batches": 1,
         "lambda_weight": 1e-9}  # fmt: skip


@pytest.mark.parametrize("network", NETWORKS)
def test_smoke_run_writes_a_run_folder(network: str, tmp_path) -> None:
    out = tmp_path / network
    # an untrained VGG has dead convolutions (no curvature): train it for a few more steps
    extra = {"pretrain_epochs": 4, "curvature_batches": 2} if network == "vgg_small" else {}
    result = run_compress({**SMOKE, **extra, "network": network}, out)
    for name in ("config.yaml", "metrics.csv", "posterior.pt", "posterior.nc",
                 "pruned_state.pt", "architecture.json", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.keys() == result.metrics.keys()
    assert metrics["weights_kept"] == result.metrics["weights_kept"]
    assert metrics["network"] == network and metrics["iterations"] == 1
    assert metrics["weights_kept"] <= metrics["weights_before"]
    assert metrics["compression_ratio"] == pytest.approx(
        metrics["weights_before"] / metrics["weights_kept"])
    assert all(a <= b for a, b in zip(metrics["units_after"], metrics["units_before"],
                                      strict=True))
    assert metrics["units_after"][-1] == metrics["units_before"][-1] == 10  # the classes
    assert 0.0 <= metrics["test_error_after"] <= 1.0

    with (out / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["iteration"]) for r in rows] == [1]
    assert {"log_evidence", "val_acc", "weights_kept", "units_input"} <= set(rows[0])

    posterior = torch.load(out / "posterior.pt", weights_only=False)
    assert posterior["format"] == POSTERIOR_FORMAT
    first = posterior["layers"][0]["name"] + ".weight"
    assert posterior["mean"][first].shape == posterior["curvature"][first].shape

    # the saved architecture and state dict rebuild the pruned network
    rebuilt = network_from_description(json.loads((out / "architecture.json").read_text()))
    rebuilt.load_state_dict(torch.load(out / "pruned_state.pt"))
    x = torch.randn(4, 1, 8, 8)
    result.net.eval()
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), result.net(x))


def test_unknown_network_names_the_valid_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match="lenet300, lenet5, vgg_small"):
        run_compress({**SMOKE, "network": "resnet50"}, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written


def test_bad_settings_are_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(ValueError, match="did you mean 'lambda_weight'"):
        run_compress({"lambda_weigth": 1e-6}, tmp_path / "run")
    with pytest.raises(ValueError, match="unknown curvature backend"):
        CompressSettings(backend="hutchinson")
    with pytest.raises(ValueError, match="t_max"):
        CompressSettings(t_max=0)
    with pytest.raises(ValueError, match="dataset"):
        CompressSettings(dataset="mnist-9")
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_not_overwritten(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already holds"):
        run_compress({**SMOKE, "network": "lenet300"}, out)


def test_cli_flags_map_to_settings() -> None:
    parser = argparse.ArgumentParser()
    add_compress_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compress", "--network", "lenet5", "--dataset", "fashion-mnist",
                              "--lambda-weight", "1e-5", "--no-prune-inputs", "--t-max", "2"])
    overrides = compress_overrides(args)
    assert overrides == {"network": "lenet5", "dataset": "fashion-mnist", "lambda_weight": 1e-5,
                         "prune_inputs": False, "t_max": 2}
    settings = CompressSettings.from_mapping(overrides)
    assert settings.network == "lenet5" and settings.prune_inputs is False
    with pytest.raises(SystemExit):
        parser.parse_args(["compress", "--network", "resnet50"])


def test_arviz_export_and_analyze_of_a_compression_run(tmp_path, capsys) -> None:
    from pyronas.arviz_export import get_group, load_arviz
    from pyronas.cli import main
    from pyronas.compress.report import read_summary_csv

    out = tmp_path / "lenet5"
    result = run_compress({**SMOKE, "network": "lenet5", "lambda_weight": 1e-8,
                           "baselines": True}, out)
    assert result.metrics["baseline_finetune_epochs"] == 2  # t_max 1 + fine-tuning 1
    for key in ("baseline_magnitude_test_error", "baseline_structured_test_error"):
        assert 0.0 <= result.metrics[key] <= 1.0
    # the structured baseline keeps the same hidden units (not the inputs)
    assert result.metrics["baseline_structured_weights"] >= result.metrics["weights_kept"]
    posterior = torch.load(out / "posterior.pt", weights_only=False)
    idata = load_arviz(out / "posterior.nc")
    draws, constant = get_group(idata, "posterior"), get_group(idata, "constant_data")
    for layer in posterior["layers"]:
        site = f"{layer['name']}.weight"
        for grouping, gamma in posterior["gamma_group"][site].items():
            dim = f"{layer['name']}_{grouping}"
            assert draws[f"{dim}_norm"].dims == ("chain", "draw", dim)
            assert draws.sizes[dim] == len(gamma)
            alive = posterior["alive"][site][grouping]
            assert constant[f"{dim}_alive"].values.tolist() == alive.to(torch.int8).tolist()
    # a dead unit's weights are exactly 0 (zero prior variance): its norm is 0 in every draw
    dead = 0
    for dim in (d for d in draws.dims if d not in ("chain", "draw")):
        off = constant[f"{dim}_alive"].values == 0
        dead += int(off.sum())
        assert (draws[f"{dim}_norm"].values[..., off] == 0).all()
        assert (draws[f"{dim}_norm"].values[..., ~off] >= 0).all()
    assert dead > 0

    assert main(["analyze", str(out)]) == 0
    printed = capsys.readouterr().out
    units = "-".join(str(u) for u in result.metrics["units_after"])
    assert units in printed and "units per layer" in printed
    rows = read_summary_csv(out / "summary.csv")
    assert [r["layer"] for r in rows] == ["input"] + [lay["name"] for lay in posterior["layers"]]
    assert [int(r["units_after"]) for r in rows] == result.metrics["units_after"]
    assert (out / "plots" / "sparsity.png").stat().st_size > 0


def test_analyze_names_an_unfinished_compression_run(tmp_path, capsys) -> None:
    from pyronas.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"network": "lenet5", "units_after": [1]}))
    assert main(["analyze", str(out)]) == 2
    assert "no posterior.pt" in capsys.readouterr().err


def test_experiment_script_smoke(tmp_path) -> None:

    module = load_script("experiments/compress.py")
    assert module.main(["--smoke", "--networks", "lenet300", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n| lenet300 | digits | 1 |") == 1
    assert "magnitude baseline" in table
    row = table.strip().splitlines()[-1]
    assert row.count("|") == 13 and " - |" not in row  # baselines filled in
    assert "from scratch" in table
    # a second call skips the finished run and writes the same table
    assert module.main(["--smoke", "--networks", "lenet300", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "table.md").read_text() == table
    # single weights too: their own run folder, fewer nonzero weights than stored ones
    assert module.main(["--smoke", "--prune-weights", "--networks", "lenet300",
                        "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "lenet300-digits-weights-s0" / "metrics.json").read_text())
    assert metrics["weights_kept"] < metrics["weights_stored"]
    # ... from the dense network of the first setting's run
    units = json.loads((tmp_path / "lenet300-digits-s0" / "metrics.json").read_text())
    assert metrics["dense_reused"] and not units["dense_reused"]
    assert metrics["test_error_before"] == units["test_error_before"]


def test_experiment_settings_per_network_override_the_shared_ones(tmp_path, monkeypatch
                                                                   ) -> None:
    """A full run takes the network's settings over the shared ones (LeNet-300-100's 8 type-II
    iterations with single weights, not the shared 4), and the command line over both."""
    module = load_script("experiments/compress.py")
    seen = []

    class Recorded(Exception):
        pass

    def recording(settings, out):
        seen.append(settings)
        raise Recorded

    monkeypatch.setattr(module, "run_compress", recording)
    for argv in (["--prune-weights"], ["--prune-weights", "--lambda-weight", "3e-6"], []):
        with pytest.raises(Recorded):
            module.main([*argv, "--networks", "lenet300", "--out", str(tmp_path)])
    weights, weights_lambda, units = seen
    assert weights["t_max"] == 8 and weights["finetune_distill"] == 0.9
    assert weights["lambda_weight"] == 7e-7 and weights["prune_weights"] is True
    assert weights_lambda["lambda_weight"] == 3e-6 and weights_lambda["t_max"] == 8
    assert units["t_max"] == 4 and units["lambda_weight"] == 2e-6
    assert units["prune_weights"] is False and units["pretrain_epochs"] == 20


def test_group_prices_from_the_command_line_to_the_prior() -> None:
    parser = argparse.ArgumentParser()
    add_compress_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compress", "--group-price", "fc1:in=0.3",
                              "--group-price", "fc2:out=4"])
    settings = CompressSettings.from_mapping(compress_overrides(args))
    assert settings.group_prices == {"fc1:in": 0.3, "fc2:out": 4.0}
    assert settings.to_dict()["group_prices"] == {"fc1:in": 0.3, "fc2:out": 4.0}
    net = build_network("lenet300", 1, 8, 10)
    spec = weight_spec(prunable_layers(net), net, True, settings.group_prices)
    assert spec["prices"] == {"fc1.weight": {"in": 0.3}, "fc2.weight": {"out": 4.0}}

    with pytest.raises(ValueError, match="LAYER:GROUPING=PRICE"):
        parse_group_prices(["fc1:in"])
    with pytest.raises(ValueError, match="LAYER:GROUPING=PRICE"):
        parse_group_prices(["fc1:in=cheap"])
    with pytest.raises(ValueError, match="'LAYER:out', 'LAYER:in' or 'LAYER:weight'"):
        CompressSettings(group_prices={"fc1:rows": 0.5})
    with pytest.raises(ValueError, match="positive"):
        CompressSettings(group_prices={"fc1:in": 0.0})
    with pytest.raises(ValueError, match="prunable layers: fc1, fc2, fc3"):
        weight_spec(prunable_layers(net), net, True, {"conv1:out": 2.0})
    with pytest.raises(ValueError, match="grouped by"):
        weight_spec(prunable_layers(net), net, False, {"fc1:in": 0.5})  # inputs not grouped


def test_a_price_for_a_missing_layer_stops_before_the_dense_training(tmp_path, monkeypatch
                                                                     ) -> None:
    import pyronas.compress.run as compress_run

    def no_training(*args, **kwargs):
        raise AssertionError("the dense training started")

    monkeypatch.setattr(compress_run, "fine_tune", no_training)
    with pytest.raises(ValueError, match="names the layer 'conv1'"):
        run_compress({**SMOKE, "network": "lenet300", "group_prices": {"conv1:out": 2.0}},
                     tmp_path / "run")


def test_single_dead_columns_after_the_flatten_are_pruned_physically() -> None:
    from pyronas.compress.run import alive_columns, alive_units
    from pyronas.compress.surgery import count_weights, masked_copy, prune_units
    from pyronas.models import group_hard

    torch.manual_seed(0)
    net = build_network("lenet5", 1, 28, 10).double().eval()
    layers = prunable_layers(net)
    spec = weight_spec(layers, net)
    hypers = group_hard.init_hypers(spec["weights"], groupings=spec["groupings"],
                                    links=spec["links"])
    gamma = {s: dict(g) for s, g in hypers["gamma_group"].items()}
    gamma["conv2.weight"]["out"] = gamma["conv2.weight"]["out"].clone()
    gamma["conv2.weight"]["out"][3] = 0.0  # one whole channel dies
    assert alive_columns({**hypers, "gamma_group": group_hard.link_units(gamma, hypers)},
                         layers) == {}  # its columns go with the channel: no selection needed
    gamma["fc1.weight"]["in"] = gamma["fc1.weight"]["in"].clone()
    gamma["fc1.weight"]["in"][[0, 5, 17]] = 0.0  # single positions of channels 0 and 1
    linked = {**hypers, "gamma_group": group_hard.link_units(gamma, hypers)}
    columns = alive_columns(linked, layers)
    assert list(columns) == ["fc1"] and int((~columns["fc1"]).sum()) == 3 + 16
    alive_out, alive_in = alive_units(linked, layers)
    pruned = prune_units(net, alive_out, alive_in, columns)
    assert pruned.get_submodule("fc1").in_features == 49 * 16 - 3
    assert count_weights(pruned) < count_weights(prune_units(net, alive_out, alive_in))
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(pruned(x), masked_copy(net, alive_out, alive_in, columns)(x),
                               rtol=1e-12, atol=1e-12)


def test_the_finetune_schedule_and_distillation_reach_ours_and_both_baselines(
        tmp_path, monkeypatch) -> None:
    """The fine-tuning settings (schedule, distillation weight and temperature) reach our
    fine-tuning and both baselines', each distilled from the same dense network; the dense
    training itself has no teacher."""
    import pyronas.compress.baselines as baselines
    import pyronas.compress.run as compress_run

    calls = []
    original = baselines.fine_tune

    def recording(net, loader, budget, *args, **kwargs):
        calls.append((budget, kwargs.get("teacher")))
        return original(net, loader, budget, *args, **kwargs)

    monkeypatch.setattr(compress_run, "fine_tune", recording)
    monkeypatch.setattr(baselines, "fine_tune", recording)
    run_compress({**SMOKE, "network": "lenet300", "baselines": True,
                  "pretrain_schedule": "constant", "finetune_schedule": "cosine",
                  "finetune_distill": 0.7, "distill_temperature": 2.0},
                 tmp_path / "run")
    # dense training, our fine-tuning, magnitude, structured
    budgets = [budget for budget, _ in calls]
    assert [b.schedule for b in budgets] == ["constant", "cosine", "cosine", "cosine"]
    assert [b.distill for b in budgets] == [0.0, 0.7, 0.7, 0.7]
    assert {b.temperature for b in budgets[1:]} == {2.0}
    teachers = [teacher for _, teacher in calls]
    assert teachers[0] is None and teachers[1] is not None
    assert teachers[2] is teachers[1] and teachers[3] is teachers[1]
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        CompressSettings(finetune_schedule="linear")
    with pytest.raises(ValueError, match="distill_temperature must be positive"):
        CompressSettings(distill_temperature=-1.0)


def test_scratch_baseline_trains_the_pruned_architecture_from_fresh_weights(tmp_path,
                                                                            monkeypatch) -> None:
    import pyronas.compress.run as compress_run

    trained = []
    original = compress_run.fine_tune

    def recording(net, loader, budget, *args, **kwargs):
        trained.append((net, budget))
        return original(net, loader, budget, *args, **kwargs)

    monkeypatch.setattr(compress_run, "fine_tune", recording)
    result = run_compress({**SMOKE, "network": "lenet300", "scratch_baseline": True,
                           "pretrain_epochs": 2, "lambda_weight": 1e-7}, tmp_path / "run")
    assert 0 <= result.metrics["baseline_scratch_test_error"] <= 1
    (dense, dense_budget), (ours, _), (fresh, fresh_budget) = trained
    assert fresh_budget == dense_budget and fresh is not ours
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in ours.parameters()]
    assert torch.equal(fresh.select.index, ours.select.index)  # the same pixels are read
    assert not torch.equal(fresh.fc1.weight, ours.fc1.weight)


def test_prune_weights_removes_single_weights_and_keeps_them_zero(tmp_path) -> None:
    """The per-weight grouping: single weights die inside the kept units; the pruned network
    stores them as zeros through fine-tuning, and they count as removed."""
    net = build_network("lenet300", 1, 8, 10)
    spec = weight_spec(prunable_layers(net), net, True, {"fc2:weight": 2.0}, prune_weights=True)
    assert spec["groupings"] == {"fc1.weight": ("out", "in", "weight"),
                                 "fc2.weight": ("out", "in", "weight"),
                                 "fc3.weight": ("in", "weight")}
    with pytest.raises(ValueError, match="needs prune_weights"):
        weight_spec(prunable_layers(net), net, True, {"fc2:weight": 2.0})
    result = run_compress({**SMOKE, "network": "lenet300", "prune_weights": True,
                           "lambda_weight": 1e-8}, tmp_path / "run")
    metrics = result.metrics
    assert metrics["weights_kept"] < metrics["weights_stored"]
    state = torch.load(tmp_path / "run" / "pruned_state.pt")
    zeros = sum(int((v == 0).sum()) for k, v in state.items() if k.endswith(".weight"))
    assert zeros == metrics["weights_stored"] - metrics["weights_kept"]
    assert metrics["compression_ratio"] == pytest.approx(
        metrics["weights_before"] / metrics["weights_kept"])


def test_pruned_weight_masks_follow_the_surgery() -> None:
    """Random weight masks and random dead units, channels and columns on LeNet-5: the masks cut
    to the pruned layers are exactly where the pruned copy of the masked network is zero."""
    from pyronas.compress.run import pruned_weight_masks
    from pyronas.compress.surgery import prune_units

    g = torch.Generator().manual_seed(3)
    net = build_network("lenet5", 1, 28, 10).double()
    layers = prunable_layers(net)
    masks = {f"{x.name}.weight": torch.rand(net.get_submodule(x.name).weight.shape,
                                            generator=g) > 0.3 for x in layers}
    alive_out = {x.name: torch.rand(x.out_units, generator=g) > 0.4 for x in layers[:-1]}
    columns = {"fc1": torch.rand(layers[2].in_units, generator=g) > 0.5}
    with torch.no_grad():
        for x in layers:
            net.get_submodule(x.name).weight.mul_(masks[f"{x.name}.weight"])
    pruned = prune_units(net, alive_out, None, columns)
    cut = pruned_weight_masks(net, masks, layers, alive_out, None, columns)
    assert set(cut) == {x.name for x in layers}
    for x in layers:
        assert torch.equal(cut[x.name], pruned.get_submodule(x.name).weight != 0), x.name
    full = {k: torch.ones_like(v) for k, v in masks.items()}
    assert pruned_weight_masks(net, full, layers, alive_out, None, columns) == {}


def test_map_lr_reaches_the_type2_loop(tmp_path, monkeypatch) -> None:
    import pyronas.compress.run as compress_run

    seen = []
    original = compress_run.run_type2

    def recording(*args, config, **kwargs):
        seen.append(config.lr)
        return original(*args, config=config, **kwargs)

    monkeypatch.setattr(compress_run, "run_type2", recording)
    run_compress({**SMOKE, "network": "lenet300", "lr": 0.05, "map_lr": 0.003}, tmp_path / "a")
    run_compress({**SMOKE, "network": "lenet300", "lr": 0.05}, tmp_path / "b")
    assert seen == [0.003, 0.05]
    with pytest.raises(ValueError, match="map_lr must be positive"):
        CompressSettings(map_lr=0.0)


def test_finetune_from_dense_starts_from_the_dense_weights_cut_to_the_masks(tmp_path,
                                                                            monkeypatch) -> None:
    """``finetune_from: dense``: every weight the pruned network starts fine-tuning with is a
    weight of the dense network (cut to the chosen units, pruned single weights zero); from the
    MAP weights (the default) they are shrunk by the group lasso, so they are not."""
    import pyronas.compress.run as compress_run
    from pyronas.compress.baselines import apply_weight_masks

    states = []
    original = compress_run.fine_tune

    def recording(net, loader, budget, *args, **kwargs):
        masks = kwargs.get("weight_masks") or {}
        apply_weight_masks(net, masks)
        start = {k: v.detach().clone() for k, v in net.state_dict().items()}
        losses = original(net, loader, budget, *args, **kwargs)
        states.append((start, {k: v.detach().clone() for k, v in net.state_dict().items()}))
        return losses

    monkeypatch.setattr(compress_run, "fine_tune", recording)
    settings = {**SMOKE, "network": "lenet300", "prune_weights": True, "lambda_weight": 1e-8}
    for source, inside in (("dense", True), ("map", False)):
        states.clear()
        run_compress({**settings, "finetune_from": source}, tmp_path / source)
        (_, dense), (ours, _) = states  # the dense phase's end, our fine-tuning's start
        for name in ("fc1.weight", "fc3.weight"):
            values = ours[name][ours[name] != 0]
            assert len(values) > 0
            found = torch.isin(values, dense[name].flatten())
            assert bool(found.all()) is inside, (source, name)
        assert bool((ours["fc3.weight"] == 0).any())  # single weights pruned, as zeros
    with pytest.raises(ValueError, match="finetune_from must be one of map, dense"):
        CompressSettings(finetune_from="scratch")


def _same_run(a: dict, b: dict) -> None:
    """Two compression runs' metrics agree on everything but the clock."""
    clock = {"wall_seconds", "dense_seconds", "dense_reused", "resumed_iteration"}
    assert {k: v for k, v in a.items() if k not in clock} == {
        k: v for k, v in b.items() if k not in clock}


def test_dense_from_another_run_computes_what_the_run_would_have(tmp_path) -> None:
    settings = {**SMOKE, "network": "lenet5", "baselines": True}
    own = run_compress(settings, tmp_path / "own")
    assert (tmp_path / "own" / "dense.pt").is_file() and not own.metrics["dense_reused"]
    reused = run_compress({**settings, "dense_from": str(tmp_path / "own")}, tmp_path / "reused")
    assert reused.metrics["dense_reused"]
    assert reused.metrics["dense_seconds"] == own.metrics["dense_seconds"]
    _same_run(own.metrics, reused.metrics)
    a = torch.load(tmp_path / "own" / "pruned_state.pt")
    b = torch.load(tmp_path / "reused" / "pruned_state.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the new folder holds the dense network too, so it can serve further runs
    assert (tmp_path / "reused" / "dense.pt").is_file()
    # a lambda sweep: another lambda on the same dense network
    other = run_compress({**settings, "lambda_weight": 1e-8, "dense_from": str(
        tmp_path / "own" / "dense.pt")}, tmp_path / "other")
    assert other.metrics["test_error_before"] == own.metrics["test_error_before"]


def test_a_run_stopped_after_its_dense_phase_restarts_from_it(tmp_path, caplog) -> None:
    settings = {**SMOKE, "network": "lenet300"}
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="pruned every unit"):
        run_compress({**settings, "lambda_weight": 1e4}, out)
    assert (out / "dense.pt").is_file() and not (out / "metrics.json").exists()
    with caplog.at_level("WARNING", logger="pyronas.compress.run"):
        resumed = run_compress(settings, out)  # same folder, a lambda that keeps units
    # the stopped loop had another lambda: it starts again from the dense network
    assert "lambda_weight: checkpoint 10000.0, this run 1e-09" in caplog.text
    assert resumed.metrics["dense_reused"] and resumed.metrics["resumed_iteration"] == 0
    with (out / "metrics.csv").open(newline="") as handle:  # the stopped attempt's rows gone
        assert [int(r["iteration"]) for r in csv.DictReader(handle)] == [1]
    _same_run(resumed.metrics, run_compress(settings, tmp_path / "fresh").metrics)


def test_a_run_stopped_inside_its_type2_loop_continues_it(tmp_path, monkeypatch) -> None:
    settings = {**SMOKE, "network": "lenet5", "t_max": 3, "finetune_distill": 0.5}
    out = tmp_path / "run"
    append = MetricsCSV.append

    def stop_at_iteration_2(self, row):
        if row["iteration"] == 2:
            raise KeyboardInterrupt
        append(self, row)

    monkeypatch.setattr(MetricsCSV, "append", stop_at_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        run_compress(settings, out)
    monkeypatch.setattr(MetricsCSV, "append", append)
    assert torch.load(out / "type2.pt", weights_only=False)["type2"]["iteration"] == 1
    resumed = run_compress(settings, out)
    assert resumed.metrics["resumed_iteration"] == 1 and resumed.metrics["dense_reused"]
    with (out / "metrics.csv").open(newline="") as handle:
        assert [int(r["iteration"]) for r in csv.DictReader(handle)] == [1, 2, 3]
    fresh = run_compress(settings, tmp_path / "fresh")
    _same_run(resumed.metrics, fresh.metrics)
    a = torch.load(out / "pruned_state.pt")
    b = torch.load(tmp_path / "fresh" / "pruned_state.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pa = torch.load(out / "posterior.pt", weights_only=False)
    pb = torch.load(tmp_path / "fresh" / "posterior.pt", weights_only=False)
    assert [r["log_evidence"] for r in pa["history"]] == [
        r["log_evidence"] for r in pb["history"]]


def test_a_run_stopped_after_its_type2_loop_does_not_repeat_it(tmp_path, monkeypatch) -> None:
    import pyronas.compress.run as run_module

    settings = {**SMOKE, "network": "lenet300", "t_max": 2}
    out = tmp_path / "run"
    finish = run_module._save

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(run_module, "_save", crash)
    with pytest.raises(OSError, match="disk full"):
        run_compress(settings, out)
    monkeypatch.setattr(run_module, "_save", finish)
    calls = []
    monkeypatch.setattr(run_module, "fine_tune", _counting(run_module.fine_tune, calls))
    resumed = run_compress(settings, out)
    assert resumed.metrics["resumed_iteration"] == 2 and resumed.metrics["iterations"] == 2
    assert len(calls) == 1  # the fine-tuning only: the dense phase and the loop are not redone
    monkeypatch.undo()
    _same_run(resumed.metrics, run_compress(settings, tmp_path / "fresh").metrics)


def _counting(function, calls: list):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)
    return counted


def test_a_dense_checkpoint_of_other_dense_settings_is_refused(tmp_path) -> None:
    run_compress({**SMOKE, "network": "lenet300"}, tmp_path / "a")
    with pytest.raises(ValueError, match=r"pretrain_epochs: checkpoint 1, this run 2"):
        run_compress({**SMOKE, "network": "lenet300", "pretrain_epochs": 2,
                      "dense_from": str(tmp_path / "a")}, tmp_path / "b")
    assert not (tmp_path / "b").exists()
    stopped = tmp_path / "stopped"  # a folder whose run stopped after its dense phase
    stopped.mkdir()
    shutil.copy(tmp_path / "a" / "dense.pt", stopped / "dense.pt")
    with pytest.raises(ValueError, match=r"network: checkpoint 'lenet300', this run 'lenet5'"
                       r".*it is kept"):
        run_compress({**SMOKE, "network": "lenet5"}, stopped)
    assert sorted(p.name for p in stopped.iterdir()) == ["dense.pt"]
    with pytest.raises(FileNotFoundError, match="no dense checkpoint"):
        run_compress({**SMOKE, "dense_from": str(tmp_path / "nowhere")}, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cap_units_keeps_the_largest_group_variances() -> None:
    from pyronas.compress.run import cap_units

    variance = torch.tensor([0.5, 0.0, 0.2, 0.9, 0.2, 0.7], dtype=torch.float64)
    alive = variance > 0
    hypers = {"gamma_group": {"conv1.weight": {"out": variance},
                              "conv2.weight": {"out": torch.ones(3, dtype=torch.float64)}}}
    others = torch.tensor([True, False, True])
    capped, dropped = cap_units({"conv1": alive, "conv2": others}, hypers,
                                {"conv1": 3, "conv2": 2})
    # five live units, cap 3: the two of smallest variance (both 0.2) go
    assert capped["conv1"].tolist() == [True, False, False, True, False, True]
    assert dropped == {"conv1": 2}
    assert capped["conv2"] is others  # at most its cap already: untouched
    capped, dropped = cap_units({"conv1": alive}, hypers, {"conv1": 4})  # the tie: index 2 stays
    assert capped["conv1"].tolist() == [True, False, True, True, False, True]
    assert dropped == {"conv1": 1}


def test_max_units_caps_a_layer_of_a_compression_run(tmp_path) -> None:
    free = run_compress({**SMOKE, "network": "lenet5"}, tmp_path / "free")
    assert free.metrics["units_capped"] == {} and free.metrics["units_after"][1] > 3
    capped = run_compress({**SMOKE, "network": "lenet5", "max_units": {"conv1": 3}},
                          tmp_path / "capped")
    assert capped.metrics["units_after"][1] == 3
    assert capped.metrics["units_capped"] == {"conv1": free.metrics["units_after"][1] - 3}
    assert capped.metrics["units_after"][2:] == free.metrics["units_after"][2:]
    assert capped.net.conv1.weight.shape[0] == 3 and capped.net.conv2.weight.shape[1] == 3
    with pytest.raises(ValueError, match="max_units names the layer 'fc2'"):
        run_compress({**SMOKE, "network": "lenet5", "max_units": {"fc2": 3}}, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="must be a positive integer"):
        CompressSettings(max_units={"conv1": 0})


def test_max_units_flag_parses_and_names_a_malformed_item() -> None:
    from pyronas.compress.cli import parse_max_units

    assert parse_max_units(["conv1=16", "fc1=64"]) == {"conv1": 16, "fc1": 64}
    with pytest.raises(ValueError, match="--max-units 'conv1': expected LAYER=M"):
        parse_max_units(["conv1"])
