"""Readers of the image file formats: IDX (MNIST), CIFAR-10 pickles, image files and folders.

Every reader names the file in its error (:class:`DatasetError`) and never runs code from a
file: CIFAR pickles are read with an unpickler that only rebuilds NumPy arrays.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

IDX_LABELS_MAGIC = 2049
IDX_IMAGES_MAGIC = 2051

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)  # fmt: skip


class DatasetError(FileNotFoundError, ValueError):
    """A data set is missing or corrupt; the message says what was expected where."""


# ----------------------------------------------------------------------------------------------
# IDX
# ----------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping it (detected by its magic bytes)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from exc


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format) of unsigned bytes, plain or gzipped.

    Parameters
    ----------
    path
        The file.
    magic
        Expected magic number: 2049 for labels (1 dim), 2051 for images (3 dims); None accepts
        any unsigned-byte IDX file.

    Returns
    -------
    np.ndarray
        ``uint8`` array with the file's dimensions (labels ``(N,)``, images ``(N, H, W)``).

    Raises
    ------
    DatasetError
        Naming the file, for a wrong magic number, a short header, or a data size that does not
        match the dimensions.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise DatasetError(f"{path}: wrong magic number {found}, expected {magic}")
    if raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (magic number {found})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    actual = len(raw) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {what}: dims {dims} need {expected} data bytes, found {actual}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


# ----------------------------------------------------------------------------------------------
# CIFAR-10 pickles
# ----------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays and plain containers (no arbitrary code)."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "_frombuffer", "scalar"}

    def find_class(self, module: str, name: str):
        if (module.startswith("numpy") and name in self._ALLOWED) or (
            module == "_codecs" and name == "encode"
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``cifar-10-batches-py`` pickle.

    Returns
    -------
    (images, labels)
        ``uint8`` images ``(N, 3, 32, 32)`` and ``int64`` labels ``(N,)``.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 batch pickle ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: expected a dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: b'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_label_names(path: str | Path) -> tuple[str, ...]:
    """The class names stored in a ``batches.meta`` pickle (its ``b"label_names"`` entry).

    Raises
    ------
    Exception
        Whatever reading or unpickling raises; the caller decides whether names matter.
    """
    with Path(path).open("rb") as f:
        names = _ArrayUnpickler(f, encoding="bytes").load()[b"label_names"]
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


# ----------------------------------------------------------------------------------------------
# Image files and ImageFolder trees
# ----------------------------------------------------------------------------------------------


def read_image_rgb(path: str | Path) -> Tensor:
    """Decode an image file to a ``uint8`` tensor ``(3, H, W)`` (grey, CMYK, ... -> RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def scan_image_folder(
    root: Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    """The images of an ImageFolder tree ``root/<class>/**/<image>``.

    Parameters
    ----------
    root
        The tree; sub-folders are classes, other entries are ignored.
    classes
        The class names, in label order (e.g. those of the train tree); None: the sub-folders
        of ``root``, sorted by name.

    Returns
    -------
    (samples, classes)
        ``(path, label)`` pairs in sorted order, and the class names.

    Raises
    ------
    DatasetError
        A class folder of ``root`` that is not in ``classes``.
    """
    if classes is None:
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        if c not in index:
            raise DatasetError(f"{root / c}: class folder not present in the train folder")
        for dirpath, _, filenames in sorted(os.walk(root / c, followlinks=True)):
            for fname in sorted(filenames):
                if fname.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), index[c]))
    return samples, list(classes)


GREY_MODES: frozenset[str] = frozenset({"1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N"})
"""PIL modes read as one grey channel (8-bit, or 16-bit scaled to 8); every other mode is read
as RGB (alpha dropped, palettes expanded)."""


def read_image_array(path: str | Path) -> np.ndarray:
    """Decode an image file to ``uint8`` ``(H, W)`` (grey, :data:`GREY_MODES`) or ``(H, W, 3)``.

    Raises
    ------
    DatasetError
        Naming the file, when it is not an image PIL can decode.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):
                array = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)
            elif im.mode in GREY_MODES:
                array = np.asarray(im.convert("L"), dtype=np.uint8)
            else:
                array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: not an image that can be decoded ({exc})") from exc
    return array.copy()


def scan_class_folders(
    root: Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[str, int]], list[str]]:
    """The images of a user's ImageFolder tree ``root/<class>/**/<image>``, checked strictly.

    Like :func:`scan_image_folder`, but every file under a class folder must be an image
    (:data:`IMAGE_EXTENSIONS`; hidden files, whose names start with ``.``, are skipped) and
    every class folder must hold at least one. Files directly in ``root`` are ignored.

    Parameters
    ----------
    root
        The tree.
    classes
        The class names in label order (those of the train tree); None: the sub-folders of
        ``root``, sorted by name. A sub-folder of ``root`` outside ``classes`` is an error; a
        class without a folder is not (a test tree may lack classes).

    Returns
    -------
    (samples, classes)
        ``(path, label)`` pairs in sorted order, and the class names.

    Raises
    ------
    DatasetError
        ``root`` missing or without class folders, an empty class folder, a file that is not
        an image (named), a class folder not in ``classes``.
    """
    if not root.is_dir():
        raise DatasetError(f"{root}: folder not found")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise DatasetError(
            f"{root}: no class folders; expected one sub-folder per class holding its images "
            f"({root}/<class>/<image>)"
        )
    classes = list(folders if classes is None else classes)
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in folders:
        if c not in index:
            raise DatasetError(
                f"{root / c}: class folder not present in the train folder (classes: "
                f"{', '.join(classes)})"
            )
        found = []
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in filenames:
                if fname.startswith("."):
                    continue
                path = os.path.join(dirpath, fname)
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    raise DatasetError(
                        f"{path}: not an image (image files end in "
                        f"{', '.join(IMAGE_EXTENSIONS)}); move it out of the class folder"
                    )
                found.append(path)
        if not found:
            raise DatasetError(f"{root / c}: empty class folder (no images)")
        samples += [(path, index[c]) for path in sorted(found)]
    return samples, classes
