"""Data sets as tensors (science.md §5): fixed seeded splits, standardized or whitened inputs.

Each data set is a registry entry with ``shape(spec)`` (cheap: sizes only, used at plan time) and
``load(spec)`` (the tensors, cached per process so reused Ray actors load once). Trials move the
tensors to their device and batch there: no DataLoader workers inside trials.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from resablate.errors import ConfigError
from resablate.registry import Registry

if TYPE_CHECKING:
    from resablate.spec import DataSpec


@dataclass(frozen=True)
class DataShape:
    input_shape: tuple[int, ...]
    classes: int


@dataclass(frozen=True)
class Tensors:
    x_train: Tensor
    y_train: Tensor  # class labels (int64); one-hot targets are made by the loss
    x_test: Tensor
    y_test: Tensor
    shape: DataShape

    def to(self, device: torch.device | str) -> Tensors:
        return Tensors(
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.shape,
        )


@dataclass(frozen=True)
class DataSource:
    raw_features: Callable[[DataSpec], int]  # input features before whitening
    classes: Callable[[DataSpec], int]
    arrays: Callable[[DataSpec], tuple[np.ndarray, np.ndarray]]  # (x: n × features, y: n)

    def shape(self, spec: DataSpec) -> DataShape:
        features = self.raw_features(spec)
        if spec.whiten is not None and spec.whiten > features:
            raise ConfigError(
                "data.whiten",
                f"{spec.whiten} components asked but {spec.name} has {features} input features;"
                f" use at most {features}",
            )
        return DataShape((spec.whiten or features,), self.classes(spec))


DATASETS: Registry[DataSource] = Registry("data set")


def _digits(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def _synthetic(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a fixed random one-hidden-layer tanh teacher."""
    rng = np.random.default_rng(spec.split_seed)
    x = rng.standard_normal((spec.samples, spec.features))
    hidden = 2 * spec.features
    w1 = rng.standard_normal((spec.features, hidden)) / np.sqrt(spec.features)
    w2 = rng.standard_normal((hidden, spec.classes)) / np.sqrt(hidden)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1)
    return x, y.astype(np.int64)


DATASETS.add("digits", DataSource(lambda s: 64, lambda s: 10, _digits))
DATASETS.add("synthetic", DataSource(lambda s: s.features, lambda s: s.classes, _synthetic))


def _split(n: int, spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(spec.split_seed).permutation(n)
    n_test = max(1, round(n * spec.test_fraction))
    return order[n_test:], order[:n_test]


def _preprocess(train: np.ndarray, test: np.ndarray, whiten: int | None) -> tuple[np.ndarray, ...]:
    """Standardize per feature on the training set; or project onto the first ``whiten`` principal
    components, whitened (unit variance each), as Demystifying ResNet does with MNIST."""
    mean = train.mean(axis=0)
    train, test = train - mean, test - mean
    if whiten is None:
        std = train.std(axis=0)
        std[std < 1e-8] = 1.0  # constant pixels (digits' borders) stay zero
        return train / std, test / std
    cov = train.T @ train / len(train)
    values, vectors = np.linalg.eigh(cov)  # ascending
    top = np.argsort(values)[::-1][:whiten]
    projection = vectors[:, top] / np.sqrt(np.maximum(values[top], 1e-12))
    return train @ projection, test @ projection


@functools.lru_cache(maxsize=4)
def load(spec: DataSpec) -> Tensors:
    """The data set of ``spec`` as float32 / int64 CPU tensors, split and preprocessed."""
    source = DATASETS[spec.name]
    shape = source.shape(spec)
    x, y = source.arrays(spec)
    train_idx, test_idx = _split(len(x), spec)
    x_train, x_test = _preprocess(x[train_idx], x[test_idx], spec.whiten)
    return Tensors(
        torch.as_tensor(x_train, dtype=torch.float32),
        torch.as_tensor(y[train_idx]),
        torch.as_tensor(x_test, dtype=torch.float32),
        torch.as_tensor(y[test_idx]),
        shape,
    )
