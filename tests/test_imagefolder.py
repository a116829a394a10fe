"""A user's own data: the ``imagefolder`` data set and :func:`pyronas.data.from_torch_datasets`.

Every tree is a few PNGs written by the test: class ``k`` has mean brightness ``k / 3`` plus
seeded noise, so a tiny network can tell the classes apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from pyronas import cli
from pyronas.data import (
    DATASETS,
    DatasetError,
    from_torch_datasets,
    hold_out_test,
    load_dataset,
)

CLASSES = ("cat", "dog", "owl")


def write_tree(
    root: Path,
    per_class: int = 10,
    size: int = 8,
    mode: str = "RGB",
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
) -> Path:
    """``root/<class>/<i>.png``: ``per_class`` images ``size`` x ``size`` in ``mode``."""
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(k / 3 * 255 + rng.normal(0, 30, (size, size, channels)), 0, 255)
            array = pixels.astype(np.uint8)
            Image.fromarray(array[..., 0] if channels == 1 else array, mode).save(
                root / c / f"{i:03d}.png")
    return root


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


# ----------------------------------------------------------------------------------------------
# Loading and splitting
# ----------------------------------------------------------------------------------------------


def test_imagefolder_is_a_registered_data_set():
    from pyronas.config import RETRAIN_CHOICES
    from pyronas.settings import DATASETS as SEARCH_DATASETS

    assert "imagefolder" in DATASETS
    assert SEARCH_DATASETS is DATASETS
    assert RETRAIN_CHOICES["dataset"] is DATASETS


def test_flat_tree_holds_out_a_fixed_stratified_test_split(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=10)
    s = load_dataset("imagefolder", data_dir=root, seed=1)
    assert s.name == "imagefolder"
    assert (s.num_classes, s.in_channels, s.image_size) == (3, 3, 8)
    assert s.class_names == CLASSES
    assert s.sizes() == {"train": 12, "search": 6, "val": 6, "test": 6}
    assert [int(n) for n in np.bincount([y for _, y in s.test])] == [2, 2, 2]
    x, y = s.train[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    # the train split is normalised by its own statistics
    train = torch.stack([s.train[i][0] for i in range(len(s.train))]).double()
    assert train.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    # another seed carves other train / search / val, but scores on the same test images
    t = load_dataset("imagefolder", data_dir=root, seed=2)
    def raw(splits):  # the pixels in [0, 1], before normalisation by the train statistics
        x = torch.stack([x for x, _ in splits.test]).double()
        return x * torch.tensor(splits.std).view(1, -1, 1, 1) + torch.tensor(
            splits.mean).view(1, -1, 1, 1)

    torch.testing.assert_close(raw(s), raw(t), atol=1e-5, rtol=0)
    assert not np.array_equal(s.indices["train"], t.indices["train"])
    again = load_dataset("imagefolder", data_dir=root, seed=1)
    for k in ("train", "search", "val"):
        assert np.array_equal(s.indices[k], again.indices[k])


def test_pixels_are_those_of_the_files(tmp_path):
    root = write_tree(tmp_path / "tree", per_class=5)
    s = load_dataset("imagefolder", data_dir=root, seed=0)
    files = sorted(root.glob("*/*.png"))  # the order of the labels: sorted class folders
    labels = np.repeat(np.arange(3), 5)
    rest, _ = hold_out_test(labels)
    i = int(s.indices["val"][0])
    path = files[int(rest[i])]
    expected = (_pixels(path).transpose(2, 0, 1) - np.array(s.mean)[:, None, None]) / np.array(
        s.std)[:, None, None]
    image, label = s.val[0]
    assert label == CLASSES.index(path.parent.name)
    np.testing.assert_allclose(image.double().numpy(), expected, atol=1e-5)


def test_train_and_test_folders(tmp_path):
    write_tree(tmp_path / "train", per_class=8)
    write_tree(tmp_path / "test", per_class=3, seed=1)
    s = load_dataset("imagefolder", data_dir=tmp_path, fractions=(1, 0, 0))
    assert s.sizes() == {"train": 24, "search": 0, "val": 0, "test": 9}
    assert sorted(y for _, y in s.test) == [0] * 3 + [1] * 3 + [2] * 3


def test_a_test_tree_may_lack_classes_but_not_add_them(tmp_path):
    write_tree(tmp_path / "train", per_class=4)
    write_tree(tmp_path / "test", per_class=2, classes=("dog",))
    s = load_dataset("imagefolder", data_dir=tmp_path)
    assert sorted({y for _, y in s.test}) == [1]
    write_tree(tmp_path / "test", per_class=2, classes=("emu",))
    with pytest.raises(DatasetError, match=r"test/emu: class folder not present in the train"):
        load_dataset("imagefolder", data_dir=tmp_path)


def test_grey_images_give_one_channel_and_mixed_ones_three(tmp_path):
    grey = write_tree(tmp_path / "grey", mode="L", per_class=5)
    s = load_dataset("imagefolder", data_dir=grey)
    assert s.in_channels == 1 and s.train[0][0].shape == (1, 8, 8)
    write_tree(grey, mode="RGB", per_class=1, classes=("cat",))  # overwrite one image in RGB
    mixed = load_dataset("imagefolder", data_dir=grey)
    assert mixed.in_channels == 3 and mixed.train[0][0].shape == (3, 8, 8)


def test_sixteen_bit_grey_images_are_scaled(tmp_path):
    root = write_tree(tmp_path / "tree", mode="L", per_class=3, classes=("a", "b"))
    array = np.full((8, 8), 40000, dtype=np.uint16)
    Image.fromarray(array).save(root / "a" / "wide.png")
    from pyronas.data import read_image_array

    assert int(read_image_array(root / "a" / "wide.png")[0, 0]) == 40000 >> 8
    assert load_dataset("imagefolder", data_dir=root).in_channels == 1


def test_any_size_is_resized_to_image_size(tmp_path):
    root = write_tree(tmp_path / "tree", size=12, per_class=5)
    write_tree(root, size=20, per_class=2, classes=("owl",), seed=3)
    Image.new("RGB", (30, 10)).save(root / "dog" / "wide.png")
    first = r"dog/wide.png: 30x10 pixels, but the first image is 12x12; pass --image-size"
    with pytest.raises(DatasetError, match=first):
        load_dataset("imagefolder", data_dir=root)
    s = load_dataset("imagefolder", data_dir=root, image_size=6)
    assert s.image_size == 6 and {tuple(x.shape) for x, _ in s.train} == {(3, 6, 6)}
    assert len(s.train) + len(s.search) + len(s.val) + len(s.test) == 16


def test_a_first_image_that_is_not_square_needs_image_size(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("L", (12, 8)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(DatasetError, match=r"a/0.png: 12x8 pixels, not square; pass --image-size"):
        load_dataset("imagefolder", data_dir=tmp_path)
    assert load_dataset("imagefolder", data_dir=tmp_path, image_size=4).image_size == 4


def test_augmented_train_split(tmp_path):
    root = write_tree(tmp_path / "tree", size=16, per_class=5)
    s = load_dataset("imagefolder", data_dir=root, augment=True, cutout=4)
    torch.manual_seed(0)
    a = s.train[0][0]
    b = s.train[0][0]
    assert a.shape == (3, 16, 16) and not torch.equal(a, b)
    assert torch.equal(s.val[0][0], s.val[0][0])


# ----------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------


def test_missing_folder_and_missing_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="needs --data-dir"):
        load_dataset("imagefolder")
    with pytest.raises(DatasetError, match=r"no/such: folder not found; expected an ImageFolder"):
        load_dataset("imagefolder", data_dir=tmp_path / "no" / "such")


def test_a_folder_without_class_folders(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset("imagefolder", data_dir=tmp_path)


def test_an_empty_class_folder_is_named(tmp_path):
    write_tree(tmp_path, per_class=3)
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / ".hidden").write_text("")
    with pytest.raises(DatasetError, match=r"emu: empty class folder"):
        load_dataset("imagefolder", data_dir=tmp_path)


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    write_tree(tmp_path, per_class=3)
    (tmp_path / "dog" / "notes.txt").write_text("not a picture")
    with pytest.raises(DatasetError, match=r"dog/notes.txt: not an image"):
        load_dataset("imagefolder", data_dir=tmp_path)
    (tmp_path / "dog" / "notes.txt").unlink()
    (tmp_path / "owl" / "001.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DatasetError, match=r"owl/001.png: not an image that can be decoded"):
        load_dataset("imagefolder", data_dir=tmp_path)


def test_fewer_than_two_classes(tmp_path):
    write_tree(tmp_path, per_class=3, classes=("cat",))
    with pytest.raises(DatasetError, match="1 class folder .cat.; a classifier needs at least 2"):
        load_dataset("imagefolder", data_dir=tmp_path)


def test_only_test_may_sit_beside_train(tmp_path):
    write_tree(tmp_path / "train", per_class=3)
    write_tree(tmp_path / "val", per_class=3)
    with pytest.raises(DatasetError, match=r"holds train/ and also val/"):
        load_dataset("imagefolder", data_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# from_torch_datasets
# ----------------------------------------------------------------------------------------------


class Blobs(Dataset):
    """``n`` float images ``(2, 5, 5)`` whose label is ``i % classes``."""

    def __init__(self, n: int, classes: int = 3, targets: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 2, 5, 5, generator=g, dtype=torch.float64).float()
        self.y = [i % classes for i in range(n)]
        if targets:
            self.targets = list(self.y)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.y[i]


def test_from_torch_datasets_holds_out_and_carves_like_the_registry():
    train = Blobs(60)
    s = from_torch_datasets(train, seed=3)
    assert (s.num_classes, s.in_channels, s.image_size, s.name) == (3, 2, 5, "custom")
    assert s.class_names == ("0", "1", "2")
    assert s.sizes() == {"train": 24, "search": 12, "val": 12, "test": 12}
    positions = [set(getattr(s, k).indices) for k in ("train", "search", "val", "test")]
    assert sum(len(p) for p in positions) == 60 and len(set().union(*positions)) == 60
    # each split is stratified: 1/3 of each class
    assert sorted(np.bincount([y for _, y in s.search]).tolist()) == [4, 4, 4]
    # the test hold-out does not depend on the seed, the carving does
    t = from_torch_datasets(train, seed=4)
    assert s.test.indices == t.test.indices
    assert s.train.indices != t.train.indices


def test_from_torch_datasets_with_a_test_set_and_targets():
    s = from_torch_datasets(Blobs(30, targets=True), Blobs(9, seed=1), fractions=(1, 0, 0),
                            class_names=("a", "b", "c"), name="blobs")  # fmt: skip
    assert s.sizes() == {"train": 30, "search": 0, "val": 0, "test": 9}
    assert (s.class_names, s.name) == (("a", "b", "c"), "blobs")
    assert from_torch_datasets(Blobs(30), num_classes=5).num_classes == 5


def test_from_torch_datasets_refuses_what_a_network_cannot_take():
    class PIL(Blobs):
        def __getitem__(self, i):
            return Image.new("L", (5, 5)), self.y[i]

    with pytest.raises(TypeError, match=r"train\[0\]: the image must be a float tensor.*ToTensor"):
        from_torch_datasets(PIL(10))
    with pytest.raises(ValueError, match="at least 2 classes"):
        from_torch_datasets(Blobs(10, classes=1))
    with pytest.raises(ValueError, match=r"label 2 is outside \[0, 2\)"):
        from_torch_datasets(Blobs(10), num_classes=2)
    with pytest.raises(ValueError, match="train is empty"):
        from_torch_datasets(Blobs(0))


def test_a_search_runs_on_splits_of_torch_datasets(tmp_path, monkeypatch):
    from inspect import signature

    from pyronas.search import resolve_search_config, run_search

    class Bright(Blobs):  # (1, 8, 8) images whose brightness tells the class
        def __getitem__(self, i):
            return self.x[i, :1].repeat(1, 2, 2)[:, :8, :8] + self.y[i], self.y[i]

    splits = from_torch_datasets(Bright(60), seed=0)
    cfg = resolve_search_config(None, {
        "channels": 4, "layers": 3, "batch_size": 10, "t_max": 1, "curvature_batches": 1,
        "bn_batches": 1, "posterior_draws": 2, "progress": False, "num_threads": 1,
        "device": "cpu",
    })  # fmt: skip
    if "splits" in signature(run_search).parameters:
        result = run_search(cfg, tmp_path / "run", splits=splits)
    else:  # until run_search takes the splits: hand them over where the data set is loaded
        monkeypatch.setattr("pyronas.run_setup.load_dataset", lambda *a, **k: splits)
        result = run_search(cfg, tmp_path / "run")
    assert (result.out_dir / "genotype.json").is_file()
    assert len(result.records) == 1


# ----------------------------------------------------------------------------------------------
# Search and retraining from the command line
# ----------------------------------------------------------------------------------------------


def test_search_cli_on_an_image_folder(tmp_path, capsys):
    root = write_tree(tmp_path / "tree", per_class=12, size=8, mode="L")
    out = tmp_path / "run"
    code = cli.main([
        "search", "--dataset", "imagefolder", "--data-dir", str(root), "--channels", "4",
        "--layers", "3", "--batch-size", "8", "--t-max", "1", "--curvature-batches", "1",
        "--bn-batches", "1", "--posterior-draws", "2", "--no-progress", "--num-threads", "1",
        "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    assert code in (0, None)
    genotype = json.loads((out / "genotype.json").read_text())
    assert genotype
    config = (out / "config.yaml").read_text()
    assert "imagefolder" in config and str(root) in config


def test_retrain_cli_on_an_image_folder(tmp_path, capsys):
    write_tree(tmp_path / "data" / "train", per_class=8, size=8)
    write_tree(tmp_path / "data" / "test", per_class=2, size=8, seed=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "network: cifar\nC: 4\nlayers: 2\nauxiliary: false\ndrop_path_prob: 0.0\nepochs: 1\n"
        "batch_size: 8\nlr: 0.05\naugment: true\ncutout: 2\nval_fraction: 0.0\nseed: 0\n"
        "num_threads: 1\nprogress: false\n"
    )
    out = tmp_path / "retrain"
    code = cli.main([
        "retrain", "--config", str(config), "--dataset", "imagefolder", "--data-dir",
        str(tmp_path / "data"), "--genotype", "DARTS_V2", "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    assert code in (0, None)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test_error"] <= 100
    assert metrics["dataset"] == "imagefolder"


def test_retrain_without_a_config_says_which_preset_an_imagefolder_gets(caplog):
    import logging

    from pyronas.train import resolved_config

    with caplog.at_level(logging.WARNING):
        cfg = resolved_config(None, {"dataset": "imagefolder", "data_dir": "x"})
    assert "no retraining preset for data set 'imagefolder'" in caplog.text
    assert "retrain_digits" in caplog.text and cfg["dataset"] == "imagefolder"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resolved_config(None, {"dataset": "digits"})
    assert "no retraining preset" not in caplog.text
