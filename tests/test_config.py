"""Config loading: presets match the published protocols, unknown keys are named with a
suggestion, overrides parse, and the resolved config saved in a run folder loads back."""

from pathlib import Path

import pytest
import yaml

from pyronas.config import (
    CONFIG_DIR,
    RETRAIN_DEFAULTS,
    ConfigError,
    load_config,
    merge_config,
    parse_overrides,
    save_resolved_config,
)

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
