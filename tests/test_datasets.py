"""Data sets: shapes, targets, deterministic splits, standardization on the training part."""

import numpy as np
import pytest

from backprop_lab.engine.datasets import DATASETS, load_dataset


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_data_set_loads_with_consistent_shapes(name: str) -> None:
    ds = load_dataset(name, rng=np.random.default_rng(0))
    d, n = ds.X_train.shape
    assert ds.Y_train.shape == (ds.n_outputs, n)
    assert ds.X_val.shape == (d, ds.n_val) and ds.Y_val.shape == (ds.n_outputs, ds.n_val)
    assert ds.n_outputs == (1 if ds.n_classes == 2 else ds.n_classes)
    total = n + ds.n_val
    assert ds.n_val == round(0.2 * total)
    # Standardized on the training part: zero mean, unit (or zero, for constant) std.
    np.testing.assert_allclose(ds.X_train.mean(axis=1), 0, atol=1e-12)
    std = ds.X_train.std(axis=1)
    assert np.all((np.abs(std - 1) < 1e-12) | (std == 0))
    # Targets: 0/1 for binary, one-hot for multiclass.
    assert set(np.unique(ds.Y_train)) <= {0.0, 1.0}
    if ds.n_outputs > 1:
        np.testing.assert_array_equal(ds.Y_train.sum(axis=0), 1)


def test_known_sizes() -> None:
    rng = np.random.default_rng(0)
    digits = load_dataset("digits", val_fraction=0, rng=rng)
    assert (digits.n_features, digits.n_train, digits.n_classes) == (64, 1797, 10)
    cancer = load_dataset("breast_cancer", val_fraction=0, rng=rng)
    assert (cancer.n_features, cancer.n_train, cancer.n_classes) == (30, 569, 2)
    spiral = load_dataset("spiral", val_fraction=0, rng=rng)
    assert (spiral.n_features, spiral.n_train) == (2, 400)
    assert load_dataset("blobs", n_samples=10, val_fraction=0, rng=rng).n_train == 30
    assert load_dataset("digits", n_samples=5, val_fraction=0, rng=rng).n_train == 50


def test_same_seed_same_split_and_values() -> None:
    a = load_dataset("moons", rng=np.random.default_rng(7))
    b = load_dataset("moons", rng=np.random.default_rng(7))
    c = load_dataset("moons", rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_val, b.X_val)
    assert not np.array_equal(a.X_train, c.X_train)


def test_validation_is_scaled_with_training_statistics() -> None:
    raw = load_dataset("spiral", val_fraction=0.0, rng=np.random.default_rng(3))
    split = load_dataset("spiral", val_fraction=0.5, rng=np.random.default_rng(3))
    # The validation part is not standardized on itself.
    assert np.abs(split.X_val.mean(axis=1)).max() > 1e-6
    assert raw.n_train == split.n_train + split.n_val


def test_float32_on_request() -> None:
    ds = load_dataset("xor", rng=np.random.default_rng(0), dtype=np.float32)
    assert ds.X_train.dtype == np.float32 and ds.Y_train.dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "mnist"}, r"unknown data set 'mnist'; valid choices: spiral, moons"),
        ({"name": "spiral", "n_samples": 0}, r"n_samples must be at least 1"),
        ({"name": "spiral", "noise": -1.0}, r"noise must be >= 0"),
        ({"name": "spiral", "val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_input_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)
