"""Data sets that are generated (here or by the ``mnist1d`` package) or shipped with
scikit-learn, never downloaded; and MNIST, downloaded once through scikit-learn's
``fetch_openml`` and cached (engine/mnist.py).

Every loader returns a :class:`Dataset` in the package's features x samples convention: X (d, n),
targets Y (k, n) with k = 1 (0/1 labels) for two classes and k = C (one-hot) for C > 2 classes.
``n_samples`` counts samples *per class* (the reference notebook's convention); for the bundled
sets it caps each class (None: all of them).

The split into training and validation parts is a deterministic function of the random source;
standardization (zero mean, unit variance per feature) is fitted on the training part only and
applied to both. With ``val_fraction=0`` the samples keep their generated order and no random
number is spent on splitting, so a legacy ``RandomState`` stream continues exactly as the
reference notebook's does (data first, then weights).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backprop_lab.engine.initializers import RandomSource

Array = np.ndarray


@dataclass
class Dataset:
    """A classification data set split into training and validation parts.

    Attributes:
        X_train: (d, n_train) standardized inputs; Y_train: (k, n_train) targets.
        X_val: (d, n_val); Y_val: (k, n_val) (n_val may be 0).
        n_classes: number of classes C; k = 1 when C == 2, else C.
    """

    name: str
    X_train: Array
    Y_train: Array
    X_val: Array
    Y_val: Array
    n_classes: int

    @property
    def n_features(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.Y_train.shape[0]

    @property
    def n_train(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_val(self) -> int:
        return self.X_val.shape[1]

    @property
    def is_2d(self) -> bool:
        return self.n_features == 2

    @property
    def default_output(self) -> str:
        return "sigmoid_bce" if self.n_outputs == 1 else "softmax_ce"

    def one_hot(self) -> Dataset:
        """The same data with one-hot targets (k = C rows) also for two classes, as a softmax
        output needs: a (1, n) 0/1 row y becomes the rows (1 - y, y)."""
        if self.n_outputs != 1:
            return self

        def rows(Y: Array) -> Array:
            return np.ascontiguousarray(np.vstack([1 - Y, Y]))

        return Dataset(self.name, self.X_train, rows(self.Y_train), self.X_val,
                       rows(self.Y_val), self.n_classes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name}: {self.n_features} features, {self.n_classes} classes, "
            f"{self.n_train} train / {self.n_val} val)"
        )


# -- random draws that work with both Generator and legacy RandomState -------------------------
def _uniform01(rng: RandomSource, n: int) -> Array:
    return rng.rand(n) if isinstance(rng, np.random.RandomState) else rng.random(n)


def _normal(rng: RandomSource, *shape: int) -> Array:
    if isinstance(rng, np.random.RandomState):
        return rng.randn(*shape)
    return rng.standard_normal(shape)


# -- generators: each returns raw X (d, n) and integer labels (n,) ------------------------------
def spiral(n: int, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    """Two interleaved spiral arms (the notebook's generator), drawn in the notebook's order.

    theta = 2 pi sqrt(u), u ~ U[0, 1); r = 2 theta + pi; class 0 at (r cos, r sin) theta,
    class 1 rotated by pi; Gaussian noise of std ``noise`` on each coordinate.
    """
    theta = np.sqrt(_uniform01(rng, n)) * 2 * np.pi
    r = 2 * theta + np.pi
    x0 = r * np.cos(theta) + _normal(rng, n) * noise
    y0 = r * np.sin(theta) + _normal(rng, n) * noise
    x1 = -r * np.cos(theta) + _normal(rng, n) * noise
    y1 = -r * np.sin(theta) + _normal(rng, n) * noise
    X = np.vstack([np.hstack([x0, x1]), np.hstack([y0, y1])])
    return X, np.repeat([0, 1], n)


def moons(n: int, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    """Two interleaving half circles (as scikit-learn's make_moons), noise std ``noise``."""
    t = np.linspace(0, np.pi, n)
    X = np.vstack([np.hstack([np.cos(t), 1 - np.cos(t)]), np.hstack([np.sin(t), 0.5 - np.sin(t)])])
    return X + _normal(rng, 2, 2 * n) * noise, np.repeat([0, 1], n)


def circles(n: int, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    """A circle of radius 1 (class 0) around one of radius 0.5 (class 1), noise std ``noise``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.vstack([np.cos(t), np.sin(t)])
    X = np.hstack([ring, 0.5 * ring])
    return X + _normal(rng, 2, 2 * n) * noise, np.repeat([0, 1], n)


def xor(n: int, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    """Four Gaussian clusters at (+-1, +-1) with std ``noise``; label 1 where x1 * x2 < 0."""
    centers = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float).T  # (2, 4)
    counts = [n - n // 2, n // 2, n - n // 2, n // 2]
    X = np.repeat(centers, counts, axis=1) + _normal(rng, 2, 2 * n) * noise
    return X, np.repeat([0, 0, 1, 1], counts)


def blobs(n: int, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    """Three Gaussian blobs with std ``noise`` around centers on a circle of radius 2."""
    angles = np.array([0.5, 0.5 + 2 / 3, 0.5 + 4 / 3]) * np.pi
    centers = 2 * np.vstack([np.cos(angles), np.sin(angles)])  # (2, 3)
    X = np.repeat(centers, n, axis=1) + _normal(rng, 2, 3 * n) * noise
    return X, np.repeat([0, 1, 2], n)


def _bundled(loader: Callable[..., object]) -> Callable[[int | None, float, RandomSource], tuple]:
    def load(n: int | None, noise: float, rng: RandomSource) -> tuple[Array, Array]:
        data = loader()
        X, labels = np.asarray(data.data, dtype=float).T, np.asarray(data.target)
        if n is not None:
            keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)])
            X, labels = X[:, keep], labels[keep]
        return X, labels

    return load


def _digits() -> object:
    from sklearn.datasets import load_digits

    return load_digits()


def mnist1d(n: int | None, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    """MNIST-1D (Greydanus 2020): 10 classes of length-40 signals, made by the ``mnist1d``
    package's own generator (``make_dataset`` with its default arguments, seed 42), never its
    download. ``n`` caps samples per class by generating 10 n of them (None: the package's
    5000, train and test parts together, in its order); the set does not depend on ``rng``
    (only the split does) and ``noise`` is unused (the generator has its own). The generator
    reseeds numpy's and Python's global random state: both are restored afterwards.
    """
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if n is not None:
        args.num_samples = 10 * n
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        made = make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    X = np.concatenate([made["x"], made["x_test"]]).T  # (40, n)
    labels = np.concatenate([made["y"], made["y_test"]]).astype(np.intp)
    return X, labels


def _mnist(n: int | None, noise: float, rng: RandomSource) -> tuple[Array, Array]:
    from backprop_lab.engine.mnist import mnist

    return mnist(n, noise, rng)


def _breast_cancer() -> object:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer()


#: Generated sets hold every sample in memory several times (raw, split, standardized).
MAX_SAMPLES_PER_CLASS = 10_000_000


@dataclass(frozen=True)
class DatasetSpec:
    make: Callable[..., tuple[Array, Array]]
    n_samples: int | None  # default samples per class
    noise: float
    description: str


DATASETS: dict[str, DatasetSpec] = {
    "spiral": DatasetSpec(spiral, 200, 0.3, "two spiral arms, 2-D (the reference notebook)"),
    "moons": DatasetSpec(moons, 200, 0.2, "two half moons, 2-D"),
    "circles": DatasetSpec(circles, 200, 0.1, "two concentric circles, 2-D"),
    "xor": DatasetSpec(xor, 200, 0.4, "four clusters in an XOR pattern, 2-D"),
    "blobs": DatasetSpec(blobs, 200, 0.8, "three Gaussian blobs, 2-D, 3 classes"),
    "digits": DatasetSpec(_bundled(_digits), None, 0.0, "8x8 digits, 64-D, 10 classes (sklearn)"),
    "mnist1d": DatasetSpec(mnist1d, None, 0.0,
                           "MNIST-1D, 40-D signals, 10 classes (the mnist1d package's generator)"),
    "breast_cancer": DatasetSpec(
        _bundled(_breast_cancer), None, 0.0, "breast cancer, 30-D, 2 classes (sklearn)"
    ),
    "mnist": DatasetSpec(_mnist, None, 0.0,
                         "MNIST, 28x28 = 784-D, 10 classes (OpenML, downloaded once, cached)"),
}


def check_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown data set {name!r}; valid choices: {', '.join(DATASETS)}"
        ) from None


def _targets(labels: Array, n_classes: int) -> Array:
    if n_classes == 2:
        return labels.reshape(1, -1).astype(float)
    return np.eye(n_classes)[:, labels]


def load_dataset(
    name: str,
    *,
    n_samples: int | None = None,
    noise: float | None = None,
    val_fraction: float = 0.2,
    rng: RandomSource | None = None,
    dtype: type | np.dtype = np.float64,
) -> Dataset:
    """Generate or load a data set, split it and standardize it on its training part.

    Args:
        name: one of DATASETS.
        n_samples: samples per class (None: the data set's default).
        noise: noise standard deviation for generated sets (None: the default).
        val_fraction: share of samples held out for validation, in [0, 1).
        rng: random source (Generator or legacy RandomState) for generation and the split.
    """
    spec = check_dataset(name)
    n = spec.n_samples if n_samples is None else n_samples
    noise = spec.noise if noise is None else noise
    if n is not None and n < 1:
        raise ValueError(f"n_samples must be at least 1 (per class); got {n}")
    if n is not None and n > MAX_SAMPLES_PER_CLASS:
        raise ValueError(f"n_samples must be at most {MAX_SAMPLES_PER_CLASS:,} (per class); "
                         f"got {n}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    rng = np.random.default_rng() if rng is None else rng

    X, labels = spec.make(n, noise, rng)
    n_classes = int(labels.max()) + 1
    Y = _targets(labels, n_classes)
    n_total = X.shape[1]
    n_val = int(round(val_fraction * n_total))
    if n_val > 0:
        order = rng.permutation(n_total)
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        X_train, Y_train, X_val, Y_val = (
            X[:, train_idx],
            Y[:, train_idx],
            X[:, val_idx],
            Y[:, val_idx],
        )
    else:
        X_train, Y_train = X, Y
        X_val, Y_val = X[:, :0], Y[:, :0]
    if X_train.shape[1] < 1:
        raise ValueError(
            f"no training samples left: n_total={n_total}, val_fraction={val_fraction}"
        )

    mean = X_train.mean(axis=1, keepdims=True)
    std = X_train.std(axis=1, keepdims=True)
    std[std == 0] = 1.0  # constant features (e.g. blank digit pixels) stay at 0
    as_type = np.dtype(dtype)

    def scale(A: Array) -> Array:
        return np.ascontiguousarray(((A - mean) / std).astype(as_type, copy=False))

    return Dataset(
        name=name,
        X_train=scale(X_train),
        Y_train=np.ascontiguousarray(Y_train.astype(as_type)),
        X_val=scale(X_val),
        Y_val=np.ascontiguousarray(Y_val.astype(as_type)),
        n_classes=n_classes,
    )
