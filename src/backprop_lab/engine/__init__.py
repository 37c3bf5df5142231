"""The numpy engine: networks, their training and the per-layer diagnostics of gradient flow.

Arrays are features x samples throughout. Nothing here imports Hydra or MLflow: the harness
(``backprop_lab.harness``) builds these objects from configs, and tracking records what they
measure.

    activations   sigmoid, tanh, relu, leaky_relu, softsign, identity: f, f', what theory needs
    losses        the fused output layers and losses (output error p - y)
    initializers  he, lecun, xavier_uniform, standard, auto
    network       MLP: forward, backpropagation, workspaces
    optimizers    gd, sgd, momentum (Nesterov), adam; L2 weight decay
    datasets      the data sets (MNIST-1D by its package's generator), splits, standardization
    diagnostics   the per-layer diagnostics, measured at the start of each epoch
    history       the per-epoch record and the metric names
    training      the training loop, divergence detection, callbacks
    theory        what theory predicts at initialization: mean field (variance map, gradient
                  factors, fixed point, depth scale) and the linear regime
    run_summary   a run at a glance: its vanishing summary (vanishing/ metrics) and chance
"""
