"""The cures (engine/blocks.py, gradient clipping in optimizers.py): gradients against central
finite differences and PyTorch float64 autograd (torch.nn.LayerNorm, BatchNorm1d in training
mode, residual sums, clip_grad_norm_), for every activation; running statistics; errors."""

import itertools

import numpy as np
import pytest

from backprop_lab.engine.activations import ACTIVATIONS
from backprop_lab.engine.blocks import BATCH_MOMENTUM, NORM_EPS, BlockMLP, make_network
from backprop_lab.engine.datasets import load_dataset
from backprop_lab.engine.network import MLP
from backprop_lab.engine.optimizers import make_optimizer
from backprop_lab.engine.training import train
from tests.test_gradients import numeric_gradient

VARIANTS = [  # (residual, norm)
    (True, "none"),
    (False, "layer"),
    (False, "batch"),
    (True, "layer"),
    (True, "batch"),
]
ALPHA = 0.7


def make_block_problem(activation: str, residual: bool, norm: str, seed: int = 0):
    """A small random block network 3-5-5-5-2 (softmax) and a batch of 9 samples; gains, shifts
    and biases perturbed away from their initial values."""
    rng = np.random.default_rng(seed)
    net = BlockMLP([3, 5, 5, 5, 2], activation, "softmax_ce", rng=rng, residual=residual,
                   residual_scale=ALPHA, norm=norm)
    nw = net.n_weights
    net.params[nw:] = rng.normal(scale=0.3, size=net.n_params - nw)
    for gain in net.gains:
        gain += 1.0
    X = rng.normal(size=(3, 9))
    Y = np.eye(2)[:, rng.integers(0, 2, 9)]
    return net, X, Y


def torch_reference(net: BlockMLP, X: np.ndarray, Y: np.ndarray):
    """Loss and every gradient (weights, biases, gains, shifts) by PyTorch autograd in
    float64, through torch.nn.LayerNorm / BatchNorm1d (training mode) and explicit residual
    sums, on the same parameters."""
    torch = pytest.importorskip("torch")
    act = {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01),
        "softsign": torch.nn.functional.softsign,
        "identity": lambda z: z,
    }[net.activation.name]
    Ws = [torch.tensor(W, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(b[:, 0], requires_grad=True) for b in net.biases]
    norms = []
    for gain, shift in zip(net.gains, net.shifts):
        n = gain.shape[0]
        layer = (torch.nn.LayerNorm(n, eps=NORM_EPS) if net.norm == "layer"
                 else torch.nn.BatchNorm1d(n, eps=NORM_EPS, momentum=BATCH_MOMENTUM))
        layer = layer.double().train()
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(gain[:, 0]))
            layer.bias.copy_(torch.tensor(shift[:, 0]))
        norms.append(layer)
    a = torch.tensor(X.T)  # torch: samples x features
    L = len(Ws)
    for l in range(L):
        z = a @ Ws[l].T + bs[l]
        if l == L - 1:
            a = z
            break
        y = norms[l](z) if norms else z
        h = act(y)
        a = a + net.residual_scale * h if net.is_residual[l] else h
    loss = -(torch.tensor(Y.T) * torch.log_softmax(a, dim=1)).sum() / X.shape[1]
    loss.backward()
    return (loss.item(), [W.grad.numpy() for W in Ws], [b.grad.numpy()[:, None] for b in bs],
            [m.weight.grad.numpy()[:, None] for m in norms],
            [m.bias.grad.numpy()[:, None] for m in norms], norms)


@pytest.mark.parametrize(("activation", "variant"),
                         list(itertools.product(sorted(ACTIVATIONS), VARIANTS)))
def test_block_gradients_match_finite_differences(activation, variant) -> None:
    net, X, Y = make_block_problem(activation, *variant)
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    analytic = net.backward(Y, ws).copy()
    numeric = numeric_gradient(net, X, Y)
    rel = np.linalg.norm(analytic - numeric) / (np.linalg.norm(analytic) + np.linalg.norm(numeric))
    assert rel < 1e-6, f"{net!r}: relative error {rel:.2e}\nours {analytic}\nFD {numeric}"


@pytest.mark.parametrize(("activation", "variant"),
                         list(itertools.product(sorted(ACTIVATIONS), VARIANTS)))
def test_block_gradients_match_pytorch(activation, variant) -> None:
    pytest.importorskip("torch", reason="PyTorch is optional: pip install -e '.[torch]'")
    net, X, Y = make_block_problem(activation, *variant, seed=3)
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    ours_loss = net.loss(ws, Y)
    net.backward(Y, ws)
    ref_loss, dW, db, dgain, dshift, _ = torch_reference(net, X, Y)
    assert ours_loss == pytest.approx(ref_loss, rel=1e-12)
    ours = net.grad_weights + net.grad_biases + net.grad_gains + net.grad_shifts
    for i, (mine, ref) in enumerate(zip(ours, dW + db + dgain + dshift, strict=True)):
        np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-13,
                                   err_msg=f"parameter {i} of {net!r}: ours vs torch")


def test_batch_norm_running_statistics_match_pytorch_and_serve_evaluation() -> None:
    """Two training-mode passes update the running statistics as BatchNorm1d does; evaluation
    uses them (torch's eval mode), training mode does not."""
    torch = pytest.importorskip("torch")
    net, X, Y = make_block_problem("tanh", False, "batch", seed=5)
    *_, norms = torch_reference(net, X, Y)  # one training-mode pass in torch
    net.update_running_stats = True
    net.forward(X, net.new_workspace(X.shape[1]))
    net.update_running_stats = False
    for l, layer in enumerate(norms):
        np.testing.assert_allclose(net.running_mean[l][:, 0], layer.running_mean.numpy(),
                                   rtol=1e-12, err_msg="running mean")
        np.testing.assert_allclose(net.running_var[l][:, 0], layer.running_var.numpy(),
                                   rtol=1e-12, err_msg="running variance (unbiased)")
    # Evaluation on new samples against torch's eval mode.
    Xe = np.random.default_rng(9).normal(size=(3, 4))
    a = torch.tensor(Xe.T)
    for l in range(net.n_layers):
        z = a @ torch.tensor(net.weights[l]).T + torch.tensor(net.biases[l][:, 0])
        a = z if l == net.n_layers - 1 else torch.tanh(norms[l].eval()(z))
    ref = torch.softmax(a, dim=1).detach().numpy().T
    np.testing.assert_allclose(net.predict_proba(Xe), ref, rtol=1e-10)
    # Training mode depends on the batch: one sample's output changes with its batch mates.
    one = net.forward(Xe, net.new_workspace(4))[:, :1].copy()
    other = net.forward(np.hstack([Xe[:, :1], X]), net.new_workspace(10))[:, :1]
    assert not np.allclose(one, other)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_clipping_matches_clip_grad_norm(activation: str) -> None:
    """The clipped step equals torch.nn.utils.clip_grad_norm_ on the same gradients, and the
    pre-clip norm is the one torch returns."""
    torch = pytest.importorskip("torch")
    net, X, Y = make_block_problem(activation, True, "layer", seed=7)
    ws = net.new_workspace(X.shape[1])
    net.forward(X, ws)
    net.backward(Y, ws)
    tensors = [torch.tensor(g.copy(), requires_grad=True) for g in
               (net.grad_weights + net.grad_biases + net.grad_gains + net.grad_shifts)]
    for t in tensors:
        t.grad = t.detach().clone()
    full = float(np.linalg.norm(net.grads))
    limit = 0.5 * full
    ref_norm = torch.nn.utils.clip_grad_norm_(tensors, limit).item()
    opt = make_optimizer("gd", lr=1.0, clip_norm=limit)
    before = net.params.copy()
    opt.step(net)
    step = before - net.params  # = the clipped gradient (lr 1)
    ref = np.concatenate([t.grad.numpy().ravel() for t in tensors])
    ours = np.concatenate([s.ravel() for s in (
        [step[a:b] for a, b in zip(net.weight_offsets[:-1], net.weight_offsets[1:])])]
        + [step[net.n_weights:]])
    # torch's tensors are in the same order as our flat vector: weights, biases, gains, shifts.
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    assert opt.take_clip_stats() == (pytest.approx(ref_norm, rel=1e-12), 1.0)
    # A bound above the norm changes nothing and counts no clip.
    net.forward(X, ws)
    net.backward(Y, ws)
    grads = net.grads.copy()
    opt.set_clip_norm(10 * float(np.linalg.norm(grads)))
    opt.clip(net.grads)
    np.testing.assert_array_equal(net.grads, grads)
    assert opt.take_clip_stats()[1] == 0.0


def test_residual_errors_name_the_widths() -> None:
    with pytest.raises(ValueError, match=r"hidden widths \[16, 8\]"):
        BlockMLP([2, 16, 8, 1], residual=True)
    with pytest.raises(ValueError, match="at least two hidden layers"):
        BlockMLP([2, 16, 1], residual=True)
    with pytest.raises(ValueError, match="unknown norm 'group'; valid choices: none, layer, batch"):
        BlockMLP([2, 16, 1], norm="group")
    with pytest.raises(ValueError, match="residual_scale"):
        make_network([2, 4, 4, 1], residual=True, residual_scale=0.0)
    with pytest.raises(ValueError, match="clip_norm must be a positive number"):
        make_optimizer("adam", clip_norm=-1.0)


def test_plain_options_build_the_plain_network_with_the_same_weights() -> None:
    plain = make_network([2, 4, 4, 1], rng=np.random.default_rng(0))
    assert type(plain) is MLP
    cured = make_network([2, 4, 4, 1], rng=np.random.default_rng(0), residual=True, norm="layer")
    assert isinstance(cured, BlockMLP)
    np.testing.assert_array_equal(plain.params[: plain.n_weights], cured.params[: cured.n_weights])
    assert repr(cured) == "MLP(2-4-4-1, tanh, lecun, residual x1, layer norm)"
    assert cured.n_params == plain.n_params + 2 * 8


@pytest.mark.parametrize(("variant", "optimizer"), [
    ((True, "none"), "gd"), ((False, "layer"), "momentum"), ((False, "batch"), "adam"),
    ((True, "batch"), "sgd")])
def test_every_optimizer_updates_gains_and_shifts_and_runs_repeat(variant, optimizer) -> None:
    """Training moves the normalization parameters, records every diagnostic (finite at
    initialization), and the same seed gives the same numbers."""
    def run():
        data = load_dataset("spiral", n_samples=40, rng=np.random.default_rng(0))
        net = make_network([2, 6, 6, 6, 1], "tanh", rng=np.random.default_rng(1),
                           residual=variant[0], residual_scale=0.5, norm=variant[1])
        start = net.params.copy()
        opt = make_optimizer(optimizer, lr=0.05, clip_norm=0.5)
        result = train(net, data, opt, epochs=5,
                       batch_size=16 if optimizer in ("sgd", "adam") else None)
        return net, start, result

    net, start, result = run()
    moved = net.params != start
    assert moved[: net.n_weights].all()
    if variant[1] != "none":
        assert moved[net.n_weights + net.n_units :].all(), "gains and shifts are updated"
    history = result.history
    assert result.status == "finished"
    for metric, values in history.layers.items():
        finite = np.isfinite(values[0])
        assert finite.all() or metric == "update_ratio", metric
    clip = history.scalars["clip/grad_norm"]
    assert np.isfinite(clip[:-1]).all() and np.isnan(clip[-1])
    assert set(np.unique(history.scalars["clip/fraction"][:-1])) <= set(np.linspace(0, 1, 9))
    _, _, again = run()
    for name, values in history.metric_items():
        np.testing.assert_array_equal(values, dict(again.history.metric_items())[name], err_msg=name)


def test_residual_delta_includes_the_skip_path() -> None:
    """With the residual branch scaled to almost nothing, delta still reaches the first layers
    through the skip paths (a plain network of those weights would pass almost none)."""
    rng = np.random.default_rng(0)
    net = BlockMLP([4, 8, 8, 8, 8, 8, 1], "tanh", rng=rng, residual=True, residual_scale=1e-3)
    X = rng.normal(size=(4, 20))
    Y = (rng.random((1, 20)) > 0.5).astype(float)
    _, _, deltas = net.gradients(X, Y)
    # Layer 1 (not residual) sees the output's error through W_L and the skips: about the
    # size of delta at layer L - 1 / alpha (whose error is scaled by alpha).
    top = np.std(deltas[-2]) / 1e-3
    assert 0.1 < np.std(deltas[0]) / top < 10
