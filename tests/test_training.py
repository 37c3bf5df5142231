"""Training loop and diagnostics: overfitting, divergence, determinism, bad input, and every
diagnostic recomputed independently from plain forward/backward passes."""

import numpy as np
import pytest

from backprop_lab.engine.datasets import Dataset, load_dataset
from backprop_lab.engine.history import layer_metric_name
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train


def spiral(seed: int = 0, val_fraction: float = 0.2) -> Dataset:
    return load_dataset("spiral", n_samples=60, val_fraction=val_fraction, rng=np.random.default_rng(seed))


def test_repr() -> None:
    net = MLP([2, 16, 8, 1], "relu", "sigmoid_bce", "auto", rng=np.random.default_rng(0))
    assert repr(net) == "MLP(2-16-8-1, relu, he)"
    assert repr(MLP([2, 3, 1], "tanh", dtype=np.float32)) == "MLP(2-3-1, tanh, lecun, float32)"


def test_overfits_a_tiny_batch_to_zero_error() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 8))
    Y = (rng.random((1, 8)) > 0.5).astype(float)
    data = Dataset("tiny", X, Y, X[:, :0], Y[:, :0], n_classes=2)
    net = MLP([2, 16, 16, 1], "tanh", "sigmoid_bce", rng=rng)
    result = train(net, data, make_optimizer("adam", lr=0.01), epochs=1500, diagnostics=False)
    assert result.final["train/accuracy"] == 1.0
    assert result.final["train/loss"] < 1e-3


def test_history_has_one_row_per_epoch_plus_initialization() -> None:
    data = spiral()
    net = MLP([2, 8, 1], "tanh", rng=np.random.default_rng(0))
    result = train(net, data, make_optimizer("gd", lr=0.1), epochs=5, histogram_every=2)
    frame = result.history.to_frame()
    assert len(frame) == 6 and list(frame.index) == list(range(6))
    assert {"train/loss", "val/accuracy", layer_metric_name("delta_std", 1),
            layer_metric_name("dead_fraction", 2)} <= set(frame)
    assert len(frame.columns) == 4 + 10 * 2
    update = [layer_metric_name("update_ratio", l) for l in (1, 2)]
    assert frame[update[0]].isna().tolist() == [False] * 5 + [True]
    assert not frame.drop(columns=update).isna().any().any()
    epochs = sorted({h.epoch for h in result.histograms})
    assert epochs == [0, 2, 4, 5]
    for h in result.histograms:
        assert h.counts.shape == (64,) and h.edges.shape == (65,)
    w1 = [h for h in result.histograms if h.kind == "weights" and h.layer == 1]
    assert all(h.counts.sum() == 16 for h in w1)


def manual_diagnostics(net: MLP, X: np.ndarray, Y: np.ndarray) -> dict[str, list[float]]:
    """The diagnostics of one probe pass, computed the obvious way."""
    dW, _, deltas = net.gradients(X, Y)
    out: dict[str, list[float]] = {k: [] for k in (
        "weight_norm", "grad_norm", "grad_weight_ratio", "delta_std", "act_mean", "act_std",
        "saturation", "dead_fraction", "preact_var")}
    a = X
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        z = W @ a + b
        if l < net.n_layers - 1:
            a = net.activation(z)
            fprime = net.activation.grad(a)
            threshold = 0.05 * net.activation.max_derivative
        else:
            a = net.head.activate(z)
            fprime = net.head.derivative(a)
            threshold = 0.05 * net.head.max_derivative
        out["weight_norm"].append(np.linalg.norm(W))
        out["grad_norm"].append(np.linalg.norm(dW[l]))
        out["grad_weight_ratio"].append(np.linalg.norm(dW[l]) / np.linalg.norm(W))
        out["delta_std"].append(deltas[l].std())
        out["preact_var"].append(z.var())
        out["act_mean"].append(a.mean())
        out["act_std"].append(a.std())
        out["saturation"].append(np.mean(fprime < threshold))
        out["dead_fraction"].append(np.mean(np.all(fprime < threshold, axis=1)))
    return out


@pytest.mark.parametrize(
    ("activation", "optimizer", "batch_size"),
    [("tanh", "gd", None), ("relu", "momentum", 16), ("sigmoid", "adam", 32)],
)
def test_every_diagnostic_matches_a_direct_computation(
    activation, optimizer, batch_size
) -> None:
    """150 epochs; every row is recomputed independently."""
    data = spiral(seed=1)
    epochs = 150
    make = lambda: MLP([2, 12, 6, 1], activation, rng=np.random.default_rng(5))  # noqa: E731
    opt = lambda: make_optimizer(optimizer, lr=0.05)  # noqa: E731
    # Mini-batch runs measure the diagnostics on a fixed probe subset (here 40 of 96 samples).
    probe = 40
    result = train(make(), data, opt(), epochs=epochs, batch_size=batch_size,
                   rng=np.random.default_rng(9), histogram_every=50, probe_size=probe)
    assert len(result.histograms) == 4 * 3 * 4  # epochs 0, 50, 100, 150 x 3 layers x 4 kinds
    layers = result.history.layers

    net, o, shuffle = make(), opt(), np.random.default_rng(9)
    X, Y, n = data.X_train, data.Y_train, data.n_train
    keep = np.arange(n) if batch_size is None else np.round(np.linspace(0, n - 1, probe)).astype(int)
    assert len(keep) == (n if batch_size is None else probe)
    for e in range(epochs + 1):
        expected = manual_diagnostics(net, X[:, keep], Y[:, keep])
        ws = net.new_workspace(n)
        net.forward(X, ws)  # loss and accuracy: always the whole training set
        assert result.history.scalars["train/loss"][e] == pytest.approx(net.loss(ws, Y), rel=1e-12)
        for name, values in expected.items():
            np.testing.assert_allclose(layers[name][e], values, rtol=1e-9, atol=1e-15,
                                       err_msg=f"{name} at epoch {e}: recorder vs direct")
        if e == epochs:
            break
        before = [W.copy() for W in net.weights]
        if batch_size is None:
            net.gradients(X, Y)
            o.step(net)
        else:
            order = shuffle.permutation(n)
            for s in range(0, n, batch_size):
                idx = order[s : s + batch_size]
                net.gradients(X[:, idx], Y[:, idx])
                o.step(net)
        update = [np.linalg.norm(W - W0) / np.linalg.norm(W0) for W, W0 in zip(net.weights, before)]
        np.testing.assert_allclose(layers["update_ratio"][e], update, rtol=1e-9)
    assert np.isnan(layers["update_ratio"][epochs]).all()


def test_dead_relu_units_are_counted() -> None:
    data = spiral()
    net = MLP([2, 10, 1], "relu", rng=np.random.default_rng(0))
    net.biases[0][:4] = -100.0  # four units never fire
    result = train(net, data, make_optimizer("gd", lr=1e-9), epochs=1)
    assert result.history.layers["dead_fraction"][0, 0] == pytest.approx(0.4)
    assert result.history.layers["saturation"][0, 0] >= 0.4


def test_same_seed_same_config_gives_bit_identical_history() -> None:
    def run():
        data = load_dataset("moons", rng=np.random.default_rng(3))
        net = MLP([2, 16, 16, 1], "relu", rng=np.random.default_rng(4))
        return train(net, data, make_optimizer("adam", lr=0.01), epochs=40, batch_size=32,
                     rng=np.random.default_rng(5)).history.to_frame()

    a, b = run(), run()
    assert a.equals(b)  # exact equality, NaN in the same places


def test_divergence_stops_and_reports_the_epoch() -> None:
    data = spiral()
    net = MLP([2, 32, 32, 1], "relu", "mse", rng=np.random.default_rng(0))
    with np.errstate(all="raise"):  # nothing may leak a floating-point warning or crash
        result = train(net, data, make_optimizer("gd", lr=1e4), epochs=500)
    assert result.status == "diverged"
    e = result.diverged_epoch
    assert e is not None and 0 < e < 500
    assert result.history.n_rows == e + 1
    assert not np.isfinite(result.history.scalars["train/loss"][e])
    assert np.isfinite(result.history.scalars["train/loss"][: e]).all()


def test_float32_training_stays_float32() -> None:
    data = load_dataset("spiral", n_samples=50, rng=np.random.default_rng(0), dtype=np.float32)
    net = MLP([2, 8, 1], "tanh", rng=np.random.default_rng(0), dtype=np.float32)
    result = train(net, data, make_optimizer("gd", lr=0.5), epochs=50)
    assert net.params.dtype == np.float32
    assert result.final["train/loss"] < result.history.scalars["train/loss"][0]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MLP([2, 0, 1]), r"every layer width must be at least 1; got \[2, 0, 1\]"),
        (lambda: MLP([2, 4, 1], "swish"), r"unknown activation 'swish'; valid choices: sigmoid"),
        (lambda: MLP([2, 4, 1], output="hinge"), r"unknown output/loss 'hinge'; valid choices: sigmoid_bce, softmax_ce, mse"),
        (lambda: MLP([2, 4, 1], init="zeros"), r"unknown initializer 'zeros'; valid choices: he, lecun, xavier_uniform, standard, gaussian, orthogonal, auto"),
        (lambda: make_optimizer("rmsprop", lr=0.1), r"unknown optimizer 'rmsprop'; valid choices: gd, sgd, momentum, adam"),
        (lambda: make_optimizer("gd", lr=-1), r"learning rate must be a positive number; got lr=-1"),
        (lambda: make_optimizer("sgd", lr=0.0), r"learning rate must be a positive number"),
    ],
)
def test_bad_construction_is_named(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("sizes", "output", "kwargs", "message"),
    [
        ([3, 4, 1], "sigmoid_bce", {}, r"has 2 input features but MLP\(3-4-1"),
        ([2, 4, 3], "sigmoid_bce", {}, r"has 1 target rows \(2 classes\) but MLP\(2-4-3.*has 3 outputs"),
        ([2, 4, 1], "softmax_ce", {}, r"softmax_ce needs one-hot targets with at least 2 rows"),
        ([2, 4, 1], "sigmoid_bce", {"batch_size": 0}, r"batch_size must be a positive integer"),
        ([2, 4, 1], "sigmoid_bce", {"epochs": -1}, r"epochs must be an integer >= 0"),
    ],
)
def test_bad_training_input_fails_before_training(sizes, output, kwargs, message) -> None:
    net = MLP(sizes, "tanh", output, rng=np.random.default_rng(0))
    before = net.params.copy()
    kwargs = {"epochs": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        train(net, spiral(), make_optimizer("gd", lr=0.1), **kwargs)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("diagnostics", [True, False])
@pytest.mark.parametrize("batch_size", [None, 16])
def test_callbacks_see_each_row_as_soon_as_it_is_complete(diagnostics, batch_size) -> None:
    """on_epoch_end(e) comes once per row, in order, when row e is complete and before epoch
    e + 1 is measured: the row it sees is the final row."""
    seen: list[int] = []
    rows: dict[int, dict[str, float]] = {}

    class Recorder:
        def on_train_start(self, net, data, history):
            seen.append(-1)

        def on_epoch_end(self, epoch, history):
            assert history.n_rows == epoch + 1
            assert np.isnan(history.scalars["train/loss"][epoch + 1 :]).all()
            rows[epoch] = history.row(epoch)
            seen.append(epoch)

        def on_train_end(self, result):
            seen.append(-2)

    net = MLP([2, 4, 1], "tanh", rng=np.random.default_rng(0))
    result = train(net, spiral(), make_optimizer("gd", lr=0.1), epochs=130, batch_size=batch_size,
                   diagnostics=diagnostics, callbacks=[Recorder()])
    assert seen == [-1, *range(131), -2]
    for e, row in rows.items():
        final = result.history.row(e)
        assert row.keys() == final.keys()
        np.testing.assert_array_equal(list(row.values()), list(final.values()), err_msg=f"row {e}")
        if diagnostics and e < 130:
            assert np.isfinite(list(row.values())).all(), f"row {e} is incomplete: {row}"


def test_interrupted_training_keeps_the_rows_measured() -> None:
    class Interrupt:
        def on_epoch_end(self, epoch, history):
            if epoch == 3:
                raise KeyboardInterrupt

    net = MLP([2, 4, 1], "tanh", rng=np.random.default_rng(0))
    from backprop_lab.engine.history import History

    captured: list[History] = []

    class Keep:
        def on_train_start(self, net, data, history):
            captured.append(history)

    with pytest.raises(KeyboardInterrupt):
        train(net, spiral(), make_optimizer("gd", lr=0.1), epochs=10, diagnostics=False,
              callbacks=[Keep(), Interrupt()])
    assert captured[0].n_rows == 4  # rows 0-3 complete: the interrupt came in epoch 3's callback


def test_delta_histograms_bin_the_back_propagated_errors_of_each_layer() -> None:
    """Histograms of kind ``deltas`` (Glorot & Bengio's Fig. 7) hold every entry of each layer's
    error delta (n_l, m) of the probe pass, binned over its own range, on histogram epochs only."""
    data = spiral(seed=2)
    net = MLP([2, 12, 6, 1], "tanh", rng=np.random.default_rng(3))
    _, _, deltas = net.gradients(data.X_train, data.Y_train)  # at initialization
    result = train(net, data, make_optimizer("gd", lr=0.1), epochs=3, histogram_every=2)
    found = {(h.epoch, h.layer): h for h in result.histograms if h.kind == "deltas"}
    assert sorted(found) == [(e, l) for e in (0, 2, 3) for l in (1, 2, 3)]
    for l, delta in enumerate(deltas, start=1):
        h = found[(0, l)]
        counts, edges = np.histogram(delta, bins=64)
        np.testing.assert_array_equal(h.counts, counts)
        np.testing.assert_allclose(h.edges, edges, rtol=1e-12)
        assert h.counts.sum() == delta.size


def test_norms_of_wide_networks_by_dot_products_match_and_leave_training_alone(
    monkeypatch,
) -> None:
    """From DOT_MIN_WEIGHTS weights the squared norms are per-layer dot products: the norms
    match a direct computation, and the training (losses, weights) is bit for bit the same."""
    import backprop_lab.engine.diagnostics as diagnostics

    data = spiral(seed=2)
    sizes = [2, 300, 300, 1]  # 90,900 weights

    def run(threshold: int):
        monkeypatch.setattr(diagnostics, "DOT_MIN_WEIGHTS", threshold)
        net = MLP(sizes, "tanh", rng=np.random.default_rng(3))
        before = [W.copy() for W in net.weights]
        result = train(net, data, make_optimizer("momentum", lr=0.05), epochs=3)
        return net, before, result

    net, W0, by_dot = run(diagnostics.DOT_MIN_WEIGHTS)
    assert net.n_weights >= diagnostics.DOT_MIN_WEIGHTS
    net_pairwise, _, pairwise = run(10**12)
    np.testing.assert_array_equal(by_dot.history.scalars["train/loss"],
                                  pairwise.history.scalars["train/loss"])
    np.testing.assert_array_equal(net.params, net_pairwise.params)
    layers = by_dot.history.layers
    for name in ("weight_norm", "grad_norm", "update_ratio"):
        np.testing.assert_allclose(layers[name][:3], pairwise.history.layers[name][:3],
                                   rtol=1e-13)
    np.testing.assert_allclose(layers["weight_norm"][0], [np.linalg.norm(W) for W in W0],
                               rtol=1e-13)
