"""Data sets as tensors (science.md §5): fixed seeded splits, normalized or whitened inputs.

Each data set is a registry entry with ``shape(spec)`` (cheap: sizes only, no file access, used at
plan time for every trial) and ``load(spec)`` (the tensors, cached per process so reused Ray actors
load once). The bundled sets (``digits``, ``synthetic``) are split with ``data.test_fraction``;
torchvision's (:mod:`resablate.trial.vision_sets`) keep their official train/test split and are
read from ``data.root``, which :func:`prepare` fills before any trial starts. ``data.validation``
holds a seeded share of any set's training split out as a validation set: what searches and
schedulers choose on, so that nothing is chosen on the test set (science.md §5). Trials move the
tensors to their device, batch there and augment whole training batches there with
:func:`augment_batch`: no DataLoader workers inside trials.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from resablate.errors import ConfigError
from resablate.registry import Registry
from resablate.trial.vision_sets import TORCHVISION, TORCHVISION_TEST, Torchvision

if TYPE_CHECKING:
    from resablate.spec.schema import DataSpec

# x_train, y_train, x_test, y_test: inputs in their natural shape (n, *input_shape), labels int64
Splits = tuple[Tensor, Tensor, Tensor, Tensor]

CROP_PADDING = 4  # pixels of zeros on each side before the random crop (CIFAR's standard)


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


# --- torchvision: official splits, files under data.root (trial/vision_sets.py) ------------------


def _torchvision(vision: Torchvision) -> DataSource:
    return DataSource(
        input_shape=lambda s: vision.input_shape,
        classes=lambda s: vision.classes,
        train_size=lambda s: vision.train_size,
        test_size=lambda s: TORCHVISION_TEST,
        splits=vision.splits,
        per_channel=True,
        standard_augment=vision.name.startswith("cifar"),  # pad, crop, flip: He et al. 2016
        prepare=vision.prepare,
        check=vision.check,
    )


for _vision in TORCHVISION:
    DATASETS.add(_vision.name, _torchvision(_vision))


# --- loading -------------------------------------------------------------------------------------


def prepare(spec: DataSpec) -> None:
    """Make sure the files of ``spec``'s data set are on disk, before any trial starts.

    Missing files are fetched with torchvision's own download (socket timeout
    :data:`resablate.trial.vision_sets.DOWNLOAD_TIMEOUT_S`); where that fails, or the files do
    not load, raises a one-line UserError naming the folder, the files torchvision expects there
    and the fix. Bundled sets need nothing.
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
