"""A run at a glance: how much its gradient vanished, what theory predicted, whether it learned.

Two facts every table and report of this project shows, defined here once:

**The vanishing summary** (:func:`vanishing_summary`), the metrics under ``vanishing/``:

    log10_ratio_init      log10(grad_norm(1) / grad_norm(L)) at epoch 0 (L = the output layer)
    log10_ratio_end       the same at the run's last recorded epoch
    measured_factor_init  geometric mean over the hidden steps l = 1..L-2 of
                          delta_std(l) / delta_std(l+1) at epoch 0
    theory_factor         the same mean of mean-field theory's factors for this network
                          (``theory.mean_field(...).std_factors[:L-2]``)
    at_chance             1 when the final accuracy is at chance (below), else 0

A ratio of 1e-6 (log10 -6) means layer 1 gets a millionth of the output layer's gradient. The
step into the output layer is left out of the factors: the output error is not multiplied by
f' (fused output and loss), so that step follows other rules. Values that cannot be formed (a
diverged run's last row, a network with one hidden layer has no hidden step) are left out.

**Chance** (:class:`Chance`): the accuracy a network gets by always answering the most
frequent class, i.e. the majority class's share c of the labels its accuracy is measured on
(the validation set, else the training set); 1/k for k balanced classes. An accuracy counts as
*at chance* when it is at most c + 2 sqrt(c (1 - c) / n) on n labels: within two binomial
standard errors of what a constant answer scores, so not evidence that the network learned
anything (80 spiral validation samples: c about 0.5, tolerance 0.11). A run can be at chance on
its validation labels while its training accuracy rose: that is not learning either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PREFIX = "vanishing/"
LOG10_RATIO_INIT = f"{PREFIX}log10_ratio_init"
LOG10_RATIO_END = f"{PREFIX}log10_ratio_end"
MEASURED_FACTOR_INIT = f"{PREFIX}measured_factor_init"
THEORY_FACTOR = f"{PREFIX}theory_factor"
AT_CHANCE = f"{PREFIX}at_chance"
#: Metrics that describe the network at initialization (logged at step 0); the others describe
#: the run's end (logged at its last epoch).
AT_INIT = (LOG10_RATIO_INIT, MEASURED_FACTOR_INIT, THEORY_FACTOR)
AT_END = (LOG10_RATIO_END, AT_CHANCE)
#: What "at chance" means, for the footnote of every table that flags it.
CHANCE_NOTE = ("at chance: final accuracy within 2 standard errors above the majority class's "
               "share (what always answering one class scores), so no evidence the network "
               "learned and its ratio at the end is no recovery")
#: The job's summary.json keys of the ``vanishing/`` metrics (harness/ending.py writes them,
#: tracking/restore.py reads them back).
SUMMARY_KEYS = {"log10_ratio_init": LOG10_RATIO_INIT, "log10_ratio_end": LOG10_RATIO_END,
                "measured_factor_init": MEASURED_FACTOR_INIT, "theory_factor": THEORY_FACTOR}
#: Standard errors of the majority share within which an accuracy is at chance.
CHANCE_STANDARD_ERRORS = 2.0
#: Tolerance when the number of labels is unknown (runs recorded before chance was logged).
CHANCE_TOLERANCE_UNKNOWN_N = 0.05


@dataclass(frozen=True)
class Chance:
    """Chance accuracy: the majority class's share of ``samples`` labels, and the tolerance
    above it within which an accuracy is not evidence of learning."""

    accuracy: float
    tolerance: float
    samples: int | None = None

    @classmethod
    def of_labels(cls, labels: np.ndarray) -> Chance:
        """From class labels (n,) (integers)."""
        labels = np.asarray(labels).ravel()
        if labels.size == 0:
            raise ValueError("chance needs at least one label")
        share = float(np.unique(labels, return_counts=True)[1].max() / labels.size)
        return cls(share, standard_tolerance(share, labels.size), int(labels.size))

    @classmethod
    def of_targets(cls, Y: np.ndarray) -> Chance:
        """From targets Y (k, n) as the engine holds them: one 0/1 row for two classes (k = 1),
        else one-hot columns."""
        Y = np.asarray(Y)
        labels = (Y[0] > 0.5).astype(int) if Y.shape[0] == 1 else np.argmax(Y, axis=0)
        return cls.of_labels(labels)

    @classmethod
    def uniform(cls, n_classes: int, samples: int | None = None) -> Chance:
        """1/k for k balanced classes (when the labels themselves are not at hand)."""
        if n_classes < 2:
            raise ValueError(f"chance needs at least 2 classes; got {n_classes}")
        share = 1.0 / n_classes
        tol = (standard_tolerance(share, samples) if samples
               else CHANCE_TOLERANCE_UNKNOWN_N)
        return cls(share, tol, samples)

    @property
    def threshold(self) -> float:
        """The highest accuracy still at chance."""
        return self.accuracy + self.tolerance

    def at_chance(self, accuracy: float | None) -> bool:
        """Is ``accuracy`` at chance (not NaN and <= :attr:`threshold`)?"""
        return accuracy is not None and math.isfinite(accuracy) and accuracy <= self.threshold

    def __str__(self) -> str:
        return f"chance {self.accuracy:.3g} (+{self.tolerance:.2g})"


def chance_of(dataset) -> Chance:
    """Chance of a :class:`~backprop_lab.engine.datasets.Dataset`: of its validation labels,
    else (no validation set) of its training labels, as :func:`final_accuracy` picks."""
    return Chance.of_targets(dataset.Y_val if dataset.n_val else dataset.Y_train)


def standard_tolerance(share: float, samples: int) -> float:
    """:data:`CHANCE_STANDARD_ERRORS` binomial standard errors of ``share`` on ``samples``."""
    return CHANCE_STANDARD_ERRORS * math.sqrt(share * (1.0 - share) / samples)


def log10_ratio(grad_norms: np.ndarray) -> float:
    """log10(grad_norm(1) / grad_norm(L)) of one history row (L,); NaN if not both > 0."""
    g = np.asarray(grad_norms, dtype=float)
    if g.size < 1 or not (np.isfinite(g[0]) and np.isfinite(g[-1])) or g[0] <= 0 or g[-1] <= 0:
        return math.nan
    return float(math.log10(g[0]) - math.log10(g[-1]))


def geometric_mean(values) -> float:
    """exp(mean(log v)) over the positive, finite values (NaN when there are none)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.exp(np.log(v).mean())) if v.size else math.nan


def measured_factor(delta_std: np.ndarray) -> float:
    """Geometric mean of delta_std(l) / delta_std(l+1) over the hidden steps l = 1..L-2 of one
    history row (L,); NaN with fewer than 3 layers."""
    d = np.asarray(delta_std, dtype=float)
    if d.size < 3:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return geometric_mean(d[:-2] / d[1:-1])


def theory_factor(activation: str, init: str, sizes, input_var: float = 1.0,
                  sigma_b2: float = 0.0, sigma_w2: float | None = None) -> float:
    """Mean-field theory's per-layer factor of delta_std at initialization, as
    :func:`measured_factor` averages the measured one (NaN with fewer than 3 layers);
    ``sigma_b2``, ``sigma_w2`` as :func:`~backprop_lab.engine.theory.mean_field` takes them."""
    from backprop_lab.engine.theory import mean_field

    sizes = [int(s) for s in sizes]
    if len(sizes) < 4:
        return math.nan
    q0 = input_var if input_var is not None and math.isfinite(input_var) else 1.0
    factors = mean_field(activation, init, sizes, input_var=q0, sigma_b2=sigma_b2,
                         sigma_w2=sigma_w2).std_factors
    return geometric_mean(factors[: len(sizes) - 3])


def vanishing_summary(history, *, theory: float = math.nan,
                      chance: Chance | None = None) -> dict[str, tuple[int, float]]:
    """The ``vanishing/`` metrics of a run: name -> (epoch, value), only those that can be
    formed from the rows it recorded (a run that failed before its first row has none).

    Args:
        history: the run's :class:`~backprop_lab.engine.history.History`.
        theory: :func:`theory_factor` of its network (NaN: not logged).
        chance: chance of the labels its final accuracy is measured on (None: no flag).
    """
    out: dict[str, tuple[int, float]] = {}
    if history is None or history.n_rows == 0:
        return out
    last = history.n_rows - 1
    if math.isfinite(theory):
        out[THEORY_FACTOR] = (0, float(theory))
    if "grad_norm" in history.layers:
        grad = history.layers["grad_norm"]
        out[LOG10_RATIO_INIT] = (0, log10_ratio(grad[0]))
        # The last row whose gradient is finite: a diverged run's last row may not be.
        out[LOG10_RATIO_END] = (last, log10_ratio(grad[last]))
    if "delta_std" in history.layers:
        out[MEASURED_FACTOR_INIT] = (0, measured_factor(history.layers["delta_std"][0]))
    if chance is not None:
        accuracy = final_accuracy(history)
        if accuracy is not None and math.isfinite(accuracy):
            out[AT_CHANCE] = (last, float(chance.at_chance(accuracy)))
    return {k: v for k, v in out.items() if math.isfinite(v[1])}


def final_accuracy(history) -> float | None:
    """The accuracy chance is judged on: the last validation accuracy, else training's."""
    if history is None or history.n_rows == 0:
        return None
    for name in ("val/accuracy", "train/accuracy"):
        values = history.scalars.get(name)
        if values is not None and math.isfinite(values[history.n_rows - 1]):
            return float(values[history.n_rows - 1])
    return None
