"""Run by bench_memory.py in a fresh interpreter: train once, report peak resident memory.

    python benchmarks/memory_probe.py '{"engine": "ours", "diagnostics": true, ...}'

Prints one JSON line: the peak RSS after imports and data (the baseline), the peak RSS after
training, the parameter bytes and the bytes of the activations of every layer on the batch.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    start = peak_rss()
    spec = json.loads(sys.argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import numpy as np

    from backprop_lab.engine.datasets import load_dataset
    from backprop_lab.engine.network import MLP
    from backprop_lab.engine.optimizers import make_optimizer
    from backprop_lab.engine.training import train

    if spec["engine"] == "torch":
        import torch

        torch.set_num_threads(int(spec["threads"]))
    ds = load_dataset("spiral", n_samples=spec["n_per_class"], val_fraction=0.0,
                      rng=np.random.default_rng(0))
    sizes = [ds.n_features, *spec["hidden"], ds.n_outputs]
    m = ds.n_train
    baseline = peak_rss()

    net = MLP(sizes, "tanh", "sigmoid_bce", rng=np.random.default_rng(1))
    param_bytes = net.params.nbytes
    act_bytes = net.n_units * m * net.dtype.itemsize
    if spec["engine"] == "ours":
        train(net, ds, make_optimizer("gd", lr=0.01), epochs=spec["epochs"],
              diagnostics=spec["diagnostics"])
    else:
        layers: list = []
        for l, W in enumerate(net.weights):
            layers.append(torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64))
            if l < net.n_layers - 1:
                layers.append(torch.nn.Tanh())
        model = torch.nn.Sequential(*layers)
        del net  # torch holds its own parameters
        X = torch.from_numpy(np.ascontiguousarray(ds.X_train.T))
        T = torch.from_numpy(np.ascontiguousarray(ds.Y_train.T))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(spec["epochs"]):
            opt.zero_grad()
            loss = loss_fn(model(X), T)
            loss.backward()
            opt.step()
            loss.item()
    print(json.dumps({"start": start, "baseline": baseline, "peak": peak_rss(),
                      "param_bytes": param_bytes,
                      "act_bytes": act_bytes, "n_train": m, "sizes": sizes}))


if __name__ == "__main__":
    main()
