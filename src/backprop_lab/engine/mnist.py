"""MNIST (LeCun et al. 1998; Glorot & Bengio's own data set) through scikit-learn's
``fetch_openml("mnist_784")``, for those who have the internet once.

70,000 images of 28 x 28 = 784 pixels (0-255), 10 classes, in OpenML's order (the classic
60,000 training images first). The first load downloads about 15 MB into scikit-learn's data
folder (``$SCIKIT_LEARN_DATA``, else ``~/scikit_learn_data``; fetch_openml's own cache under
``openml/``) and keeps the pixels as ``backprop_lab/mnist_784.npz`` (uint8, about 17 MB) beside
it; every later load reads that file and touches no network.

Offline, with nothing cached, loading fails within seconds (a connection probe with a timeout
of :data:`PROBE_SECONDS`, before fetch_openml's own retries) with a message naming the folder.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import numpy as np

OPENML_HOST = "api.openml.org"
PROBE_SECONDS = 5.0
CACHE_NAME = "mnist_784.npz"


def data_home() -> Path:
    """scikit-learn's data folder: ``$SCIKIT_LEARN_DATA``, else ``~/scikit_learn_data``."""
    return Path(os.environ.get("SCIKIT_LEARN_DATA", Path.home() / "scikit_learn_data")
                ).expanduser()


def cache_file(home: Path | None = None) -> Path:
    return (data_home() if home is None else home) / "backprop_lab" / CACHE_NAME


def reachable(host: str = OPENML_HOST, port: int = 443,
              timeout: float = PROBE_SECONDS) -> str | None:
    """None when a TCP connection to host:port opens within ``timeout`` seconds, else why
    not. Name resolution has no timeout of its own, so the probe runs on a daemon thread."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


class MnistUnavailable(ValueError):
    """MNIST is neither cached nor downloadable here."""


def _download(home: Path) -> tuple[np.ndarray, np.ndarray]:
    why = reachable()
    if why is not None:
        raise MnistUnavailable(
            f"data set 'mnist' is not in the cache folder {home} (no {cache_file(home)}) and "
            f"{OPENML_HOST} cannot be reached ({why}). Load it once on a machine with internet "
            f"access (python -c \"from backprop_lab import load_dataset; "
            f"load_dataset('mnist')\") and copy the folder here, or point SCIKIT_LEARN_DATA at "
            f"a folder that has it; offline, mnist1d and digits need no download.")
    from sklearn.datasets import fetch_openml

    bunch = fetch_openml("mnist_784", version=1, as_frame=False, data_home=str(home),
                         parser="liac-arff")
    return np.asarray(bunch.data), np.asarray(bunch.target)


def load_mnist(home: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (784, 70000) as float and labels (70000,) as integers, from the cache file or,
    the first time, from OpenML (then cached)."""
    home = data_home() if home is None else home
    path = cache_file(home)
    if not path.exists():
        data, target = _download(home)
        pixels = np.asarray(data).astype(np.uint8)  # (70000, 784), 0-255
        labels = np.asarray(target).astype(np.int64)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, pixels=pixels, labels=labels)
        tmp.replace(path)  # atomic: two jobs loading at once never read half a file
    with np.load(path) as saved:
        pixels, labels = saved["pixels"], saved["labels"]
    if pixels.ndim != 2 or pixels.shape[0] != labels.shape[0]:
        raise MnistUnavailable(f"{path} holds pixels {pixels.shape} and labels "
                               f"{labels.shape}: delete it to fetch MNIST again")
    return pixels.T.astype(float), labels.astype(np.intp)


def mnist(n: int | None, noise: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """The data set loader of ``dataset=mnist``: ``n`` caps samples per class (the first n of
    each class in OpenML's order; None: all 70,000); ``noise`` and ``rng`` are unused."""
    X, labels = load_mnist()
    if n is not None:
        keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n]
                                       for c in np.unique(labels)]))
        X, labels = X[:, keep], labels[keep]
    return X, labels
