"""Data sets as tensors (science.md §5): fixed seeded splits, normalized or whitened inputs.

Each data set is a registry entry with ``shape(spec)`` (cheap: sizes only, no file access, used at
plan time for every trial) and ``load(spec)`` (the tensors, cached per process so reused Ray actors
load once). The bundled sets (``digits``, ``synthetic``) are split with ``data.test_fraction``;
torchvision's keep their official train/test split and are read from ``data.root``, which
:func:`prepare` fills before any trial starts. ``data.validation`` holds a seeded share of any
set's training split out as a validation set: what searches and schedulers choose on, so that
nothing is chosen on the test set (science.md §5). Trials move the tensors to their device,
batch there and augment whole training batches there with :func:`augment_batch`: no DataLoader
workers inside trials.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from resablate.errors import ConfigError, UserError
from resablate.registry import Registry

if TYPE_CHECKING:
    from resablate.spec.schema import DataSpec

# x_train, y_train, x_test, y_test: inputs in their natural shape (n, *input_shape), labels int64
Splits = tuple[Tensor, Tensor, Tensor, Tensor]

CROP_PADDING = 4  # pixels of zeros on each side before the random crop (CIFAR's standard)
DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: an offline machine fails in seconds, not minutes


@dataclass(frozen=True)
class DataShape:
    input_shape: tuple[int, ...]  # (C, H, W) for images, (d,) for flat inputs
    classes: int


@dataclass(frozen=True)
class Tensors:
    x_train: Tensor
    y_train: Tensor  # class labels (int64); one-hot targets are made by the loss
    x_test: Tensor
    y_test: Tensor
    shape: DataShape
    augment: bool = False  # training batches go through augment_batch (never the others)
    # data.validation's held-out training examples; None where it is not set
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def to(self, device: torch.device | str) -> Tensors:
        return Tensors(
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.shape,
            self.augment,
            None if self.x_val is None else self.x_val.to(device),
            None if self.y_val is None else self.y_val.to(device),
        )


def _nothing_to_fetch(spec: DataSpec) -> None:
    return None


def _nothing_to_check(spec: DataSpec) -> str | None:
    return None


def _at_most(field: str, asked: int | None, have: int, why: str) -> None:
    if asked is not None and asked > have:
        raise ConfigError(field, f"{asked} {why}; use at most {have}")


def held_out(n: int, spec: DataSpec) -> int:
    """How many of ``n`` training examples ``data.validation`` holds out (0 when unset)."""
    return 0 if spec.validation is None else max(1, round(n * spec.validation))


@dataclass(frozen=True)
class DataSource:
    input_shape: Callable[[DataSpec], tuple[int, ...]]  # natural shape, before whitening
    classes: Callable[[DataSpec], int]
    train_size: Callable[[DataSpec], int]  # training split, before data.validation and subset
    test_size: Callable[[DataSpec], int]  # test examples
    splits: Callable[[DataSpec], Splits]  # raw inputs, not yet normalized
    per_channel: bool = False  # normalize each channel (images) rather than each feature
    standard_augment: bool = False  # what data.augment: null means
    prepare: Callable[[DataSpec], None] = _nothing_to_fetch  # make sure the files are on disk
    # whether prepare can succeed, fetching and creating nothing (plan): a note, or UserError
    check: Callable[[DataSpec], str | None] = _nothing_to_check

    def shape(self, spec: DataSpec) -> DataShape:
        natural = self.input_shape(spec)
        features, examples = math.prod(natural), self.train_size(spec)
        _at_most(
            "data.whiten",
            spec.whiten,
            features,
            f"components asked but {spec.name} has {features} input features",
        )
        held = held_out(examples, spec)
        if held >= examples:
            raise ConfigError(
                "data.validation",
                f"{spec.validation} of {spec.name}'s {examples} training examples leaves none to"
                " train on; use a smaller fraction",
            )
        _at_most(
            "data.subset",
            spec.subset,
            examples - held,
            f"training examples asked but {spec.name} has {examples - held}"
            + (f" once data.validation holds out {held}" if held else ""),
        )
        input_shape = natural if spec.whiten is None else (spec.whiten,)  # whitening flattens
        if spec.augment and len(input_shape) != 3:
            raise ConfigError(
                "data.augment",
                f"augmentation (pad, crop, flip) needs image inputs but {spec.name}"
                f"{' whitened' if spec.whiten else ''} gives flat inputs of shape {input_shape};"
                " set data.augment: false",
            )
        return DataShape(input_shape, self.classes(spec))

    def sizes(self, spec: DataSpec) -> tuple[int, int, int]:
        """(training, validation, test) examples a trial holds: the training examples it
        trains on (``data.subset``, else the training split less the validation set)."""
        held = held_out(self.train_size(spec), spec)
        train = spec.subset or self.train_size(spec) - held
        return train, held, self.test_size(spec)

    def augments(self, spec: DataSpec) -> bool:
        """``data.augment``, or where null the data set's standard (never on whitened inputs)."""
        if spec.augment is not None:
            return spec.augment
        return self.standard_augment and spec.whiten is None


DATASETS: Registry[DataSource] = Registry("data set")


# --- bundled: split here with data.test_fraction -------------------------------------------------

DIGITS_EXAMPLES = 1797  # scikit-learn's 8×8 digits


def _n_test(n: int, spec: DataSpec) -> int:
    return max(1, round(n * spec.test_fraction))


def _split(x: np.ndarray, y: np.ndarray, spec: DataSpec) -> Splits:
    order = np.random.default_rng(spec.split_seed).permutation(len(x))
    n_test = _n_test(len(x), spec)
    test, train = order[:n_test], order[n_test:]
    return (
        torch.from_numpy(x[train]),
        torch.from_numpy(y[train]),
        torch.from_numpy(x[test]),
        torch.from_numpy(y[test]),
    )


def _digits(spec: DataSpec) -> Splits:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    images = bunch.data.astype(np.float64).reshape(-1, 1, 8, 8)
    return _split(images, bunch.target.astype(np.int64), spec)


def _synthetic(spec: DataSpec) -> Splits:
    """Gaussian inputs labelled by a fixed random one-hidden-layer tanh teacher."""
    rng = np.random.default_rng(spec.split_seed)
    features = math.prod(spec.image) if spec.image else spec.features
    dtype = np.float32 if spec.image else np.float64  # images: half the memory
    x = rng.standard_normal((spec.samples, features), dtype=dtype)
    hidden = 256 if spec.image else 2 * features  # images: a teacher of bounded cost
    w1 = rng.standard_normal((features, hidden)) / np.sqrt(features)
    w2 = rng.standard_normal((hidden, spec.classes)) / np.sqrt(hidden)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1)
    if spec.image:
        x = x.reshape(-1, *spec.image)
    return _split(x, y.astype(np.int64), spec)


DATASETS.add(
    "digits",
    DataSource(
        input_shape=lambda s: (1, 8, 8),
        classes=lambda s: 10,
        train_size=lambda s: DIGITS_EXAMPLES - _n_test(DIGITS_EXAMPLES, s),
        test_size=lambda s: _n_test(DIGITS_EXAMPLES, s),
        splits=_digits,
    ),
)
DATASETS.add(
    "synthetic",
    DataSource(
        input_shape=lambda s: tuple(s.image) if s.image else (s.features,),
        classes=lambda s: s.classes,
        train_size=lambda s: s.samples - _n_test(s.samples, s),
        test_size=lambda s: _n_test(s.samples, s),
        splits=_synthetic,
    ),
)


# --- torchvision: official splits, files under data.root -----------------------------------------


def data_root(spec: DataSpec) -> Path:
    """The absolute folder torchvision reads: ``data.root``, else $RESABLATE_DATA, else ./data."""
    root = spec.root or os.environ.get("RESABLATE_DATA") or "data"
    return Path(root).expanduser().resolve()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's urlopen calls pass no timeout: a firewalled machine would hang for minutes
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


@dataclass(frozen=True)
class Torchvision:
    """A ``torchvision.datasets`` class, its sizes and the files it reads."""

    name: str  # the YAML name
    dataset: str  # class in torchvision.datasets
    input_shape: tuple[int, int, int]
    classes: int
    train_size: int  # official training split; the official test split is the test set
    folder: str  # where under data.root torchvision looks for the files
    files: tuple[str, ...]  # what it expects there
    fetch: str  # how to get them by hand

    def source(self) -> DataSource:
        return DataSource(
            input_shape=lambda s: self.input_shape,
            classes=lambda s: self.classes,
            train_size=lambda s: self.train_size,
            test_size=lambda s: TORCHVISION_TEST,
            splits=self.splits,
            per_channel=True,
            standard_augment=self.name.startswith("cifar"),  # pad, crop, flip: He et al. 2016
            prepare=self.prepare,
            check=self.check,
        )

    def missing(self, spec: DataSpec) -> list[str]:
        folder = data_root(spec) / self.folder
        return [name for name in self.files if not (folder / name).is_file()]

    def error(self, spec: DataSpec, failure: str) -> UserError:
        """One line: the data set, the folder, the files expected there, what failed, the fix."""
        folder = data_root(spec) / self.folder
        missing = self.missing(spec)
        if missing:
            lacks = "" if len(missing) == len(self.files) else f" (missing: {', '.join(missing)})"
            problem = f"data set {self.name} is not in {folder}{lacks}"
        else:
            problem = f"data set {self.name} could not be read from {folder}"
        return UserError(
            f"{problem}{failure}; torchvision expects the files {', '.join(self.files)} there:"
            f" download them elsewhere ({self.fetch}) and copy them into that folder, or set"
            f" data.root (or RESABLATE_DATA) to a folder that holds {self.folder}"
        )

    def _read(self, spec: DataSpec, download: bool) -> Splits:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset)
        root = str(data_root(spec))
        train = cls(root, train=True, download=download)
        test = cls(root, train=False)
        return (*_images(train.data, train.targets), *_images(test.data, test.targets))

    def corrupt(self, spec: DataSpec) -> list[str]:
        """The files that fail torchvision's integrity check (the md5 sums its CIFAR classes
        hold; its MNIST classes check none once unpacked)."""
        import torchvision.datasets
        from torchvision.datasets.utils import check_integrity

        cls = getattr(torchvision.datasets, self.dataset)
        sums = [*getattr(cls, "train_list", []), *getattr(cls, "test_list", [])]
        meta = getattr(cls, "meta", None)
        if isinstance(meta, dict):
            sums.append((meta["filename"], meta["md5"]))
        folder = data_root(spec) / self.folder
        return [
            name
            for name, md5 in sums
            if (folder / name).is_file() and not check_integrity(str(folder / name), md5)
        ]

    def splits(self, spec: DataSpec) -> Splits:
        try:
            return self._read(spec, download=False)
        except Exception as exc:  # torchvision raises RuntimeError, OSError, ValueError, ...
            raise self.error(spec, "" if self.missing(spec) else _why(exc)) from exc

    def partly_there(self, spec: DataSpec) -> UserError:
        """Some of the files are there, not all: they are the user's, never downloaded over."""
        return self.error(
            spec,
            "; resablate does not download over the files already there (copy the missing ones"
            " in, or delete the folder to download them all)",
        )

    def _source_url(self) -> str:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.dataset)
        url = getattr(cls, "url", None) or cls.mirrors[0]
        return str(url)

    def check(self, spec: DataSpec) -> str | None:
        """What ``prepare`` will find, fetching and creating nothing (``resablate plan``): None
        when the files are there, a note when they are not but their server answers; a one-line
        UserError when some are missing or the server cannot be reached."""
        folder = data_root(spec) / self.folder
        missing = self.missing(spec)
        if not missing:
            return None
        if len(missing) < len(self.files):
            raise self.partly_there(spec)
        url = urllib.parse.urlsplit(self._source_url())
        host = url.hostname or ""
        # the download goes through the proxy urllib reads from the environment, if any
        proxy = urllib.request.getproxies().get(url.scheme)
        via = (
            urllib.parse.urlsplit(proxy)
            if proxy and not urllib.request.proxy_bypass(host)
            else url
        )
        port = via.port or (443 if via.scheme == "https" else 80)
        reached = host if via is url else f"{host} (through the proxy {via.hostname}:{port})"
        try:
            socket.create_connection((via.hostname or "", port), DOWNLOAD_TIMEOUT_S).close()
        except OSError as exc:
            raise self.error(
                spec, f" and this machine cannot reach {reached}{_why(exc)}"
            ) from None
        return f"data set {self.name} is not in {folder} yet: sweep downloads it from {reached}"

    def prepare(self, spec: DataSpec) -> None:
        """Download the files where none is there yet (torchvision's own download), then check
        they load. Files already in the folder are the user's: never downloaded over (a failed
        checksum would make torchvision download the archive again and unpack it over them)."""
        folder = data_root(spec) / self.folder
        missing = self.missing(spec)
        if len(missing) < len(self.files):  # some are there: check them, fetch nothing
            bad = self.corrupt(spec)
            if bad:
                raise UserError(
                    f"data set {self.name}: the files {', '.join(bad)} in {folder} fail"
                    " torchvision's integrity check (md5); replace them with the originals"
                    f" ({self.fetch}), or delete the folder to let resablate download it"
                )
            if missing:
                raise self.partly_there(spec)
        fresh = _first_missing(folder)  # what a failed download must not leave behind
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                self._read(spec, download=len(missing) == len(self.files))
        except Exception as exc:
            if fresh is not None:
                shutil.rmtree(fresh, ignore_errors=True)
            if self.missing(spec):
                raise self.error(spec, f" and downloading them failed{_why(exc)}") from exc
            raise self.error(spec, _why(exc)) from exc


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None: it exists)."""
    found, whole = None, folder.absolute()
    for path in (whole, *whole.parents):
        if path.exists():
            return found
        found = path
    return found


def _why(exc: Exception) -> str:
    reason = " ".join(str(exc).split())  # torchvision's download errors span several lines
    return f" ({type(exc).__name__}: {reason[:300]})" if reason else f" ({type(exc).__name__})"


def _images(data: Tensor | np.ndarray, targets: Tensor | list[int]) -> tuple[Tensor, Tensor]:
    """uint8 images as float (n, C, H, W): MNIST's are (n, H, W), CIFAR's (n, H, W, C)."""
    x = torch.as_tensor(data)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    x = x.to(torch.float32, memory_format=torch.contiguous_format)
    return x, torch.as_tensor(targets, dtype=torch.int64)


TORCHVISION_TEST = 10_000  # the official test split of every set below

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
TORCHVISION = (
    Torchvision(
        "mnist",
        "MNIST",
        (1, 28, 28),
        10,
        60_000,
        "MNIST/raw",
        MNIST_FILES,
        "https://ossci-datasets.s3.amazonaws.com/mnist/, then gunzip them",
    ),
    Torchvision(
        "fashion_mnist",
        "FashionMNIST",
        (1, 28, 28),
        10,
        60_000,
        "FashionMNIST/raw",
        MNIST_FILES,
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, then gunzip them",
    ),
    Torchvision(
        "cifar10",
        "CIFAR10",
        (3, 32, 32),
        10,
        50_000,
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, then unpack it",
    ),
    Torchvision(
        "cifar100",
        "CIFAR100",
        (3, 32, 32),
        100,
        50_000,
        "cifar-100-python",
        ("train", "test", "meta"),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, then unpack it",
    ),
)
for _vision in TORCHVISION:
    DATASETS.add(_vision.name, _vision.source())


# --- loading -------------------------------------------------------------------------------------


def prepare(spec: DataSpec) -> None:
    """Make sure the files of ``spec``'s data set are on disk, before any trial starts.

    Missing files are fetched with torchvision's own download (socket timeout
    ``DOWNLOAD_TIMEOUT_S``); where that fails, or the files do not load, raises a one-line
    UserError naming the folder, the files torchvision expects there and the fix. Bundled sets
    need nothing.
    """
    DATASETS[spec.name].prepare(spec)


def check(spec: DataSpec) -> str | None:
    """Whether :func:`prepare` can succeed, fetching and creating nothing: None when the files
    are there (or bundled), a note when the download will fetch them, else a one-line
    UserError (some files missing, or the server unreachable) with the fix."""
    return DATASETS[spec.name].check(spec)


def _whiten(train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) onto the first ``k`` principal components of the training set, each
    scaled to unit variance, as Demystifying ResNet does with MNIST."""
    mean = train.mean(axis=0)
    centred = train - mean
    cov = centred.T @ centred / len(train)
    values, vectors = np.linalg.eigh(cov)  # ascending
    top = np.argsort(values)[::-1][:k]
    return mean, vectors[:, top] / np.sqrt(np.maximum(values[top], 1e-12))


def _preprocess(
    train: Tensor, others: list[Tensor], per_channel: bool, whiten: int | None
) -> tuple[Tensor, list[Tensor]]:
    """Fitted on the training examples only (never the validation or test set, which only
    get the same map): standardize each feature (each channel for torchvision's images), or
    flatten and whiten. Returns float32."""
    if whiten is not None:
        centre, projection = _whiten(train.flatten(1).double().numpy(), whiten)

        def white(x: Tensor) -> Tensor:
            return torch.from_numpy((x.flatten(1).double().numpy() - centre) @ projection).float()

        return white(train), [white(x) for x in others]
    dims = (0, 2, 3) if per_channel else (0,)
    std, mean = torch.std_mean(train, dim=dims, keepdim=True, correction=0)
    std[std < 1e-8] = 1.0  # constant pixels (digits' borders) stay zero
    return (train - mean).div_(std).float(), [(x - mean).div_(std).float() for x in others]


@functools.lru_cache(maxsize=4)
def load(spec: DataSpec) -> Tensors:
    """The data set of ``spec`` as float32 / int64 CPU tensors, split, subset and preprocessed.

    One permutation of the training split, seeded with ``data.split_seed`` (never a trial's
    seed: every seed of a configuration sees the same examples), orders both choices below.
    ``data.validation`` holds out its last ``round(fraction x n)`` examples as the validation
    set, first, and ``data.subset`` keeps its first ``subset`` examples, which the validation
    set never holds: so a smaller subset is part of a larger one, a subset trains on the same
    examples with a validation set as without, and the validation set is the same whatever the
    subset. Without a subset the training examples left keep their order. The test set stays
    whole. Normalization (or whitening) is fitted on the training examples kept only.
    """
    source = DATASETS[spec.name]
    shape = source.shape(spec)  # raises ConfigError
    x_train, y_train, x_test, y_test = source.splits(spec)  # raises UserError
    n = len(y_train)
    held = held_out(n, spec)  # of the split as read (a test's fake files are small)
    besides = " besides the validation set" if held else ""
    why = f"training examples asked but the files of {spec.name} hold {n - held}{besides}"
    _at_most("data.subset", spec.subset, n - held, why)
    order = np.random.default_rng(spec.split_seed).permutation(n)
    x_val = y_val = None
    if held:
        val = torch.from_numpy(order[n - held :])
        x_val, y_val = x_train[val], y_train[val]
    if spec.subset is not None or held:
        kept = order[: spec.subset] if spec.subset is not None else np.sort(order[: n - held])
        keep = torch.from_numpy(kept)
        x_train, y_train = x_train[keep], y_train[keep]
    others = [x_test] if x_val is None else [x_test, x_val]
    x_train, others = _preprocess(x_train, others, source.per_channel, spec.whiten)
    x_val = others[1] if x_val is not None else None
    return Tensors(x_train, y_train, others[0], y_test, shape, source.augments(spec), x_val, y_val)


def augment_batch(x: Tensor, generator: torch.Generator) -> Tensor:
    """CIFAR's standard augmentation of a whole (N, C, H, W) batch on its device: zero-pad
    ``CROP_PADDING`` pixels on each side, crop a random H×W window per image, flip each image
    left-right with probability 1/2 (He et al. 2016, arXiv 1512.03385 §4.2).

    ``generator`` must live on x's device; it draws the offsets (N, 2: row, column) first, then
    the flips (N,). Inputs are normalized, so the zeros shifted in are the training-set mean.
    """
    n, c, h, w = x.shape
    p = CROP_PADDING
    padded = F.pad(x, (p, p, p, p))  # (N, C, H + 2p, W + 2p)
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator, device=x.device)
    flips = torch.rand(n, generator=generator, device=x.device) < 0.5
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H) rows of padded to keep
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (N, W) columns, in output order
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    cropped = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
    return cropped.gather(3, cols[:, None, None, :].expand(n, c, h, w))
