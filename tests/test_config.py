"""Config loading: presets match the published protocols, unknown keys are named with a
suggestion, overrides parse, and the resolved config saved in a run folder loads back; the
search settings check every choice at load time and feed the flags and the engine."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pyronas.cli import build_parser, main
from pyronas.config import (
    CONFIG_DIR,
    RETRAIN_DEFAULTS,
    ConfigError,
    load_config,
    merge_config,
    parse_overrides,
    save_resolved_config,
)
from pyronas.inference.type2 import Type2Config
from pyronas.models import load_prior
from pyronas.run_setup import STREAMS, SeedStreams
from pyronas.settings import (
    SearchSettings,
    flag_overrides,
    load_search_settings,
    prior_options,
    type2_config,
)
from pyronas.space import get_space

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("retrain_*.yaml"))


def test_presets_exist_and_load() -> None:
    assert {
        "retrain_cifar10",
        "retrain_cifar10_authors",
        "retrain_imagenet",
        "retrain_digits",
        "retrain_fashion_mnist",
    } <= set(PRESETS)
    for name in PRESETS:
        cfg = load_config(name)
        assert set(cfg) == set(RETRAIN_DEFAULTS), name


def test_cifar10_preset_is_the_darts_protocol() -> None:
    cfg = load_config("retrain_cifar10")
    expected = {
        "epochs": 600, "batch_size": 96, "lr": 0.025, "lr_schedule": "cosine", "lr_min": 0.0,
        "momentum": 0.9, "weight_decay": 3e-4, "cutout": 16, "drop_path_prob": 0.2,
        "auxiliary": True, "auxiliary_weight": 0.4, "grad_clip": 5.0, "C": 36, "layers": 20,
        "network": "cifar", "variant": "darts",
    }  # fmt: skip
    assert {k: cfg[k] for k in expected} == expected


def test_imagenet_preset_is_the_mobile_setting() -> None:
    cfg = load_config("retrain_imagenet")
    expected = {
        "C": 48, "layers": 14, "epochs": 250, "batch_size": 128, "lr": 0.1,
        "lr_schedule": "step", "lr_step_size": 1, "lr_gamma": 0.97, "weight_decay": 3e-5,
        "label_smoothing": 0.1, "auxiliary_weight": 0.4, "grad_clip": 5.0,
        "network": "imagenet", "image_size": 224,
    }  # fmt: skip
    assert {k: cfg[k] for k in expected} == expected


def test_authors_variant_extends_the_cifar10_preset() -> None:
    base = load_config("retrain_cifar10")
    cfg = load_config("retrain_cifar10_authors")
    assert cfg["variant"] == "authors" and cfg["op_dropout"] == 0.2
    assert cfg["auxiliary"] is False
    assert cfg["epochs"] == base["epochs"] == 600 and cfg["cutout"] == 16


def test_unknown_key_in_file_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: 3\nlrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr'.*did you mean 'lr'"):
        load_config(path)


def test_unknown_override_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"'drop_path'.*did you mean 'drop_path_prob'"):
        load_config("retrain_digits", ["drop_path=0.1"])


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="retrain_digits"):
        load_config("retrain_digit")


def test_bad_types_and_choices_are_refused() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, {"batch_size": "big"})
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, {"batch_size": True})
    with pytest.raises(ConfigError, match="variant.*darts, authors"):
        load_config(None, {"variant": "mine"})


def test_overrides_parse_as_yaml_scalars() -> None:
    got = parse_overrides(["auxiliary=false", "train_size=null", "lr=0.1", "genotype=DARTS_V1"])
    assert got == {"auxiliary": False, "train_size": None, "lr": 0.1, "genotype": "DARTS_V1"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])
    cfg = load_config("retrain_digits", ["epochs=2", "weight_decay=3e-4"])
    assert cfg["epochs"] == 2 and cfg["weight_decay"] == pytest.approx(3e-4)
    assert merge_config(cfg, {"C": 4})["C"] == 4
    assert merge_config(cfg, {"data_dir": Path("a") / "b"})["data_dir"] == str(Path("a/b"))


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("retrain_digits", {"seed": 7})
    path = save_resolved_config(cfg, tmp_path / "run", argv=["prog", "--seed", "7"])
    data = yaml.safe_load(path.read_text())
    info = data["run_info"]
    assert set(info["versions"]) == {"python", "torch", "pyro", "numpy"}
    assert info["seed"] == 7 and info["command"] == "prog --seed 7"
    assert "git_sha" in info
    assert load_config(path) == cfg


# --------------------------------------------------------------------------------------------
# search settings (pyronas.settings)

def _search_args(*flags: str):
    return build_parser().parse_args(["search", *flags])


def test_nested_yaml_sets_prior_options(tmp_path: Path) -> None:
    path = tmp_path / "laplace.yaml"
    path.write_text("prior:\n  name: laplace\n  options: {scale_edge: 0.1}\n"
                    "training: {lr: 0.05}\n")
    s = load_search_settings(path)
    assert s.prior.name == "laplace" and s.training.lr == 0.05
    defaults = prior_options(load_prior("laplace"))
    assert s.prior.options == {**defaults, "scale_edge": 0.1}
    # the options reach the prior's hyperparameters
    space = get_space("bayesnas8")
    prior = load_prior("laplace")
    a = prior.init_hypers(space, **s.prior.options)
    b = prior.init_hypers(space, **defaults)
    assert not torch.equal(a["gamma"]["edge_switch"], b["gamma"]["edge_switch"])


def test_prior_option_flags_reach_the_settings() -> None:
    s = load_search_settings(None, flag_overrides(_search_args(
        "--prior", "horseshoe", "--prior-option", "tau0=0.5")))
    assert s.prior.name == "horseshoe" and s.prior.options["tau0"] == 0.5
    s = load_search_settings(None, flag_overrides(_search_args("--lambda-edge", "0.5")))
    assert s.prior.name == "hard" and s.prior.options["lambda_edge"] == 0.5
    assert s.prior.options["lambda_op"] == prior_options(load_prior("hard"))["lambda_op"]


def test_an_option_the_prior_lacks_names_the_valid_ones(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["search", "--prior", "laplace", "--lambda-edge", "0.5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "lambda_edge" in err and "scale_edge, scale_op" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="no option 'scale'.*scale_edge"):
        load_search_settings(None, {"prior": {"name": "laplace", "options": {"scale": 1.0}}})


@pytest.mark.parametrize("bad, message", [
    ({"curvature": "nope"}, "curvature backend 'nope'.*ggn"),
    ({"space": "nasnet"}, "search space 'nasnet'.*bayesnas8"),
    ({"strategy": "darts3"}, "strategy.name.*darts1"),
    ({"dataset": "mnist"}, "dataset.*fashion-mnist"),
    ({"prior": "nope"}, "unknown prior 'nope'"),
    ({"epochs": 0}, "training.epochs must be positive"),
    ({"batch_size": -1}, "batch_size must be positive"),
    ({"lr": float("nan")}, "training.lr must be finite"),
    ({"lr": True}, "training.lr must be float"),
    ({"device": "tpu"}, "device 'tpu'"),
    ({"random_mode": "grid"}, "random_mode.*ws, plain"),
    ({"lambda_ege": 0.1}, "unknown config key 'lambda_ege'.*did you mean 'lambda_edge'"),
    ({"training": {"lrr": 0.1}}, r"training.lrr; did you mean 'lr'"),
])  # fmt: skip
def test_every_choice_is_checked_at_load_time(bad, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_search_settings(None, bad)


def test_nan_in_a_yaml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text("training:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match="finite"):
        load_search_settings(path)


def test_bad_curvature_fails_before_any_folder_is_written(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["search", "--curvature", "nope", "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err and not out.exists()


def test_a_prior_file_that_breaks_the_contract_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mine.py"
    path.write_text("SITES = ('edge_switch', 'op_switch')\n")
    with pytest.raises(ConfigError, match="contract"):
        load_search_settings(None, {"prior": str(path)})


def test_flat_and_nested_spellings_are_the_same_settings() -> None:
    flat = load_search_settings(None, {"lr": 0.1, "prior": "ard", "lambda_op": 0.3,
                                       "strategy": "random", "channels": 4})
    nested = load_search_settings(None, {
        "training": {"lr": 0.1}, "prior": {"name": "ard", "options": {"lambda_op": 0.3}},
        "strategy": {"name": "random"}, "supernet": {"channels": 4}})
    assert flat == nested
    assert SearchSettings.from_mapping(flat.flat()) == flat
    assert SearchSettings.from_mapping(flat.to_dict()) == flat


def test_old_flat_run_folder_config_loads(tmp_path: Path) -> None:
    old = {"strategy": "bayesnas", "prior": "hard", "space": "bayesnas8", "dataset": "digits",
           "channels": 8, "lambda_edge": 0.01, "lambda_op": 0.02, "curvature_multiplier": 1.0,
           "t_max": 6, "threshold": 1e-3, "weight_decay": "3e-4", "seed": 3, "out": None,
           "run_info": {"seed": 3}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    s = load_search_settings(path)
    assert s.prior.options["lambda_edge"] == 0.01 and s.prior.options["lambda_op"] == 0.02
    assert s.training.weight_decay == 3e-4 and s.run.seed == 3


def test_resolved_search_config_round_trips(tmp_path: Path) -> None:
    s = load_search_settings("search_cifar10_authors", {"seed": 4})
    path = save_resolved_config(s.to_dict(), tmp_path, argv=["x"], seed=s.run.seed)
    data = yaml.safe_load(path.read_text())
    assert data["run_info"]["seed"] == 4 and data["prior"]["options"]["lambda_edge"] == 0.01
    assert load_search_settings(path) == s


def test_changing_the_prior_in_a_later_layer_drops_the_earlier_options(tmp_path) -> None:
    s = load_search_settings("search_cifar10", {"prior": "laplace"})
    assert s.prior.options == prior_options(load_prior("laplace"))


def test_engine_config_comes_from_the_settings() -> None:
    s = load_search_settings(None, {"t_max": 3, "switch_lr": 0.2, "curvature": "fisher"})
    cfg = type2_config(s)
    assert (cfg.t_max, cfg.site_lr, cfg.backend) == (3, 0.2, "fisher")
    # the defaults of the engine and of a search agree (site_lr=None means "as lr" there)
    default, engine = type2_config(SearchSettings()), Type2Config()
    for f in dataclasses.fields(Type2Config):
        if f.name != "site_lr":
            assert getattr(default, f.name) == getattr(engine, f.name), f.name


def test_every_setting_has_a_flag_and_old_flag_names_work() -> None:
    args = _search_args("--t-max", "3", "--curvature", "fisher", "--lambda-op", "0.1",
                        "--no-progress", "--resume", "--batch-size", "16", "--data-dir", "d")
    got = load_search_settings(None, flag_overrides(args))
    assert (got.type2.t_max, got.type2.curvature, got.training.batch_size) == (3, "fisher", 16)
    assert got.run.progress is False and got.run.resume is True and got.data.data_dir == "d"
    assert got.prior.options["lambda_op"] == 0.1
    flags = {a for action in build_parser()._subparsers._group_actions[0].choices[
        "search"]._actions for a in action.option_strings}
    for key in SearchSettings().flat():
        assert "--" + key.replace("_", "-") in flags, key


def test_seed_streams_are_independent_and_reproducible() -> None:
    a, b = SeedStreams(0), SeedStreams(1)
    seeds = [a.seed(name) for name in STREAMS]
    assert len(set(seeds)) == len(STREAMS)
    assert seeds == [SeedStreams(0).seed(name) for name in STREAMS]
    assert a.seed("splits") != b.seed("splits")
    np.testing.assert_array_equal(a.numpy("paths").integers(0, 100, 5),
                                  SeedStreams(0).numpy("paths").integers(0, 100, 5))
    with pytest.raises(KeyError, match="streams"):
        a.seed("nope")


def test_a_later_layer_wins_in_either_spelling(tmp_path: Path) -> None:
    s = load_search_settings("search_cifar10_authors", {"lambda_edge": 0.005})
    assert s.prior.options["lambda_edge"] == 0.005 and s.prior.options["lambda_op"] == 0.01
    path = tmp_path / "flat.yaml"
    path.write_text("lambda_op: 0.3\n")
    s = load_search_settings(path, {"prior": {"options": {"lambda_op": 0.4}}})
    assert s.prior.options["lambda_op"] == 0.4
