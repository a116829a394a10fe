"""Tests of pyronas.data: splits, file readers, error messages, transforms, loaders."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pyronas import data
from pyronas.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    DATASETS,
    LOADERS,
    Cutout,
    DataOptions,
    DatasetError,
    TensorAugment,
    dataset_names,
    load_dataset,
    load_splits,
    make_loader,
    read_idx,
    split_counts,
    stratified_split,
)

# ----------------------------------------------------------------------------------------------
# Helpers writing tiny data sets in the standard formats
# ----------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of unsigned bytes (magic 0x0800 + ndim unless given)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fashion_arrays(n_train: int = 40, n_test: int = 20, size: int = 28, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }


def write_fashion(folder: Path, arrays: dict, gz: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, base in data.FASHION_MNIST_FILES.items():
        raw = idx_bytes(arrays[key])
        path = folder / (base + ".gz" if gz else base)
        path.write_bytes(gzip.compress(raw) if gz else raw)
        paths[key] = path
    return paths


@pytest.fixture
def no_system_fmnist(monkeypatch, tmp_path):
    """Hide the system-wide Fashion-MNIST so that only the test's files are found."""
    # patched where it is read, not the name re-exported by the package
    monkeypatch.setattr(
        "pyronas.data.datasets.SYSTEM_FASHION_MNIST_DIR", tmp_path / "no-such-system-dir"
    )


def write_cifar(folder: Path, per_batch: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Five train batches and a test batch of ``per_batch`` images each (balanced labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in (*data.CIFAR10_TRAIN_FILES, data.CIFAR10_TEST_FILE):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [i % 10 for i in range(per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": y, b"data": x}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        arrays[name] = x
    meta = {b"label_names": [n.encode() for n in data.CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return arrays


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), n_train=6, n_val=2) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
                if i % 3 == 2:  # a grey image, expanded to RGB by the reader
                    im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
                else:
                    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
                ext = ".JPEG" if i % 2 == 0 else ".png"
                im.save(root / split / c / f"{c}_{i}{ext}")
        (root / split / "README.txt").write_text("not an image, not a class folder")


# ----------------------------------------------------------------------------------------------
# Stratified splitting
# ----------------------------------------------------------------------------------------------


def test_split_counts_fractions_and_counts():
    assert split_counts(10, (0.5, 0.25, 0.25)) in ([5, 3, 2], [5, 2, 3])
    assert sum(split_counts(1437, (0.5, 0.25, 0.25))) == 1437
    assert split_counts(7, (1, 0, 0)) == [7, 0, 0]
    assert split_counts(100, (30, 10, 10)) == [30, 10, 10]
    with pytest.raises(ValueError, match="add up to 1"):
        split_counts(100, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="more than"):
        split_counts(10, (8, 2, 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_is_disjoint_and_proportional(seed):
    rng = np.random.default_rng(100 + seed)
    labels = rng.integers(0, 7, 503)  # unbalanced classes
    counts = [251, 126, 100]
    parts = stratified_split(labels, counts, seed)
    assert [p.size for p in parts] == counts
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size  # disjoint
    for part, k in zip(parts, counts, strict=True):
        for c in np.unique(labels):
            n_c = np.sum(labels == c)
            # each part holds each class in proportion, within one item (plus rounding)
            assert abs(np.sum(labels[part] == c) - n_c * k / labels.size) < 2.0


def test_stratified_split_handles_singleton_classes():
    labels = np.array([0, 1, 1, 2, 2, 2, 2, 2])
    parts = stratified_split(labels, [4, 4], seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(8))


# ----------------------------------------------------------------------------------------------
# digits
# ----------------------------------------------------------------------------------------------


def test_digits_shapes_dtypes_and_metadata():
    s = load_dataset("digits")
    assert (s.num_classes, s.in_channels, s.image_size, s.name) == (10, 1, 8, "digits")
    assert s.class_names == tuple(str(d) for d in range(10))
    assert s.sizes() == {"train": 719, "search": 360, "val": 359, "test": 359}
    for split in (s.train, s.search, s.val, s.test):
        x, y = split[0]
        assert x.shape == (1, 8, 8) and x.dtype == torch.float32
        assert isinstance(y, int) and 0 <= y < 10


def test_digits_splits_are_disjoint_stratified_and_match_the_source():
    from sklearn.datasets import load_digits

    s = load_dataset("digits", seed=5)
    idx = s.indices
    joined = np.concatenate([idx["train"], idx["search"], idx["val"]])
    assert np.unique(joined).size == joined.size == 1797 - 359  # disjoint, cover the rest
    # the test set is 20% of each class (within one image)
    bunch = load_digits()
    class_sizes = np.bincount(bunch.target)
    test_counts = np.bincount(s.test.labels.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * class_sizes) <= 1)
    # train / search / val: each class in proportion 1/2, 1/4, 1/4 (within one image)
    rest_sizes = class_sizes - test_counts
    for name, frac in (("train", 0.5), ("search", 0.25), ("val", 0.25)):
        counts = np.bincount(getattr(s, name).labels.numpy(), minlength=10)
        assert np.all(np.abs(counts - frac * rest_sizes) <= 1.5), name
    # images are the source images at the recorded positions, normalised with the train stats
    counts = split_counts(1797, (0.8, 0.2))
    rest, test = stratified_split(bunch.target, counts, data.DIGITS_TEST_SEED)
    assert np.intersect1d(rest, test).size == 0
    source = torch.from_numpy(bunch.images.astype(np.float32) / 16).unsqueeze(1)
    for name in ("train", "search", "val"):
        ds = getattr(s, name)
        positions = rest[idx[name]]
        assert torch.allclose(ds.images * s.std[0] + s.mean[0], source[positions], atol=1e-5)
        assert np.array_equal(ds.labels.numpy(), bunch.target[positions])
    assert torch.allclose(s.test.images * s.std[0] + s.mean[0], source[test], atol=1e-5)


def test_digits_normalisation_uses_train_statistics():
    s = load_dataset("digits", seed=1)
    x = s.train.images
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-4
    # the statistic is of the train split only: raw train pixels have exactly this mean
    raw_train = x * s.std[0] + s.mean[0]
    assert float(raw_train.mean()) == pytest.approx(s.mean[0], abs=1e-6)
    assert 0.2 < s.mean[0] < 0.4  # digits pixels / 16 average about 0.3
    # other splits use the same affine map: their raw pixels are multiples of 1/16 in [0, 1]
    raw_val = s.val.images * s.std[0] + s.mean[0]
    assert torch.allclose(raw_val * 16, (raw_val * 16).round(), atol=1e-4)
    assert float(raw_val.min()) > -1e-5 and float(raw_val.max()) < 1 + 1e-5


def test_digits_seed_controls_the_split():
    a, b, c = (load_dataset("digits", seed=k) for k in (3, 3, 4))
    for name in ("train", "search", "val"):
        assert np.array_equal(a.indices[name], b.indices[name])
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert not np.array_equal(a.indices[name], c.indices[name])
    assert torch.equal(a.test.labels, c.test.labels)  # the test hold-out is fixed


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


DIGITS_PINS = {
    # kwargs -> (mean, std, {split: (index sha, label sha, 16-level pixel sha)})
    (): (
        0.3062114264603616,
        0.3765761254628877,
        {
            "train": ("54f0ec25ce9f05b1", "afab2352dc63b170", "aefda46f6a2580c0"),
            "search": ("a5374fca170935f8", "a065281bf0ffd3bd", "72500a5aabe46885"),
            "val": ("df5b5fe20a54bc46", "5b5e92b24af924ce", "9d36f53fa31a63d2"),
            "test": (None, "84a75d03da7d82f2", "da26c7413e830740"),
        },
    ),
    (("seed", 3), ("train_size", 400)): (
        0.307705078125,
        0.37722690471548886,
        {
            "train": ("01bcf8884682a710", "ae108601bee0c424", "ba76fa2715cea646"),
            "search": ("c7f94114c082e2ad", "e82c6a88f93687c2", "75a72288876745e8"),
            "val": ("498df765e40be779", "a3214970888e4ba6", "d901f985dcd6feac"),
            "test": (None, "84a75d03da7d82f2", "da26c7413e830740"),
        },
    ),
}


@pytest.mark.parametrize("kwargs", list(DIGITS_PINS), ids=["default", "seed3-size400"])
def test_digits_splits_are_pinned(kwargs):
    """The same seed gives the same images in every split, release after release."""
    mean, std, pins = DIGITS_PINS[kwargs]
    s = load_dataset("digits", **dict(kwargs))
    assert s.mean[0] == pytest.approx(mean, rel=1e-12)
    assert s.std[0] == pytest.approx(std, rel=1e-12)
    for name, (index_sha, label_sha, pixel_sha) in pins.items():
        ds = getattr(s, name)
        if index_sha is not None:
            assert _sha(s.indices[name].astype("<i8")) == index_sha, name
        assert _sha(ds.labels.numpy().astype("<i8")) == label_sha, name
        # undo the normalisation; digits pixels are the integers 0..16
        levels = torch.round((ds.images.double() * s.std[0] + s.mean[0]) * 16)
        assert _sha(levels.to(torch.uint8).numpy()) == pixel_sha, name


def test_digits_train_size_subsamples_stratified():
    s = load_dataset("digits", train_size=200, seed=2)
    assert s.sizes() == {"train": 100, "search": 50, "val": 50, "test": 359}
    counts = np.bincount(s.train.labels.numpy(), minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11
    with pytest.raises(ValueError, match="train_size"):
        load_dataset("digits", train_size=5000)


def test_fractions_give_whole_train_set_or_counts():
    s = load_dataset("digits", fractions=(1, 0, 0))
    assert s.sizes()["train"] == 1797 - 359 and len(s.search) == 0 and len(s.val) == 0
    s = load_dataset("digits", fractions=(300, 100, 50))
    assert (len(s.train), len(s.search), len(s.val)) == (300, 100, 50)


def test_digits_resize_and_augment():
    s = load_dataset("digits", image_size=16, augment=True, cutout=4)
    assert s.image_size == 16 and s.val[0][0].shape == (1, 16, 16)
    x1, y1 = s.train[0]
    assert x1.shape == (1, 16, 16) and y1 == int(s.train.labels[0])
    torch.manual_seed(0)
    draws = torch.stack([s.train[0][0] for _ in range(10)])
    assert draws.std(dim=0).max() > 0  # augmentation is random per item
    assert torch.equal(s.val[0][0], s.val[0][0])  # held-out splits are not augmented


def test_unknown_dataset_lists_known_names():
    known = "known: digits, fashion-mnist, cifar10, imagenet, imagefolder"
    with pytest.raises(ValueError, match=known):
        load_dataset("mnist-plus")
    assert DATASETS == ("digits", "fashion-mnist", "cifar10", "imagenet", "imagefolder")


def test_registry_names_every_loader():
    assert dataset_names() == DATASETS == tuple(LOADERS)
    assert all(callable(loader) for loader in LOADERS.values())


def test_loaders_take_data_options_like_load_dataset():
    options = DataOptions(seed=4, train_size=300, fractions=[0.6, 0.2, 0.2])
    assert options.fractions == (0.6, 0.2, 0.2)  # normalised to a tuple
    a = LOADERS["digits"](options)
    b = load_splits("digits", options)
    c = load_dataset("digits", seed=4, train_size=300, fractions=(0.6, 0.2, 0.2))
    assert a.sizes() == {"train": 180, "search": 60, "val": 60, "test": 359}
    for name in ("train", "search", "val", "test"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert torch.equal(getattr(a, name).images, getattr(c, name).images)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 5  # type: ignore[misc]
    assert DataOptions(data_dir="some/dir").data_dir == Path("some/dir")
    assert DataOptions().download_dir == Path("data")
    with pytest.raises(ValueError, match="known: digits, fashion-mnist"):
        load_splits("mnist-plus", options)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fractions": (0.5, 0.5)}, r"must be \(train, search, val\)"),
        ({"fractions": (0.5, 0.2, 0.2)}, "add up to 1"),
        ({"fractions": (-1, 1, 1)}, ">= 0"),
        ({"fractions": (0, 0.5, 0.5)}, "leave the train split empty"),
        ({"train_size": 0}, "train_size must be >= 1"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"cutout": -2}, "cutout size must be >= 0"),
    ],
)
def test_data_options_reject_bad_values_before_reading_data(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataOptions(**kwargs)
    with pytest.raises(ValueError, match=message):  # load_dataset fails before any file is read
        load_dataset("imagenet", data_dir="no/such/folder", **kwargs)


def test_dataset_error_is_both_kinds():
    assert issubclass(DatasetError, FileNotFoundError) and issubclass(DatasetError, ValueError)


# ----------------------------------------------------------------------------------------------
# fashion-mnist
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    raw = idx_bytes(images)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(path, 2051)
    assert out.shape == (5, 4, 3) and np.array_equal(out, images)
    labels = np.arange(7, dtype=np.uint8)
    (tmp_path / "y").write_bytes(idx_bytes(labels))
    assert np.array_equal(read_idx(tmp_path / "y", 2049), labels)


@pytest.mark.parametrize(
    "layout", ["flat", "flat-gz", "FashionMNIST/raw", "fashion-mnist", "FashionMNIST/raw-gz"]
)
def test_fashion_mnist_layouts(tmp_path, no_system_fmnist, layout):
    arrays = fashion_arrays()
    root = tmp_path / "root"
    sub = layout.removesuffix("-gz").removeprefix("flat")
    write_fashion(root / sub, arrays, gz=layout.endswith("-gz"))
    s = load_dataset("fashion-mnist", data_dir=root, seed=0)
    assert (s.num_classes, s.in_channels, s.image_size) == (10, 1, 28)
    assert s.sizes() == {"train": 20, "search": 10, "val": 10, "test": 20}
    assert s.class_names[0] == "T-shirt/top" and s.class_names[9] == "Ankle boot"
    # pixel values: the test images are the file's bytes / 255, normalised
    expected = (torch.from_numpy(arrays["test_images"]).float() / 255 - s.mean[0]) / s.std[0]
    assert torch.allclose(s.test.images[:, 0], expected, atol=1e-5)
    assert torch.equal(s.test.labels, torch.from_numpy(arrays["test_labels"]).long())
    # the train split is the file's images at the recorded positions
    idx = s.indices["train"]
    raw = s.train.images[:, 0] * s.std[0] + s.mean[0]
    assert torch.allclose(
        raw * 255, torch.from_numpy(arrays["train_images"][idx]).float(), atol=1e-3
    )


def test_fashion_mnist_resize(tmp_path, no_system_fmnist):
    write_fashion(tmp_path, fashion_arrays())
    s = load_dataset("fashion-mnist", data_dir=tmp_path, image_size=16)
    assert s.image_size == 16 and s.train[0][0].shape == (1, 16, 16)
    assert s.test.images.shape == (20, 1, 16, 16)


def test_fashion_mnist_truncated_file_names_the_file(tmp_path, no_system_fmnist):
    paths = write_fashion(tmp_path, fashion_arrays())
    bad = paths["train_images"]
    bad.write_bytes(bad.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_fashion_mnist_corrupt_gzip_names_the_file(tmp_path, no_system_fmnist):
    paths = write_fashion(tmp_path, fashion_arrays(), gz=True)
    bad = paths["test_images"]
    bad.write_bytes(bad.read_bytes()[:50])
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_fashion_mnist_wrong_magic_names_the_file(tmp_path, no_system_fmnist):
    arrays = fashion_arrays()
    paths = write_fashion(tmp_path, arrays)
    bad = paths["train_labels"]
    bad.write_bytes(idx_bytes(arrays["train_labels"], magic=2051))
    with pytest.raises(DatasetError, match="magic number 2051, expected 2049") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value)


def test_fashion_mnist_count_mismatch(tmp_path, no_system_fmnist):
    arrays = fashion_arrays()
    arrays["train_labels"] = arrays["train_labels"][:-1]
    write_fashion(tmp_path, arrays)
    with pytest.raises(DatasetError, match="40 images but .* 39 labels"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, no_system_fmnist):
    missing = tmp_path / "nothing-here"
    with pytest.raises(DatasetError) as info:
        load_dataset("fashion-mnist", data_dir=missing)
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--download" in msg
    assert str(missing / "FashionMNIST" / "raw") in msg  # the folders searched
    assert "train-images-idx3-ubyte" in msg
    assert isinstance(info.value, FileNotFoundError)


def test_fashion_mnist_failed_download_is_explained(tmp_path, no_system_fmnist, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DatasetError, match="downloading Fashion-MNIST .* failed") as info:
        load_dataset("fashion-mnist", data_dir=tmp_path, download=True)
    assert "name resolution" in str(info.value) and "network" in str(info.value)


@pytest.mark.skipif(
    not data.SYSTEM_FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)
def test_system_fashion_mnist():
    s = load_dataset("fashion-mnist", train_size=600, seed=0)
    assert (s.num_classes, s.in_channels, s.image_size) == (10, 1, 28)
    assert s.sizes() == {"train": 300, "search": 150, "val": 150, "test": 10000}
    assert np.array_equal(np.bincount(s.train.labels.numpy()), np.full(10, 30))
    assert np.array_equal(np.bincount(s.test.labels.numpy()), np.full(10, 1000))
    # published pixel mean of Fashion-MNIST is about 0.286
    assert s.mean[0] == pytest.approx(0.286, abs=0.02)


# ----------------------------------------------------------------------------------------------
# cifar10
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10_reads_standard_batches(tmp_path, nested):
    folder = tmp_path / data.CIFAR10_FOLDER if nested else tmp_path
    arrays = write_cifar(folder)
    s = load_dataset("cifar10", data_dir=tmp_path, seed=1)
    assert (s.num_classes, s.in_channels, s.image_size) == (10, 3, 32)
    assert s.sizes() == {"train": 50, "search": 25, "val": 25, "test": 20}
    assert s.class_names == data.CIFAR10_CLASSES
    assert s.mean == CIFAR10_MEAN and s.std == CIFAR10_STD
    x0, y0 = s.test[3]
    raw = torch.from_numpy(arrays["test_batch"][3]).float().view(3, 32, 32) / 255
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(x0, (raw - mean) / std, atol=1e-5) and y0 == 3
    assert np.array_equal(np.bincount(s.train.labels.numpy()), np.full(10, 5))


def test_cifar10_augment_and_cutout_shapes(tmp_path):
    write_cifar(tmp_path)
    s = load_dataset("cifar10", data_dir=tmp_path, augment=True, cutout=16)
    torch.manual_seed(0)
    draws = torch.stack([s.train[0][0] for _ in range(8)])
    assert draws.shape == (8, 3, 32, 32)
    assert draws.std(dim=0).max() > 0
    # the cutout hole is exactly zero in all channels in every draw
    assert all(bool((d == 0).all(dim=0).any()) for d in draws)
    assert torch.equal(s.search[0][0], s.search[0][0])


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="--download") as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert data.CIFAR10_FOLDER in str(info.value) and str(tmp_path) in str(info.value)
    write_cifar(tmp_path)
    bad = tmp_path / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(bad) in str(info.value)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_failed_download_is_explained(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetError, match="downloading CIFAR-10 .* failed"):
        load_dataset("cifar10", data_dir=tmp_path, download=True)


# ----------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------


def test_cutout_zeroes_one_clipped_square():
    g = torch.Generator().manual_seed(0)
    cut = Cutout(6, generator=g)
    full = 0
    for _ in range(200):
        out = cut(torch.ones(2, 20, 20))
        hole = out[0] == 0
        assert torch.equal(hole, out[1] == 0)  # same hole in every channel
        rows, cols = hole.any(dim=1).nonzero().flatten(), hole.any(dim=0).nonzero().flatten()
        # a solid axis-aligned rectangle of side <= 6, touching a border if smaller
        assert int(hole.sum()) == rows.numel() * cols.numel()
        assert rows.numel() <= 6 and cols.numel() <= 6
        assert torch.equal(rows, torch.arange(int(rows[0]), int(rows[-1]) + 1))
        if rows.numel() < 6:
            assert int(rows[0]) == 0 or int(rows[-1]) == 19
        if cols.numel() < 6:
            assert int(cols[0]) == 0 or int(cols[-1]) == 19
        full += int(hole.sum()) == 36
    assert full > 100  # interior centres (14 x 14 of 400) give the full 6 x 6 square
    assert torch.equal(Cutout(0)(torch.ones(1, 4, 4)), torch.ones(1, 4, 4))


def test_tensor_augment_is_a_padded_crop_maybe_flipped():
    torch.manual_seed(1)
    image = torch.rand(3, 8, 8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    aug = TensorAugment(padding=2, flip=True, mean=mean, std=std)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
    windows = [
        padded[:, t : t + 8, u : u + 8].flip(-1) if f else padded[:, t : t + 8, u : u + 8]
        for t in range(5)
        for u in range(5)
        for f in (False, True)
    ]
    seen = set()
    for _ in range(100):
        raw = aug(image) * s + m
        hits = [k for k, w in enumerate(windows) if torch.allclose(raw, w, atol=1e-6)]
        assert hits, "output is no padded crop of the input"
        seen.add(hits[0])
    assert len(seen) > 10  # many offsets and both flips occur
    plain = TensorAugment(padding=0, flip=False, mean=mean, std=std)
    assert torch.allclose(plain(image), (image - m) / s)


# ----------------------------------------------------------------------------------------------
# imagenet
# ----------------------------------------------------------------------------------------------


def test_imagenet_image_folder(tmp_path):
    write_image_folder(tmp_path)
    s = load_dataset("imagenet", data_dir=tmp_path, image_size=32, seed=0)
    assert s.class_names == ("cat", "dog", "fox")
    assert (s.num_classes, s.in_channels, s.image_size) == (3, 3, 32)
    assert s.sizes() == {"train": 9, "search": 5, "val": 4, "test": 6}
    assert sorted(s.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(np.bincount(s.train.labels.numpy()), [3, 3, 3])
    for split in (s.train, s.search, s.val, s.test):
        x, y = split[0]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 3
    # eval transform is deterministic
    assert torch.equal(s.test[1][0], s.test[1][0])
    a = load_dataset("imagenet", data_dir=tmp_path, image_size=32, augment=True, cutout=8)
    torch.manual_seed(0)
    draws = torch.stack([a.train[0][0] for _ in range(4)])
    assert draws.shape == (4, 3, 32, 32) and draws.std(dim=0).max() > 0


def test_imagenet_missing_and_bad_layout(tmp_path):
    with pytest.raises(DatasetError, match="ImageFolder layout") as info:
        load_dataset("imagenet", data_dir=tmp_path)
    assert str(tmp_path / "train") in str(info.value)
    write_image_folder(tmp_path)
    (tmp_path / "val" / "wolf").mkdir()
    with pytest.raises(DatasetError, match="wolf"):
        load_dataset("imagenet", data_dir=tmp_path, image_size=32)


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------


def test_make_loader_is_reproducible():
    s = load_dataset("digits")

    def order(seed):
        loader = make_loader(s.train, batch_size=64, shuffle=True, seed=seed)
        return torch.cat([y for _, y in loader])

    x, y = next(iter(make_loader(s.train, batch_size=64, shuffle=True, seed=0)))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.long
    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))
    loader = make_loader(s.val, batch_size=100, shuffle=False, seed=0, drop_last=True)
    assert len(loader) == len(s.val) // 100
    assert torch.equal(next(iter(loader))[1], s.val.labels[:100])


def test_imagenet_unreadable_image_names_the_file(tmp_path):
    write_image_folder(tmp_path, n_train=4, n_val=1)
    bad = tmp_path / "val" / "cat" / "broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    s = load_dataset("imagenet", data_dir=tmp_path, image_size=32)
    k = [p for p, _ in s.test.samples].index(str(bad))
    with pytest.raises(DatasetError, match="broken.JPEG"):
        s.test[k]
