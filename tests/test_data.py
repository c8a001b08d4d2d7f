"""Data sets: fixed seeded splits, standardization, whitening (science.md §5)."""

from __future__ import annotations

import torch

from resablate import data
from resablate.spec import DataSpec


def test_digits_split_is_fixed_and_standardized() -> None:
    t = data.load(DataSpec(name="digits"))
    assert t.x_train.shape == (1348, 64) and t.x_test.shape == (449, 64)
    assert t.shape == data.DataShape((64,), 10)
    assert set(t.y_train.unique().tolist()) == set(range(10))
    assert t.x_train.mean(0).abs().max().item() < 1e-5
    data.load.cache_clear()
    again = data.load(DataSpec(name="digits"))
    assert torch.equal(again.x_test, t.x_test) and torch.equal(again.y_train, t.y_train)
    other = data.load(DataSpec(name="digits", split_seed=1))
    assert not torch.equal(other.y_test, t.y_test)


def test_whitening_gives_unit_covariance_on_the_training_set() -> None:
    t = data.load(DataSpec(name="digits", whiten=10))
    assert t.x_train.shape == (1348, 10) and t.shape.input_shape == (10,)
    cov = t.x_train.T.double() @ t.x_train.double() / len(t.x_train)
    assert torch.allclose(cov, torch.eye(10, dtype=torch.float64), atol=1e-4)


def test_synthetic_teacher_labels_are_deterministic() -> None:
    spec = DataSpec(name="synthetic", samples=400, features=12, classes=3)
    t = data.load(spec)
    assert t.x_train.shape == (300, 12) and t.shape == data.DataShape((12,), 3)
    assert set(t.y_train.unique().tolist()) == {0, 1, 2}
    data.load.cache_clear()
    assert torch.equal(data.load(spec).y_train, t.y_train)
