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
        ({"name": "mnist2"}, r"unknown data set 'mnist2'; valid choices: spiral, moons"),
        ({"name": "spiral", "n_samples": 0}, r"n_samples must be at least 1"),
        ({"name": "spiral", "noise": -1.0}, r"noise must be >= 0"),
        ({"name": "spiral", "val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_input_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(**kwargs)


# -- MNIST through fetch_openml, never the network in tests --------------------------------------
def test_mnist_loads_from_the_cache_file_the_tests_made() -> None:
    """conftest.py points SCIKIT_LEARN_DATA at a folder with a 40-image cache."""
    data = load_dataset("mnist", rng=np.random.default_rng(0))
    assert data.n_features == 784 and data.n_classes == 10 and data.n_train + data.n_val == 40
    assert load_dataset("mnist", n_samples=2, rng=np.random.default_rng(0)).n_train == 16


def test_mnist_first_load_goes_through_fetch_openml_and_is_cached(tmp_path, monkeypatch) -> None:
    import sklearn.datasets
    from sklearn.utils import Bunch

    from backprop_lab.engine import mnist

    calls = []

    def fake_fetch(name, **kwargs):
        calls.append((name, kwargs))
        rng = np.random.default_rng(1)
        return Bunch(data=rng.integers(0, 256, (30, 784)).astype(float),
                     target=np.array([str(c) for c in np.tile(np.arange(10), 3)]))

    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    monkeypatch.setattr(mnist, "reachable", lambda *a, **k: None)
    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch)
    X, labels = mnist.load_mnist()
    assert X.shape == (784, 30) and labels.tolist() == np.tile(np.arange(10), 3).tolist()
    assert calls[0][0] == "mnist_784" and calls[0][1]["data_home"] == str(tmp_path)
    assert (tmp_path / "backprop_lab" / "mnist_784.npz").exists()
    X2, _ = mnist.load_mnist()  # from the file: fetch_openml is not called again
    np.testing.assert_array_equal(X, X2)
    assert len(calls) == 1


def test_mnist_offline_without_a_cache_fails_fast_naming_the_folder(tmp_path, monkeypatch):
    import time

    from backprop_lab.engine import mnist

    def fetch(*args, **kwargs):
        raise AssertionError("fetch_openml must not be tried when the probe fails")

    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(mnist, "reachable", lambda *a, **k: "gaierror: no such host")
    monkeypatch.setattr("sklearn.datasets.fetch_openml", fetch)
    tic = time.perf_counter()
    with pytest.raises(ValueError, match=r"not in the cache folder .*nothing .*cannot be "
                                         r"reached \(gaierror: no such host\)"):
        load_dataset("mnist", rng=np.random.default_rng(0))
    assert time.perf_counter() - tic < 1.0


def test_the_probe_gives_up_within_its_timeout(monkeypatch) -> None:
    """A name lookup that hangs (no timeout of its own) is abandoned after the probe's."""
    import socket
    import threading
    import time

    from backprop_lab.engine import mnist

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(10)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    tic = time.perf_counter()
    assert mnist.reachable("example.invalid", timeout=0.3) == "no answer within 0.3 s"
    assert time.perf_counter() - tic < 1.0
    release.set()
